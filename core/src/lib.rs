//! Oxbow's shared vocabulary: the record batch format used on the wire, on disk and in
//! replication, and the configuration every other crate reads.
#![warn(missing_docs)]

pub mod batch;
pub mod config;
pub mod native;
pub mod placement;

pub use batch::{BatchBuilder, BatchError, Record, RecordBatch};
pub use config::{BrokerConfig, ConfigError, FlushPolicy, LogConfig, SubscriptionConfig};
