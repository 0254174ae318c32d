//! The metadata group's log on disk, under the storage rules (every byte through the storage
//! [`Disk`], fdatasync before anything is acknowledged, recovery that cuts a torn tail).
//!
//! ```text
//! <dir>/log/        an ordinary partition log: entry i at offset i - 1, one batch per entry
//!                   (leader epoch = the entry's term, one record whose value is the protobuf
//!                   Entry), so truncating at an entry never cuts another
//! <dir>/state       crc32 + JSON: term, vote, commit, and the voters the group started with
//! <dir>/snapshot    crc32 + protobuf Snapshot (the applied metadata as JSON, its index, term
//!                   and conf state); written before the log below it is deleted
//! ```
//! Like KRaft's `__cluster_metadata`, the Raft log is a partition log; a follower that installs
//! a snapshot restarts its log at the snapshot's index.

use super::group::Persist;
use super::memory_log::MemoryLog;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig, RecordBatch};
use oxbow_storage::io::write_file_atomically;
use oxbow_storage::ordered::all_in_order;
use oxbow_storage::{Disk, OpenOptions, Partition};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Why the metadata log cannot be read or written. Any of these stops the node's part in the
/// group: Raft must not answer for state it could not make durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftDiskError {
    /// A disk operation failed.
    #[error("metadata log {path:?}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Stored bytes do not decode or do not fit together.
    #[error("metadata log {path:?} is damaged: {reason}")]
    Damaged {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The hard state and the group's first voters, in `<dir>/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StateFile {
    term: u64,
    vote: u64,
    commit: u64,
    /// The voters of the group as it was first started (the conf state before any entry).
    voters: Vec<u64>,
}

/// The durable side of one node's metadata log.
pub struct RaftDisk {
    dir: PathBuf,
    disk: Rc<dyn Disk>,
    log: Partition,
    voters: Vec<u64>,
}

impl RaftDisk {
    /// Opens (creating) the log in `dir` and recovers it. `initial_voters` are used only the
    /// first time: a node that joins an existing group passes none and waits for a snapshot.
    pub async fn open(
        dir: &Path,
        disk: Rc<dyn Disk>,
        initial_voters: &[u64],
        segment_bytes_max: u64,
    ) -> Result<(RaftDisk, MemoryLog), RaftDiskError> {
        disk.create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let defaults = LogConfig::default();
        let config = LogConfig {
            segment_bytes_max,
            // An entry must fit a batch, and a batch a segment.
            batch_bytes_max: defaults.batch_bytes_max.min(segment_bytes_max as u32),
            flush: FlushPolicy::Always,
            retention_age_max_ms: None,
            ..defaults
        };
        let log_dir = dir.join("log");
        let log = Partition::open(&log_dir, config, OpenOptions::with_disk(disk.clone()))
            .await
            .map_err(|e| io_error(&log_dir, e))?;
        let snapshot = read_snapshot(disk.as_ref(), &dir.join("snapshot"))?;
        let state = read_state(disk.as_ref(), &dir.join("state"))?;
        let mut raft_disk = RaftDisk {
            dir: dir.to_path_buf(),
            disk,
            log,
            voters: Vec::new(),
        };
        let state = match state {
            Some(state) => state,
            None => {
                let state = StateFile {
                    voters: initial_voters.to_vec(),
                    ..StateFile::default()
                };
                raft_disk.write_state(&state).await?;
                state
            }
        };
        raft_disk.voters = state.voters.clone();
        let memory = raft_disk.recover(snapshot, state).await?;
        Ok((raft_disk, memory))
    }

    async fn recover(
        &self,
        snapshot: Snapshot,
        state: StateFile,
    ) -> Result<MemoryLog, RaftDiskError> {
        let snapshot_index = snapshot.get_metadata().index;
        // A snapshot installed just before a crash, before the log restarted after it: the
        // old log ends before it, or holds a different entry at its index (so what follows
        // belongs to another history).
        if self.log.log_end_offset() < snapshot_index
            || !self.agrees_with(snapshot.get_metadata()).await?
        {
            self.log
                .restart_at(snapshot_index)
                .await
                .map_err(|e| io_error(&self.log_dir(), e))?;
        }
        if self.log.log_start_offset() > snapshot_index {
            return Err(self.damaged(format!(
                "the log starts after entry {} but the snapshot ends at {snapshot_index}",
                self.log.log_start_offset()
            )));
        }
        let entries = self.read_entries(snapshot_index).await?;
        let last = entries.last().map_or(snapshot_index, |e| e.index);
        let hard_state = HardState {
            term: state.term.max(snapshot.get_metadata().term),
            vote: state.vote,
            commit: state.commit.clamp(snapshot_index, last),
            ..HardState::default()
        };
        let conf_state = match snapshot_index {
            0 => voters_conf_state(&state.voters),
            _ => snapshot.get_metadata().get_conf_state().clone(),
        };
        tracing::debug!(dir = ?self.dir, snapshot_index, last, commit = hard_state.commit,
            "metadata log recovered");
        Ok(MemoryLog::new(snapshot, conf_state, entries, hard_state))
    }

    /// Whether the log's entry at the snapshot's index, if the log still holds it, has the
    /// snapshot's term. A log compacted past it (a snapshot this node took) agrees.
    async fn agrees_with(&self, snapshot: &SnapshotMetadata) -> Result<bool, RaftDiskError> {
        let Some(offset) = snapshot.index.checked_sub(1) else {
            return Ok(true);
        };
        if offset < self.log.log_start_offset() || offset >= self.log.log_end_offset() {
            return Ok(true);
        }
        let batches = (self.log.read(offset, 1).await).map_err(|e| io_error(&self.log_dir(), e))?;
        let Some(batch) = batches.iter().find(|b| b.base_offset() == offset) else {
            return Err(self.damaged(format!("no entry at offset {offset}")));
        };
        let entry = decode_entry(batch).map_err(|reason| self.damaged(reason))?;
        Ok(entry.term == snapshot.term)
    }

    /// Every entry after `snapshot_index`, checked against its place in the log.
    async fn read_entries(&self, snapshot_index: u64) -> Result<Vec<Entry>, RaftDiskError> {
        let mut entries = Vec::new();
        let mut offset = snapshot_index;
        loop {
            let batches = self
                .log
                .read(offset, 1 << 20)
                .await
                .map_err(|e| io_error(&self.log_dir(), e))?;
            if batches.is_empty() {
                return Ok(entries);
            }
            for batch in batches {
                if batch.base_offset() < offset {
                    continue;
                }
                let entry = decode_entry(&batch).map_err(|reason| self.damaged(reason))?;
                if entry.index != offset + 1 {
                    return Err(
                        self.damaged(format!("entry {} stored at offset {offset}", entry.index))
                    );
                }
                offset += 1;
                entries.push(entry);
            }
        }
    }

    /// Makes one round of Raft's disk work durable, in order: a received snapshot (the log
    /// restarts after it), the entries (replacing any suffix they conflict with), the hard
    /// state.
    pub async fn persist(&self, persist: &Persist) -> Result<(), RaftDiskError> {
        if let Some(snapshot) = &persist.snapshot {
            self.write_snapshot(snapshot).await?;
            let index = snapshot.get_metadata().index;
            self.log
                .restart_at(index)
                .await
                .map_err(|e| io_error(&self.log_dir(), e))?;
        }
        if let Some(first) = persist.entries.first() {
            let offset = first.index - 1;
            let end = self.log.log_end_offset();
            assert!(
                offset <= end,
                "entry {} would leave a gap after the log end {end}",
                first.index
            );
            if offset < end {
                self.log
                    .truncate_to(offset)
                    .await
                    .map_err(|e| io_error(&self.log_dir(), e))?;
            }
            let appends: Vec<_> = persist
                .entries
                .iter()
                .map(|entry| self.log.append_replicated(encode_entry(entry)))
                .collect();
            for appended in all_in_order(appends).await {
                appended.map_err(|e| io_error(&self.log_dir(), e))?;
            }
        }
        if let Some(hard_state) = &persist.hard_state {
            self.write_hard_state(hard_state).await?;
        }
        Ok(())
    }

    /// Seeds a new log with metadata kept before the group existed (`data`, the metadata as
    /// JSON): a committed snapshot at index 1, term 1, with the group's first voters. Open the
    /// log again afterwards to recover it.
    pub async fn bootstrap(&self, data: Vec<u8>) -> Result<(), RaftDiskError> {
        assert_eq!(self.log.log_end_offset(), 0, "only a new log is seeded");
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        (meta.index, meta.term) = (1, 1);
        meta.set_conf_state(voters_conf_state(&self.voters));
        self.write_snapshot(&snapshot).await?;
        self.log
            .restart_at(1)
            .await
            .map_err(|e| io_error(&self.log_dir(), e))?;
        self.write_state(&StateFile {
            term: 1,
            vote: 0,
            commit: 1,
            voters: self.voters.clone(),
        })
        .await
    }

    /// Makes a hard state durable (a new commit index before its entries are applied).
    pub async fn write_hard_state(&self, hard_state: &HardState) -> Result<(), RaftDiskError> {
        self.write_state(&StateFile {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
            voters: self.voters.clone(),
        })
        .await
    }

    /// Makes a snapshot of applied state durable, then deletes the log segments it covers.
    pub async fn compact(&self, snapshot: &Snapshot) -> Result<(), RaftDiskError> {
        self.write_snapshot(snapshot).await?;
        let index = snapshot.get_metadata().index;
        self.log
            .delete_below(index)
            .await
            .map_err(|e| io_error(&self.log_dir(), e))?;
        Ok(())
    }

    /// Closes the log.
    pub async fn close(&self) {
        self.log.close().await;
    }

    async fn write_state(&self, state: &StateFile) -> Result<(), RaftDiskError> {
        let json = serde_json::to_vec(state).expect("state serialises");
        self.write_sealed("state", &json).await
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), RaftDiskError> {
        let bytes = snapshot
            .write_to_bytes()
            .expect("snapshots serialise to memory");
        self.write_sealed("snapshot", &bytes).await
    }

    async fn write_sealed(&self, name: &str, payload: &[u8]) -> Result<(), RaftDiskError> {
        let path = self.dir.join(name);
        write_file_atomically(self.disk.as_ref(), &path, &seal(payload), true)
            .await
            .map_err(|e| io_error(&path, e))
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn damaged(&self, reason: String) -> RaftDiskError {
        RaftDiskError::Damaged {
            path: self.log_dir(),
            reason,
        }
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> RaftDiskError {
    RaftDiskError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The conf state of a group that has applied nothing yet.
fn voters_conf_state(voters: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        ..ConfState::default()
    }
}

fn encode_entry(entry: &Entry) -> RecordBatch {
    let bytes = entry.write_to_bytes().expect("entries serialise to memory");
    let mut builder = BatchBuilder::new(0);
    builder.push(None, Some(&bytes), 0);
    let term = i32::try_from(entry.term).expect("terms stay below 2^31");
    builder.build().with_base_offset(entry.index - 1, term)
}

fn decode_entry(batch: &RecordBatch) -> Result<Entry, String> {
    let offset = batch.base_offset();
    let mut records = batch
        .records(1 << 30)
        .map_err(|e| format!("batch at {offset}: {e}"))?;
    let record = records
        .next()
        .ok_or_else(|| format!("batch at {offset} holds no record"))?
        .map_err(|e| format!("batch at {offset}: {e}"))?;
    let value = record
        .value
        .ok_or_else(|| format!("batch at {offset} holds no entry"))?;
    let entry = Entry::parse_from_bytes(&value).map_err(|e| format!("entry at {offset}: {e}"))?;
    if entry.term != batch.partition_leader_epoch() as u64 {
        return Err(format!(
            "entry at {offset} has term {} in a batch of epoch {}",
            entry.term,
            batch.partition_leader_epoch()
        ));
    }
    Ok(entry)
}

/// `crc32(payload)` (little-endian) followed by the payload.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut sealed = BytesMut::with_capacity(4 + payload.len());
    sealed.put_u32_le(crc32fast::hash(payload));
    sealed.put_slice(payload);
    sealed.to_vec()
}

fn unseal(path: &Path, bytes: Vec<u8>) -> Result<Bytes, RaftDiskError> {
    let damaged = |reason: &str| RaftDiskError::Damaged {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 4 {
        return Err(damaged("shorter than its checksum"));
    }
    let mut bytes = Bytes::from(bytes);
    let crc = bytes.get_u32_le();
    if crc32fast::hash(&bytes) != crc {
        return Err(damaged("checksum mismatch"));
    }
    Ok(bytes)
}

fn read_sealed(disk: &dyn Disk, path: &Path) -> Result<Option<Bytes>, RaftDiskError> {
    match disk.read_small(path).map_err(|e| io_error(path, e))? {
        Some(bytes) => unseal(path, bytes).map(Some),
        None => Ok(None),
    }
}

fn read_state(disk: &dyn Disk, path: &Path) -> Result<Option<StateFile>, RaftDiskError> {
    let Some(bytes) = read_sealed(disk, path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RaftDiskError::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_snapshot(disk: &dyn Disk, path: &Path) -> Result<Snapshot, RaftDiskError> {
    let Some(bytes) = read_sealed(disk, path)? else {
        return Ok(Snapshot::default());
    };
    Snapshot::parse_from_bytes(&bytes).map_err(|e| RaftDiskError::Damaged {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
