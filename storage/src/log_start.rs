//! The log start a partition was moved to by deleting records (Kafka's DeleteRecords), and its
//! checkpoint file.
//!
//! Retention deletes whole segments, so the first segment's base offset says where such a log
//! starts. Deleting records moves the start to any offset, inside a segment too: the offsets
//! below it stay in the file until retention removes the segment, and only the checkpoint
//! `<partition>/log-start-offset` says they are gone. It is written atomically (temporary file,
//! fdatasync, rename, directory fsync, see [`crate::io::write_file_atomically`]) before a
//! deletion is acknowledged. Recovery takes the larger of the checkpoint and the first
//! segment's base, never past the recovered log end; a missing or damaged checkpoint means the
//! first segment's base.
//!
//! File layout (little-endian): magic `OXBS`, u32 version = 1, u64 log start offset, then a u32
//! CRC-32 (crc32fast) of everything before it.

use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"OXBS";
const VERSION: u32 = 1;
const FILE_BYTES: usize = 20;

/// The checkpoint file of a partition directory.
pub fn log_start_path(dir: &Path) -> PathBuf {
    dir.join("log-start-offset")
}

/// Why checkpoint bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log-start checkpoint is damaged: {0}")]
pub struct LogStartFileError(pub &'static str);

/// The checkpoint file's bytes for `start`.
pub fn encode(start: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a checkpoint file back, checking every field.
pub fn decode(bytes: &[u8]) -> Result<u64, LogStartFileError> {
    if bytes.len() != FILE_BYTES {
        return Err(LogStartFileError("wrong length"));
    }
    let (body, crc) = bytes.split_at(FILE_BYTES - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(LogStartFileError("checksum mismatch"));
    }
    if &body[..4] != MAGIC {
        return Err(LogStartFileError("bad magic"));
    }
    if body[4..8] != VERSION.to_le_bytes() {
        return Err(LogStartFileError("unknown version"));
    }
    Ok(u64::from_le_bytes(body[8..].try_into().expect("8 bytes")))
}

/// Where a recovered log starts: the checkpoint, raised to the first segment's base
/// (retention went further) and capped at the log end (a log that lost its unsynced tail).
pub(crate) fn recovered_start(checkpoint: Option<u64>, first_base: u64, log_end: u64) -> u64 {
    checkpoint
        .map_or(first_base, |start| start.max(first_base))
        .min(log_end.max(first_base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_reject_damage() {
        let bytes = encode(1 << 40);
        assert_eq!(decode(&bytes), Ok(1 << 40));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "a flipped byte {at} passed");
        }
        assert!(decode(&bytes[..FILE_BYTES - 1]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn recovery_keeps_the_start_inside_the_log() {
        assert_eq!(recovered_start(None, 100, 500), 100);
        assert_eq!(recovered_start(Some(250), 100, 500), 250);
        assert_eq!(
            recovered_start(Some(50), 100, 500),
            100,
            "retention went further"
        );
        assert_eq!(
            recovered_start(Some(900), 100, 500),
            500,
            "the tail was lost"
        );
        assert_eq!(recovered_start(Some(900), 100, 100), 100);
    }
}
