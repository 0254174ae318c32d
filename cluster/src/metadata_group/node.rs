//! The metadata group's node as the broker runs it: one task on shard 0 owns the core and its
//! disk, ticks it, feeds it peers' messages and proposals, and runs cycles; callers propose a
//! change and await the metadata that includes it.

use super::command::ProposalId;
use super::cycle::{run_cycle, NodeError, Outbox};
use super::durable::RaftDisk;
use super::group::{GroupError, Member, MetadataRaft};
use crate::metadata::{Metadata, MetadataChange, MetadataError};
use raft::prelude::{ConfChangeV2, Message};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a proposal did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// Committed, but the change does not apply to the metadata it met.
    #[error(transparent)]
    Refused(#[from] MetadataError),
    /// No leader committed it in time (none elected, or no quorum reachable); it may still
    /// commit later.
    #[error("the metadata group did not commit the change within {0:?}")]
    TimedOut(Duration),
    /// A new leader was elected before the change was applied: it may have been lost with the
    /// old leader or may still commit. Retry (a retried creation may then find its topic).
    #[error("the metadata group changed leader before the change was applied; it may or may not have committed")]
    LeaderChanged,
    /// No leader is known to hand a membership change to; retry.
    #[error("no leader of the metadata group is known")]
    NoLeader,
    /// The node stopped (its disk failed, or the broker is shutting down).
    #[error("the metadata node stopped: {0}")]
    Stopped(String),
}

type Reply = flume::Sender<Result<Arc<Metadata>, ProposeError>>;

enum Input {
    Tick,
    Step(Message),
    Propose {
        change: MetadataChange,
        reply: Reply,
        deadline: Instant,
    },
    Membership {
        change: ConfChangeV2,
        reply: flume::Sender<Result<(), ProposeError>>,
    },
    TransferLeadership(flume::Sender<Option<u64>>),
    Close(flume::Sender<()>),
}

/// Where a node stands in the group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The current term.
    pub term: u64,
    /// The leader this node knows of (Raft id; 0: none).
    pub leader: u64,
    /// The durable commit index.
    pub commit: u64,
    /// The last applied index.
    pub applied: u64,
    /// Times the leader this node knows of changed.
    pub leader_changes: u64,
}

/// What a node's proposals came to, for the metrics endpoint.
#[derive(Debug, Clone)]
pub struct ProposalStats {
    /// Committed and applied.
    pub committed: u64,
    /// Committed but refused by the metadata.
    pub refused: u64,
    /// Timed out, lost to a change of leader, or the node stopped.
    pub failed: u64,
    /// Time from proposal to answer, in microseconds, of every proposal.
    pub latency_us: hdrhistogram::Histogram<u64>,
}

impl Default for ProposalStats {
    fn default() -> ProposalStats {
        ProposalStats {
            committed: 0,
            refused: 0,
            failed: 0,
            // Up to an hour, three significant digits.
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid bounds"),
        }
    }
}

/// What the node shares with its handles.
#[derive(Default)]
struct Shared {
    metadata: Arc<Metadata>,
    status: NodeStatus,
    stopped: Option<String>,
    /// Callers waiting for the metadata to reach a version.
    waiters: Vec<(u64, flume::Sender<Arc<Metadata>>)>,
    proposals: ProposalStats,
    /// When a message last arrived from each peer (by Raft id): the leader's measure of its
    /// members' liveness.
    heard: HashMap<u64, Instant>,
    members: Vec<Member>,
}

/// A handle to the node, on the shard that runs it.
#[derive(Clone)]
pub struct MetadataNode {
    inputs: flume::Sender<Input>,
    shared: Rc<RefCell<Shared>>,
    proposal_timeout: Duration,
}

impl MetadataNode {
    /// Starts the node's tasks on the current executor. A group with this node as its only
    /// voter elects it at once.
    pub fn spawn(
        mut core: MetadataRaft,
        disk: RaftDisk,
        outbox: Box<dyn Outbox>,
        tick: Duration,
        proposal_timeout: Duration,
    ) -> Result<MetadataNode, NodeError> {
        core.campaign_if_sole_voter()?;
        let (inputs, receiver) = flume::unbounded();
        let shared = Rc::new(RefCell::new(Shared {
            metadata: core.metadata().clone(),
            ..Shared::default()
        }));
        let runner = Runner {
            core,
            disk,
            outbox,
            shared: shared.clone(),
            waiting: HashMap::new(),
            queued: Vec::new(),
            proposal_timeout,
        };
        glommio::spawn_local(runner.run(receiver)).detach();
        let ticks = inputs.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                if ticks.send(Input::Tick).is_err() {
                    return;
                }
            }
        })
        .detach();
        Ok(MetadataNode {
            inputs,
            shared,
            proposal_timeout,
        })
    }

    /// The metadata as of the last applied entry.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.shared.borrow().metadata.clone()
    }

    /// Where the node stands: term, leader, commit and applied index, as of its last cycle.
    pub fn status(&self) -> NodeStatus {
        self.shared.borrow().status
    }

    /// Waits until this node has applied metadata of at least `version` (changes from any
    /// node of the group), and returns it; `None` if the node stops first.
    pub async fn applied_version(&self, version: u64) -> Option<Arc<Metadata>> {
        let waiting = {
            let mut shared = self.shared.borrow_mut();
            if shared.metadata.version >= version {
                return Some(shared.metadata.clone());
            }
            if shared.stopped.is_some() {
                return None;
            }
            let (waiter, waiting) = flume::bounded(1);
            shared.waiters.push((version, waiter));
            waiting
        };
        waiting.recv_async().await.ok()
    }

    /// Proposes a change and waits until it is committed and applied here: the metadata then
    /// (including the change), or why not.
    pub async fn propose(&self, change: MetadataChange) -> Result<Arc<Metadata>, ProposeError> {
        if let Some(why) = &self.shared.borrow().stopped {
            return Err(ProposeError::Stopped(why.clone()));
        }
        let (reply, answer) = flume::bounded(1);
        let started = Instant::now();
        let deadline = started + self.proposal_timeout;
        let input = Input::Propose {
            change,
            reply,
            deadline,
        };
        if self.inputs.send(input).is_err() {
            return Err(ProposeError::Stopped("the node's task ended".into()));
        }
        let outcome = answer
            .recv_async()
            .await
            .unwrap_or_else(|_| Err(ProposeError::Stopped("the node's task ended".into())));
        let mut shared = self.shared.borrow_mut();
        let stats = &mut shared.proposals;
        match &outcome {
            Ok(_) => stats.committed += 1,
            Err(ProposeError::Refused(_)) => stats.refused += 1,
            Err(_) => stats.failed += 1,
        }
        stats
            .latency_us
            .saturating_record(started.elapsed().as_micros() as u64);
        outcome
    }

    /// What this node's proposals came to.
    pub fn proposal_stats(&self) -> ProposalStats {
        self.shared.borrow().proposals.clone()
    }

    /// A message from a peer.
    pub fn step(&self, message: Message) {
        (self.shared.borrow_mut().heard).insert(message.from, Instant::now());
        let _ = self.inputs.send(Input::Step(message));
    }

    /// The group's voters and learners as of the last cycle (with their progress when this
    /// node leads).
    pub fn members(&self) -> Vec<Member> {
        self.shared.borrow().members.clone()
    }

    /// Hands a membership change to Raft (forwarded to the leader). It commits later, or is
    /// dropped when another change is in flight: the caller watches [`MetadataNode::members`].
    pub async fn propose_membership(&self, change: ConfChangeV2) -> Result<(), ProposeError> {
        let (reply, answer) = flume::bounded(1);
        if self
            .inputs
            .send(Input::Membership { change, reply })
            .is_err()
        {
            return Err(ProposeError::Stopped("the node's task ended".into()));
        }
        (answer.recv_async().await)
            .unwrap_or_else(|_| Err(ProposeError::Stopped("the node's task ended".into())))
    }

    /// Asks this node, if it leads, to hand the leadership to the most caught-up voter; the
    /// voter asked, if any. The change shows in [`MetadataNode::status`] once it happened.
    pub async fn transfer_leadership(&self) -> Option<u64> {
        let (reply, answer) = flume::bounded(1);
        self.inputs.send(Input::TransferLeadership(reply)).ok()?;
        answer.recv_async().await.ok().flatten()
    }

    /// When a message last arrived from `peer` (a Raft id).
    pub fn last_heard(&self, peer: u64) -> Option<Instant> {
        self.shared.borrow().heard.get(&peer).copied()
    }

    /// Stops the node after the cycle in progress and closes its log.
    pub async fn close(&self) {
        let (done, closed) = flume::bounded(1);
        if self.inputs.send(Input::Close(done)).is_ok() {
            let _ = closed.recv_async().await;
        }
    }
}

struct Runner {
    core: MetadataRaft,
    disk: RaftDisk,
    outbox: Box<dyn Outbox>,
    shared: Rc<RefCell<Shared>>,
    /// Proposals handed to Raft, answered when applied: the caller, the deadline, and the
    /// term they were proposed in.
    waiting: HashMap<ProposalId, (Reply, Instant, u64)>,
    /// Proposals that found no leader yet, tried again on every tick.
    queued: Vec<(MetadataChange, Reply, Instant)>,
    proposal_timeout: Duration,
}

impl Runner {
    async fn run(mut self, inputs: flume::Receiver<Input>) {
        let mut closing = None;
        while let Ok(first) = inputs.recv_async().await {
            let mut batch = vec![first];
            batch.extend(inputs.try_iter());
            // Ticks that piled up behind a slow fdatasync count once: a stall of this node's
            // disk is not time the leader was silent.
            let mut ticked = false;
            batch.retain(|input| {
                !matches!(input, Input::Tick) || !std::mem::replace(&mut ticked, true)
            });
            let mut outcome = Ok(());
            for input in batch {
                match input {
                    Input::Close(done) => closing = Some(done),
                    input => outcome = outcome.and_then(|()| self.take(input)),
                }
            }
            if outcome.is_ok() {
                outcome = self.run_cycles().await;
            }
            if let Err(e) = outcome {
                tracing::error!(error = %e, "the metadata node stops");
                self.stop(e.to_string());
                break;
            }
            if closing.is_some() {
                self.stop("the broker is shutting down".into());
                break;
            }
        }
        self.disk.close().await;
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn take(&mut self, input: Input) -> Result<(), NodeError> {
        match input {
            Input::Tick => {
                self.core.tick();
                self.expire(Instant::now());
                let queued = std::mem::take(&mut self.queued);
                for (change, reply, deadline) in queued {
                    self.propose(change, reply, deadline)?;
                }
            }
            Input::Step(message) => self.core.step(message)?,
            Input::Propose {
                change,
                reply,
                deadline,
            } => self.propose(change, reply, deadline)?,
            Input::Membership { change, reply } => {
                let outcome = match self.core.propose_conf_change(change) {
                    Ok(()) => Ok(()),
                    Err(GroupError::NoLeader) => Err(ProposeError::NoLeader),
                    // A change Raft cannot make (it says why) must not stop the node.
                    Err(e) => Err(ProposeError::Refused(MetadataError::Invalid(e.to_string()))),
                };
                let _ = reply.send(outcome);
            }
            Input::TransferLeadership(reply) => {
                let _ = reply.send(self.core.transfer_leadership());
            }
            Input::Close(_) => unreachable!("handled by the loop"),
        }
        Ok(())
    }

    fn propose(
        &mut self,
        change: MetadataChange,
        reply: Reply,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        match self.core.propose(change.clone()) {
            Ok(id) => {
                self.waiting.insert(id, (reply, deadline, self.core.term()));
            }
            Err(GroupError::NoLeader) => self.queued.push((change, reply, deadline)),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn run_cycles(&mut self) -> Result<(), NodeError> {
        while let Some(cycle) = run_cycle(&mut self.core, &self.disk, self.outbox.as_mut()).await? {
            for (to, delivered) in self.outbox.take_snapshot_reports() {
                self.core.snapshot_sent(to, delivered);
            }
            let metadata = self.core.metadata().clone();
            self.publish(&metadata);
            for entry in cycle.applied {
                let Some(command) = entry.command else {
                    continue;
                };
                if let Some((reply, _, _)) = self.waiting.remove(&command.proposal) {
                    let answer = entry.outcome.map(|()| metadata.clone());
                    let _ = reply.send(answer.map_err(ProposeError::Refused));
                }
            }
            // A proposal forwarded to a leader that is gone is lost without a word from
            // raft-rs: answer it now rather than at its deadline, as Kafka answers a request
            // forwarded to a controller that failed.
            let term = self.core.term();
            self.waiting.retain(|_, (reply, _, proposed_in)| {
                let stale = *proposed_in < term;
                if stale {
                    let _ = reply.send(Err(ProposeError::LeaderChanged));
                }
                !stale
            });
        }
        Ok(())
    }

    /// Shares what the node knows now and wakes those waiting for a version it reached.
    fn publish(&mut self, metadata: &Arc<Metadata>) {
        let mut shared = self.shared.borrow_mut();
        shared.metadata = metadata.clone();
        let leader = self.core.leader();
        let changed = (leader != shared.status.leader) as u64;
        shared.status = NodeStatus {
            term: self.core.term(),
            leader,
            commit: self.core.commit(),
            applied: self.core.applied(),
            leader_changes: shared.status.leader_changes + changed,
        };
        shared.members = self.core.members();
        let version = metadata.version;
        shared.waiters.retain(|(wanted, waiter)| {
            let reached = version >= *wanted;
            if reached {
                let _ = waiter.send(metadata.clone());
            }
            !reached
        });
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.proposal_timeout;
        let expire = |reply: &Reply, deadline: &Instant| {
            let expired = *deadline <= now;
            if expired {
                let _ = reply.send(Err(ProposeError::TimedOut(timeout)));
            }
            !expired
        };
        self.waiting
            .retain(|_, (reply, deadline, _)| expire(reply, deadline));
        self.queued
            .retain(|(_, reply, deadline)| expire(reply, deadline));
    }

    fn stop(&mut self, why: String) {
        let mut shared = self.shared.borrow_mut();
        shared.stopped = Some(why.clone());
        shared.waiters.clear();
        drop(shared);
        for (_, (reply, _, _)) in self.waiting.drain() {
            let _ = reply.send(Err(ProposeError::Stopped(why.clone())));
        }
        for (_, reply, _) in self.queued.drain(..) {
            let _ = reply.send(Err(ProposeError::Stopped(why.clone())));
        }
    }
}
