//! Typed errors of the storage engine, one enum per operation.

use std::path::PathBuf;

/// Opening (and recovering) a partition failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] oxbow_core::ConfigError),
    /// A file or directory operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An append was not acknowledged. The batch may or may not be on disk; it was not promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The batch exceeds `batch_bytes_max`.
    #[error("batch of {size} bytes exceeds batch_bytes_max {max}")]
    TooLarge {
        /// Size of the batch.
        size: u64,
        /// The configured limit.
        max: u32,
    },
    /// A write failed (e.g. ENOSPC); this append and those queued with it were rejected, and
    /// the partition accepts new appends again.
    #[error("write failed, append rejected: {0}")]
    WriteFailed(String),
    /// fdatasync failed; the partition accepts no appends until it is reopened, because the
    /// kernel may have dropped the unsynced pages and a retry could report false durability.
    #[error("partition stopped after an fdatasync failure: {0}")]
    Stopped(String),
    /// A truncation of the log is requested or under way (a replica changing leader); the
    /// append was not admitted.
    #[error("the log is being truncated, append refused")]
    Truncating,
    /// The partition is closing or closed.
    #[error("partition is closed")]
    Closed,
    /// An idempotent producer's batch does not follow its previous one.
    #[error("out-of-order sequence: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The sequence that would have been accepted.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// A replicated batch starts before the log ends.
    #[error("replicated batch starts at {got}, before the log's end {expected}")]
    NotContiguous {
        /// The log end.
        expected: u64,
        /// The batch's base offset.
        got: u64,
    },
    /// A replicated batch carries a leader epoch older than one already in the log.
    #[error("replicated batch of leader epoch {epoch} is older than epoch {latest} in the log")]
    StaleEpoch {
        /// The batch's epoch.
        epoch: i32,
        /// The newest epoch in the log.
        latest: i32,
    },
    /// An idempotent producer's epoch is older than the current one.
    #[error("producer fenced: current epoch is {current_epoch}")]
    ProducerFenced {
        /// The current epoch.
        current_epoch: i16,
    },
}

/// A read could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The offset is below the log start or above the log end.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// First readable offset.
        log_start: u64,
        /// Next offset to be written.
        log_end: u64,
    },
    /// Bytes on disk fail their checksum.
    #[error("corrupt frame in {path:?} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damaged frame.
        position: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The partition is closed.
    #[error("partition is closed")]
    Closed,
    /// The read itself failed.
    #[error("reading {path:?}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Truncating the log failed; the partition is stopped (as after an fdatasync failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("truncate failed: {0}")]
pub struct TruncateError(pub String);

/// Records could not be deleted (the log start moved).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteRecordsError {
    /// The offset is past what readers see (Kafka: past the high watermark).
    #[error("offset {offset} is past the log end {log_end}")]
    OffsetOutOfRange {
        /// Requested new log start.
        offset: u64,
        /// The visible log end.
        log_end: u64,
    },
    /// The partition stopped, closes or was truncated meanwhile; the message says which.
    #[error("records cannot be deleted now: {0}")]
    Unavailable(String),
    /// The log start moved, but a segment file below it could not be removed.
    #[error(transparent)]
    Delete(#[from] RetentionError),
}

/// A compaction pass failed; the log is as it was before the segment it was cleaning.
#[derive(Debug, thiserror::Error)]
#[error("compacting {path:?}: {op}: {source}")]
pub struct CompactionError {
    /// What was being done.
    pub op: &'static str,
    /// The file it was done to.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Deleting segments for retention failed.
#[derive(Debug, thiserror::Error)]
#[error("deleting {path:?}: {source}")]
pub struct RetentionError {
    /// The file that could not be removed.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}
