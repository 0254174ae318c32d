//! Oxbow's cluster state, as sans-IO cores the shells around them drive.
//!
//! The metadata group ([`metadata_group`]): raft-rs as a sans-IO core whose log is a
//! partition log on the storage engine's disk, checked by a seeded simulation of whole groups.
//!
//! The metadata model ([`Metadata`]: topics with ids, partitions with replicas, leader,
//! leader epoch and in-sync replicas, per-topic configs, all under one version number) and the
//! [`MetadataStore`] seam it is kept behind. A single node keeps it in a local file
//! ([`LocalMetadataStore`]); the Raft metadata group will be a second store with the same
//! interface, so the shard layer and the protocols above it never change.
#![warn(missing_docs)]

pub mod metadata;
pub mod metadata_group;
pub mod store;

pub use metadata::{
    is_internal_topic, Metadata, MetadataChange, MetadataError, PartitionMeta, TopicId, TopicMeta,
    OFFSETS_TOPIC,
};
pub use store::{LocalMetadataStore, MetadataStore, StoreError};
