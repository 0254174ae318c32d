//! The simulated world's pieces: records, messages between brokers, a broker's replica, and
//! the history the checks compare against.

use oxbow_cluster::replication::{LeaderProgress, ReplicationSettings};
use oxbow_storage::LeaderEpochs;
use std::collections::BTreeMap;

pub const BROKERS: [i32; 3] = [1, 2, 3];
pub const TOPIC: &str = "t";
pub const STEPS: usize = 1_000;
/// Records a fetch answer carries at most.
pub const FETCH_RECORDS_MAX: usize = 4;
pub const SETTINGS: ReplicationSettings = ReplicationSettings {
    replica_lag_time_max_ms: 300,
    min_insync_replicas: 2,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub epoch: i32,
    pub value: u64,
}

#[derive(Debug, Clone)]
pub enum Message {
    EpochQuery {
        from: i32,
        to: i32,
        leader_epoch: i32,
        latest: Option<i32>,
    },
    EpochAnswer {
        to: i32,
        leader_epoch: i32,
        answer: Option<(i32, u64)>,
    },
    Fetch {
        from: i32,
        to: i32,
        leader_epoch: i32,
        offset: u64,
        durable: u64,
    },
    Data {
        to: i32,
        leader_epoch: i32,
        offset: u64,
        records: Vec<Record>,
        hw: u64,
    },
}

impl Message {
    pub fn to(&self) -> i32 {
        match self {
            Message::EpochQuery { to, .. }
            | Message::EpochAnswer { to, .. }
            | Message::Fetch { to, .. }
            | Message::Data { to, .. } => *to,
        }
    }
}

pub struct Replica {
    pub id: i32,
    pub alive: bool,
    pub log: Vec<Record>,
    /// What survives a crash (the flush policy is `always` once fsynced).
    pub durable: usize,
    pub epochs: LeaderEpochs,
    /// The high watermark this replica knows.
    pub hw: u64,
    /// (leader, epoch) of the metadata it last saw.
    pub view: (i32, i32),
    /// The leader epoch it has truncated against (a follower fetches only after that).
    pub synced: Option<i32>,
    pub leading: Option<LeaderProgress>,
}

impl Replica {
    pub fn crash(&mut self) {
        self.alive = false;
        self.log.truncate(self.durable);
        self.epochs.truncate_from(self.durable as u64);
        self.hw = self.hw.min(self.durable as u64);
        self.synced = None;
        self.leading = None;
    }

    pub fn fsync(&mut self) -> Option<u64> {
        self.durable = self.log.len();
        self.leading.as_mut()?.local_appended(self.durable as u64)
    }
}

/// What the checks compare against.
#[derive(Default)]
pub struct History {
    /// Every offset a high watermark ever covered, with its record.
    pub committed: Vec<Record>,
    /// Acknowledged produces: offset → value.
    pub acked: BTreeMap<u64, u64>,
    /// Produces waiting for acks=all: (leader, epoch, offset, value).
    pub pending: Vec<(i32, i32, u64, u64)>,
    pub acks: u64,
    pub crashes: u64,
    pub truncated: u64,
    pub elections: u64,
    pub isr_changes: u64,
    pub refused: u64,
}
