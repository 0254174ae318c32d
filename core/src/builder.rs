//! Building record batches the way a Kafka producer does: records encoded one by one, the
//! records section compressed with the chosen codec, then the header with its CRC-32C.

use crate::batch::{
    RecordBatch, ATTRIBUTES_AT, BATCH_HEADER_BYTES, BATCH_LENGTH_EXCLUDES, BATCH_MAGIC_V2, CRC_AT,
};
use crate::compression::Codec;
use crate::record::put_record;
use bytes::{BufMut, BytesMut};

/// Builds a RecordBatch v2, as a Kafka producer would send it.
///
/// Used by Oxbow's own client, the CLI, benchmarks and tests.
///
/// ```
/// use oxbow_core::{BatchBuilder, Codec, RecordBatch};
///
/// let mut builder = BatchBuilder::new(1_700_000_000_000).compression(Codec::Lz4, None);
/// builder.push(Some(b"user-1"), Some(b"signed up"), 1_700_000_000_000);
/// builder.push_with_headers(
///     Some(b"user-2"),
///     Some(b"logged in"),
///     &[(b"trace-id", Some(b"7f3a"))],
///     1_700_000_000_005,
/// );
/// // The log assigns offsets by patching the header; the producer's CRC stays valid.
/// let stored = builder.build().with_base_offset(100, 0);
/// let checked = RecordBatch::parse(stored.into_bytes()).unwrap();
/// let limit = 1 << 20; // most bytes the records may decompress to
/// let records: Vec<_> = checked.records(limit).unwrap().map(Result::unwrap).collect();
/// assert_eq!(records[1].offset, 101);
/// assert_eq!(&records[1].headers[0].0[..], b"trace-id");
/// assert_eq!(checked.max_timestamp(), 1_700_000_000_005);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    records: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: (i64, i16, i32),
    /// Transactional and control bits; the codec's are added when built.
    flags: i16,
    codec: Codec,
    level: Option<i32>,
}

impl BatchBuilder {
    /// Starts an uncompressed batch whose first record has timestamp `base_timestamp_ms`.
    pub fn new(base_timestamp_ms: i64) -> BatchBuilder {
        BatchBuilder {
            records: BytesMut::new(),
            count: 0,
            base_timestamp: base_timestamp_ms,
            max_timestamp: base_timestamp_ms,
            producer: (-1, -1, -1),
            flags: 0,
            codec: Codec::None,
            level: None,
        }
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer = (id, epoch, base_sequence);
        self
    }

    /// Sets attribute bits besides the codec's: [`crate::control::TRANSACTIONAL_BIT`] for a
    /// transactional producer's batch, with [`crate::control::CONTROL_BIT`] for a marker.
    pub fn attributes(mut self, flags: i16) -> BatchBuilder {
        self.flags = flags;
        self
    }

    /// Compresses the records section with `codec` when built; `level` must pass
    /// [`Codec::check_level`] (a caller bug otherwise), `None` is the codec's default.
    pub fn compression(mut self, codec: Codec, level: Option<i32>) -> BatchBuilder {
        if let Err(e) = codec.check_level(level) {
            panic!("compression level checked by the caller: {e}");
        }
        self.codec = codec;
        self.level = level;
        self
    }

    /// Appends a record with the given key, value and timestamp, without headers.
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) {
        self.push_with_headers(key, value, &[], timestamp_ms);
    }

    /// Appends a record with headers.
    pub fn push_with_headers(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        timestamp_ms: i64,
    ) {
        let timestamp_delta = timestamp_ms - self.base_timestamp;
        put_record(
            &mut self.records,
            self.count as i64,
            timestamp_delta,
            key,
            value,
            headers,
        );
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
    /// Size of the batch if it were built now without compression (an upper bound on the
    /// compressed size but for incompressible data).
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// Encodes the batch with base offset 0; panics if no record was pushed (a caller bug).
    pub fn build(self) -> RecordBatch {
        assert!(self.count > 0, "a record batch needs at least one record");
        let compressed;
        let section: &[u8] = match self.codec {
            Codec::None => &self.records,
            codec => {
                compressed = codec.compress(self.level, &self.records);
                &compressed
            }
        };
        let size = BATCH_HEADER_BYTES + section.len();
        let mut buf = BytesMut::with_capacity(size);
        buf.put_i64(0);
        buf.put_i32((size - BATCH_LENGTH_EXCLUDES) as i32);
        buf.put_i32(-1);
        buf.put_i8(BATCH_MAGIC_V2);
        buf.put_u32(0); // CRC, filled below
        buf.put_i16(self.codec.attribute_bits() | self.flags);
        buf.put_i32(self.count - 1);
        buf.put_i64(self.base_timestamp);
        buf.put_i64(self.max_timestamp);
        buf.put_i64(self.producer.0);
        buf.put_i16(self.producer.1);
        buf.put_i32(self.producer.2);
        buf.put_i32(self.count);
        buf.put_slice(section);
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::from_built(buf.freeze())
    }
}
