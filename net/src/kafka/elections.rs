//! ElectLeaders (KIP-460): an operator moves a partition's leadership to its preferred replica
//! (type 0), or gives an offline partition a replica that may lack acknowledged records
//! (type 1, unclean). The decisions are the controller's (`oxbow_cluster::controller`); the
//! changes are committed through the metadata group on shard 0.

use super::wire::{code, text};
use crate::shard::Shard;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use oxbow_cluster::controller::{elect_preferred, elect_unclean, ElectionRefusal};
use std::collections::BTreeMap;

const UNCLEAN: i8 = 1;

pub(super) async fn elect_leaders(
    shard: &Shard,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let unclean = request.election_type == UNCLEAN;
    // A null list means every partition; those that need nothing are then left out.
    let every = request.topic_partitions.is_none();
    let wanted: Vec<(String, i32)> = match request.topic_partitions {
        Some(topics) => (topics.into_iter())
            .flat_map(|t| {
                let name = t.topic.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect(),
        None => (shard.metadata().topics.values())
            .flat_map(|t| (0..t.partitions.len() as i32).map(|p| (t.name.clone(), p)))
            .collect(),
    };
    let outcomes = shard
        .run_on(0, move |shard| async move {
            let mut outcomes = Vec::new();
            for (topic, partition) in wanted {
                let outcome = elect(&shard, &topic, partition, unclean).await;
                outcomes.push((topic, partition, outcome));
            }
            outcomes
        })
        .await
        .unwrap_or_default();
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, outcome) in outcomes {
        let (error, message) = match outcome {
            Ok(()) => (0, None),
            Err((code::ELECTION_NOT_NEEDED, _)) if every => continue,
            Err((code, why)) => (code, Some(text(&why))),
        };
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(error)
            .with_error_message(message);
        by_topic.entry(topic).or_default().push(result);
    }
    let mut response = ElectLeadersResponse::default();
    response.replica_election_results = (by_topic.into_iter())
        .map(|(topic, results)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(text(&topic)))
                .with_partition_result(results)
        })
        .collect();
    response
}

/// One partition's election, decided on shard 0's metadata and committed there.
async fn elect(
    shard: &Shard,
    topic: &str,
    partition: i32,
    unclean: bool,
) -> Result<(), (i16, String)> {
    let partition = u32::try_from(partition).map_err(|_| {
        (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            "no such partition".to_string(),
        )
    })?;
    let metadata = shard.metadata();
    let decided = match unclean {
        true => elect_unclean(&metadata, topic, partition),
        false => elect_preferred(&metadata, topic, partition),
    };
    drop(metadata);
    let change = decided.map_err(|refusal| {
        let code = match refusal {
            ElectionRefusal::UnknownPartition => code::UNKNOWN_TOPIC_OR_PARTITION,
            ElectionRefusal::NotNeeded => code::ELECTION_NOT_NEEDED,
            ElectionRefusal::PreferredNotAvailable => code::PREFERRED_LEADER_NOT_AVAILABLE,
            ElectionRefusal::NoEligibleLeader => code::ELIGIBLE_LEADERS_NOT_AVAILABLE,
        };
        (code, refusal.to_string())
    })?;
    let what = format!("{change:?}");
    shard
        .change_cluster(change)
        .await
        .map_err(|e| (code::INVALID_REQUEST, e.to_string()))?;
    tracing::info!(change = %what, "leader elected on request");
    Ok(())
}
