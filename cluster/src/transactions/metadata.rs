//! One transactional id's state and its record in the transaction log.
//!
//! Record value (little-endian): u8 version = 0, i64 producer id, i16 epoch, i64 previous
//! producer id, i16 previous epoch, u32 timeout (ms), u8 status, i64 start time (ms), i64 last
//! update time (ms), u32 partition count, then per partition: u16 topic length, topic bytes
//! (UTF-8), u32 partition. The key is the transactional id's UTF-8 bytes; an expired id is a
//! tombstone.

use std::collections::BTreeSet;

/// Kafka's transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// No transaction since the id was initialized.
    Empty,
    /// A transaction is open: partitions were added to it.
    Ongoing,
    /// EndTxn(commit) is durable; commit markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fencing is durable; abort markers are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
}

impl TxnStatus {
    fn code(self) -> u8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
        }
    }

    fn from_code(code: u8) -> Option<TxnStatus> {
        Some(match code {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    /// Markers are being written: requests wait (CONCURRENT_TRANSACTIONS).
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

/// One transactional id as its coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The producer id the transactional id holds.
    pub producer_id: i64,
    /// Its current epoch: requests with an older one are fenced.
    pub producer_epoch: i16,
    /// The producer id and epoch before the last bump, so a retried InitProducerId whose
    /// answer was lost gets the same answer again (KIP-360); -1 when none.
    pub previous: (i64, i16),
    /// The producer's transaction timeout (ms).
    pub timeout_ms: u32,
    /// Where its transaction is.
    pub status: TxnStatus,
    /// The partitions its open (or ending) transaction wrote to.
    pub partitions: BTreeSet<(String, u32)>,
    /// When the transaction began (ms), -1 when none is open.
    pub started_ms: i64,
    /// When this record changed last (ms).
    pub updated_ms: i64,
}

/// Why a transaction record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction record is damaged: {0}")]
pub struct RecordError(&'static str);

/// The record of `metadata`.
pub fn encode_record(metadata: &TxnMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(0);
    out.extend_from_slice(&metadata.producer_id.to_le_bytes());
    out.extend_from_slice(&metadata.producer_epoch.to_le_bytes());
    out.extend_from_slice(&metadata.previous.0.to_le_bytes());
    out.extend_from_slice(&metadata.previous.1.to_le_bytes());
    out.extend_from_slice(&metadata.timeout_ms.to_le_bytes());
    out.push(metadata.status.code());
    out.extend_from_slice(&metadata.started_ms.to_le_bytes());
    out.extend_from_slice(&metadata.updated_ms.to_le_bytes());
    out.extend_from_slice(&(metadata.partitions.len() as u32).to_le_bytes());
    for (topic, partition) in &metadata.partitions {
        out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
    }
    out
}

/// Reads a record back, checking every field.
pub fn decode_record(bytes: &[u8]) -> Result<TxnMetadata, RecordError> {
    let mut r = Reader(bytes);
    if r.take(1)? != [0] {
        return Err(RecordError("unknown version"));
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let previous = (r.i64()?, r.i16()?);
    let timeout_ms = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let status = TxnStatus::from_code(r.take(1)?[0]).ok_or(RecordError("unknown status"))?;
    let started_ms = r.i64()?;
    let updated_ms = r.i64()?;
    let count = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let mut partitions = BTreeSet::new();
    for _ in 0..count {
        let len = u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
        let topic =
            std::str::from_utf8(r.take(len)?).map_err(|_| RecordError("topic not UTF-8"))?;
        let partition = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
        partitions.insert((topic.to_string(), partition));
    }
    if !r.0.is_empty() {
        return Err(RecordError("bytes after the last partition"));
    }
    Ok(TxnMetadata {
        producer_id,
        producer_epoch,
        previous,
        timeout_ms,
        status,
        partitions,
        started_ms,
        updated_ms,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let metadata = TxnMetadata {
            producer_id: 42,
            producer_epoch: 7,
            previous: (42, 6),
            timeout_ms: 60_000,
            status: TxnStatus::PrepareCommit,
            partitions: [
                ("orders".to_string(), 3),
                ("__consumer_offsets".to_string(), 0),
            ]
            .into_iter()
            .collect(),
            started_ms: 1_000,
            updated_ms: 2_000,
        };
        let bytes = encode_record(&metadata);
        assert_eq!(decode_record(&bytes), Ok(metadata));
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        let mut unknown = bytes.clone();
        unknown[0] = 1;
        assert!(decode_record(&unknown).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(decode_record(&longer).is_err());
    }
}
