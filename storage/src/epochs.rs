//! Leader epochs of a partition: which epoch wrote which offsets, and its checkpoint file.
//!
//! Every batch carries the epoch of the leader that appended it (`partitionLeaderEpoch`). The
//! cache maps each epoch to the first offset written in it; a follower of a new leader asks
//! "where does my last epoch end on your log?" and truncates there when the logs diverge
//! (Kafka's OffsetsForLeaderEpoch, KIP-101/279). The cache is persisted in
//! `<partition>/leader-epoch-checkpoint` whenever it changes (atomically: temporary file,
//! fdatasync, rename, directory fsync), and recovery reconciles it with the log: entries at or
//! past the recovered log end are dropped, and epochs met in the batches of the active segment
//! are added, so a crash between an append and the checkpoint write loses nothing.
//!
//! File layout (little-endian): magic `OXBE`, u32 version = 1, u32 entry count, then per entry
//! i32 epoch and u64 start offset, then a u32 CRC-32 (crc32fast) of everything before it.

use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"OXBE";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 12;
const ENTRY_BYTES: usize = 12;
/// Upper bound on stored entries: a damaged count cannot make a reader allocate without limit.
pub const EPOCH_ENTRIES_MAX: u32 = 1 << 20;

/// The checkpoint file of a partition directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("leader-epoch-checkpoint")
}

/// Why checkpoint bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader-epoch checkpoint is damaged: {0}")]
pub struct EpochFileError(pub &'static str);

/// Epoch → first offset, ascending in both. Owned by the partition's log core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(i32, u64)>,
}

impl LeaderEpochs {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }

    /// The newest epoch, if any batch or leader set one.
    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// Records that `epoch` starts writing at `start_offset`. Returns whether the cache changed
    /// (a new epoch). Epochs never go back: an older one is a caller bug. An epoch that starts
    /// where the last one does replaces it: that one holds no record (the log start moved up
    /// to its end), as Kafka's cache drops it too.
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        match self.entries.last() {
            Some(&(last, _)) if last == epoch => false,
            Some(&(last, last_start)) => {
                assert!(
                    epoch > last && start_offset >= last_start,
                    "leader epoch {epoch} at {start_offset} after epoch {last} at {last_start}"
                );
                if start_offset == last_start {
                    self.entries.pop();
                }
                self.entries.push((epoch, start_offset));
                true
            }
            None => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    /// Records an epoch met in a batch during recovery: kept only if newer than every known
    /// one (older epochs in the log are already covered). Returns whether the cache changed.
    pub fn observe(&mut self, epoch: i32, start_offset: u64) -> bool {
        match self.latest() {
            Some(latest) if epoch <= latest => false,
            _ => self.assign(epoch, start_offset),
        }
    }

    /// Drops what starts at or after `end` (the log was truncated there). Returns whether the
    /// cache changed.
    pub fn truncate_from(&mut self, end: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < end);
        self.entries.len() != before
    }

    /// The log start moved to `start`: epochs wholly before it are forgotten, the one that
    /// holds it now starts there.
    pub fn truncate_before(&mut self, start: u64) -> bool {
        let keep_from = self.entries.partition_point(|&(_, s)| s <= start).max(1) - 1;
        let mut changed = keep_from > 0;
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            if first.1 < start {
                first.1 = start;
                changed = true;
            }
        }
        changed
    }

    /// Where `epoch` ends on this log: the start of the first later epoch, or `log_end` when
    /// `epoch` is the latest; with the largest epoch at or below it when `epoch` itself is
    /// unknown. `None` when every known epoch is newer (the follower must truncate fully).
    pub fn end_offset_for(&self, epoch: i32, log_end: u64) -> Option<(i32, u64)> {
        let at = self.entries.partition_point(|&(e, _)| e <= epoch);
        if at == 0 {
            return None;
        }
        let found = self.entries[at - 1].0;
        let end = self.entries.get(at).map_or(log_end, |&(_, start)| start);
        Some((found, end))
    }

    /// The checkpoint file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for &(epoch, start) in &self.entries {
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&start.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a checkpoint file back, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<LeaderEpochs, EpochFileError> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(EpochFileError("shorter than its header"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(EpochFileError("checksum mismatch"));
        }
        if &body[..4] != MAGIC {
            return Err(EpochFileError("bad magic"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        if u32_at(4) != VERSION {
            return Err(EpochFileError("unknown version"));
        }
        let count = u32_at(8);
        if count > EPOCH_ENTRIES_MAX || body.len() != HEADER_BYTES + count as usize * ENTRY_BYTES {
            return Err(EpochFileError("entry count does not match the length"));
        }
        let entries: Vec<(i32, u64)> = body[HEADER_BYTES..]
            .chunks(ENTRY_BYTES)
            .map(|e| {
                let epoch = i32::from_le_bytes(e[..4].try_into().expect("4 bytes"));
                (
                    epoch,
                    u64::from_le_bytes(e[4..].try_into().expect("8 bytes")),
                )
            })
            .collect();
        if entries
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
        {
            return Err(EpochFileError("entries are not ascending"));
        }
        Ok(LeaderEpochs { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epochs_answer_where_an_epoch_ends() {
        let mut epochs = LeaderEpochs::default();
        assert!(epochs.assign(0, 0));
        assert!(!epochs.assign(0, 5));
        assert!(epochs.assign(2, 10));
        assert!(epochs.assign(5, 30));
        let mut emptied = epochs.clone();
        assert!(emptied.assign(6, 30));
        assert_eq!(
            emptied.entries().last(),
            Some(&(6, 30)),
            "epoch 5 holds nothing"
        );
        assert_eq!(emptied.entries().len(), epochs.entries().len());
        assert_eq!(epochs.end_offset_for(0, 50), Some((0, 10)));
        assert_eq!(epochs.end_offset_for(1, 50), Some((0, 10)));
        assert_eq!(epochs.end_offset_for(3, 50), Some((2, 30)));
        assert_eq!(epochs.end_offset_for(7, 50), Some((5, 50)));
        assert_eq!(epochs.end_offset_for(-1, 50), None);
        assert!(epochs.truncate_from(30));
        assert_eq!(epochs.latest(), Some(2));
        assert!(epochs.truncate_before(12));
        assert_eq!(epochs.entries(), [(2, 12)]);
    }

    #[test]
    fn checkpoints_round_trip_and_reject_damage() {
        let mut epochs = LeaderEpochs::default();
        epochs.assign(1, 0);
        epochs.assign(4, 77);
        let bytes = epochs.encode();
        assert_eq!(LeaderEpochs::decode(&bytes).unwrap(), epochs);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(LeaderEpochs::decode(&damaged).is_err(), "flip at {at}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LeaderEpochs::decode(&bytes);
        }
    }
}
