//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455), what
//! `kafka-reassign-partitions.sh` and admin clients call: a partition moves to the replicas
//! asked for once the new ones are in sync (`oxbow_cluster::metadata`'s `reassign.rs`). The
//! change is committed through the metadata group on shard 0; the controller completes it.

use super::wire::{code, text};
use crate::shard::Shard;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use oxbow_cluster::metadata_group::ProposeError;
use oxbow_cluster::{MetadataChange, MetadataError};

/// A partition and the replicas asked for it (`None`: cancel its reassignment).
type Asked = (i32, Option<Vec<i32>>);

pub(super) async fn alter(
    shard: &Shard,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let wanted: Vec<(String, Vec<Asked>)> = (request.topics.into_iter())
        .map(|t| {
            let partitions = (t.partitions.into_iter())
                .map(|p| {
                    let replicas = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
                    (p.partition_index, replicas)
                })
                .collect();
            (t.name.to_string(), partitions)
        })
        .collect();
    let answered = shard
        .run_on(0, move |shard| async move {
            let mut answered = Vec::new();
            for (topic, partitions) in wanted {
                let mut results = Vec::new();
                for (partition, replicas) in partitions {
                    results.push((
                        partition,
                        reassign(&shard, &topic, partition, replicas).await,
                    ));
                }
                answered.push((topic, results));
            }
            answered
        })
        .await
        .unwrap_or_default();
    let mut response = AlterPartitionReassignmentsResponse::default();
    response.responses = (answered.into_iter())
        .map(|(topic, results)| {
            let partitions = (results.into_iter())
                .map(|(partition, outcome)| {
                    let (code, message) = match outcome {
                        Ok(()) => (0, None),
                        Err((code, why)) => (code, Some(text(&why))),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(partition)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(TopicName(text(&topic)))
                .with_partitions(partitions)
        })
        .collect();
    response
}

/// Starts one partition's move (on shard 0).
async fn reassign(
    shard: &Shard,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> Result<(), (i16, String)> {
    let partition = u32::try_from(partition).map_err(|_| {
        (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            "no such partition".to_string(),
        )
    })?;
    let exists =
        (shard.metadata().topic(topic)).is_some_and(|t| (partition as usize) < t.partitions.len());
    if !exists {
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("no partition {topic}/{partition}"),
        ));
    }
    let Some(replicas) = replicas else {
        let moving =
            (shard.metadata().reassignments.get(topic)).is_some_and(|p| p.contains_key(&partition));
        if !moving {
            let why = format!("{topic}/{partition} is not being moved");
            return Err((code::NO_REASSIGNMENT_IN_PROGRESS, why));
        }
        let change = MetadataChange::CancelReassignment {
            topic: topic.to_string(),
            partition,
        };
        shard.change_cluster(change).await.map_err(refusal)?;
        tracing::info!(topic, partition, "reassignment cancelled");
        return Ok(());
    };
    let change = MetadataChange::ReassignPartition {
        topic: topic.to_string(),
        partition,
        replicas: replicas.clone(),
    };
    shard.change_cluster(change).await.map_err(refusal)?;
    tracing::info!(topic, partition, ?replicas, "reassignment started");
    Ok(())
}

/// The Kafka error of a move or cancellation the metadata group did not commit.
fn refusal(e: ProposeError) -> (i16, String) {
    let refused = matches!(e, ProposeError::Refused(MetadataError::Invalid(_)));
    let code = if refused {
        code::INVALID_REPLICA_ASSIGNMENT
    } else {
        code::INVALID_REQUEST
    };
    (code, e.to_string())
}

pub(super) fn list(
    shard: &Shard,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let metadata = shard.metadata();
    let asked = |topic: &str, partition: u32| match &request.topics {
        None => true,
        Some(topics) => (topics.iter())
            .any(|t| t.name.as_str() == topic && t.partition_indexes.contains(&(partition as i32))),
    };
    let ids = |brokers: &[i32]| brokers.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    let mut response = ListPartitionReassignmentsResponse::default();
    for (topic, partitions) in &metadata.reassignments {
        let Some(meta) = metadata.topic(topic) else {
            continue;
        };
        let mut ongoing = Vec::new();
        for (&partition, moving) in partitions.iter().filter(|(&p, _)| asked(topic, p)) {
            let Some(now) = meta.partitions.get(partition as usize) else {
                continue;
            };
            ongoing.push(
                OngoingPartitionReassignment::default()
                    .with_partition_index(partition as i32)
                    .with_replicas(ids(&now.replicas))
                    .with_adding_replicas(ids(&moving.adding()))
                    .with_removing_replicas(ids(&moving.removing())),
            );
        }
        if !ongoing.is_empty() {
            response.topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(ongoing),
            );
        }
    }
    response
}
