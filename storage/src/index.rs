//! The sparse offset index of one segment, and its file format (see `storage/docs/format.md`).
//!
//! An entry maps an offset to the file position of the frame that starts with it, one entry per
//! `index_interval_bytes` of frames, with the largest record timestamp of every frame before it
//! (the time index: timestamps need not grow, so a running maximum is what can be searched). A
//! lookup lands at or before the wanted frame; the reader scans forward from there. The index
//! is derived data: a missing or damaged one (or one of an older version) is rebuilt by
//! scanning.

/// Size of the index file header.
pub const INDEX_HEADER_BYTES: usize = 48;
/// Size of one entry: relative offset u32, position u32, largest timestamp before it i64.
pub const INDEX_ENTRY_BYTES: usize = 16;
const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"OXBI");
/// 2: entries carry the largest timestamp before them.
const INDEX_VERSION: u32 = 2;

/// What an index file says about its sealed segment, besides the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSummary {
    /// Offset of the segment's first frame (also its file name).
    pub base_offset: u64,
    /// Offset after the segment's last record.
    pub next_offset: u64,
    /// Exact length of the segment's frames; the sealed file has exactly this size.
    pub log_bytes: u64,
    /// Largest record timestamp in the segment (ms), or `i64::MIN` when empty.
    pub max_timestamp: i64,
}

/// Why an index file was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexFileError {
    /// Too short, wrong magic or version.
    #[error("index header is not valid: {0}")]
    BadHeader(&'static str),
    /// Checksum over the entries does not match.
    #[error("index checksum mismatch")]
    Checksum,
    /// Entries are not increasing or point outside the segment.
    #[error("index entries are inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// One entry: a frame's offset (relative to the segment base) and position, and the largest
/// record timestamp of the frames before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    offset: u32,
    position: u32,
    max_timestamp_before: i64,
}

/// In-memory sparse index of one segment. Owned by the partition's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseIndex {
    entries: Vec<Entry>,
    bytes_since_entry: u64,
    /// Largest record timestamp of the frames seen so far (after a truncation, of the frames
    /// before it too: an overestimate only makes a time lookup land earlier).
    max_timestamp: i64,
}

impl Default for SparseIndex {
    fn default() -> SparseIndex {
        SparseIndex {
            entries: Vec::new(),
            bytes_since_entry: 0,
            max_timestamp: i64::MIN,
        }
    }
}

impl SparseIndex {
    /// Records that a frame starting at `offset` (relative to the segment base) sits at
    /// `position`, with records up to `max_timestamp`, adding an entry if `interval_bytes` of
    /// frames passed since the last one.
    pub fn on_frame(
        &mut self,
        relative_offset: u32,
        position: u32,
        frame_len: u32,
        interval: u32,
        max_timestamp: i64,
    ) {
        if self.entries.is_empty() || self.bytes_since_entry >= interval as u64 {
            if let Some(last) = self.entries.last() {
                assert!(
                    relative_offset > last.offset && position > last.position,
                    "index must grow: last ({}, {}), new ({relative_offset}, {position})",
                    last.offset,
                    last.position
                );
            }
            self.entries.push(Entry {
                offset: relative_offset,
                position,
                max_timestamp_before: self.max_timestamp,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += frame_len as u64;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// Position of the last indexed frame starting at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        match self
            .entries
            .partition_point(|e| e.offset <= relative_offset)
        {
            0 => 0,
            i => self.entries[i - 1].position,
        }
    }

    /// Position of the last indexed frame before which every record is older than `at` (ms):
    /// the first frame holding a record at or after `at` starts there or later.
    pub fn lookup_time(&self, at: i64) -> u32 {
        // The running maximum never decreases, so the entries split in two.
        match self
            .entries
            .partition_point(|e| e.max_timestamp_before < at)
        {
            0 => 0,
            i => self.entries[i - 1].position,
        }
    }

    /// Drops entries for frames at or after `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
        // Force an entry for the next frame so the tail is indexed again.
        self.bytes_since_entry = u64::MAX / 2;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether the index has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serializes the index and its segment summary into the index file format.
    pub fn encode(&self, summary: &SealedSummary) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(INDEX_HEADER_BYTES + self.entries.len() * INDEX_ENTRY_BYTES);
        out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&summary.base_offset.to_le_bytes());
        out.extend_from_slice(&summary.next_offset.to_le_bytes());
        out.extend_from_slice(&summary.log_bytes.to_le_bytes());
        out.extend_from_slice(&summary.max_timestamp.to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.position.to_le_bytes());
            out.extend_from_slice(&entry.max_timestamp_before.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses an index file and checks it against itself. The caller still compares the
    /// summary with the segment file (its length and base offset).
    pub fn decode(bytes: &[u8]) -> Result<(SparseIndex, SealedSummary), IndexFileError> {
        if bytes.len() < INDEX_HEADER_BYTES {
            return Err(IndexFileError::BadHeader("shorter than the header"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if u32_at(0) != INDEX_MAGIC {
            return Err(IndexFileError::BadHeader("bad magic"));
        }
        if u32_at(4) != INDEX_VERSION {
            return Err(IndexFileError::BadHeader("unknown version"));
        }
        let count = u32_at(8) as usize;
        let end = count
            .checked_mul(INDEX_ENTRY_BYTES)
            .and_then(|n| n.checked_add(INDEX_HEADER_BYTES))
            .filter(|end| *end <= bytes.len())
            .ok_or(IndexFileError::BadHeader("entry count exceeds the file"))?;
        if crc32fast::hash(&bytes[16..end]) != u32_at(12) {
            return Err(IndexFileError::Checksum);
        }
        let summary = SealedSummary {
            base_offset: u64_at(16),
            next_offset: u64_at(24),
            log_bytes: u64_at(32),
            max_timestamp: u64_at(40) as i64,
        };
        if summary.next_offset < summary.base_offset {
            return Err(IndexFileError::Inconsistent(
                "next offset below base offset",
            ));
        }
        let entries: Vec<Entry> = (0..count)
            .map(|i| {
                let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
                Entry {
                    offset: u32_at(at),
                    position: u32_at(at + 4),
                    max_timestamp_before: u64_at(at + 8) as i64,
                }
            })
            .collect();
        let increasing = entries.windows(2).all(|w| {
            w[0].offset < w[1].offset
                && w[0].position < w[1].position
                && w[0].max_timestamp_before <= w[1].max_timestamp_before
        });
        let inside = entries.iter().all(|e| {
            (e.position as u64) < summary.log_bytes
                && summary.base_offset + (e.offset as u64) < summary.next_offset
                && e.max_timestamp_before <= summary.max_timestamp
        });
        if !increasing || !inside {
            return Err(IndexFileError::Inconsistent(
                "entries not increasing or out of range",
            ));
        }
        Ok((
            SparseIndex {
                entries,
                bytes_since_entry: 0,
                max_timestamp: summary.max_timestamp,
            },
            summary,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SparseIndex, SealedSummary) {
        let mut index = SparseIndex::default();
        for i in 0..100u32 {
            index.on_frame(i * 10, i * 1000, 1000, 4096, i as i64 * 100);
        }
        let summary = SealedSummary {
            base_offset: 500,
            next_offset: 1500,
            log_bytes: 100_000,
            max_timestamp: 9900,
        };
        (index, summary)
    }

    #[test]
    fn lookup_lands_at_or_before() {
        let (index, _) = sample();
        assert_eq!(index.len(), 20); // one entry per 4096 bytes of 1000-byte frames
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(49), 0);
        assert_eq!(index.lookup(50), 5000);
        assert_eq!(index.lookup(99), 5000);
        assert_eq!(index.lookup(u32::MAX), 95_000);
    }

    #[test]
    fn a_time_lookup_lands_before_the_first_frame_reaching_the_time() {
        // Timestamps that go back and forth: the running maximum is what is searched.
        let mut index = SparseIndex::default();
        let times = [50, 10, 70, 20, 90, 30, 95, 40];
        for (i, t) in times.iter().enumerate() {
            index.on_frame(i as u32, i as u32 * 5000, 5000, 4096, *t);
        }
        for at in [0, 10, 50, 51, 70, 71, 90, 95, 96, 1000] {
            let position = index.lookup_time(at);
            let first = times.iter().position(|t| *t >= at);
            let landed = position as usize / 5000;
            match first {
                Some(first) => {
                    assert!(
                        landed <= first,
                        "at {at}: landed on {landed}, first is {first}"
                    );
                    assert!(times[..landed].iter().all(|t| *t < at), "at {at}");
                }
                None => assert!(times[..landed].iter().all(|t| *t < at), "at {at}"),
            }
        }
        assert_eq!(
            index.lookup_time(71),
            4 * 5000,
            "on the first frame reaching 71"
        );
    }

    #[test]
    fn file_round_trips_and_damage_is_detected() {
        let (index, summary) = sample();
        let bytes = index.encode(&summary);
        let (decoded, decoded_summary) = SparseIndex::decode(&bytes).unwrap();
        assert_eq!((decoded.entries, decoded_summary), (index.entries, summary));
        for at in [0, 5, 13, 20, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(
                SparseIndex::decode(&bad).is_err(),
                "flip at {at} undetected"
            );
        }
        assert!(SparseIndex::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(SparseIndex::decode(&[]).is_err());
    }
}
