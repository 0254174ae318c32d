//! Oxbow's networking side: the shard runtime that routes requests to partition owners, and
//! (to come) the Kafka wire protocol and native protocol servers built on it.
#![warn(missing_docs)]

pub mod runtime;
pub mod shard;

pub use runtime::{Runtime, RuntimeError};
pub use shard::{Shard, ShardMessage};
