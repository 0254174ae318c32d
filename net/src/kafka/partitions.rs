//! CreatePartitions: what `kafka-topics.sh --alter --partitions`, AdminClient's
//! `create_partitions` and `oxbow`'s admins call to grow a topic. Each topic is grown on shard
//! 0 (`Shard::create_partitions`), one after another; a topic named twice is refused.

use super::wire::{code, text};
use crate::shard::{CreatePartitionsError, Shard};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use std::collections::BTreeMap;

/// A topic, the partition count asked for, the replicas of each new partition if given.
type Asked = (String, i32, Option<Vec<Vec<i32>>>);

pub(super) async fn create(
    shard: &Shard,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for topic in &request.topics {
        *named.entry(topic.name.to_string()).or_default() += 1;
    }
    let asked: Vec<Asked> = (request.topics.into_iter())
        .map(|t| {
            let assignments = (t.assignments).map(|a| {
                let ids =
                    |b: Vec<kafka_protocol::messages::BrokerId>| b.iter().map(|b| b.0).collect();
                a.into_iter().map(|p| ids(p.broker_ids)).collect()
            });
            (t.name.to_string(), t.count, assignments)
        })
        .collect();
    let validate_only = request.validate_only;
    let answered = shard
        .run_on(0, move |shard| async move {
            let mut answered = Vec::new();
            for (topic, count, assignments) in asked {
                let outcome = if named[&topic] > 1 {
                    Err((code::INVALID_REQUEST, format!("{topic} is named twice")))
                } else {
                    grow(&shard, &topic, count, assignments, validate_only).await
                };
                answered.push((topic, outcome));
            }
            answered
        })
        .await
        .unwrap_or_default();
    let mut response = CreatePartitionsResponse::default();
    response.results = (answered.into_iter())
        .map(|(topic, outcome)| {
            let (code, message) = match outcome {
                Ok(()) => (code::NONE, None),
                Err((code, why)) => (code, Some(text(&why))),
            };
            CreatePartitionsTopicResult::default()
                .with_name(TopicName(text(&topic)))
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    response
}

/// One topic's growth, with its Kafka error code when refused.
async fn grow(
    shard: &Shard,
    topic: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let count = u32::try_from(count)
        .map_err(|_| (code::INVALID_PARTITIONS, format!("{count} partitions")))?;
    let grown = shard.create_partitions(topic, count, assignments, validate_only);
    grown.await.map_err(|e| {
        let code = match &e {
            CreatePartitionsError::UnknownTopic(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
            CreatePartitionsError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
            CreatePartitionsError::InvalidReplication(_) => code::INVALID_REPLICATION_FACTOR,
            CreatePartitionsError::InvalidAssignment(_) => code::INVALID_REPLICA_ASSIGNMENT,
            CreatePartitionsError::Internal(_) => code::INVALID_REQUEST,
            CreatePartitionsError::TimedOut(_) => code::REQUEST_TIMED_OUT,
            CreatePartitionsError::Storage(_) => code::KAFKA_STORAGE_ERROR,
        };
        (code, e.to_string())
    })
}
