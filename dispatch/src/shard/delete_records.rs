//! Deleting the records below an offset (Kafka's DeleteRecords), on the partition's leader.

use super::{PartitionError, Shard};
use oxbow_core::placement::owner_shard;
use oxbow_storage::DeleteRecordsError;
use std::time::Duration;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

impl Shard {
    /// Moves the log start of a partition this node leads up to `offset` ([`HIGH_WATERMARK`]:
    /// everything readable), checkpointed, and waits until every in-sync follower moved its
    /// own there too (they take it from the leader's answers to their fetches), at most
    /// `timeout` (then REQUEST_TIMED_OUT, as Kafka's DeleteRecords); answers the low
    /// watermark, where all those logs start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        timeout: Duration,
    ) -> Result<u64, PartitionError> {
        if oxbow_cluster::is_internal_topic(topic) {
            return Err(PartitionError::InternalTopic);
        }
        let owner = owner_shard(topic, partition, self.shards());
        let topic = topic.to_string();
        let asked = self.run_on(owner, move |owner| async move {
            let host = owner.leading(&topic, partition)?;
            let offset = match offset {
                HIGH_WATERMARK => host.log.log_end_offset(),
                offset => u64::try_from(offset).map_err(|_| PartitionError::OffsetOutOfRange)?,
            };
            let start = host.log.delete_records(offset).await.map_err(|e| match e {
                DeleteRecordsError::OffsetOutOfRange { .. } => PartitionError::OffsetOutOfRange,
                e => PartitionError::Storage(e.to_string()),
            })?;
            owner.wait_for_low_watermark(&host, start, timeout).await
        });
        asked.await.unwrap_or_else(|| {
            Err(PartitionError::Storage(
                "the owner shard is gone".to_string(),
            ))
        })
    }
}
