//! Oxbow's storage engine: one segmented, checksummed log per partition on direct I/O.
//!
//! Layout, frame, index and leader-epoch formats are specified in `storage/docs/format.md`. Each
//! [`Partition`] is owned by one shard (glommio executor) and is not `Send`; other shards reach
//! it by message. Before opening any partition on a shard thread, call [`prepare_shard_io`]
//! once. The shape: a sans-IO log core (`core/`: every decision) inside thin shells
//! (`partition.rs`, the API, with its reads in `partition_reads.rs` and `read/`; `writer.rs`, the writer task; `recovery.rs`, opening), doing all
//! their I/O through one [`Disk`] trait whose backends are direct I/O, fault injection and a
//! crash simulation (`io/`).
#![warn(missing_docs)]

pub mod compaction;
mod core;
pub mod epochs;
pub mod error;
pub mod frame;
pub mod index;
pub mod io;
pub mod layout;
pub mod log_start;
pub mod metrics;
pub mod ordered;
mod partition;
mod partition_reads;
pub mod producers;
pub mod read;
mod recovery;
pub mod retention;
pub mod segment;
mod signal;
pub mod state_log;
pub mod tail_cache;
pub mod topic_config;
pub mod torture;
mod txn;
pub mod verify;
mod writer;

pub use compaction::{Cleaner, Compacted, IoPace};
pub use epochs::LeaderEpochs;
pub use error::{
    AppendError, CompactionError, DeleteRecordsError, OpenError, ReadError, RetentionError,
    TruncateError,
};
pub use io::{prepare_shard_io, Disk, DmaDisk, Faults, FaultyDisk, SegmentFile, SimDisk};
pub use partition::{Appended, OpenOptions, Partition, PartitionStats};
pub use state_log::{CompactionSettings, StateLog, StateLogError};
pub use txn::AbortedTxn;

/// Wall-clock milliseconds since the Unix epoch (the unit of record timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
