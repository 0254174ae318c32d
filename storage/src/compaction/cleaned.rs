//! How far a compacted log has been cleaned, and when each part first was: the file
//! `<partition>/cleaner-checkpoint`.
//!
//! Each cleaning pass adds its end offset and time. The clean end (the last pass's end) splits
//! the log into its clean and dirty parts; the time of the first pass past a tombstone says
//! when it was first cleaned, and so when `delete.retention.ms` lets the tombstone go (Kafka
//! marks each batch with its delete horizon instead; a checkpoint leaves the batches as they
//! were written). At most [`PASSES_KEPT`] passes are remembered: older ones merge, keeping the
//! later time, so a tombstone is kept longer, never shorter. A missing or damaged file means
//! nothing was cleaned: the next pass reads the whole log for keys, and tombstones wait one
//! more `delete.retention.ms`.
//!
//! File layout (little-endian): magic `OXBC`, u32 version = 1, u32 count, then per pass u64 end
//! offset and i64 time (ms), then a u32 CRC-32 (crc32fast) of everything before it.

use std::path::{Path, PathBuf};

/// Passes remembered.
pub(crate) const PASSES_KEPT: usize = 64;

const MAGIC: &[u8; 4] = b"OXBC";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 12;
const PASS_BYTES: usize = 16;

/// The checkpoint file of a partition directory.
pub fn cleaner_checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("cleaner-checkpoint")
}

/// Why checkpoint bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cleaner checkpoint is damaged: {0}")]
pub struct CleanerCheckpointError(&'static str);

/// The cleaning passes of a log, oldest first: (end offset, time in ms), ends increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CleanedRanges {
    passes: Vec<(u64, i64)>,
}

impl CleanedRanges {
    /// Offsets below have been through a cleaning.
    pub(crate) fn clean_end(&self) -> u64 {
        self.passes.last().map_or(0, |&(end, _)| end)
    }

    /// When the record at `offset` was first cleaned; `None` when it has not been.
    pub(crate) fn first_cleaned_at(&self, offset: u64) -> Option<i64> {
        let pass = self.passes.partition_point(|&(end, _)| end <= offset);
        self.passes.get(pass).map(|&(_, at)| at)
    }

    /// A pass cleaned up to `end` at `at_ms`.
    pub(crate) fn record(&mut self, end: u64, at_ms: i64) {
        if end <= self.clean_end() {
            return;
        }
        self.passes.push((end, at_ms));
        if self.passes.len() > PASSES_KEPT {
            // The two oldest become one: its records count as first cleaned at the later time.
            let (_, older_at) = self.passes.remove(0);
            self.passes[0].1 = self.passes[0].1.max(older_at);
        }
    }

    /// The log was cut at `offset`: what comes above it again has not been cleaned.
    pub(crate) fn truncate(&mut self, offset: u64) {
        let keep = self.passes.partition_point(|&(end, _)| end < offset);
        self.passes.truncate(keep + 1);
        if let Some(last) = self.passes.last_mut() {
            last.0 = last.0.min(offset);
        }
        self.passes.retain(|&(end, _)| end > 0);
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.passes.len() * PASS_BYTES + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.passes.len() as u32).to_le_bytes());
        for (end, at) in &self.passes {
            out.extend_from_slice(&end.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<CleanedRanges, CleanerCheckpointError> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(CleanerCheckpointError("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(CleanerCheckpointError("checksum mismatch"));
        }
        if &body[..4] != MAGIC {
            return Err(CleanerCheckpointError("bad magic"));
        }
        if body[4..8] != VERSION.to_le_bytes() {
            return Err(CleanerCheckpointError("unknown version"));
        }
        let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
        let entries = &body[HEADER_BYTES..];
        if count > PASSES_KEPT || entries.len() != count * PASS_BYTES {
            return Err(CleanerCheckpointError("wrong length"));
        }
        let passes: Vec<(u64, i64)> = entries
            .chunks_exact(PASS_BYTES)
            .map(|pass| {
                let end = u64::from_le_bytes(pass[..8].try_into().expect("8 bytes"));
                let at = i64::from_le_bytes(pass[8..].try_into().expect("8 bytes"));
                (end, at)
            })
            .collect();
        if passes.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(CleanerCheckpointError("ends do not increase"));
        }
        Ok(CleanedRanges { passes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_say_when_each_offset_was_first_cleaned() {
        let mut cleaned = CleanedRanges::default();
        assert_eq!(
            (cleaned.clean_end(), cleaned.first_cleaned_at(0)),
            (0, None)
        );
        cleaned.record(100, 1_000);
        cleaned.record(250, 2_000);
        cleaned.record(250, 3_000); // nothing new
        assert_eq!(cleaned.clean_end(), 250);
        assert_eq!(cleaned.first_cleaned_at(0), Some(1_000));
        assert_eq!(cleaned.first_cleaned_at(99), Some(1_000));
        assert_eq!(cleaned.first_cleaned_at(100), Some(2_000));
        assert_eq!(cleaned.first_cleaned_at(250), None);
        cleaned.truncate(180);
        assert_eq!(cleaned.clean_end(), 180);
        assert_eq!(cleaned.first_cleaned_at(150), Some(2_000));
        cleaned.truncate(50);
        assert_eq!(
            (cleaned.clean_end(), cleaned.first_cleaned_at(10)),
            (50, Some(1_000))
        );
        cleaned.truncate(0);
        assert_eq!(cleaned, CleanedRanges::default());
    }

    #[test]
    fn old_passes_merge_to_the_later_time() {
        let mut cleaned = CleanedRanges::default();
        for pass in 1..=PASSES_KEPT as u64 + 1 {
            cleaned.record(pass * 10, pass as i64);
        }
        assert_eq!(cleaned.passes.len(), PASSES_KEPT);
        assert_eq!(
            cleaned.first_cleaned_at(0),
            Some(2),
            "kept longer, not shorter"
        );
        assert_eq!(cleaned.first_cleaned_at(15), Some(2));
    }

    #[test]
    fn checkpoints_round_trip_and_reject_damage() {
        let mut cleaned = CleanedRanges::default();
        cleaned.record(100, 1_000);
        cleaned.record(300, -5);
        let bytes = cleaned.encode();
        assert_eq!(CleanedRanges::decode(&bytes), Ok(cleaned));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                CleanedRanges::decode(&bad).is_err(),
                "a flipped byte {at} passed"
            );
        }
        assert!(CleanedRanges::decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            CleanedRanges::decode(&CleanedRanges::default().encode()),
            Ok(CleanedRanges::default())
        );
    }
}
