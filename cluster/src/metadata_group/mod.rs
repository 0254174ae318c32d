//! The metadata group: raft-rs driven as a sans-IO core ([`MetadataRaft`]), its log made
//! durable under the storage rules ([`RaftDisk`]), and the in-memory mirror raft-rs reads
//! ([`MemoryLog`]). Every node applies the same committed [`Command`]s to its [`Metadata`]
//! and so serves the same view; a single node is a group of one voter on the same path.
//!
//! [`Metadata`]: crate::Metadata

mod boot;
mod command;
mod cycle;
mod durable;
mod group;
mod logger;
mod memory_log;
mod node;
mod wire;

pub use boot::{broker_id, group_settings, open_node, raft_id, Nowhere, OpenedNode};
pub use command::{Command, ProposalId};
pub use cycle::{run_cycle, Cycle, NodeError, Outbox};
pub use durable::{RaftDisk, RaftDiskError};
pub use group::{
    AppliedEntry, Committed, GroupError, GroupSettings, Member, MetadataRaft, Persist,
};
pub use logger::tracing_logger;
pub use memory_log::MemoryLog;
pub use node::{MetadataNode, NodeStatus, ProposalStats, ProposeError};
pub use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Message, MessageType};
pub use wire::{
    decode_message, encode_join, encode_message, pump_inbound, TransportOutbox, JOIN_CHANNEL,
    METADATA_CHANNEL,
};
