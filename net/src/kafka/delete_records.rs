//! DeleteRecords: moves partitions' log starts up, as `kafka-delete-records` and
//! AdminClient.deleteRecords ask. Each partition's leader answers with the low watermark once
//! its own log start is checkpointed and every in-sync follower's log starts there too, or
//! REQUEST_TIMED_OUT after the request's timeout.

use super::handlers::{known_partition, partition_error_code};
use crate::shard::{PartitionError, Shard};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use std::time::{Duration, Instant};

pub(super) async fn delete_records(
    shard: &Shard,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    // One deadline for the whole request, as Kafka's, however many partitions it names.
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms.max(0) as u64);
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let count = shard.partition_count(&name);
        let mut out = DeleteRecordsTopicResult::default();
        out.name = topic.name;
        for partition in topic.partitions {
            let mut result = DeleteRecordsPartitionResult::default();
            result.partition_index = partition.partition_index;
            result.low_watermark = -1;
            let deleted = match known_partition(count, partition.partition_index) {
                Some(p) => {
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    shard
                        .delete_records(&name, p, partition.offset, timeout)
                        .await
                }
                None => Err(PartitionError::UnknownTopicOrPartition),
            };
            match deleted {
                Ok(start) => result.low_watermark = start as i64,
                Err(e) => result.error_code = partition_error_code(&e),
            }
            out.partitions.push(result);
        }
        response.topics.push(out);
    }
    response
}
