//! The simulated world's pieces: records, frames between brokers, a broker's replica, and
//! the history the checks compare against.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use oxbow_cluster::replication::{Follower, LeaderProgress, PartitionKey, ReplicationSettings};
use oxbow_storage::LeaderEpochs;
use std::collections::BTreeMap;

pub const BROKERS: [i32; 4] = [1, 2, 3, 4];
/// The partition's replicas at creation; broker 4 comes in through reassignments.
pub const INITIAL_REPLICAS: [i32; 3] = [1, 2, 3];
pub const TOPIC: &str = "t";
pub const TOPIC_ID: [u8; 16] = [7; 16];
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

/// A frame on its way between two brokers.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: i32,
    pub to: i32,
    pub frame: Bytes,
}

/// Records as the "batches" a data frame carries: 12 bytes each.
pub fn encode_records(records: &[Record]) -> Bytes {
    let mut out = BytesMut::with_capacity(records.len() * 12);
    for r in records {
        out.put_i32(r.epoch);
        out.put_u64(r.value);
    }
    out.freeze()
}

pub fn decode_records(mut bytes: Bytes) -> Vec<Record> {
    assert_eq!(bytes.len() % 12, 0, "record bytes cut short");
    let mut out = Vec::new();
    while bytes.has_remaining() {
        out.push(Record {
            epoch: bytes.get_i32(),
            value: bytes.get_u64(),
        });
    }
    out
}

/// The partition's key on the wire at `epoch`.
pub fn key(epoch: i32) -> PartitionKey {
    PartitionKey {
        topic_id: TOPIC_ID,
        partition: 0,
        leader_epoch: epoch,
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
    /// Its conversation with the leader it follows (none while it leads).
    pub follower: Option<Follower>,
    pub leading: Option<LeaderProgress>,
}

impl Replica {
    pub fn crash(&mut self) {
        self.alive = false;
        self.log.truncate(self.durable);
        self.epochs.truncate_from(self.durable as u64);
        self.hw = self.hw.min(self.durable as u64);
        self.follower = None;
        self.leading = None;
    }

    /// Cuts the log at `end`; answers how many records went.
    pub fn truncate(&mut self, end: u64) -> u64 {
        let cut = self.log.len() as u64 - end.min(self.log.len() as u64);
        self.log.truncate(end as usize);
        self.durable = self.durable.min(self.log.len());
        self.epochs.truncate_from(end);
        self.hw = self.hw.min(end);
        cut
    }

    /// No longer a replica: its files are deleted (a later reassignment starts it empty).
    pub fn remove(&mut self) {
        self.log.clear();
        self.durable = 0;
        self.epochs = LeaderEpochs::default();
        self.hw = 0;
        self.view = (-2, -1);
        self.follower = None;
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
    pub shutdowns: u64,
    pub rebalances: u64,
    pub truncated: u64,
    pub elections: u64,
    pub isr_changes: u64,
    pub refused: u64,
    pub reassignments: u64,
    pub completed: u64,
    pub cancelled: u64,
}
