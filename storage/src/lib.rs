//! Oxbow's storage engine: one segmented, checksummed log per partition on direct I/O.
//!
//! Layout, frame and index formats are specified in `storage/docs/format.md`. Each [`Partition`] is
//! owned by one shard (glommio executor) and is not `Send`; other shards reach it by message.
//! Before opening any partition on a shard thread, call [`prepare_shard_io`] once.
#![warn(missing_docs)]

pub mod error;
pub mod faults;
pub mod file;
pub mod frame;
pub mod index;
pub mod layout;
pub mod metrics;
mod partition;
pub mod producers;
pub mod retention;
pub mod segment;
mod signal;
pub mod tail_cache;
pub mod topic_config;
pub mod verify;
mod writer;

pub use error::{AppendError, OpenError, ReadError, RetentionError, TruncateError};
pub use faults::Faults;
pub use file::{prepare_shard_io, SegmentFile};
pub use partition::{Appended, OpenOptions, Partition, PartitionStats};

/// Wall-clock milliseconds since the Unix epoch (the unit of record timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
