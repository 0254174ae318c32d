//! DescribeProducers: the idempotent producers each partition's leader remembers, for
//! operators chasing a stuck or fenced producer.

use super::handlers::{known_partition, partition_error_code};
use crate::shard::{PartitionError, Shard};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use oxbow_core::placement::owner_shard;
use oxbow_storage::producers::ActiveProducer;

pub(super) async fn describe_producers(
    shard: &Shard,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut response = DescribeProducersResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let count = shard.partition_count(&name);
        let mut out = TopicResponse::default();
        out.name = topic.name;
        for index in topic.partition_indexes {
            let mut partition = PartitionResponse::default();
            partition.partition_index = index;
            let found = match known_partition(count, index) {
                Some(p) => producers_of(shard, &name, p).await,
                None => Err(PartitionError::UnknownTopicOrPartition),
            };
            match found {
                Ok(active) => partition.active_producers = active.iter().map(state).collect(),
                Err(e) => partition.error_code = partition_error_code(&e),
            }
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}

/// Asks the partition's owner shard, which answers only if this node leads it.
async fn producers_of(
    shard: &Shard,
    topic: &str,
    partition: u32,
) -> Result<Vec<ActiveProducer>, PartitionError> {
    let owner = owner_shard(topic, partition, shard.shards());
    let topic = topic.to_string();
    let asked = shard.run_on(owner, move |owner| async move {
        let host = owner.leading(&topic, partition)?;
        Ok(host.log.active_producers())
    });
    asked.await.unwrap_or_else(|| {
        Err(PartitionError::Storage(
            "the owner shard is gone".to_string(),
        ))
    })
}

fn state(producer: &ActiveProducer) -> ProducerState {
    let mut state = ProducerState::default();
    state.producer_id = ProducerId(producer.id);
    state.producer_epoch = producer.epoch as i32;
    state.last_sequence = producer.last_sequence;
    state.last_timestamp = producer.last_timestamp;
    // The coordinator epoch of its last marker is not kept.
    state.coordinator_epoch = -1;
    state.current_txn_start_offset = producer.txn_start_offset.map_or(-1, |o| o as i64);
    state
}
