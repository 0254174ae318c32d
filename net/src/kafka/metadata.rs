//! Metadata: which topics exist, their ids, partitions and where each partition is led,
//! all read from one snapshot of the node's metadata. Topics are created here on first use
//! when the broker and the request allow it.

use super::wire::{code, text};
use super::KafkaEndpoint;
use crate::shard::{CreateTopicError, Shard};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use oxbow_cluster::{Metadata, TopicMeta};
use uuid::Uuid;

/// The partition count of `name`, creating the topic when allowed. Kafka error code otherwise.
pub(super) async fn ensure_topic(shard: &Shard, name: &str, may_create: bool) -> Result<u32, i16> {
    if let Some(count) = shard.partition_count(name) {
        return Ok(count);
    }
    if !(may_create && shard.config.auto_create_topics) {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    match shard
        .create_topic(
            name.to_string(),
            shard.config.default_partitions as i64,
            Vec::new(),
        )
        .await
    {
        Ok(()) | Err(CreateTopicError::Exists) => shard
            .partition_count(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
        Err(CreateTopicError::InvalidName(_)) => Err(code::INVALID_TOPIC),
        Err(e) => {
            tracing::error!(topic = name, error = %e, "auto-creating topic failed");
            Err(code::KAFKA_STORAGE_ERROR)
        }
    }
}

/// Which topics a request names: by name, or (v12) by id alone.
enum Asked {
    Name(String),
    Id(Uuid),
}

pub(super) async fn metadata(
    shard: &Shard,
    endpoint: &KafkaEndpoint,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let node = BrokerId(shard.config.node_id);
    let all = || {
        shard
            .topics()
            .into_keys()
            .map(Asked::Name)
            .collect::<Vec<_>>()
    };
    let asked = match &request.topics {
        None => all(),
        Some(topics) if topics.is_empty() && version == 0 => all(),
        Some(topics) => topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => Asked::Name(name.0.to_string()),
                None => Asked::Id(t.topic_id),
            })
            .collect(),
    };
    let may_create = version < 4 || request.allow_auto_topic_creation;
    let mut response = MetadataResponse::default();
    response.brokers = brokers(shard, endpoint);
    let cluster_id = shard.metadata().cluster_id.clone();
    response.cluster_id = Some(text(cluster_id.as_deref().unwrap_or("oxbow")));
    response.controller_id = node;
    for asked in asked {
        let mut topic = MetadataResponseTopic::default();
        let found = match asked {
            Asked::Name(name) => {
                topic.name = Some(TopicName(text(&name)));
                ensure_topic(shard, &name, may_create)
                    .await
                    .and_then(|_| find(&shard.metadata(), |t| t.name == name))
            }
            Asked::Id(id) => {
                topic.topic_id = id;
                find(&shard.metadata(), |t| Uuid::from_bytes(t.id.0) == id)
                    .map_err(|_| code::UNKNOWN_TOPIC_ID)
            }
        };
        match found {
            Ok(meta) => describe(&meta, &mut topic),
            Err(code) => topic.error_code = code,
        }
        response.topics.push(topic);
    }
    response
}

/// Every registered broker where clients reach it; this one at the address the client used
/// (or the advertised one), which a registration cannot know for every listener.
fn brokers(shard: &Shard, endpoint: &KafkaEndpoint) -> Vec<MetadataResponseBroker> {
    let me = shard.config.node_id;
    let mut this = MetadataResponseBroker::default();
    this.node_id = BrokerId(me);
    this.host = text(&endpoint.host);
    this.port = endpoint.port;
    this.rack = shard.config.rack.as_deref().map(text);
    let mut brokers = vec![this];
    for registered in shard.metadata().brokers.values().filter(|b| b.id != me) {
        let Some((host, port)) = (registered.kafka_addr.rsplit_once(':'))
            .and_then(|(host, port)| Some((host, port.parse::<i32>().ok()?)))
        else {
            tracing::warn!(broker = registered.id, addr = %registered.kafka_addr,
                "registered Kafka address is not host:port");
            continue;
        };
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(registered.id);
        broker.host = text(host.trim_start_matches('[').trim_end_matches(']'));
        broker.port = port;
        broker.rack = registered.rack.as_deref().map(text);
        brokers.push(broker);
    }
    brokers
}

/// The topic `matches` picks, copied out of the snapshot.
fn find(metadata: &Metadata, matches: impl Fn(&TopicMeta) -> bool) -> Result<TopicMeta, i16> {
    metadata
        .topics
        .values()
        .find(|t| matches(t))
        .cloned()
        .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
}

fn describe(meta: &TopicMeta, topic: &mut MetadataResponseTopic) {
    topic.name = Some(TopicName(text(&meta.name)));
    topic.topic_id = Uuid::from_bytes(meta.id.0);
    topic.is_internal = meta.internal;
    topic.partitions = meta
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index as i32;
            partition.leader_id = BrokerId(p.leader);
            partition.leader_epoch = p.leader_epoch;
            partition.replica_nodes = p.replicas.iter().copied().map(BrokerId).collect();
            partition.isr_nodes = p.isr.iter().copied().map(BrokerId).collect();
            partition
        })
        .collect();
}
