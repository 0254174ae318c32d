//! One simulated machine: its disk (which outlives crashes) and, while it is up, the metadata
//! group node running on it.

use oxbow_cluster::metadata_group::{
    tracing_logger, GroupSettings, Message, MetadataRaft, Outbox, RaftDisk,
};
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::Disk;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

const DIR: &str = "/data/.oxbow/metadata";

/// A node while its process runs.
pub struct Running {
    pub core: MetadataRaft,
    pub disk: RaftDisk,
    /// The commit index it recovered: it serves once it has applied that far.
    pub recovered_commit: u64,
}

/// A machine.
pub struct Machine {
    pub id: u64,
    pub disk: SimDisk,
    pub running: Option<Running>,
}

impl Machine {
    pub fn new(id: u64, seed: u64, yields_max: usize) -> Machine {
        Machine {
            id,
            disk: SimDisk::with_latency(seed, yields_max),
            running: None,
        }
    }

    /// Boots the node from what its disk holds.
    pub async fn boot(&mut self, voters: &[u64], settings: GroupSettings, boot: u64) {
        let disk: Rc<dyn Disk> = Rc::new(self.disk.boot());
        let (raft_disk, log) = RaftDisk::open(Path::new(DIR), disk, voters, 64 * 1024)
            .await
            .unwrap_or_else(|e| panic!("node {} cannot recover: {e}", self.id));
        let recovered_commit = log.hard_state().commit;
        let core = MetadataRaft::new(settings, log, boot, &tracing_logger(self.id))
            .unwrap_or_else(|e| panic!("node {} cannot start: {e}", self.id));
        self.running = Some(Running {
            core,
            disk: raft_disk,
            recovered_commit,
        });
    }

    /// Loses power: the process is gone and the disk keeps what it keeps.
    pub fn crash(&mut self, rng: &mut fastrand::Rng) {
        self.running = None;
        let keep = CrashKeep {
            sector: rng.f64(),
            set_len: rng.f64(),
        };
        self.disk.crash(rng, keep);
    }
}

/// Runs a node's work to completion, or, when `crash_after` polls is reached first, abandons
/// it midway (the caller then crashes the machine). Between polls other tasks (the log's
/// writer) run, so the abandoned work may be anywhere inside a disk operation.
pub async fn run_or_abandon<F: Future>(work: F, crash_after: Option<usize>) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let mut polls = 0;
    loop {
        if crash_after == Some(polls) {
            return None;
        }
        if let Some(done) = futures_lite::future::poll_once(&mut work).await {
            return Some(done);
        }
        polls += 1;
        futures_lite::future::yield_now().await;
    }
}

/// Collects what a node sends during a cycle, for the network to carry.
#[derive(Default)]
pub struct Collected(pub Vec<Message>);

impl Outbox for Collected {
    fn send(&mut self, messages: Vec<Message>) {
        self.0.extend(messages);
    }
}
