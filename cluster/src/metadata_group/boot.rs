//! Starting a node of the metadata group: open and recover its log, seed a new log with
//! metadata kept before the group existed, and apply what the node had committed, so that it
//! serves nothing older than it did before it stopped.

use super::cycle::{run_cycle, NodeError, Outbox};
use super::durable::RaftDisk;
use super::group::{GroupSettings, MetadataRaft};
use super::logger::tracing_logger;
use crate::metadata::Metadata;
use oxbow_core::MetadataGroupConfig;
use oxbow_storage::Disk;
use raft::prelude::Message;
use std::path::Path;
use std::rc::Rc;

/// Bytes of entries in one append message to a follower.
const MESSAGE_BYTES_MAX: u64 = 1 << 20;
/// Append messages in flight to one follower.
const INFLIGHT_MESSAGES_MAX: usize = 256;

/// The Raft id of a broker: Raft reserves 0 for "none", Kafka broker ids start at 0.
pub fn raft_id(broker: i32) -> u64 {
    u64::try_from(broker).expect("broker ids are not negative") + 1
}

/// The broker of a Raft id; `None` for 0 (no node, as in "no leader").
pub fn broker_id(raft_id: u64) -> Option<i32> {
    raft_id.checked_sub(1).map(|id| id as i32)
}

/// How a broker's node takes part in the group.
pub fn group_settings(broker: i32, config: &MetadataGroupConfig) -> GroupSettings {
    let election = config.election_ticks as usize;
    GroupSettings {
        node_id: raft_id(broker),
        election_ticks: election..2 * election,
        heartbeat_ticks: config.heartbeat_ticks as usize,
        snapshot_entries: config.snapshot_entries,
        message_bytes_max: MESSAGE_BYTES_MAX,
        inflight_messages_max: INFLIGHT_MESSAGES_MAX,
    }
}

/// A node opened and caught up with what it had committed.
pub struct OpenedNode {
    /// The core, ready to spawn.
    pub core: MetadataRaft,
    /// Its log.
    pub disk: RaftDisk,
    /// Whether the log was new when opened.
    pub was_new: bool,
    /// Whether the log was new and started from the seed.
    pub seeded: bool,
}

/// Opens the node of `broker` in `dir`. A group that starts for the first time has `voters`
/// (broker ids) as its voters and, when `seed` holds topics and this broker is the only voter,
/// starts from it (several voters seeding each their own history would disagree). The node
/// has applied everything it had committed when this returns.
pub async fn open_node(
    dir: &Path,
    disk: Rc<dyn Disk>,
    broker: i32,
    voters: &[i32],
    config: &MetadataGroupConfig,
    seed: Option<&Metadata>,
) -> Result<OpenedNode, NodeError> {
    let alone = voters == [broker];
    let voters: Vec<u64> = voters.iter().map(|&v| raft_id(v)).collect();
    let segment = config.segment_bytes_max;
    let (mut raft_disk, mut log) = RaftDisk::open(dir, disk.clone(), &voters, segment).await?;
    let was_new = log.is_new();
    let seed = seed.filter(|s| alone && was_new && !s.topics.is_empty());
    let seeded = seed.is_some();
    if let Some(seed) = seed {
        let data = serde_json::to_vec(seed).expect("metadata serialises");
        raft_disk.bootstrap(data).await?;
        raft_disk.close().await;
        (raft_disk, log) = RaftDisk::open(dir, disk, &voters, segment).await?;
        tracing::info!(topics = seed.topics.len(), "metadata group seeded");
    }
    let commit = log.hard_state().commit;
    let settings = group_settings(broker, config);
    let logger = tracing_logger(settings.node_id);
    let mut core = MetadataRaft::new(settings, log, fastrand::u64(..), &logger)?;
    // Committed entries come out of the first cycles, leader or not; messages there are none
    // worth sending before the node is wired to its peers.
    while core.applied() < commit {
        if run_cycle(&mut core, &raft_disk, &mut Nowhere)
            .await?
            .is_none()
        {
            break;
        }
    }
    Ok(OpenedNode {
        core,
        disk: raft_disk,
        was_new,
        seeded,
    })
}

/// An outbox for a node without peers to reach yet (or ever, alone in its group).
pub struct Nowhere;

impl Outbox for Nowhere {
    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            tracing::trace!(
                count = messages.len(),
                "metadata messages with no route dropped"
            );
        }
    }
}
