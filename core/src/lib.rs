//! Oxbow's shared vocabulary: the record batch format used on the wire, on disk and in
//! replication, and the configuration every other crate reads.
#![warn(missing_docs)]

pub mod auth;
pub mod batch;
pub mod builder;
pub mod compression;
pub mod config;
pub mod control;
pub mod native;
pub mod placement;
pub mod record;
pub mod retain;

pub use batch::{BatchError, RecordBatch, PRODUCER_BATCHES_KEPT};
pub use builder::BatchBuilder;
pub use compression::{Codec, CompressionError};
pub use config::{
    BrokerConfig, ConfigError, FlushPolicy, LogConfig, MetadataGroupConfig, StateLogConfig,
    SubscriptionConfig,
};
pub use control::{MarkerKind, TxnMarker};
pub use record::{Header, Record, Records};
pub use retain::{RecordView, Retained};
