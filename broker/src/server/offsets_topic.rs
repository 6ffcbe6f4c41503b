//! The consumer offsets topic, created on first use: a group's coordinator is the leader of
//! its partition of `__consumer_offsets`, so finding a coordinator before the topic exists
//! asks the controller for it (in the background, once at a time) and says "not yet".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::controller_link::ControllerLink;

#[derive(Clone)]
pub struct OffsetsTopic {
    link: ControllerLink,
    /// Whether this broker is asking the controller for the topic already.
    creating: Arc<AtomicBool>,
}

impl OffsetsTopic {
    pub fn new(link: ControllerLink) -> Self {
        Self {
            link,
            creating: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the controller for `__consumer_offsets` in the background, once at a time.
    pub fn create(&self) {
        if self.creating.swap(true, Ordering::AcqRel) {
            return;
        }
        let (link, creating) = (self.link.clone(), self.creating.clone());
        tokio::spawn(async move {
            if let Err(error) = link.create_offsets_topic().await {
                tracing::warn!(error = %error.message(), "could not create the offsets topic");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            creating.store(false, Ordering::Release);
        });
    }
}
