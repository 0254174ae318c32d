//! Compaction of topics with `cleanup.policy = compact`: the newest record of each key stays,
//! older ones go, and so do tombstones once `delete.retention.ms` has passed since they were
//! first cleaned. Records keep their offsets (a compacted log has gaps; readers step over
//! them).
//!
//! - `plan.rs` decides whether a log is due and which segments (pure);
//! - `key_map.rs` holds the newest offset of each key of the dirty part, within a budget;
//! - `cleaned.rs` is the checkpoint of how far, and when, the log was cleaned;
//! - `cleaner.rs` is the I/O: it reads the dirty part for keys, rewrites the cleanable segments
//!   that lose records into new files (small neighbours merged into one, up to a segment's
//!   size), and swaps them in;
//! - `pace.rs` bounds the cleaner's disk bandwidth;
//! - `transactions.rs` says which batches are copied whole (markers, aborted transactions);
//!   the cleaner stops below the last stable offset.
//!
//! Crash safety: segments `base..end` are rewritten into `<base>.cleaned.tmp`, which is
//! fdatasynced and renamed `<base>-<end>.swap`, and the directory synced; then their files are
//! removed and the copy renamed `<base>.log` (its index written after). A crash before the
//! first rename leaves the old segments and a temporary file that recovery deletes; after it,
//! recovery finishes the swap (removes what is left of the old segments, renames the copy) and
//! rebuilds the missing index. Either way every newest record of a key is in the log.

mod cleaned;
mod cleaner;
mod key_map;
mod pace;
mod plan;
mod state;
mod transactions;

pub(crate) use cleaned::CleanedRanges;
pub use cleaned::{cleaner_checkpoint_path, CleanerCheckpointError};
pub use cleaner::{Cleaner, Compacted};
pub use pace::IoPace;
pub(crate) use state::Cleaning;
