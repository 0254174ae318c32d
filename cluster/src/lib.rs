//! Oxbow's cluster state, as sans-IO cores the shells around them drive.
//!
//! Today: the metadata model ([`Metadata`]: topics with ids, partitions with replicas, leader,
//! leader epoch and in-sync replicas, per-topic configs, all under one version number) and the
//! [`MetadataStore`] seam it is kept behind. A single node keeps it in a local file
//! ([`LocalMetadataStore`]); the Raft metadata group will be a second store with the same
//! interface, so the shard layer and the protocols above it never change.
#![warn(missing_docs)]

pub mod metadata;
pub mod store;

pub use metadata::{Metadata, MetadataChange, MetadataError, PartitionMeta, TopicId, TopicMeta};
pub use store::{LocalMetadataStore, MetadataStore, StoreError};
