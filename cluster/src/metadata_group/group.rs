//! One node of the metadata group as a sans-IO core: raft-rs's `RawNode` plus the metadata it
//! has applied. Inputs are ticks, messages from peers and proposals; outputs are disk work,
//! messages to send and applied entries. The shell (the broker's task on shard 0, or the
//! simulation in `cluster/tests/metadata_group.rs`) performs the I/O in the order the core hands it out:
//!
//! 1. [`MetadataRaft::next_persist`]: send `send_first`, make the snapshot, entries and hard
//!    state durable, then [`MetadataRaft::persisted`];
//! 2. send its messages, make its hard state (the new commit index) durable, then
//!    [`MetadataRaft::apply`]: entries are applied only once their commit is durable, so a node
//!    never serves metadata that a restart would take back;
//! 3. [`MetadataRaft::snapshot_due`]: make it durable, then [`MetadataRaft::snapshot_saved`].

use super::command::{Command, ProposalId};
use super::memory_log::MemoryLog;
use crate::metadata::{Metadata, MetadataChange, MetadataError};
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, Snapshot,
};
use raft::{RawNode, StateRole};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How a node takes part in the group.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// This node's id (Kafka's broker id, as u64), never 0.
    pub node_id: u64,
    /// Ticks without a leader before a follower campaigns: a random count in this range
    /// (at least `heartbeat_ticks + 1`).
    pub election_ticks: std::ops::Range<usize>,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries after which a snapshot is taken and the log before it dropped.
    pub snapshot_entries: u64,
    /// Bytes of entries in one append message.
    pub message_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub inflight_messages_max: usize,
}

/// Why the group cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// raft-rs refused an input (a bug, or a damaged log).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// No leader is known, so a proposal cannot be forwarded: try again later.
    #[error("the metadata group has no leader")]
    NoLeader,
    /// A snapshot's metadata does not decode.
    #[error("metadata snapshot at index {index} is damaged: {reason}")]
    DamagedSnapshot {
        /// Its index.
        index: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Disk work handed out by [`MetadataRaft::next_persist`].
#[derive(Debug, Default)]
pub struct Persist {
    /// Messages that may go out before the rest is durable (a leader's appends).
    pub send_first: Vec<Message>,
    /// A snapshot received from the leader: it replaces the whole log.
    pub snapshot: Option<Snapshot>,
    /// Entries to append (an entry at an index already held replaces it and what follows).
    pub entries: Vec<Entry>,
    /// A new hard state (term, vote, commit).
    pub hard_state: Option<HardState>,
    /// Messages that may go out only once all of the above is durable (votes, append acks).
    pub send_after: Vec<Message>,
}

/// What follows a persist: messages, then a commit index to make durable, then applying.
#[derive(Debug, Default)]
pub struct Committed {
    /// Messages to send now.
    pub send: Vec<Message>,
    /// The hard state with a new commit index, to make durable before [`MetadataRaft::apply`].
    pub hard_state: Option<HardState>,
    entries: Vec<Entry>,
}

/// One applied entry, as every node applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The command, for normal entries that carry one.
    pub command: Option<Command>,
    /// Whether the change applied (a refused change is still an entry of the log).
    pub outcome: Result<(), MetadataError>,
}

/// A member of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its Raft id.
    pub id: u64,
    /// A learner (receives the log, does not vote) rather than a voter.
    pub learner: bool,
    /// The last log index it is known to hold (only on the leader).
    pub matched: Option<u64>,
}

/// The core of one node of the metadata group.
pub struct MetadataRaft {
    node: RawNode<MemoryLog>,
    settings: GroupSettings,
    metadata: Arc<Metadata>,
    applied: u64,
    applied_term: u64,
    boot: u64,
    proposals: u64,
    in_flight: Option<raft::Ready>,
}

impl MetadataRaft {
    /// A node starting from its recovered log. `snapshot_metadata` is the metadata stored in
    /// the log's snapshot (empty without one); committed entries after it are applied again
    /// through the usual cycle. `boot` must differ between runs of the node (random).
    pub fn new(
        settings: GroupSettings,
        log: MemoryLog,
        boot: u64,
        logger: &slog::Logger,
    ) -> Result<MetadataRaft, GroupError> {
        let snapshot = log.snapshot().get_metadata().clone();
        let metadata = decode_snapshot(log.snapshot())?;
        let config = raft::Config {
            id: settings.node_id,
            election_tick: settings.election_ticks.start,
            min_election_tick: settings.election_ticks.start,
            max_election_tick: settings.election_ticks.end,
            heartbeat_tick: settings.heartbeat_ticks,
            applied: snapshot.index,
            max_size_per_msg: settings.message_bytes_max,
            max_inflight_msgs: settings.inflight_messages_max,
            // A leader cut off from a quorum steps down, and a node that rejoins after a
            // partition does not disrupt a working leader with a higher term.
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        config.validate()?;
        let node = RawNode::new(&config, log, logger)?;
        Ok(MetadataRaft {
            node,
            settings,
            metadata: Arc::new(metadata),
            applied: snapshot.index,
            applied_term: snapshot.term,
            boot,
            proposals: 0,
            in_flight: None,
        })
    }

    /// Campaigns at once when this node is the group's only voter (a single broker), instead
    /// of waiting out an election timeout at every start.
    pub fn campaign_if_sole_voter(&mut self) -> Result<(), GroupError> {
        let conf_state = self.conf_state();
        if conf_state.voters == [self.settings.node_id] && !self.is_leader() {
            self.node.campaign()?;
        }
        Ok(())
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Takes a message from a peer. Messages that do not fit the current state are dropped
    /// by raft-rs itself; an error here is one raft-rs could not handle.
    pub fn step(&mut self, message: Message) -> Result<(), GroupError> {
        match self.node.step(message) {
            // A message for a node the conf state does not know (or from a peer already
            // removed), or a proposal forwarded to a node that lost its leader since: the
            // proposer's caller times out and retries, as with any lost message.
            Err(raft::Error::StepPeerNotFound)
            | Err(raft::Error::StepLocalMsg)
            | Err(raft::Error::ProposalDropped) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Proposes a change; followers forward it to the leader. Returns its id, which
    /// [`AppliedEntry::command`] carries when (if) it is applied.
    pub fn propose(&mut self, change: MetadataChange) -> Result<ProposalId, GroupError> {
        self.proposals += 1;
        let proposal = ProposalId {
            node: self.settings.node_id,
            boot: self.boot,
            seq: self.proposals,
        };
        let data = Command { proposal, change }.encode();
        match self.node.propose(Vec::new(), data) {
            Ok(()) => Ok(proposal),
            Err(raft::Error::ProposalDropped) => Err(GroupError::NoLeader),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a membership change.
    pub fn propose_conf_change(&mut self, change: ConfChangeV2) -> Result<(), GroupError> {
        match self.node.propose_conf_change(Vec::new(), change) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(GroupError::NoLeader),
            Err(e) => Err(e.into()),
        }
    }

    /// A snapshot message to `to` was handed over (`delivered`) or failed to go out. raft-rs
    /// sends nothing else to that follower until it hears this.
    pub fn snapshot_sent(&mut self, to: u64, delivered: bool) {
        let status = match delivered {
            true => raft::SnapshotStatus::Finish,
            false => raft::SnapshotStatus::Failure,
        };
        self.node.report_snapshot(to, status);
    }

    /// The next disk work, if any; none is handed out while one is in flight.
    pub fn next_persist(&mut self) -> Option<Persist> {
        if self.in_flight.is_some() || !self.node.has_ready() {
            return None;
        }
        let mut ready = self.node.ready();
        let persist = Persist {
            send_first: ready.take_messages(),
            snapshot: (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone()),
            entries: ready.take_entries(),
            hard_state: ready.hs().cloned(),
            send_after: ready.take_persisted_messages(),
        };
        self.in_flight = Some(ready);
        Some(persist)
    }

    /// The work from [`MetadataRaft::next_persist`] is durable.
    pub fn persisted(&mut self, persist: Persist) -> Result<Committed, GroupError> {
        let mut ready = self.in_flight.take().expect("a persist is in flight");
        if let Some(snapshot) = persist.snapshot {
            let metadata = decode_snapshot(&snapshot)?;
            let meta = snapshot.get_metadata();
            tracing::info!(
                index = meta.index,
                term = meta.term,
                version = metadata.version,
                "metadata snapshot from the leader installed"
            );
            (self.applied, self.applied_term) = (meta.index, meta.term);
            self.metadata = Arc::new(metadata);
            self.node.mut_store().install_snapshot(snapshot);
        }
        self.node.mut_store().append(&persist.entries);
        if let Some(hard_state) = persist.hard_state {
            self.node.mut_store().set_hard_state(hard_state);
        }
        let mut entries = ready.take_committed_entries();
        // Entries count as applied only once `apply` has applied them.
        let mut light = self.node.advance_append(ready);
        let mut send = persist.send_after;
        send.extend(light.take_messages());
        entries.extend(light.take_committed_entries());
        let hard_state = light.commit_index().map(|commit| {
            let mut hard_state = self.node.store().hard_state().clone();
            hard_state.commit = commit;
            hard_state
        });
        Ok(Committed {
            send,
            hard_state,
            entries,
        })
    }

    /// The commit index of `committed` is durable: applies its entries, in order.
    pub fn apply(&mut self, committed: Committed) -> Result<Vec<AppliedEntry>, GroupError> {
        if let Some(hard_state) = committed.hard_state {
            self.node.mut_store().set_commit(hard_state.commit);
        }
        let mut applied = Vec::with_capacity(committed.entries.len());
        let mut metadata: Option<Metadata> = None;
        for entry in committed.entries {
            if entry.index <= self.applied {
                continue;
            }
            let (command, outcome) = self.apply_entry(&entry, &mut metadata)?;
            (self.applied, self.applied_term) = (entry.index, entry.term);
            applied.push(AppliedEntry {
                index: entry.index,
                term: entry.term,
                command,
                outcome,
            });
        }
        if let Some(metadata) = metadata {
            self.metadata = Arc::new(metadata);
        }
        self.node.advance_apply_to(self.applied);
        Ok(applied)
    }

    fn apply_entry(
        &mut self,
        entry: &Entry,
        metadata: &mut Option<Metadata>,
    ) -> Result<(Option<Command>, Result<(), MetadataError>), GroupError> {
        match entry.get_entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => Ok((None, Ok(()))),
            EntryType::EntryNormal => match Command::decode(&entry.data) {
                Ok(command) => {
                    let next = metadata.get_or_insert_with(|| (*self.metadata).clone());
                    let outcome = next.apply(&command.change);
                    Ok((Some(command), outcome))
                }
                Err(e) => {
                    // Written by a newer or broken peer: every node skips it the same way.
                    tracing::error!(index = entry.index, error = %e, "undecodable metadata entry skipped");
                    Ok((None, Err(MetadataError::Invalid(e.to_string()))))
                }
            },
            EntryType::EntryConfChange => {
                let change = ConfChange::parse_from_bytes(&entry.data)
                    .map_err(|e| raft::Error::ConfChangeError(e.to_string()))?;
                self.node.apply_conf_change(&change)?;
                Ok((None, Ok(())))
            }
            EntryType::EntryConfChangeV2 => {
                let change = ConfChangeV2::parse_from_bytes(&entry.data)
                    .map_err(|e| raft::Error::ConfChangeError(e.to_string()))?;
                self.node.apply_conf_change(&change)?;
                Ok((None, Ok(())))
            }
        }
    }

    /// A snapshot of the applied metadata when enough entries were applied since the last
    /// one, or when the membership changed since (a leader sends a new member its latest
    /// snapshot, and raft-rs refuses one whose membership lacks the receiver); make it
    /// durable, then call [`MetadataRaft::snapshot_saved`].
    pub fn snapshot_due(&self) -> Option<Snapshot> {
        let since = self.applied - self.node.store().snapshot_index();
        let snapshotted = raft::Storage::initial_state(self.node.store())
            .expect("the memory log always answers")
            .conf_state;
        let members_changed = membership(&self.conf_state()) != membership(&snapshotted);
        if since == 0 || (since < self.settings.snapshot_entries && !members_changed) {
            return None;
        }
        let mut snapshot = Snapshot {
            data: serde_json::to_vec(&*self.metadata)
                .expect("metadata serialises")
                .into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = self.applied_term;
        meta.set_conf_state(self.conf_state());
        Some(snapshot)
    }

    /// The snapshot is durable: the log before it can go.
    pub fn snapshot_saved(&mut self, snapshot: Snapshot) {
        self.node.mut_store().compact_to(snapshot);
    }

    /// The voters and learners as of the applied entries.
    pub fn conf_state(&self) -> ConfState {
        self.node.raft.prs().conf().to_conf_state()
    }

    /// Hands the leadership to the voter that holds the most of the log (a leader about to
    /// stop, so the group does not wait out an election timeout); the voter chosen, if this
    /// node leads and has another voter.
    pub fn transfer_leadership(&mut self) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let me = self.id();
        let voters = self.conf_state().voters;
        let target = (voters.iter().copied())
            .filter(|&v| v != me)
            .max_by_key(|&v| self.node.raft.prs().get(v).map_or(0, |p| p.matched))?;
        self.node.transfer_leader(target);
        Some(target)
    }

    /// The voters and learners, with how far each has replicated the log when this node
    /// leads (only a leader tracks it).
    pub fn members(&self) -> Vec<Member> {
        let conf = self.conf_state();
        let leading = self.is_leader();
        let member = |id: u64, learner: bool| Member {
            id,
            learner,
            matched: (self.node.raft.prs().get(id))
                .filter(|_| leading)
                .map(|progress| progress.matched),
        };
        (conf.voters.iter().map(|&id| member(id, false)))
            .chain(conf.learners.iter().map(|&id| member(id, true)))
            .collect()
    }

    /// The metadata as of the last applied entry.
    pub fn metadata(&self) -> &Arc<Metadata> {
        &self.metadata
    }

    /// Index of the last applied entry.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The durable commit index.
    pub fn commit(&self) -> u64 {
        self.node.store().hard_state().commit
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Whether this node leads the group.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this node knows of (0: none).
    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    /// Index of the last entry in the durable log.
    pub fn last_index(&self) -> u64 {
        raft::Storage::last_index(self.node.store()).expect("the memory log always answers")
    }

    /// Index of the latest snapshot.
    pub fn snapshot_index(&self) -> u64 {
        self.node.store().snapshot_index()
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.settings.node_id
    }
}

fn decode_snapshot(snapshot: &Snapshot) -> Result<Metadata, GroupError> {
    if snapshot.data.is_empty() {
        return Ok(Metadata::default());
    }
    serde_json::from_slice(&snapshot.data).map_err(|e| GroupError::DamagedSnapshot {
        index: snapshot.get_metadata().index,
        reason: e.to_string(),
    })
}

/// Voters and learners, in an order that compares.
fn membership(conf: &ConfState) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let set = |ids: &[u64]| ids.iter().copied().collect();
    (set(&conf.voters), set(&conf.learners))
}
