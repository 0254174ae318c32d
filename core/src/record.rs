//! The records inside a batch: Kafka's v2 record encoding (zig-zag varints), read and written.
//!
//! ```text
//! length varint, attributes i8 (unused), timestampDelta varlong, offsetDelta varint,
//! keyLength varint (-1: null), key, valueLength varint (-1: null), value,
//! headerCount varint, then per header: keyLength varint, key, valueLength varint, value
//! ```
//!
//! Reading is split in two: [`RecordCursor`] walks the bytes and only checks them (it borrows,
//! so validating a whole batch at produce time allocates nothing), and [`Records`] turns each
//! walked record into a [`Record`] whose fields share the batch's `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;

/// A record header: a key (a string in Kafka, kept as bytes) and an optional value.
pub type Header = (Bytes, Option<Bytes>);

/// One record decoded from a batch; key, value and headers share the batch's bytes.
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
    /// Headers, in the order the producer wrote them.
    pub headers: Vec<Header>,
}

/// Where one record's fields lie in the records section.
pub(crate) struct RawRecord {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i64,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
    pub(crate) header_count: usize,
    pub(crate) headers: Range<usize>,
}

/// Walks the records section of a batch, checking each record's structure.
pub(crate) struct RecordCursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
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

    fn nullable(&mut self, end: usize) -> Result<Option<Range<usize>>, &'static str> {
        let len = self.varlong()?;
        if len < 0 {
            return Ok(None);
        }
        let field_end = self
            .at
            .checked_add(len as usize)
            .ok_or("length overflows")?;
        if field_end > end {
            return Err("field runs past its record");
        }
        let field = self.at..field_end;
        self.at = field_end;
        Ok(Some(field))
    }

    /// Walks the header section of a record that ends at `end`.
    fn headers(
        &mut self,
        count: usize,
        end: usize,
        mut each: impl FnMut(Range<usize>, Option<Range<usize>>),
    ) -> Result<(), &'static str> {
        for _ in 0..count {
            let key = self.nullable(end)?.ok_or("header key is null")?;
            let value = self.nullable(end)?;
            each(key, value);
        }
        Ok(())
    }

    /// Walks one record and checks that its fields fill exactly its declared length.
    pub(crate) fn record(&mut self) -> Result<RawRecord, &'static str> {
        let length = self.varlong()?;
        if length < 0 || self.at + length as usize > self.bytes.len() {
            return Err("record length runs past the batch");
        }
        let end = self.at + length as usize;
        self.at += 1; // attributes, unused in v2
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varlong()?;
        let key = self.nullable(end)?;
        let value = self.nullable(end)?;
        let header_count = self.varlong()?;
        if header_count < 0 || header_count as usize > length as usize {
            return Err("header count is impossible");
        }
        let header_count = header_count as usize;
        let headers_start = self.at;
        self.headers(header_count, end, |_, _| {})?;
        if self.at != end {
            return Err("record length disagrees with its fields");
        }
        Ok(RawRecord {
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
            headers: headers_start..end,
        })
    }
}

/// Iterator over the records of a batch; see [`crate::RecordBatch::records`].
pub struct Records {
    body: Bytes,
    at: usize,
    index: i32,
    count: i32,
    base_offset: u64,
    base_timestamp: i64,
}

impl Records {
    pub(crate) fn new(body: Bytes, count: i32, base_offset: u64, base_timestamp: i64) -> Records {
        Records {
            body,
            at: 0,
            index: 0,
            count,
            base_offset,
            base_timestamp,
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, crate::BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count || self.at >= self.body.len() {
            return None;
        }
        let index = self.index as u32;
        self.index += 1;
        let mut cursor = RecordCursor {
            bytes: &self.body,
            at: self.at,
        };
        let raw = match cursor.record() {
            Ok(raw) => raw,
            Err(reason) => {
                self.at = self.body.len();
                return Some(Err(crate::BatchError::BadRecord { index, reason }));
            }
        };
        self.at = cursor.at;
        let slice = |range: Range<usize>| self.body.slice(range);
        let mut headers = Vec::with_capacity(raw.header_count);
        let mut walk = RecordCursor {
            bytes: &self.body,
            at: raw.headers.start,
        };
        walk.headers(raw.header_count, raw.headers.end, |key, value| {
            headers.push((slice(key), value.map(slice)));
        })
        .expect("walked once already");
        Some(Ok(Record {
            offset: self.base_offset.wrapping_add(raw.offset_delta as u64),
            timestamp: self.base_timestamp.wrapping_add(raw.timestamp_delta),
            key: raw.key.map(slice),
            value: raw.value.map(slice),
            headers,
        }))
    }
}

pub(crate) fn put_varlong(buf: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        buf.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

pub(crate) fn varlong_len(value: i64) -> usize {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while raw >= 0x80 {
        raw >>= 7;
        len += 1;
    }
    len
}

fn nullable_len(field: Option<&[u8]>) -> usize {
    match field {
        None => varlong_len(-1),
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

fn put_nullable(buf: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

/// Bytes of a header section holding `headers` (count included).
fn headers_len(headers: &[(&[u8], Option<&[u8]>)]) -> usize {
    varlong_len(headers.len() as i64)
        + headers
            .iter()
            .map(|(k, v)| nullable_len(Some(k)) + nullable_len(*v))
            .sum::<usize>()
}

fn put_headers(buf: &mut BytesMut, headers: &[(&[u8], Option<&[u8]>)]) {
    put_varlong(buf, headers.len() as i64);
    for (key, value) in headers {
        put_nullable(buf, Some(key));
        put_nullable(buf, *value);
    }
}

/// Appends one record; returns nothing, the caller counts.
pub(crate) fn put_record(
    buf: &mut BytesMut,
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) {
    let body = 1
        + varlong_len(timestamp_delta)
        + varlong_len(offset_delta)
        + nullable_len(key)
        + nullable_len(value)
        + headers_len(headers);
    put_varlong(buf, body as i64);
    buf.put_u8(0);
    put_varlong(buf, timestamp_delta);
    put_varlong(buf, offset_delta);
    put_nullable(buf, key);
    put_nullable(buf, value);
    put_headers(buf, headers);
}

/// Encodes headers as a record's header section (count, then each key and value); the native
/// protocol carries a message's headers in this form.
pub fn encode_headers(headers: &[Header], out: &mut BytesMut) {
    let borrowed: Vec<(&[u8], Option<&[u8]>)> = headers
        .iter()
        .map(|(k, v)| (&k[..], v.as_deref()))
        .collect();
    out.reserve(headers_len(&borrowed));
    put_headers(out, &borrowed);
}

/// Bytes [`encode_headers`] writes for `headers`.
pub fn encoded_headers_len(headers: &[Header]) -> usize {
    varlong_len(headers.len() as i64)
        + headers
            .iter()
            .map(|(k, v)| nullable_len(Some(k)) + nullable_len(v.as_deref()))
            .sum::<usize>()
}

/// Reads a header section written by [`encode_headers`]; every byte must belong to it.
pub fn decode_headers(bytes: Bytes) -> Result<Vec<Header>, &'static str> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut cursor = RecordCursor {
        bytes: &bytes,
        at: 0,
    };
    let count = cursor.varlong()?;
    if count < 0 || count as usize > bytes.len() {
        return Err("header count is impossible");
    }
    let mut headers = Vec::with_capacity(count as usize);
    cursor.headers(count as usize, bytes.len(), |key, value| {
        headers.push((bytes.slice(key), value.map(|v| bytes.slice(v))));
    })?;
    if cursor.at != bytes.len() {
        return Err("bytes follow the headers");
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_round_trip_in_their_encoding() {
        let headers: Vec<Header> = vec![
            (
                Bytes::from_static(b"trace"),
                Some(Bytes::from_static(b"abc")),
            ),
            (Bytes::from_static(b"empty"), Some(Bytes::new())),
            (Bytes::from_static(b"null"), None),
        ];
        let mut out = BytesMut::new();
        encode_headers(&headers, &mut out);
        assert_eq!(out.len(), encoded_headers_len(&headers));
        assert_eq!(decode_headers(out.freeze()).unwrap(), headers);
        assert_eq!(decode_headers(Bytes::new()).unwrap(), Vec::<Header>::new());
        assert!(decode_headers(Bytes::from_static(&[4, 2, b'k'])).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_headers(Bytes::from(bytes));
        }
    }
}
