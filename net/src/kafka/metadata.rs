//! Metadata: which topics exist, their ids, partitions and where each partition is led,
//! all read from one snapshot of the node's metadata. Topics are created here on first use
//! when the broker and the request allow it.

use super::wire::{code, text};
use super::KafkaEndpoint;
use crate::authorize::Gate;
use crate::shard::{CreateTopicError, Shard};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName,
};
use oxbow_cluster::{BrokerMeta, Metadata, Operation, TopicMeta, NO_LEADER};
use uuid::Uuid;

/// The partition count of `name`, creating the topic when `auto_create_topics` and
/// `may_create` allow it. Kafka error code otherwise. `may_create` is asked (and so audited)
/// only when the topic would be created.
pub(super) async fn ensure_topic(
    shard: &Shard,
    name: &str,
    may_create: impl FnOnce() -> bool,
) -> Result<u32, i16> {
    if let Some(count) = shard.partition_count(name) {
        return Ok(count);
    }
    if !(shard.config.auto_create_topics && may_create()) {
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
    gate: &Gate<'_>,
    endpoint: &KafkaEndpoint,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // Listing every topic leaves out, without a word, those the principal may not describe.
    let all = || {
        (shard.topics().into_keys())
            .filter(|name| gate.sees_topic(name))
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
    // As a KRaft broker does (KIP-590): clients cannot reach the metadata group's leader, so
    // the "controller" named is a live broker that takes admin requests and forwards them:
    // this one. A client that kept the group's leader would wait for it through a failover.
    response.controller_id = BrokerId(shard.config.node_id);
    for asked in asked {
        let mut topic = MetadataResponseTopic::default();
        let found = match asked {
            Asked::Name(name) if !gate.topic(&name, Operation::Describe) => {
                topic.name = Some(TopicName(text(&name)));
                Err(code::TOPIC_AUTHORIZATION_FAILED)
            }
            Asked::Name(name) => {
                topic.name = Some(TopicName(text(&name)));
                let may_create = || may_create && gate.may_create_topic(&name);
                ensure_topic(shard, &name, may_create)
                    .await
                    .and_then(|_| find(&shard.metadata(), |t| t.name == name))
            }
            Asked::Id(id) => {
                topic.topic_id = id;
                find(&shard.metadata(), |t| Uuid::from_bytes(t.id.0) == id)
                    .map_err(|_| code::UNKNOWN_TOPIC_ID)
                    .and_then(|meta| match gate.topic(&meta.name, Operation::Describe) {
                        true => Ok(meta),
                        false => Err(code::TOPIC_AUTHORIZATION_FAILED),
                    })
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
    // Fenced brokers are left out, as Kafka lists only live ones: clients are not sent there.
    let metadata = shard.metadata();
    for registered in metadata.unfenced_brokers().filter(|b| b.id != me) {
        let Some(at) = kafka_endpoint(registered, &endpoint.listener) else {
            continue;
        };
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(registered.id);
        broker.host = text(&at.host);
        broker.port = at.port;
        broker.rack = registered.rack.as_deref().map(text);
        brokers.push(broker);
    }
    brokers
}

/// Where clients of the listener named `listener` reach a registered broker: its address on
/// the listener of that name, else its first listener's (`None`, logged, when the address is
/// not `host:port`).
pub(super) fn kafka_endpoint(registered: &BrokerMeta, listener: &str) -> Option<KafkaEndpoint> {
    let addr = (registered.kafka_listeners.get(listener)).unwrap_or(&registered.kafka_addr);
    let parsed =
        (addr.rsplit_once(':')).and_then(|(host, port)| Some((host, port.parse::<i32>().ok()?)));
    let Some((host, port)) = parsed else {
        tracing::warn!(broker = registered.id, %addr,
            "registered Kafka address is not host:port");
        return None;
    };
    Some(KafkaEndpoint {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        listener: listener.to_string(),
    })
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
            if p.leader == NO_LEADER {
                // Kafka's answer for an offline partition; clients retry later.
                partition.error_code = code::LEADER_NOT_AVAILABLE;
            }
            partition.leader_epoch = p.leader_epoch;
            partition.replica_nodes = p.replicas.iter().copied().map(BrokerId).collect();
            partition.isr_nodes = p.isr.iter().copied().map(BrokerId).collect();
            partition
        })
        .collect();
}

/// DescribeCluster (KIP-700): the live brokers, as Metadata lists them, the cluster id, and as
/// controller this broker (it takes admin requests and forwards them, as in Metadata).
pub(super) fn describe_cluster(shard: &Shard, endpoint: &KafkaEndpoint) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    let cluster_id = shard.metadata().cluster_id.clone();
    response.cluster_id = text(cluster_id.as_deref().unwrap_or("oxbow"));
    response.controller_id = BrokerId(shard.config.node_id);
    response.brokers = (brokers(shard, endpoint).into_iter())
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(b.node_id)
                .with_host(b.host)
                .with_port(b.port)
                .with_rack(b.rack)
        })
        .collect();
    // Authorized operations are not computed (no ACLs): Kafka's "not requested" value.
    response.cluster_authorized_operations = i32::MIN;
    response
}
