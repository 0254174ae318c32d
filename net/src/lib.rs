//! Oxbow's client protocols: the Kafka wire protocol and native protocol servers, built on the
//! shard layer (crate `oxbow-dispatch`), and the runtime that starts a node's shards with them.
#![warn(missing_docs)]

pub mod alloc;
pub mod authorize;
pub mod certificate_name;
pub mod failed_logins;
pub mod fault_control;
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod native;
pub mod pacer;
pub mod password_checks;
pub mod runtime;
pub mod sasl;
pub mod session;
pub mod tls;

pub use oxbow_dispatch::shard;
pub use oxbow_dispatch::shard::{Shard, ShardMessage};
pub use runtime::{Runtime, RuntimeError};

/// The unit tests decode hostile Kafka frames: install the same allocation guard as the binary.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::ReservingAllocator = alloc::ReservingAllocator;
