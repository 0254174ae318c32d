//! Oxbow's networking side: the shard runtime that routes requests to partition owners, and the
//! Kafka wire protocol and native protocol servers built on it.
#![warn(missing_docs)]

pub mod alloc;
pub mod kafka;
pub mod metrics;
pub mod native;
pub mod runtime;
pub mod shard;

pub use runtime::{Runtime, RuntimeError};
pub use shard::{Shard, ShardMessage};

/// The unit tests decode hostile Kafka frames: install the same allocation guard as the binary.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::ReservingAllocator = alloc::ReservingAllocator;
