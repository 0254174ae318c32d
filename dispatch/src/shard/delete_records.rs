//! Deleting the records below an offset (Kafka's DeleteRecords), on the partition's leader.

use super::{PartitionError, Shard};
use oxbow_core::placement::owner_shard;
use oxbow_storage::DeleteRecordsError;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

impl Shard {
    /// Moves the log start of a partition this node leads up to `offset` ([`HIGH_WATERMARK`]:
    /// everything readable) and answers the new log start (Kafka's low watermark) once it is
    /// checkpointed. Followers move theirs when the leader next answers their fetches.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
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
            host.log.delete_records(offset).await.map_err(|e| match e {
                DeleteRecordsError::OffsetOutOfRange { .. } => PartitionError::OffsetOutOfRange,
                e => PartitionError::Storage(e.to_string()),
            })
        });
        asked.await.unwrap_or_else(|| {
            Err(PartitionError::Storage(
                "the owner shard is gone".to_string(),
            ))
        })
    }
}
