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

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the fixed RecordBatch v2 header, before the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only batch magic Oxbow stores.
pub const BATCH_MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
/// `batchLength` counts the bytes after itself.
const BATCH_LENGTH_EXCLUDES: usize = 12;

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
    /// A record inside an uncompressed batch does not decode.
    #[error("record {index} of the batch is malformed: {reason}")]
    BadRecord {
        /// Index of the record in the batch.
        index: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Records of a compressed batch cannot be iterated without decompressing.
    #[error("record batch is compressed (codec {0}); record iteration needs decompression")]
    Compressed(u8),
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
    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes() & 0x7) as u8
    }
    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
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

    /// Iterates the records of an uncompressed batch.
    pub fn records(&self) -> Result<Records<'_>, BatchError> {
        match self.compression() {
            0 => Ok(Records {
                batch: self,
                at: BATCH_HEADER_BYTES,
                index: 0,
            }),
            codec => Err(BatchError::Compressed(codec)),
        }
    }
}

/// One record decoded from a batch; key and value borrow the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset (batch base offset + offset delta).
    pub offset: u64,
    /// Absolute timestamp in milliseconds.
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, if any (a tombstone has none).
    pub value: Option<Bytes>,
    /// Headers as (key, value) pairs.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Iterator over the records of an uncompressed batch; see [`RecordBatch::records`].
pub struct Records<'a> {
    batch: &'a RecordBatch,
    at: usize,
    index: u32,
}

impl Iterator for Records<'_> {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index as i64 >= self.batch.records_count() as i64
            || self.at >= self.batch.bytes.len()
        {
            return None;
        }
        let index = self.index;
        self.index += 1;
        let mut cursor = RecordCursor {
            bytes: &self.batch.bytes,
            at: self.at,
        };
        let result = cursor.record(self.batch).map_err(|reason| {
            self.at = self.batch.bytes.len();
            BatchError::BadRecord { index, reason }
        });
        if result.is_ok() {
            self.at = cursor.at;
        }
        Some(result)
    }
}

struct RecordCursor<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl RecordCursor<'_> {
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or("varint runs past the batch")?;
            self.at += 1;
            raw |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, &'static str> {
        let len = self.varlong()?;
        if len < 0 {
            return Ok(None);
        }
        let end = self
            .at
            .checked_add(len as usize)
            .ok_or("length overflows")?;
        if end > self.bytes.len() {
            return Err("field runs past the batch");
        }
        let field = self.bytes.slice(self.at..end);
        self.at = end;
        Ok(Some(field))
    }

    fn record(&mut self, batch: &RecordBatch) -> Result<Record, &'static str> {
        let length = self.varlong()?;
        if length < 0 || self.at + length as usize > self.bytes.len() {
            return Err("record length runs past the batch");
        }
        let end = self.at + length as usize;
        self.at += 1; // attributes, unused in v2
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varlong()?;
        let key = self.nullable_bytes()?;
        let value = self.nullable_bytes()?;
        let header_count = self.varlong()?;
        if header_count < 0 || header_count as usize > length as usize {
            return Err("header count is impossible");
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key = self.nullable_bytes()?.ok_or("header key is null")?;
            headers.push((key, self.nullable_bytes()?));
        }
        if self.at != end {
            return Err("record length disagrees with its fields");
        }
        Ok(Record {
            offset: batch.base_offset().wrapping_add(offset_delta as u64),
            timestamp: batch.base_timestamp().wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }
}

fn put_varlong(buf: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buf.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

fn varlong_len(value: i64) -> usize {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while raw >= 0x80 {
        raw >>= 7;
        len += 1;
    }
    len
}

/// Builds an uncompressed RecordBatch v2, as a non-idempotent producer would send it.
///
/// Used by Oxbow's own client, the CLI, benchmarks and tests.
///
/// ```
/// use oxbow_core::{BatchBuilder, RecordBatch};
///
/// let mut builder = BatchBuilder::new(1_700_000_000_000);
/// builder.push(Some(b"user-1"), Some(b"signed up"), 1_700_000_000_000);
/// builder.push(Some(b"user-2"), Some(b"logged in"), 1_700_000_000_005);
/// // The log assigns offsets by patching the header; the producer's CRC stays valid.
/// let stored = builder.build().with_base_offset(100, 0);
/// let checked = RecordBatch::parse(stored.into_bytes()).unwrap();
/// let offsets: Vec<u64> = checked.records().unwrap().map(|r| r.unwrap().offset).collect();
/// assert_eq!(offsets, [100, 101]);
/// assert_eq!(checked.max_timestamp(), 1_700_000_000_005);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    records: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: (i64, i16, i32),
}

impl BatchBuilder {
    /// Starts a batch whose first record has timestamp `base_timestamp_ms`.
    pub fn new(base_timestamp_ms: i64) -> BatchBuilder {
        BatchBuilder {
            records: BytesMut::new(),
            count: 0,
            base_timestamp: base_timestamp_ms,
            max_timestamp: base_timestamp_ms,
            producer: (-1, -1, -1),
        }
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer = (id, epoch, base_sequence);
        self
    }

    /// Appends a record with the given key, value and timestamp.
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) {
        let timestamp_delta = timestamp_ms - self.base_timestamp;
        let offset_delta = self.count as i64;
        let field_len = |f: Option<&[u8]>| match f {
            None => varlong_len(-1),
            Some(b) => varlong_len(b.len() as i64) + b.len(),
        };
        let body = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + field_len(key)
            + field_len(value)
            + varlong_len(0);
        put_varlong(&mut self.records, body as i64);
        self.records.put_u8(0);
        put_varlong(&mut self.records, timestamp_delta);
        put_varlong(&mut self.records, offset_delta);
        for field in [key, value] {
            match field {
                None => put_varlong(&mut self.records, -1),
                Some(b) => {
                    put_varlong(&mut self.records, b.len() as i64);
                    self.records.put_slice(b);
                }
            }
        }
        put_varlong(&mut self.records, 0);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Size of the batch if it were built now.
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// Encodes the batch with base offset 0; panics if no record was pushed (a caller bug).
    pub fn build(self) -> RecordBatch {
        assert!(self.count > 0, "a record batch needs at least one record");
        let mut buf = BytesMut::with_capacity(self.size_bytes());
        buf.put_i64(0);
        buf.put_i32((self.size_bytes() - BATCH_LENGTH_EXCLUDES) as i32);
        buf.put_i32(-1);
        buf.put_i8(BATCH_MAGIC_V2);
        buf.put_u32(0); // CRC, filled below
        buf.put_i16(0);
        buf.put_i32(self.count - 1);
        buf.put_i64(self.base_timestamp);
        buf.put_i64(self.max_timestamp);
        buf.put_i64(self.producer.0);
        buf.put_i16(self.producer.1);
        buf.put_i32(self.producer.2);
        buf.put_i32(self.count);
        buf.put_slice(&self.records);
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch {
            bytes: buf.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let records: Vec<Record> = batch.records().unwrap().map(Result::unwrap).collect();
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RecordBatch::parse_many(Bytes::from(bytes.clone()));
            if let Ok(batch) = RecordBatch::from_trusted(Bytes::from(bytes)) {
                if let Ok(records) = batch.records() {
                    for _ in records {}
                }
            }
        }
    }
}
