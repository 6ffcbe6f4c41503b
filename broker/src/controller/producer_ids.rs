//! Producer ids, handed to brokers a block at a time; blocks never overlap, even across
//! controller restarts.

use super::{Controller, ControllerError, MetadataStore, PRODUCER_ID_BLOCK, PRODUCER_IDS_KEY};

impl<S: MetadataStore> Controller<S> {
    /// A block of producer ids no other broker will hand out.
    pub async fn allocate_producer_ids(&self, broker: i32) -> Result<(i64, u32), ControllerError> {
        let mut state = self.lock().await?;
        let (first, version) = state.next_producer_id;
        let next = first + i64::from(PRODUCER_ID_BLOCK);
        let version = self
            .store_put(
                PRODUCER_IDS_KEY,
                &serde_json::json!({ "next": next }),
                version,
            )
            .await?;
        state.next_producer_id = (next, Some(version));
        tracing::debug!(broker, first, "allocated producer ids");
        Ok((first, PRODUCER_ID_BLOCK))
    }
}
