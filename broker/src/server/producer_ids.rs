//! Producer ids for idempotent producers, handed out from blocks the controller allocates
//! to this broker; one allocator serves both the gRPC and the Kafka protocol.

use tonic::Status;

use super::controller_link::ControllerLink;

/// Hands out producer ids from blocks the controller allocates to this broker.
pub struct ProducerIds {
    link: ControllerLink,
    broker: i32,
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn new(link: ControllerLink, broker: i32) -> Self {
        Self {
            link,
            broker,
            block: tokio::sync::Mutex::new((0, 0)),
        }
    }

    pub async fn next(&self) -> Result<i64, Status> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let (first, count) = self.link.allocate_producer_ids(self.broker).await?;
            *block = (first, first + i64::from(count));
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
