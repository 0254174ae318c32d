//! Compaction of topics with `cleanup.policy = compact`: the newest record of each key stays,
//! older ones go, and so do tombstones once `delete.retention.ms` has passed since they were
//! first cleaned. Records keep their offsets (a compacted log has gaps; readers step over
//! them).
//!
//! - `plan.rs` decides whether a log is due and which segments (pure);
//! - `key_map.rs` holds the newest offset of each key of the dirty part, within a budget;
//! - `cleaned.rs` is the checkpoint of how far, and when, the log was cleaned;
//! - `cleaner.rs` is the I/O: it reads the dirty part for keys, rewrites each cleanable segment
//!   that loses records into a new file, and swaps it in;
//! - `pace.rs` bounds the cleaner's disk bandwidth.
//!
//! Crash safety: a segment is rewritten into `<base>.cleaned.tmp`, which is fdatasynced and
//! then renamed over `<base>.log` (its index removed first, written again after). A crash
//! before the rename leaves the old segment and a temporary file that recovery deletes; after
//! it, the new segment, whose index recovery rebuilds if it is missing. Either file holds the
//! newest record of every key the segment held that no later segment replaces, so no crash
//! loses a latest value.

mod cleaned;
mod cleaner;
mod key_map;
mod pace;
mod plan;

pub(crate) use cleaned::CleanedRanges;
pub use cleaned::{cleaner_checkpoint_path, CleanerCheckpointError};
pub use cleaner::{Cleaner, Compacted};
pub use pace::IoPace;
