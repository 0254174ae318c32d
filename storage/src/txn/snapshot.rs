//! The transaction snapshot file, `<offset>.txn.snapshot`: the transaction state of a partition
//! as it was when the log ended at `offset` (a segment roll).
//!
//! Written at each roll once the old segment is sealed, atomically, so recovery reads the
//! newest one and replays only the batches after it instead of the whole log (a transaction
//! may stay open across any number of segments). A partition's first snapshot is written when
//! it is created, so a directory without any is one from before transactions (which could not
//! hold a transactional batch).
//!
//! File layout (little-endian): magic `OXBT`, u32 version = 1, u64 offset, u32 count of open
//! transactions, each i64 producer id and u64 first offset; u32 count of aborted transactions,
//! each i64 producer id, u64 first offset and u64 marker offset; then a u32 CRC-32
//! (crc32fast) of everything before it.

use super::state::{AbortedTxn, TxnState};
use crate::io::{write_file_atomically, Disk};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"OXBT";
const VERSION: u32 = 1;

/// The snapshot file of the state at `offset`.
pub(crate) fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.txn.snapshot"))
}

/// Writes the snapshot file of the state at `offset` (`bytes` from [`encode`]) atomically,
/// and durably when asked.
pub(crate) async fn write(
    disk: &dyn Disk,
    dir: &Path,
    offset: u64,
    bytes: &[u8],
    durable: bool,
) -> std::io::Result<()> {
    write_file_atomically(disk, &snapshot_path(dir, offset), bytes, durable).await
}

/// Why snapshot bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction snapshot is damaged: {0}")]
pub(crate) struct SnapshotError(&'static str);

/// The file's bytes for `state` at `offset`.
pub(crate) fn encode(state: &TxnState, offset: u64) -> Vec<u8> {
    let open: Vec<(i64, u64)> = state.open().collect();
    let aborted: Vec<&AbortedTxn> = state.aborted().collect();
    let mut out = Vec::with_capacity(24 + open.len() * 16 + aborted.len() * 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(open.len() as u32).to_le_bytes());
    for (producer_id, first_offset) in open {
        out.extend_from_slice(&producer_id.to_le_bytes());
        out.extend_from_slice(&first_offset.to_le_bytes());
    }
    out.extend_from_slice(&(aborted.len() as u32).to_le_bytes());
    for a in aborted {
        out.extend_from_slice(&a.producer_id.to_le_bytes());
        out.extend_from_slice(&a.first_offset.to_le_bytes());
        out.extend_from_slice(&a.last_offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a snapshot back, checking every field: the offset it was taken at, and the state.
pub(crate) fn decode(bytes: &[u8]) -> Result<(u64, TxnState), SnapshotError> {
    if bytes.len() < 28 {
        return Err(SnapshotError("too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(SnapshotError("checksum mismatch"));
    }
    let mut reader = Reader(body);
    if reader.take(4)? != MAGIC {
        return Err(SnapshotError("bad magic"));
    }
    if reader.u32()? != VERSION {
        return Err(SnapshotError("unknown version"));
    }
    let offset = reader.u64()?;
    let open_count = reader.u32()? as usize;
    let mut open = Vec::with_capacity(open_count.min(body.len() / 16));
    for _ in 0..open_count {
        open.push((reader.u64()? as i64, reader.u64()?));
    }
    let aborted_count = reader.u32()? as usize;
    let mut aborted = Vec::with_capacity(aborted_count.min(body.len() / 24));
    for _ in 0..aborted_count {
        aborted.push(AbortedTxn {
            producer_id: reader.u64()? as i64,
            first_offset: reader.u64()?,
            last_offset: reader.u64()?,
        });
    }
    if !reader.0.is_empty() {
        return Err(SnapshotError("bytes after the last entry"));
    }
    let well_formed = open.iter().all(|&(_, first)| first < offset)
        && aborted
            .iter()
            .all(|a| a.first_offset < a.last_offset && a.last_offset < offset)
        && aborted
            .windows(2)
            .all(|w| w[0].last_offset < w[1].last_offset);
    if !well_formed {
        return Err(SnapshotError("entries out of order or past its offset"));
    }
    Ok((offset, TxnState::restored(open, aborted, offset)))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let aborted = vec![
            AbortedTxn {
                producer_id: 1,
                first_offset: 3,
                last_offset: 9,
            },
            AbortedTxn {
                producer_id: 2,
                first_offset: 4,
                last_offset: 12,
            },
        ];
        let state = TxnState::restored(vec![(5, 10), (6, 14)], aborted.clone(), 20);
        let bytes = encode(&state, 20);
        let (offset, back) = decode(&bytes).expect("round trip");
        assert_eq!(offset, 20);
        assert_eq!(back.open().collect::<Vec<_>>(), vec![(5, 10), (6, 14)]);
        assert_eq!(back.aborted().copied().collect::<Vec<_>>(), aborted);
        for at in [0, 5, 20, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(decode(&damaged).is_err(), "flipped byte {at}");
        }
        assert!(decode(&bytes[..bytes.len() - 8]).is_err());
        // Well-formed bytes whose entries lie past the snapshot's offset are refused too.
        let past = encode(&state, 12);
        assert_eq!(
            decode(&past).err(),
            Some(SnapshotError("entries out of order or past its offset"))
        );
    }
}
