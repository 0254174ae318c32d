//! A Fetch response written without copying its records: the stored batches (slices of the
//! read cache's blocks or of the tail cache) go to the socket as they are, between the encoded
//! pieces of the response around them.
//!
//! The response is encoded by `kafka-protocol` twice, once with every partition's records
//! absent (null) and once with them empty; the two encodings differ exactly at each records
//! field, in partition order (a null is `-1` where an empty value is `0` as an INT32 length
//! before v12, and `0` where it is `1` as a compact varint from v12). The frame is the first
//! encoding with each null replaced by the real length and the batches, so the crate still
//! encodes every other field and tagged field.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use oxbow_core::RecordBatch;
use std::io;

/// Batches smaller than this are copied into the frame's encoded pieces (one write instead of
/// many small ones); larger ones are written from where they are stored.
const COPY_BELOW_BYTES: usize = 16 << 10;

/// First Fetch version with flexible (compact) encodings.
const FLEXIBLE_VERSION: i16 = 12;

/// A response frame as pieces to write in order: length prefix, header and body.
pub struct FetchFrame {
    pub chunks: Vec<Bytes>,
    pub len: usize,
}

/// Encodes `response` (header v`header_version`, body v`version`) with the records of its
/// partitions, in order, taken from `records` (one list of batches per partition).
pub fn encode_fetch(
    correlation_id: i32,
    header_version: i16,
    mut response: FetchResponse,
    records: Vec<Vec<RecordBatch>>,
    version: i16,
) -> io::Result<FetchFrame> {
    set_records(&mut response, None);
    let mut absent = encode(correlation_id, header_version, &response, version)?;
    set_records(&mut response, Some(Bytes::new()));
    let empty = encode(correlation_id, header_version, &response, version)?;
    let null_len = if version >= FLEXIBLE_VERSION { 1 } else { 4 };
    let fields = records_fields(&absent, &empty, null_len);
    if fields.len() != records.len() {
        return Err(io::Error::other(format!(
            "found {} records fields for {} partitions",
            fields.len(),
            records.len()
        )));
    }
    let records_len: usize = records
        .iter()
        .map(|batches| {
            let bytes = batches.iter().map(RecordBatch::len).sum::<usize>();
            length_prefix(bytes, version).len() + bytes
        })
        .sum();
    let len = absent.len() - fields.len() * null_len + records_len;
    let body_len = i32::try_from(len - 4).map_err(io::Error::other)?;
    absent[..4].copy_from_slice(&body_len.to_be_bytes());
    let absent = absent.freeze();
    let mut chunks = Vec::new();
    let mut piece = BytesMut::new();
    let mut cursor = 0;
    for (field, batches) in fields.into_iter().zip(records) {
        piece.extend_from_slice(&absent[cursor..field]);
        let bytes = batches.iter().map(RecordBatch::len).sum();
        piece.extend_from_slice(&length_prefix(bytes, version));
        for batch in batches {
            if batch.len() < COPY_BELOW_BYTES {
                piece.extend_from_slice(batch.bytes());
            } else {
                if !piece.is_empty() {
                    chunks.push(piece.split().freeze());
                }
                chunks.push(batch.bytes().clone());
            }
        }
        cursor = field + null_len;
    }
    piece.extend_from_slice(&absent[cursor..]);
    chunks.push(piece.freeze());
    Ok(FetchFrame { chunks, len })
}

fn set_records(response: &mut FetchResponse, records: Option<Bytes>) {
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            partition.records = records.clone();
        }
    }
}

/// The frame: a length prefix (filled in later), the header and the body.
fn encode(
    correlation_id: i32,
    header_version: i16,
    response: &FetchResponse,
    version: i16,
) -> io::Result<BytesMut> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    (header.encode(&mut out, header_version)).map_err(io::Error::other)?;
    (response.encode(&mut out, version)).map_err(io::Error::other)?;
    Ok(out)
}

/// Where each records field starts: where the two encodings first differ, field by field.
fn records_fields(absent: &[u8], empty: &[u8], null_len: usize) -> Vec<usize> {
    let mut fields = Vec::new();
    if absent.len() != empty.len() {
        return fields;
    }
    let mut at = 0;
    while at < absent.len() {
        if absent[at] != empty[at] {
            fields.push(at);
            at += null_len;
        } else {
            at += 1;
        }
    }
    fields
}

/// The length before `bytes` bytes of records: INT32, or from v12 an unsigned varint of the
/// length plus one.
fn length_prefix(bytes: usize, version: i16) -> Vec<u8> {
    if version < FLEXIBLE_VERSION {
        return (bytes as i32).to_be_bytes().to_vec();
    }
    let mut value = bytes as u64 + 1;
    let mut out = Vec::with_capacity(5);
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use oxbow_core::BatchBuilder;

    fn batch(
        base: u64,
        records: usize,
        value_bytes: usize,
        rng: &mut fastrand::Rng,
    ) -> RecordBatch {
        let mut builder = BatchBuilder::new(1_700_000_000_000);
        let value: Vec<u8> = (0..value_bytes).map(|_| rng.u8(..)).collect();
        for _ in 0..records {
            builder.push(Some(b"key"), Some(&value), 1_700_000_000_000);
        }
        builder.build().with_base_offset(base, 0)
    }

    /// The response as the crate encodes it with every partition's batches copied together.
    fn copied(
        correlation_id: i32,
        header_version: i16,
        response: &FetchResponse,
        records: &[Vec<RecordBatch>],
        version: i16,
    ) -> Vec<u8> {
        let mut response = response.clone();
        let mut each = records.iter();
        for topic in &mut response.responses {
            for partition in &mut topic.partitions {
                let mut joined = BytesMut::new();
                for batch in each.next().unwrap() {
                    joined.extend_from_slice(batch.bytes());
                }
                partition.records = Some(joined.freeze());
            }
        }
        let mut out = encode(correlation_id, header_version, &response, version).unwrap();
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out.to_vec()
    }

    #[test]
    fn the_frame_is_byte_for_byte_what_the_crate_encodes_with_the_records_copied() {
        let mut rng = fastrand::Rng::with_seed(7);
        for case in 0..200 {
            let version = rng.i16(4..=12);
            let header_version = if version >= FLEXIBLE_VERSION { 1 } else { 0 };
            let mut response = FetchResponse::default();
            response.throttle_time_ms = rng.i32(0..10);
            let mut records = Vec::new();
            for t in 0..rng.usize(1..4) {
                let mut topic = FetchableTopicResponse::default();
                topic.topic = TopicName(StrBytes::from_string(format!("topic-{case}-{t}")));
                for p in 0..rng.usize(1..5) {
                    let mut data = PartitionData::default();
                    data.partition_index = p as i32;
                    data.high_watermark = rng.i64(0..1 << 40);
                    data.error_code = if rng.bool() { 0 } else { 6 };
                    data.preferred_read_replica = BrokerId(-1);
                    data.aborted_transactions = Some(Vec::new());
                    topic.partitions.push(data);
                    let mut base = rng.u64(0..1000);
                    let batches = (0..rng.usize(0..4))
                        .map(|_| {
                            let count = rng.usize(1..40);
                            let b = batch(base, count, rng.usize(0..2000), &mut rng);
                            base += count as u64;
                            b
                        })
                        .collect::<Vec<_>>();
                    records.push(batches);
                }
                response.responses.push(topic);
            }
            let expected = copied(case, header_version, &response, &records, version);
            let frame = encode_fetch(case, header_version, response, records, version).unwrap();
            let written: Vec<u8> = frame
                .chunks
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            assert_eq!(frame.len, written.len(), "case {case} v{version}");
            assert_eq!(written, expected, "case {case} v{version}");
        }
    }

    #[test]
    fn large_batches_are_written_from_where_they_are_stored() {
        let mut rng = fastrand::Rng::with_seed(1);
        let big = batch(0, 40, 1000, &mut rng);
        let mut response = FetchResponse::default();
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        topic.partitions.push(PartitionData::default());
        response.responses.push(topic);
        let frame = encode_fetch(1, 1, response, vec![vec![big.clone()]], 12).unwrap();
        assert_eq!(frame.chunks.len(), 3, "before, the batch, after");
        assert_eq!(frame.chunks[1].as_ptr(), big.bytes().as_ptr(), "not copied");
    }
}
