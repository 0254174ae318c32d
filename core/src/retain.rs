//! Compaction's rewrite of a batch: the records a caller keeps, byte for byte.
//!
//! A kept record is copied unchanged: its offset and timestamp are deltas from the batch's base
//! offset and base timestamp, and the header keeps both, so every kept record reads back at its
//! own offset. The header also keeps `lastOffsetDelta` (Kafka does the same), so the batch still
//! ends where it ended and a reader's next offset is unchanged; only `recordsCount`, the length
//! and the CRC-32C change. A compressed batch is compressed again with its codec.

use crate::batch::{
    RecordBatch, ATTRIBUTES_AT, BATCH_HEADER_BYTES, BATCH_LENGTH_AT, BATCH_LENGTH_EXCLUDES, CRC_AT,
    RECORDS_COUNT_AT,
};
use crate::compression::Codec;
use crate::record::RecordCursor;
use crate::BatchError;
use bytes::{BufMut, BytesMut};

/// What compaction needs to judge a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset.
    pub offset: u64,
    /// Absolute timestamp (ms).
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// A record without a value: a delete (tombstone).
    pub is_tombstone: bool,
}

/// The outcome of [`RecordBatch::retain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// Every record is kept: the batch stays as it is.
    All,
    /// No record is kept.
    Nothing,
    /// Some are: the batch holding only them.
    Some(RecordBatch),
}

impl RecordBatch {
    /// The batch with only the records `keep` chooses (see the module docs). Fails when the
    /// records do not decode or decompress within `decompressed_bytes_max`.
    pub fn retain(
        &self,
        decompressed_bytes_max: u64,
        mut keep: impl FnMut(&RecordView) -> bool,
    ) -> Result<Retained, BatchError> {
        let section = self.records_section(decompressed_bytes_max)?;
        let count = self.records_count().max(0) as u32;
        let mut cursor = RecordCursor {
            bytes: &section,
            at: 0,
        };
        let mut kept = Vec::new();
        for index in 0..count {
            let start = cursor.at;
            let raw = cursor
                .record()
                .map_err(|reason| BatchError::BadRecord { index, reason })?;
            let view = RecordView {
                offset: self.base_offset().wrapping_add(raw.offset_delta as u64),
                timestamp: self.base_timestamp().wrapping_add(raw.timestamp_delta),
                key: raw.key.map(|range| &section[range]),
                is_tombstone: raw.value.is_none(),
            };
            if keep(&view) {
                kept.push(start..cursor.at);
            }
        }
        if kept.len() as u32 == count {
            return Ok(Retained::All);
        }
        if kept.is_empty() {
            return Ok(Retained::Nothing);
        }
        let mut records = Vec::with_capacity(kept.iter().map(|r| r.len()).sum());
        for range in &kept {
            records.extend_from_slice(&section[range.clone()]);
        }
        let records = match self.codec()? {
            Codec::None => records,
            codec => codec.compress(None, &records),
        };
        let header = &self.bytes()[..BATCH_HEADER_BYTES];
        let mut bytes = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len());
        bytes.put_slice(header);
        bytes.put_slice(&records);
        let length = (bytes.len() - BATCH_LENGTH_EXCLUDES) as i32;
        bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        bytes[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4]
            .copy_from_slice(&(kept.len() as i32).to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(Retained::Some(RecordBatch::from_built(bytes.freeze())))
    }
}

impl RecordBatch {
    /// Where in the batch the records without a key are (their indexes from 0): a compacted
    /// topic refuses them, as Kafka does.
    pub fn keyless_records(&self, decompressed_bytes_max: u64) -> Result<Vec<u32>, BatchError> {
        let mut keyless = Vec::new();
        let mut index = 0;
        // Keeping every record, `retain` only walks them: nothing is copied.
        self.retain(decompressed_bytes_max, |record| {
            if record.key.is_none() {
                keyless.push(index);
            }
            index += 1;
            true
        })?;
        Ok(keyless)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, Record};

    fn batch(codec: Codec) -> RecordBatch {
        let mut b = BatchBuilder::new(5_000).compression(codec, None);
        for i in 0..6u8 {
            let value = [i; 100];
            let value = (i != 4).then_some(&value[..]);
            b.push(Some(&[b'k', i % 3]), value, 5_000 + i as i64);
        }
        b.build().with_base_offset(100, 3)
    }

    fn records(batch: &RecordBatch) -> Vec<Record> {
        batch
            .records(u64::MAX)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn kept_records_keep_their_offsets_timestamps_and_bytes_and_the_batch_its_end() {
        for codec in [Codec::None, Codec::Zstd, Codec::Lz4] {
            let original = batch(codec);
            let mut seen = Vec::new();
            let retained = original
                .retain(u64::MAX, |r| {
                    seen.push((r.offset, r.key.unwrap()[1], r.is_tombstone));
                    r.offset % 2 == 1
                })
                .unwrap();
            assert_eq!(seen.len(), 6);
            assert_eq!(seen[4], (104, 1, true), "{codec:?}");
            let Retained::Some(kept) = retained else {
                panic!("{codec:?}: {retained:?}")
            };
            // The producer's checksum is recomputed: the batch validates like any other.
            let kept = RecordBatch::parse(kept.into_bytes()).unwrap();
            assert_eq!(kept.records_count(), 3);
            assert_eq!(
                (kept.base_offset(), kept.last_offset()),
                (100, 105),
                "the batch still ends where it did"
            );
            assert_eq!(kept.partition_leader_epoch(), 3);
            assert_eq!(kept.codec().unwrap(), codec);
            let before: Vec<Record> = records(&original)
                .into_iter()
                .filter(|r| r.offset % 2 == 1)
                .collect();
            assert_eq!(records(&kept), before);
        }
    }

    #[test]
    fn keyless_records_are_found_by_index() {
        let mut b = BatchBuilder::new(0);
        b.push(Some(b"k"), Some(b"v"), 0);
        b.push(None, Some(b"v"), 0);
        b.push(Some(b"k"), None, 0);
        b.push(None, None, 0);
        assert_eq!(b.build().keyless_records(u64::MAX), Ok(vec![1, 3]));
        assert_eq!(batch(Codec::Zstd).keyless_records(u64::MAX), Ok(vec![]));
    }

    #[test]
    fn keeping_all_or_none_says_so_without_a_rewrite() {
        let original = batch(Codec::None);
        assert_eq!(original.retain(u64::MAX, |_| true), Ok(Retained::All));
        assert_eq!(original.retain(u64::MAX, |_| false), Ok(Retained::Nothing));
        assert!(batch(Codec::Zstd).retain(10, |_| true).is_err());
    }
}
