//! Oxbow's cluster state, as sans-IO cores the shells around them drive.
//!
//! - The metadata model ([`Metadata`]: topics with ids, partitions with replicas, leader,
//!   leader epoch and in-sync replicas, per-topic configs, all under one version number),
//!   changed only by [`MetadataChange`]s applied in order.
//! - The metadata group ([`metadata_group`]) that commits those changes: raft-rs as a sans-IO
//!   core whose log is a partition log on the storage engine's disk, run by a node on shard 0,
//!   checked by a seeded simulation of whole groups. A single broker is a group of one voter.
//! - The controller's decisions ([`controller`]): replica placement and leader elections.
//! - Partition replication ([`replication`]): the leader's view of its followers (high
//!   watermark, in-sync replicas) and where a follower's log diverges from a new leader's.
//! - The network between nodes ([`transport`]): QUIC with mutual TLS and a fault switch.
//! - The transaction coordinator ([`transactions`]): Kafka's rules for transactional ids.
//! - The file a single node kept its metadata in before ([`LocalMetadataStore`]), read once
//!   to seed the group.
#![warn(missing_docs)]

pub mod controller;
pub mod metadata;
pub mod metadata_group;
pub mod replication;
pub mod store;
pub mod transactions;
pub mod transport;

pub use metadata::{
    is_internal_topic, random_cluster_id, Access, Acl, AclFilter, AuthorizerRules, BrokerMeta,
    Metadata, MetadataChange, MetadataError, Operation, PartitionMeta, PatternFilter, PatternType,
    Permission, Reassignment, ResourceType, TopicId, TopicMeta, Users, CLUSTER_RESOURCE, NO_LEADER,
    OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, USER_NAME_BYTES_MAX,
};
pub use store::{LocalMetadataStore, StoreError};
