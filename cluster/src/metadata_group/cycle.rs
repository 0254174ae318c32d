//! One cycle of a node's work, the same for the broker and the simulation: take raft-rs's
//! ready state, make it durable, send what may be sent, make the commit durable, apply, and
//! snapshot when due. Messages leave through an [`Outbox`] in the order Raft allows: a
//! leader's appends before its own write, votes and acknowledgements only after.

use super::durable::{RaftDisk, RaftDiskError};
use super::group::{AppliedEntry, GroupError, MetadataRaft};
use raft::prelude::Message;

/// Where a node's messages go.
pub trait Outbox {
    /// Sends messages to their `to` nodes (best effort: Raft retries what is lost).
    fn send(&mut self, messages: Vec<Message>);

    /// Snapshots sent since the last call, to whom, and whether they went out; raft-rs sends
    /// nothing more to a follower until it hears this.
    fn take_snapshot_reports(&mut self) -> Vec<(u64, bool)> {
        Vec::new()
    }
}

/// Why a node stops: its log could not be made durable, or raft-rs refused its state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The disk failed.
    #[error(transparent)]
    Disk(#[from] RaftDiskError),
    /// raft-rs or the applied state failed.
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// What one cycle did.
#[derive(Debug, Default)]
pub struct Cycle {
    /// Entries applied, in order.
    pub applied: Vec<AppliedEntry>,
    /// A snapshot from the leader replaced the log.
    pub installed_snapshot: bool,
    /// Entries replaced a suffix of the log (a follower's uncommitted entries overwritten).
    pub replaced_suffix: bool,
    /// A snapshot of applied state was taken and the log before it dropped.
    pub took_snapshot: bool,
}

/// Runs one cycle if raft-rs has work; `None` when it has none.
pub async fn run_cycle(
    core: &mut MetadataRaft,
    disk: &RaftDisk,
    outbox: &mut dyn Outbox,
) -> Result<Option<Cycle>, NodeError> {
    let Some(mut persist) = core.next_persist() else {
        return Ok(None);
    };
    let mut cycle = Cycle {
        installed_snapshot: persist.snapshot.is_some(),
        replaced_suffix: (persist.entries.first()).is_some_and(|e| e.index <= core.last_index()),
        ..Cycle::default()
    };
    outbox.send(std::mem::take(&mut persist.send_first));
    disk.persist(&persist).await?;
    let mut committed = core.persisted(persist)?;
    outbox.send(std::mem::take(&mut committed.send));
    if let Some(hard_state) = &committed.hard_state {
        disk.write_hard_state(hard_state).await?;
    }
    cycle.applied = core.apply(committed)?;
    if let Some(snapshot) = core.snapshot_due() {
        disk.compact(&snapshot).await?;
        core.snapshot_saved(snapshot);
        cycle.took_snapshot = true;
    }
    Ok(Some(cycle))
}
