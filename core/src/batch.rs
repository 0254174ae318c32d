//! The one batch format of the whole system: Kafka RecordBatch v2 bytes.
//!
//! Producers send these bytes, the log stores them verbatim inside its frames, fetch returns them
//! and replication ships them. Only two fields are ever rewritten, `baseOffset` (bytes 0..8) and
//! `partitionLeaderEpoch` (bytes 12..16); both lie outside the batch's CRC-32C, so the producer's
//! checksum stays valid end to end and is verified exactly once, in [`RecordBatch::parse`].
//!
//! Layout (big-endian), from the Kafka protocol guide:
//! ```text
//! 0  baseOffset i64        17 crc u32 (CRC-32C of bytes 21..)   43 producerId i64
//! 8  batchLength i32       21 attributes i16                    51 producerEpoch i16
//! 12 partitionLeaderEpoch  23 lastOffsetDelta i32               53 baseSequence i32
//! 16 magic i8 (= 2)        27 baseTimestamp i64                 57 recordsCount i32
//!                          35 maxTimestamp i64                  61 records...
//! ```

/// Batches a partition remembers per idempotent producer to recognise a retry: a producer
/// keeps at most this many batches per partition unanswered, so a batch it sends again is
/// always among them. Kafka keeps five, the most its clients send unanswered with idempotence
/// on; five halved a native producer's rate on one partition under acks=all (issue 17's
/// note, `benches/idempotence.sh`), sixteen does not, at 40 bytes a batch.
pub const PRODUCER_BATCHES_KEPT: usize = 16;

use crate::compression::{Codec, CompressionError};
use crate::record::{RecordCursor, Records};
use bytes::{Bytes, BytesMut};

/// Size of the fixed RecordBatch v2 header, before the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only batch magic Oxbow stores.
pub const BATCH_MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORDS_COUNT_AT: usize = 57;
/// `batchLength` counts the bytes after itself.
pub(crate) const BATCH_LENGTH_EXCLUDES: usize = 12;

/// Why bytes are not a valid RecordBatch v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a batch header, or than the header's length field promises.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header says the batch occupies.
        needed: u64,
        /// Bytes actually present.
        available: u64,
    },
    /// `batchLength` is negative or too small to hold a header.
    #[error("record batch length field {0} is invalid")]
    BadLength(i32),
    /// Not a v2 batch (v0/v1 message sets are not accepted).
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    /// The producer's CRC-32C does not match the bytes.
    #[error(
        "record batch CRC-32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}"
    )]
    CrcMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// `lastOffsetDelta` or `recordsCount` is negative, or the batch holds no record.
    #[error("record batch has invalid record count {records_count} / last offset delta {last_offset_delta}")]
    BadRecordCount {
        /// `recordsCount` field.
        records_count: i32,
        /// `lastOffsetDelta` field.
        last_offset_delta: i32,
    },
    /// A record inside the batch does not decode.
    #[error("record {index} of the batch is malformed: {reason}")]
    BadRecord {
        /// Index of the record in the batch.
        index: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The records section does not decompress (or would exceed the decompressed limit).
    #[error("record batch: {0}")]
    Decompression(#[from] CompressionError),
    /// A control batch (a transaction marker): only the broker writes them (Kafka's rule).
    #[error("clients may not write control batches")]
    ControlBatch,
}

/// A validated Kafka RecordBatch v2, held as the bytes it arrived in.
///
/// Cheap to clone (`Bytes`), `Send`, so it crosses shards without copies.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("len", &self.bytes.len())
            .finish()
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Total size in bytes of the batch that starts at `bytes[0]`, read from its header, or `None`
/// when fewer than 12 bytes are present. Does not validate anything else.
pub fn batch_size_hint(bytes: &[u8]) -> Option<Result<u64, BatchError>> {
    if bytes.len() < BATCH_LENGTH_EXCLUDES {
        return None;
    }
    let length = be_i32(bytes, BATCH_LENGTH_AT);
    if length < (BATCH_HEADER_BYTES - BATCH_LENGTH_EXCLUDES) as i32 {
        return Some(Err(BatchError::BadLength(length)));
    }
    Some(Ok(length as u64 + BATCH_LENGTH_EXCLUDES as u64))
}

impl RecordBatch {
    /// Validates one whole batch: `bytes` must hold exactly one batch, with magic 2, a correct
    /// CRC-32C and a sane record count. This is the only place the producer's CRC is checked.
    pub fn parse(bytes: Bytes) -> Result<RecordBatch, BatchError> {
        let available = bytes.len() as u64;
        let needed = match batch_size_hint(&bytes) {
            None => {
                return Err(BatchError::Truncated {
                    needed: BATCH_HEADER_BYTES as u64,
                    available,
                })
            }
            Some(size) => size?,
        };
        if needed != available || available < BATCH_HEADER_BYTES as u64 {
            return Err(BatchError::Truncated { needed, available });
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != BATCH_MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let expected = u32::from_be_bytes(bytes[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
        let actual = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        if expected != actual {
            return Err(BatchError::CrcMismatch { expected, actual });
        }
        let batch = RecordBatch { bytes };
        let (records_count, last_offset_delta) = (batch.records_count(), batch.last_offset_delta());
        if records_count < 1 || last_offset_delta < 0 {
            return Err(BatchError::BadRecordCount {
                records_count,
                last_offset_delta,
            });
        }
        Ok(batch)
    }

    /// Splits a concatenation of batches (a Kafka `records` field) and validates each one.
    pub fn parse_many(mut bytes: Bytes) -> Result<Vec<RecordBatch>, BatchError> {
        let mut batches = Vec::new();
        while !bytes.is_empty() {
            let size = match batch_size_hint(&bytes) {
                None => {
                    return Err(BatchError::Truncated {
                        needed: BATCH_HEADER_BYTES as u64,
                        available: bytes.len() as u64,
                    })
                }
                Some(size) => size?,
            };
            if size > bytes.len() as u64 {
                return Err(BatchError::Truncated {
                    needed: size,
                    available: bytes.len() as u64,
                });
            }
            batches.push(RecordBatch::parse(bytes.split_to(size as usize))?);
        }
        Ok(batches)
    }

    /// Wraps bytes that were validated before (read back from a checksummed log frame) without
    /// recomputing the CRC-32C. Only the header length is checked.
    pub fn from_trusted(bytes: Bytes) -> Result<RecordBatch, BatchError> {
        match batch_size_hint(&bytes) {
            Some(Ok(size)) if size == bytes.len() as u64 => Ok(RecordBatch { bytes }),
            Some(Ok(size)) => Err(BatchError::Truncated {
                needed: size,
                available: bytes.len() as u64,
            }),
            Some(Err(e)) => Err(e),
            None => Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES as u64,
                available: bytes.len() as u64,
            }),
        }
    }

    /// Wraps bytes the builder just encoded (valid by construction, CRC included).
    pub(crate) fn from_built(bytes: Bytes) -> RecordBatch {
        RecordBatch { bytes }
    }

    /// Returns this batch with `baseOffset` and `partitionLeaderEpoch` set. Copies the bytes only
    /// when they are shared with another owner.
    pub fn with_base_offset(self, base_offset: u64, leader_epoch: i32) -> RecordBatch {
        let mut bytes = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        bytes[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
        bytes[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
        RecordBatch {
            bytes: bytes.freeze(),
        }
    }

    /// The batch's bytes, exactly as stored and sent.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// Consumes the batch, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    /// Size of the batch in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Always false: a valid batch holds a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Offset of the first record (as patched by the log; whatever the producer sent before).
    pub fn base_offset(&self) -> u64 {
        be_i64(&self.bytes, BASE_OFFSET_AT) as u64
    }
    /// Offset of the last record, relative to the base offset.
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.bytes, LAST_OFFSET_DELTA_AT)
    }
    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset() + self.last_offset_delta() as u64
    }
    /// Leader epoch the batch was appended under.
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.bytes, LEADER_EPOCH_AT)
    }
    /// Attribute bits (compression codec in bits 0-2).
    pub fn attributes(&self) -> i16 {
        be_i16(&self.bytes, ATTRIBUTES_AT)
    }
    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    /// Whether the batch is a control batch (a transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    /// Timestamp of the first record, milliseconds since the epoch.
    pub fn base_timestamp(&self) -> i64 {
        be_i64(&self.bytes, BASE_TIMESTAMP_AT)
    }
    /// Largest record timestamp, milliseconds since the epoch.
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.bytes, MAX_TIMESTAMP_AT)
    }
    /// Idempotent producer id, or -1.
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.bytes, PRODUCER_ID_AT)
    }
    /// Idempotent producer epoch, or -1.
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.bytes, PRODUCER_EPOCH_AT)
    }
    /// Sequence number of the first record, or -1.
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.bytes, BASE_SEQUENCE_AT)
    }
    /// Number of records the header declares.
    pub fn records_count(&self) -> i32 {
        be_i32(&self.bytes, RECORDS_COUNT_AT)
    }

    /// Compression codec of the records section.
    pub fn codec(&self) -> Result<Codec, BatchError> {
        Ok(Codec::from_attributes(self.attributes())?)
    }

    /// The records section, decompressed when the producer compressed it; at most
    /// `decompressed_bytes_max` bytes come out of a compressed one.
    pub(crate) fn records_section(&self, decompressed_bytes_max: u64) -> Result<Bytes, BatchError> {
        let section = self.bytes.slice(BATCH_HEADER_BYTES..);
        match self.codec()? {
            Codec::None => Ok(section),
            codec => Ok(Bytes::from(
                codec.decompress(&section, decompressed_bytes_max)?,
            )),
        }
    }

    /// Iterates the records, decompressing them first if the batch is compressed (at most
    /// `decompressed_bytes_max` bytes; more is an error, so a hostile batch cannot exhaust
    /// memory). Keys, values and headers share one buffer.
    pub fn records(&self, decompressed_bytes_max: u64) -> Result<Records, BatchError> {
        Ok(Records::new(
            self.records_section(decompressed_bytes_max)?,
            self.records_count(),
            self.base_offset(),
            self.base_timestamp(),
        ))
    }

    /// Checks what [`RecordBatch::parse`] does not: the records themselves. They must
    /// decompress within `decompressed_bytes_max`, each must decode and fill exactly its
    /// length, their offset deltas must count 0, 1, 2, … and their number must agree with the
    /// header (`recordsCount` = `lastOffsetDelta` + 1), as Kafka's log validator requires of
    /// what clients send. A batch that passes is one every reader can split into records.
    /// Control batches are refused (only a broker writes them). A transactional batch passes:
    /// whether its transaction is open is the coordinator's to say.
    pub fn validate_records(&self, decompressed_bytes_max: u64) -> Result<(), BatchError> {
        if self.is_control() {
            return Err(BatchError::ControlBatch);
        }
        let (count, last_delta) = (self.records_count(), self.last_offset_delta());
        if count as i64 != last_delta as i64 + 1 {
            return Err(BatchError::BadRecordCount {
                records_count: count,
                last_offset_delta: last_delta,
            });
        }
        let section = self.records_section(decompressed_bytes_max)?;
        let mut cursor = RecordCursor {
            bytes: &section,
            at: 0,
        };
        for index in 0..count as u32 {
            let bad = |reason| BatchError::BadRecord { index, reason };
            let record = cursor.record().map_err(bad)?;
            if record.offset_delta != index as i64 {
                return Err(bad("offset deltas are not consecutive from 0"));
            }
        }
        if cursor.at != section.len() {
            return Err(BatchError::BadRecord {
                index: count as u32,
                reason: "bytes follow the last record",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, Record};
    use proptest::prelude::*;

    fn sample(n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new(1_000);
        for i in 0..n {
            b.push(
                Some(format!("k{i}").as_bytes()),
                Some(&[i as u8; 10]),
                1_000 + i as i64,
            );
        }
        b.build()
    }

    #[test]
    fn built_batch_parses_and_iterates() {
        let batch = RecordBatch::parse(sample(3).into_bytes()).unwrap();
        assert_eq!(batch.records_count(), 3);
        assert_eq!(batch.last_offset_delta(), 2);
        assert_eq!(batch.max_timestamp(), 1_002);
        let batch = batch.with_base_offset(40, 7);
        let records: Vec<Record> = batch
            .records(u64::MAX)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].offset, 42);
        assert_eq!(records[1].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].value.as_deref(), Some(&[1u8; 10][..]));
        assert_eq!(batch.partition_leader_epoch(), 7);
        // Patching lies outside the CRC: the batch still validates.
        RecordBatch::parse(batch.into_bytes()).unwrap();
    }

    #[test]
    fn corrupt_batches_are_rejected() {
        let good = sample(2).into_bytes();
        let mut flipped = good.to_vec();
        flipped[70] ^= 1;
        assert!(matches!(
            RecordBatch::parse(Bytes::from(flipped)),
            Err(BatchError::CrcMismatch { .. })
        ));
        let mut magic = good.to_vec();
        magic[16] = 1;
        assert_eq!(
            RecordBatch::parse(Bytes::from(magic)),
            Err(BatchError::UnsupportedMagic(1))
        );
        assert!(matches!(
            RecordBatch::parse(good.slice(..good.len() - 1)),
            Err(BatchError::Truncated { .. })
        ));
        let two = [good.clone(), good.clone()].concat();
        assert_eq!(RecordBatch::parse_many(Bytes::from(two)).unwrap().len(), 2);
    }

    /// A copy of `batch` whose records section is `section` (attributes set to `codec`),
    /// with a correct CRC: what a buggy or hostile producer could send.
    fn with_section(batch: &RecordBatch, codec: Codec, section: &[u8]) -> RecordBatch {
        let mut bytes = batch.bytes()[..BATCH_HEADER_BYTES].to_vec();
        bytes.extend_from_slice(section);
        let length = (bytes.len() - BATCH_LENGTH_EXCLUDES) as i32;
        bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
            .copy_from_slice(&codec.attribute_bits().to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse(Bytes::from(bytes)).unwrap()
    }

    #[test]
    fn every_codec_carries_keys_values_and_headers() {
        for codec in Codec::ALL {
            let mut builder = BatchBuilder::new(5_000).compression(codec, None);
            for i in 0..50u32 {
                let header = format!("h{i}");
                builder.push_with_headers(
                    Some(&i.to_be_bytes()),
                    (i % 7 != 0).then_some(&[i as u8; 300][..]),
                    &[(b"n", Some(header.as_bytes())), (b"none", None)],
                    5_000 + i as i64,
                );
            }
            let batch = RecordBatch::parse(builder.build().into_bytes()).unwrap();
            assert_eq!(batch.codec().unwrap(), codec);
            batch.validate_records(1 << 20).unwrap();
            let records: Vec<Record> = batch
                .records(1 << 20)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(records.len(), 50, "{codec}");
            for (i, record) in records.iter().enumerate() {
                assert_eq!(record.offset, i as u64);
                assert_eq!(record.timestamp, 5_000 + i as i64);
                assert_eq!(record.key.as_deref(), Some(&(i as u32).to_be_bytes()[..]));
                assert_eq!(record.value.is_none(), i % 7 == 0);
                assert_eq!(record.headers.len(), 2);
                assert_eq!(
                    record.headers[0].1.as_deref(),
                    Some(format!("h{i}").as_bytes())
                );
                assert_eq!(record.headers[1].1, None);
            }
        }
    }

    #[test]
    fn records_that_do_not_decode_fail_validation() {
        let good = sample(3);
        let section = good.bytes()[BATCH_HEADER_BYTES..].to_vec();
        good.validate_records(u64::MAX).unwrap();
        // Trailing bytes after the last record.
        let mut longer = section.clone();
        longer.push(0);
        let trailing = with_section(&good, Codec::None, &longer);
        assert!(matches!(
            trailing.validate_records(u64::MAX),
            Err(BatchError::BadRecord { index: 3, .. })
        ));
        // A record cut short.
        let cut = with_section(&good, Codec::None, &section[..section.len() - 2]);
        assert!(matches!(
            cut.validate_records(u64::MAX),
            Err(BatchError::BadRecord { index: 2, .. })
        ));
        // Compressed bytes that are not what the attributes say.
        let mut damaged = Codec::Zstd.compress(None, &section);
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        let damaged = with_section(&good, Codec::Zstd, &damaged);
        assert!(damaged.validate_records(u64::MAX).is_err());
        assert!(
            damaged.records(u64::MAX).is_err()
                || damaged.records(u64::MAX).unwrap().any(|r| r.is_err())
        );
        // A bomb: the records section decompresses past the limit.
        let bomb = with_section(
            &good,
            Codec::Gzip,
            &Codec::Gzip.compress(None, &vec![0; 1 << 20]),
        );
        assert!(matches!(
            bomb.validate_records(64 << 10),
            Err(BatchError::Decompression(CompressionError::TooLarge { .. }))
        ));
        // A header count that the records do not match.
        let mut miscounted = good.bytes().to_vec();
        miscounted[RECORDS_COUNT_AT + 3] = 2;
        let crc = crc32c::crc32c(&miscounted[ATTRIBUTES_AT..]);
        miscounted[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let miscounted = RecordBatch::parse(Bytes::from(miscounted)).unwrap();
        assert!(matches!(
            miscounted.validate_records(u64::MAX),
            Err(BatchError::BadRecordCount { .. })
        ));
        // Transaction markers and transactional batches, sealed with a correct CRC.
        let flagged = |bits: i16| {
            let mut bytes = good.bytes().to_vec();
            let attributes = i16::from_be_bytes([bytes[ATTRIBUTES_AT], bytes[ATTRIBUTES_AT + 1]]);
            bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
                .copy_from_slice(&(attributes | bits).to_be_bytes());
            let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
            bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            RecordBatch::parse(Bytes::from(bytes)).unwrap()
        };
        let marker = flagged(0x30);
        assert!(marker.is_control() && marker.is_transactional());
        assert!(matches!(
            marker.validate_records(u64::MAX),
            Err(BatchError::ControlBatch)
        ));
        let transactional = flagged(0x10);
        assert!(!transactional.is_control());
        assert!(transactional.validate_records(u64::MAX).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RecordBatch::parse_many(Bytes::from(bytes.clone()));
            if let Ok(batch) = RecordBatch::from_trusted(Bytes::from(bytes)) {
                if let Ok(records) = batch.records(4096) {
                    for _ in records {}
                }
                let _ = batch.validate_records(4096);
            }
        }
    }
}
