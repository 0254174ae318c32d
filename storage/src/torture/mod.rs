//! A torture kit for the log: batches whose bytes follow from an id alone, a model of what
//! was acknowledged, and the check that a reopened partition agrees with it. The seeded crash
//! simulation ([`sim`]) and the real-SIGKILL writer ([`kill`]) are built on it, and so are the
//! storage tests and `oxbow storage torture`; people testing storage engines can drive it too.
//!
//! The invariants checked after every reopen:
//! - the log reads back from its start to its end as one contiguous run of batches (the first
//!   may begin before the start: deleting records can move it inside a batch);
//! - every acknowledged batch still at or above the log start is there, at its offset, with
//!   its bytes (when the crash could not take it: any process kill, or a power loss under
//!   `flush = always`);
//! - everything recovered is a batch that was appended, whole, at an offset of its own;
//! - the leader epochs recovered match those in the batches (when asked).

pub mod kill;
pub mod sim;

use crate::Partition;
use bytes::Bytes;
use oxbow_core::{BatchBuilder, RecordBatch};
use std::collections::{BTreeMap, HashMap};

/// Largest value in a torture batch: five of them stay under a 16 KiB batch limit.
const VALUE_BYTES_MAX: usize = 3_000;
/// How much one read asks for while checking.
const CHECK_READ_BYTES: usize = 64 * 1024;

/// An invariant did not hold: what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn violation(what: impl Into<String>) -> Violation {
    Violation(what.into())
}

/// Batch `id`: one to five records of 1 to 2,999 bytes, drawn from a generator seeded by the
/// id, each keyed with the id; the same id always gives the same bytes.
pub fn batch(id: u64) -> RecordBatch {
    let mut rng = fastrand::Rng::with_seed(id);
    let mut builder = BatchBuilder::new(id as i64);
    for record in 0..rng.u64(1..6) {
        let value = vec![(id + record) as u8; rng.usize(1..VALUE_BYTES_MAX)];
        builder.push(Some(&id.to_be_bytes()), Some(&value), id as i64);
    }
    builder.build()
}

/// The id a torture batch carries in its first record's key.
pub fn batch_id(batch: &RecordBatch) -> Option<u64> {
    let record = batch.records(u64::MAX).ok()?.next()?.ok()?;
    Some(u64::from_be_bytes(record.key?.as_ref().try_into().ok()?))
}

/// The bytes batch `id` is stored as at `base` under leader epoch `epoch`.
pub fn stored_bytes(id: u64, base: u64, epoch: i32) -> Bytes {
    batch(id).with_base_offset(base, epoch).into_bytes()
}

/// One acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The batch's id ([`batch`]).
    pub id: u64,
    /// The leader epoch it was appended under.
    pub epoch: i32,
    /// Its last offset.
    pub last_offset: u64,
}

/// What a crash may have taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// Every acknowledged batch survives (a process kill; a power loss under `always`).
    AckedSurvive,
    /// Acknowledged batches may be gone (a power loss without fdatasync before the ack);
    /// their offsets may then be handed out again.
    NothingPromised,
}

/// What one check read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Batches read and compared.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Acknowledged batches found where they were acknowledged.
    pub acked_found: u64,
}

/// The acknowledged batches still in the log, by base offset, and what completed truncations
/// rule out.
#[derive(Debug, Default)]
pub struct Model {
    acked: BTreeMap<u64, Acked>,
    /// (offset, id): a completed truncation ended the log at `offset` when batch `id` was the
    /// next to be appended, so a batch found at or after `offset` has that id or a later one.
    id_floors: Vec<(u64, u64)>,
}

impl Model {
    /// An append of batch `id` under `epoch` was acknowledged at `base..=last`.
    pub fn acked(&mut self, base: u64, acked: Acked) -> Result<(), Violation> {
        match self.acked.insert(base, acked) {
            Some(before) => Err(violation(format!(
                "offset {base} acknowledged twice (batches {} and {})",
                before.id, acked.id
            ))),
            None => Ok(()),
        }
    }

    /// Everything from `offset` on may be gone (a truncation to it started).
    pub fn forget_from(&mut self, offset: u64) {
        self.acked.retain(|_, a| a.last_offset < offset);
    }

    /// A truncation completed: the log ended at `new_end` and `next_id` was the next batch id.
    /// Anything truncated away must never come back (ids are handed out in increasing order).
    pub fn truncated(&mut self, new_end: u64, next_id: u64) {
        self.forget_from(new_end);
        self.id_floors.push((new_end, next_id));
    }

    /// The smallest id a batch at `base` may have, after the truncations seen.
    fn id_floor(&self, base: u64) -> u64 {
        (self.id_floors.iter())
            .filter(|&&(from, _)| from <= base)
            .map(|&(_, id)| id)
            .max()
            .unwrap_or(0)
    }

    /// Acknowledged batches the model holds.
    pub fn len(&self) -> usize {
        self.acked.len()
    }

    /// Whether the model holds none.
    pub fn is_empty(&self) -> bool {
        self.acked.is_empty()
    }

    /// Reads the whole log and checks it against the model (see the module docs); `epochs`
    /// also compares the recovered leader epochs with the batches'.
    pub async fn check(
        &mut self,
        partition: &Partition,
        promise: Promise,
        epochs: bool,
    ) -> Result<Checked, Violation> {
        let start = partition.log_start_offset();
        let end = partition.log_end_offset();
        let batches = read_log(partition, start, end).await?;
        let mut checked = Checked::default();
        // Below the start, retention took them.
        self.acked.retain(|&base, _| base >= start);
        let by_base: BTreeMap<u64, &RecordBatch> =
            batches.iter().map(|b| (b.base_offset(), b)).collect();
        for (&base, acked) in &self.acked {
            match by_base.get(&base) {
                Some(found) => {
                    if found.bytes() != &stored_bytes(acked.id, base, acked.epoch) {
                        return Err(violation(format!(
                            "offset {base} changed: batch {} was acknowledged there",
                            acked.id
                        )));
                    }
                    checked.acked_found += 1;
                }
                None if promise == Promise::AckedSurvive => {
                    return Err(violation(format!(
                        "acknowledged batch {} at {base} lost (log {start}..{end})",
                        acked.id
                    )))
                }
                None => {}
            }
        }
        self.acked.retain(|base, _| by_base.contains_key(base));
        let mut expected_epochs: Vec<(i32, u64)> = Vec::new();
        let mut seen: HashMap<u64, u64> = HashMap::with_capacity(batches.len());
        for found in &batches {
            let base = found.base_offset();
            let id = batch_id(found)
                .ok_or_else(|| violation(format!("batch at {base} carries no torture id")))?;
            if let Some(first) = seen.insert(id, base) {
                return Err(violation(format!(
                    "batch {id} recovered twice, at {first} and at {base}"
                )));
            }
            let floor = self.id_floor(base);
            if id < floor {
                return Err(violation(format!(
                    "batch {id} at {base} came back after a truncation removed it (only batch \
                     {floor} or later may be there)"
                )));
            }
            let epoch = found.partition_leader_epoch();
            if found.bytes() != &stored_bytes(id, base, epoch) {
                return Err(violation(format!(
                    "batch at {base} is not batch {id} as appended"
                )));
            }
            match expected_epochs.last() {
                Some(&(last, _)) if epoch < last => {
                    return Err(violation(format!("leader epochs go back at {base}")))
                }
                Some(&(last, _)) if epoch == last => {}
                _ => expected_epochs.push((epoch, base.max(start))),
            }
            checked.batches += 1;
            checked.bytes += found.bytes().len() as u64;
        }
        if epochs {
            let recovered: Vec<(i32, u64)> = partition
                .leader_epochs()
                .into_iter()
                .filter(|&(_, first)| first < end)
                .collect();
            if recovered != expected_epochs {
                return Err(violation(format!(
                    "leader epochs of {start}..{end}: recovered {recovered:?}, batches say \
                     {expected_epochs:?}"
                )));
            }
        }
        Ok(checked)
    }
}

/// Every batch from `start` to `end`, checked to be contiguous and to end at `end`.
async fn read_log(
    partition: &Partition,
    start: u64,
    end: u64,
) -> Result<Vec<RecordBatch>, Violation> {
    let mut batches = Vec::new();
    let mut next = start;
    while next < end {
        let read = partition
            .read(next, CHECK_READ_BYTES)
            .await
            .map_err(|e| violation(format!("reading at {next} (log {start}..{end}): {e}")))?;
        if read.is_empty() {
            return Err(violation(format!(
                "a read at {next} below the end {end} found nothing ({:?})",
                partition.stats()
            )));
        }
        for found in read {
            if found.last_offset() < next {
                continue;
            }
            // Only the first batch may hold the start and begin before it.
            let holds_start = batches.is_empty() && found.base_offset() < next;
            if found.base_offset() != next && !holds_start {
                return Err(violation(format!(
                    "a gap: the batch after {next} starts at {}",
                    found.base_offset()
                )));
            }
            next = found.last_offset() + 1;
            batches.push(found);
        }
    }
    if next != end {
        return Err(violation(format!(
            "the log says it ends at {end}, its last batch at {next}"
        )));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_follows_from_its_id_and_names_it() {
        for id in [0, 1, 77, u64::MAX / 3] {
            let one = batch(id);
            assert_eq!(one.bytes(), batch(id).bytes());
            assert_eq!(batch_id(&one), Some(id));
            assert!(one.bytes().len() < 16 * 1024);
        }
        assert_ne!(batch(1).bytes(), batch(2).bytes());
    }

    #[test]
    fn an_offset_acknowledged_twice_is_a_violation_and_forgetting_frees_it() {
        let mut model = Model::default();
        let acked = |id| Acked {
            id,
            epoch: 0,
            last_offset: 4,
        };
        model.acked(0, acked(1)).unwrap();
        assert!(model.acked(0, acked(2)).is_err());
        model.forget_from(3);
        assert!(model.is_empty());
        model.acked(0, acked(3)).unwrap();
        assert_eq!(model.len(), 1);
    }
}
