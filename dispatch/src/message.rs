//! Messages as subscriptions hand them out: the records of stored batches, one by one.

use crate::subscription::Message;
use bytes::Bytes;
use oxbow_core::{BatchError, Header, RecordBatch};

/// A record read from the log; key, value and headers share the stored (or decompressed)
/// batch's bytes, so handing one to a consumer on another shard copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Offset.
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (empty for a tombstone).
    pub value: Bytes,
    /// Headers, in the producer's order.
    pub headers: Vec<Header>,
}

impl Message for StoredMessage {
    fn offset(&self) -> u64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn size_bytes(&self) -> usize {
        self.data_bytes()
    }
}

impl StoredMessage {
    /// Bytes of key, value and headers (what a consumer is sent, without framing).
    pub fn data_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// Every record of `batch` as a message, decompressing it first if it is compressed (at most
/// `decompressed_bytes_max` bytes). Any record that does not decode fails the whole batch: a
/// subscription delivers a batch entirely or stops in front of it, never a part of it. A
/// control batch (a transaction's commit or abort marker, which only the broker writes) holds
/// no message: subscriptions step over its offsets as Kafka consumers do.
pub fn messages_of(
    batch: &RecordBatch,
    decompressed_bytes_max: u64,
) -> Result<Vec<StoredMessage>, BatchError> {
    if batch.is_control() {
        return Ok(Vec::new());
    }
    let records = batch.records(decompressed_bytes_max)?;
    let mut messages = Vec::with_capacity(batch.records_count().clamp(0, 1 << 16) as usize);
    for record in records {
        let record = record?;
        messages.push(StoredMessage {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value.unwrap_or_default(),
            headers: record.headers,
        });
    }
    if messages.len() as i64 != batch.records_count() as i64 {
        return Err(BatchError::BadRecordCount {
            records_count: batch.records_count(),
            last_offset_delta: batch.last_offset_delta(),
        });
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::BatchBuilder;

    #[test]
    fn a_control_batch_holds_no_message() {
        let mut builder = BatchBuilder::new(0);
        builder.push(Some(b"k"), Some(b"v"), 0);
        let data = builder.build();
        assert_eq!(messages_of(&data, 1 << 20).unwrap().len(), 1);
        let mut bytes = data.into_bytes().to_vec();
        // Bit 5 of the attributes (bytes 21-22, big-endian): a control batch. Stored batches
        // are read back without their CRC being checked again.
        bytes[22] |= 0x20;
        let marker = RecordBatch::from_trusted(bytes.into()).unwrap();
        assert!(marker.is_control());
        assert!(messages_of(&marker, 1 << 20).unwrap().is_empty());
    }
}
