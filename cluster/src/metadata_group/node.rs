//! The metadata group's node as the broker runs it: one task on shard 0 owns the core and its
//! disk, ticks it, feeds it peers' messages and proposals, and runs cycles; callers propose a
//! change and await the metadata that includes it.

use super::command::ProposalId;
use super::cycle::{run_cycle, NodeError, Outbox};
use super::durable::RaftDisk;
use super::group::{GroupError, MetadataRaft};
use crate::metadata::{Metadata, MetadataChange, MetadataError};
use raft::prelude::Message;
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
    Close(flume::Sender<()>),
}

/// What the node shares with its handles.
#[derive(Default)]
struct Shared {
    metadata: Arc<Metadata>,
    stopped: Option<String>,
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
            stopped: None,
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

    /// Proposes a change and waits until it is committed and applied here: the metadata then
    /// (including the change), or why not.
    pub async fn propose(&self, change: MetadataChange) -> Result<Arc<Metadata>, ProposeError> {
        if let Some(why) = &self.shared.borrow().stopped {
            return Err(ProposeError::Stopped(why.clone()));
        }
        let (reply, answer) = flume::bounded(1);
        let deadline = Instant::now() + self.proposal_timeout;
        let input = Input::Propose {
            change,
            reply,
            deadline,
        };
        if self.inputs.send(input).is_err() {
            return Err(ProposeError::Stopped("the node's task ended".into()));
        }
        answer
            .recv_async()
            .await
            .unwrap_or_else(|_| Err(ProposeError::Stopped("the node's task ended".into())))
    }

    /// A message from a peer.
    pub fn step(&self, message: Message) {
        let _ = self.inputs.send(Input::Step(message));
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
    /// Proposals handed to Raft, answered when applied.
    waiting: HashMap<ProposalId, (Reply, Instant)>,
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
                self.waiting.insert(id, (reply, deadline));
            }
            Err(GroupError::NoLeader) => self.queued.push((change, reply, deadline)),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn run_cycles(&mut self) -> Result<(), NodeError> {
        while let Some(cycle) = run_cycle(&mut self.core, &self.disk, self.outbox.as_mut()).await? {
            let metadata = self.core.metadata().clone();
            self.shared.borrow_mut().metadata = metadata.clone();
            for entry in cycle.applied {
                let Some(command) = entry.command else {
                    continue;
                };
                if let Some((reply, _)) = self.waiting.remove(&command.proposal) {
                    let answer = entry.outcome.map(|()| metadata.clone());
                    let _ = reply.send(answer.map_err(ProposeError::Refused));
                }
            }
        }
        Ok(())
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
            .retain(|_, (reply, deadline)| expire(reply, deadline));
        self.queued
            .retain(|(_, reply, deadline)| expire(reply, deadline));
    }

    fn stop(&mut self, why: String) {
        self.shared.borrow_mut().stopped = Some(why.clone());
        for (_, (reply, _)) in self.waiting.drain() {
            let _ = reply.send(Err(ProposeError::Stopped(why.clone())));
        }
        for (_, reply, _) in self.queued.drain(..) {
            let _ = reply.send(Err(ProposeError::Stopped(why.clone())));
        }
    }
}
