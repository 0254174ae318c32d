//! A keyed state log: the latest value of each key (consumer-group offsets, subscription
//! cursors) kept in an ordinary partition log, so that it recovers, and will replicate, like
//! any partition, and kept bounded by compaction.
//!
//! Every record carries a sequence number, assigned when its put is admitted; replay keeps the
//! record with the highest sequence of each key, so the outcome never depends on where in the
//! log a record sits. A delete is a record too (a tombstone).
//!
//! Compaction copies forward instead of rewriting: once the log holds more than
//! `compaction_bytes_min` and more than [`DIRTY_FACTOR`] times the live state, the live state
//! (with the puts still in flight) is appended again at the head, and when that copy is
//! durable every sealed segment below its first offset is deleted. Nothing is ever rewritten
//! in place, so compaction adds no crash case the log does not already have: a crash before
//! the deletion leaves old records that replay ranks below the copies, a crash during it
//! leaves a shorter prefix of them. Tombstones need no copy: sequence order is log order for
//! each key (a copy is taken of the newest entry, so anything newer is admitted after it), and
//! deletion takes a prefix, so whatever survives a deleted tombstone is newer than it.

use crate::error::{AppendError, ReadError};
use crate::partition::Partition;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use oxbow_core::BatchBuilder;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Compaction waits until the log is this many times the size of the live state.
pub const DIRTY_FACTOR: u64 = 2;

/// Record value: `[kind u8][sequence u64 BE][payload]`.
const PUT: u8 = 1;
const TOMBSTONE: u8 = 0;
const VALUE_HEADER_BYTES: usize = 9;
/// Batch framing and per-record overhead counted against a batch's size when splitting.
const RECORD_OVERHEAD_BYTES: usize = 32;

/// When a state log compacts.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    /// Never compact a log smaller than this (bytes of frames).
    pub compaction_bytes_min: u64,
}

/// Why a state log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateLogError {
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The log does not fdatasync before it acknowledges.
    #[error("a state log needs flush = always, not {0:?}")]
    NotDurable(oxbow_core::FlushPolicy),
    /// A record is not one this module wrote.
    #[error("state log record at offset {offset} is malformed: {reason}")]
    Malformed {
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    /// `None`: deleted.
    value: Option<Bytes>,
}

/// The latest value of each key, over a log. Used by the shard that owns the log.
pub struct StateLog {
    log: Rc<Partition>,
    settings: CompactionSettings,
    batch_bytes_max: usize,
    /// Acknowledged state: what readers see.
    entries: RefCell<HashMap<Bytes, Entry>>,
    /// Admitted but not yet acknowledged puts, by key: the newest of each (with how many are
    /// in flight). A compaction copies them too, or a put admitted before its copy started
    /// and acknowledged after it was taken would be deleted with the old segments.
    pending: RefCell<HashMap<Bytes, (Entry, usize)>>,
    next_seq: Cell<u64>,
    live_bytes: Cell<u64>,
    compacting: Cell<bool>,
}

impl StateLog {
    /// Replays `log` from its start. `batch_bytes_max` bounds the batches this log writes (at
    /// most the log's own limit).
    pub async fn open(
        log: Rc<Partition>,
        settings: CompactionSettings,
        batch_bytes_max: usize,
    ) -> Result<StateLog, StateLogError> {
        // A copy must be on disk before the segments it replaces are deleted.
        let flush = log.config().flush;
        if flush != oxbow_core::FlushPolicy::Always {
            return Err(StateLogError::NotDurable(flush));
        }
        let mut entries = HashMap::<Bytes, Entry>::new();
        let mut next_seq = 0;
        let mut next = log.log_start_offset();
        loop {
            // Up to the durable end, past a high watermark: a new leader's whole log becomes
            // the committed one, and what it appends next must rank above all of it.
            let batches = log.read_for_followers(next, 1 << 20).await?;
            let Some(last) = batches.last() else { break };
            next = last.last_offset() + 1;
            for batch in &batches {
                // Written uncompressed by this module: a batch bounds its records.
                let records = batch
                    .records(batch.len() as u64)
                    .map_err(|_| malformed(next, "batch"))?;
                for record in records {
                    let record = record.map_err(|_| malformed(next, "record"))?;
                    let (Some(key), Some(mut value)) = (record.key, record.value) else {
                        return Err(malformed(record.offset, "no key or value"));
                    };
                    if value.len() < VALUE_HEADER_BYTES {
                        return Err(malformed(record.offset, "short value"));
                    }
                    let (kind, seq) = (value.get_u8(), value.get_u64());
                    let value = match kind {
                        PUT => Some(value),
                        TOMBSTONE => None,
                        _ => return Err(malformed(record.offset, "unknown kind")),
                    };
                    next_seq = next_seq.max(seq + 1);
                    if entries.get(&key).is_none_or(|e| e.seq < seq) {
                        entries.insert(key, Entry { seq, value });
                    }
                }
            }
        }
        let live_bytes = entries.iter().map(|(k, e)| entry_bytes(k, e)).sum();
        Ok(StateLog {
            log,
            settings,
            batch_bytes_max,
            entries: RefCell::new(entries),
            pending: RefCell::default(),
            next_seq: Cell::new(next_seq),
            live_bytes: Cell::new(live_bytes),
            compacting: Cell::new(false),
        })
    }

    /// The acknowledged value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.entries.borrow().get(key).and_then(|e| e.value.clone())
    }

    /// Every acknowledged key and value (in no particular order).
    pub fn entries(&self) -> Vec<(Bytes, Bytes)> {
        let entries = self.entries.borrow();
        let live = entries
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), e.value.clone()?)));
        live.collect()
    }

    /// Bytes of keys and values of the live state.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.get()
    }

    /// The log underneath.
    pub fn log(&self) -> &Rc<Partition> {
        &self.log
    }

    /// Sets (`Some`) or deletes (`None`) keys; resolves when the change is acknowledged under
    /// the log's flush policy, and only then do [`StateLog::get`] and
    /// [`StateLog::entries`] show it. Changes are applied in call order.
    pub async fn put(&self, changes: Vec<(Bytes, Option<Bytes>)>) -> Result<(), AppendError> {
        let changes: Vec<(Bytes, Entry)> = changes
            .into_iter()
            .map(|(key, value)| {
                let seq = self.next_seq.get();
                self.next_seq.set(seq + 1);
                (key, Entry { seq, value })
            })
            .collect();
        for (key, entry) in &changes {
            let mut pending = self.pending.borrow_mut();
            let slot = pending.entry(key.clone()).or_insert((entry.clone(), 0));
            if slot.0.seq <= entry.seq {
                slot.0 = entry.clone();
            }
            slot.1 += 1;
        }
        let appended = self.append(&changes).await;
        let mut pending = self.pending.borrow_mut();
        for (key, _) in &changes {
            if let Some(slot) = pending.get_mut(key) {
                slot.1 -= 1;
                if slot.1 == 0 {
                    pending.remove(key);
                }
            }
        }
        drop(pending);
        appended?;
        for (key, entry) in changes {
            self.settle(key, entry);
        }
        Ok(())
    }

    /// Whether the log has grown enough to compact.
    pub fn compaction_due(&self) -> bool {
        let log_bytes = self.log.stats().log_bytes;
        !self.compacting.get()
            && log_bytes > self.settings.compaction_bytes_min
            && log_bytes > DIRTY_FACTOR * self.live_bytes.get()
    }

    /// Starts a compaction on its own task if one is due (see [`StateLog::compaction_due`]).
    pub fn compact_in_background_if_due(self: &Rc<Self>) {
        if !self.compaction_due() {
            return;
        }
        let state = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = state.compact().await {
                tracing::error!(error = %e, "compacting a state log");
            }
        })
        .detach();
    }

    /// Copies the live state to the head of the log and deletes the segments below the copy.
    /// Returns how many segments were deleted; 0 if a compaction is already running.
    pub async fn compact(&self) -> Result<usize, AppendError> {
        if self.compacting.replace(true) {
            return Ok(0);
        }
        let result = self.copy_forward().await;
        self.compacting.set(false);
        result
    }

    async fn copy_forward(&self) -> Result<usize, AppendError> {
        let copy = self.live_copy();
        // Every record admitted from here on sits at or above `start`.
        let start = self.log.stats().next_offset;
        self.append(&copy).await?;
        let deleted = self
            .log
            .delete_below(start)
            .await
            .map_err(|e| AppendError::Stopped(e.to_string()))?;
        tracing::debug!(keys = copy.len(), start, deleted, "state log compacted");
        Ok(deleted)
    }

    /// The newest value of every key, acknowledged or in flight; deleted keys have none.
    /// Tombstones are forgotten here unless a put of their key is still in flight (whose late
    /// acknowledgement must not bring an older value back).
    fn live_copy(&self) -> Vec<(Bytes, Entry)> {
        let pending = self.pending.borrow();
        let mut entries = self.entries.borrow_mut();
        entries.retain(|key, e| e.value.is_some() || pending.contains_key(key));
        let mut newest: HashMap<Bytes, Entry> = entries
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (key, (entry, _)) in pending.iter() {
            if newest.get(key).is_none_or(|e| e.seq < entry.seq) {
                newest.insert(key.clone(), entry.clone());
            }
        }
        newest.retain(|_, e| e.value.is_some());
        newest.into_iter().collect()
    }

    /// Makes an acknowledged change visible, unless a newer one already is.
    fn settle(&self, key: Bytes, entry: Entry) {
        let mut entries = self.entries.borrow_mut();
        let old = entries.get(&key);
        if old.is_some_and(|old| old.seq > entry.seq) {
            return;
        }
        let (before, after) = (
            old.map_or(0, |o| entry_bytes(&key, o)),
            entry_bytes(&key, &entry),
        );
        self.live_bytes.set(self.live_bytes.get() - before + after);
        entries.insert(key, entry);
    }

    /// Appends entries in as many batches as `batch_bytes_max` needs, all admitted now.
    async fn append(&self, entries: &[(Bytes, Entry)]) -> Result<(), AppendError> {
        let now = crate::now_ms();
        let mut appends = Vec::new();
        let mut builder = BatchBuilder::new(now);
        for (key, entry) in entries {
            let value = encode_value(entry);
            let size = key.len() + value.len() + RECORD_OVERHEAD_BYTES;
            if !builder.is_empty() && builder.size_bytes() + size > self.batch_bytes_max {
                let full = std::mem::replace(&mut builder, BatchBuilder::new(now));
                appends.push(self.log.append(full.build()));
            }
            builder.push(Some(key), Some(&value), now);
        }
        if !builder.is_empty() {
            appends.push(self.log.append(builder.build()));
        }
        crate::ordered::all_in_order(appends)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(drop)
    }
}

fn encode_value(entry: &Entry) -> Bytes {
    let payload = entry.value.as_deref().unwrap_or_default();
    let mut value = BytesMut::with_capacity(VALUE_HEADER_BYTES + payload.len());
    value.put_u8(if entry.value.is_some() {
        PUT
    } else {
        TOMBSTONE
    });
    value.put_u64(entry.seq);
    value.put_slice(payload);
    value.freeze()
}

fn entry_bytes(key: &Bytes, entry: &Entry) -> u64 {
    entry
        .value
        .as_ref()
        .map_or(0, |v| (key.len() + v.len()) as u64)
}

fn malformed(offset: u64, reason: &'static str) -> StateLogError {
    StateLogError::Malformed { offset, reason }
}
