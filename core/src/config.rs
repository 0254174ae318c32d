//! Configuration with a named bound on everything.
//!
//! Every limit has a name here, a default, and a check in `validate()`; units go last in names.
//! Broker-wide settings come from embedded defaults, then an optional TOML file, then flags.

use serde::Deserialize;
use std::path::PathBuf;

/// A configuration value that cannot work, with the field that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending setting.
    pub field: &'static str,
    /// Why it is rejected.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

/// When appended bytes are made durable with fdatasync, and so when an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicy {
    /// fdatasync before an append is acknowledged (group commit shares one fdatasync among all
    /// appends that arrived before it). Survives power loss.
    Always,
    /// Acknowledge once the bytes are written to the file (O_DIRECT, so they survive the process
    /// being killed); fdatasync every `flush_interval_ms`.
    Interval,
    /// Acknowledge once written to the file; fdatasync only when a segment is sealed or the log
    /// closed. For tests and benchmarks.
    Never,
}

/// Upper bound on a segment's size: offsets inside a segment are stored as u32 positions.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 31;

/// Upper bound on `batch_bytes_max`; storage also uses it to bound what a damaged frame
/// length can make recovery read.
pub const BATCH_BYTES_LIMIT: u32 = 256 << 20;

/// Per-topic settings of a partition's log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Roll to a new segment once the active one reaches this size.
    pub segment_bytes_max: u64,
    /// Roll to a new segment once the active one is this old (and not empty).
    pub segment_age_max_ms: u64,
    /// Write a sparse index entry every this many bytes of frames.
    pub index_interval_bytes: u32,
    /// When appends become durable.
    pub flush: FlushPolicy,
    /// Milliseconds between fdatasyncs under `flush = "interval"`.
    pub flush_interval_ms: u64,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes_max: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_age_max_ms: Option<u64>,
    /// Recent batches kept in memory per partition to serve consumers at the head.
    pub tail_cache_bytes_max: u64,
    /// Largest batch accepted in one append (and so the largest frame on disk).
    pub batch_bytes_max: u32,
    /// Size of the in-memory write buffer of the active segment; one DMA write carries at most
    /// this many bytes, so it bounds both memory and the size of a single I/O.
    pub write_buffer_bytes: u32,
    /// Bytes of appends queued for the writer before new appends wait (backpressure).
    pub append_queue_bytes_max: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_max_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            flush_interval_ms: 100,
            retention_bytes_max: None,
            retention_age_max_ms: Some(7 * 24 * 3600 * 1000),
            tail_cache_bytes_max: 8 << 20,
            batch_bytes_max: 1 << 20,
            write_buffer_bytes: 4 << 20,
            append_queue_bytes_max: 64 << 20,
        }
    }
}

impl LogConfig {
    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes_max < 64 * 1024 || self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return Err(ConfigError::new(
                "log.segment_bytes_max",
                format!("{} is outside 64 KiB..=2 GiB", self.segment_bytes_max),
            ));
        }
        if self.segment_age_max_ms == 0 {
            return Err(ConfigError::new(
                "log.segment_age_max_ms",
                "must be positive",
            ));
        }
        if self.index_interval_bytes < 512 {
            return Err(ConfigError::new(
                "log.index_interval_bytes",
                "must be at least 512",
            ));
        }
        if self.flush_interval_ms == 0 {
            return Err(ConfigError::new(
                "log.flush_interval_ms",
                "must be positive",
            ));
        }
        if self.batch_bytes_max < 1024 {
            return Err(ConfigError::new(
                "log.batch_bytes_max",
                "must be at least 1 KiB",
            ));
        }
        if self.batch_bytes_max as u64 > self.segment_bytes_max {
            // A batch larger than a segment's remaining room starts a new segment; it must fit
            // in an empty one.
            return Err(ConfigError::new(
                "log.batch_bytes_max",
                "must be at most log.segment_bytes_max",
            ));
        }
        if self.batch_bytes_max > BATCH_BYTES_LIMIT {
            return Err(ConfigError::new(
                "log.batch_bytes_max",
                "must be at most 256 MiB",
            ));
        }
        if !self.write_buffer_bytes.is_multiple_of(4096)
            || (self.write_buffer_bytes as u64) < self.batch_bytes_max as u64 + 2 * 4096
        {
            return Err(ConfigError::new(
                "log.write_buffer_bytes",
                "must be a multiple of 4096 and hold log.batch_bytes_max plus two blocks",
            ));
        }
        if self.append_queue_bytes_max < self.batch_bytes_max as u64 {
            return Err(ConfigError::new(
                "log.append_queue_bytes_max",
                "must be at least log.batch_bytes_max",
            ));
        }
        if self.retention_bytes_max == Some(0) || self.retention_age_max_ms == Some(0) {
            return Err(ConfigError::new(
                "log.retention_*",
                "must be positive or absent",
            ));
        }
        Ok(())
    }
}

/// Per-topic overrides, by Kafka config name (as CreateTopics and DescribeConfigs carry them).
pub const TOPIC_CONFIG_NAMES: [&str; 7] = [
    "segment.bytes",
    "segment.ms",
    "retention.bytes",
    "retention.ms",
    "max.message.bytes",
    "flush.ms",
    "oxbow.flush",
];

impl LogConfig {
    /// This configuration with a topic's overrides applied (Kafka names, string values), and
    /// validated. Unknown names and unparsable values are errors, as in Kafka.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogConfig, ConfigError> {
        let mut config = self.clone();
        for (name, value) in overrides {
            let field: &'static str =
                TOPIC_CONFIG_NAMES
                    .iter()
                    .find(|n| **n == name)
                    .ok_or_else(|| {
                        ConfigError::new("topic config", format!("unknown config {name:?}"))
                    })?;
            let number = || {
                value
                    .parse::<i64>()
                    .map_err(|_| ConfigError::new(field, format!("{value:?} is not a number")))
            };
            let optional = |n: i64| (n >= 0).then_some(n as u64);
            match field {
                "segment.bytes" => config.segment_bytes_max = number()?.max(0) as u64,
                "segment.ms" => config.segment_age_max_ms = number()?.max(0) as u64,
                "retention.bytes" => config.retention_bytes_max = optional(number()?),
                "retention.ms" => config.retention_age_max_ms = optional(number()?),
                "max.message.bytes" => {
                    config.batch_bytes_max = u32::try_from(number()?.max(0)).unwrap_or(u32::MAX);
                    let needed = (config.batch_bytes_max as u64 + 2 * 4096).next_multiple_of(4096);
                    config.write_buffer_bytes = config
                        .write_buffer_bytes
                        .max(needed.min(u32::MAX as u64) as u32);
                }
                "flush.ms" => match number()? {
                    0 => config.flush = FlushPolicy::Always,
                    i64::MAX => config.flush = FlushPolicy::Never,
                    ms if ms > 0 => {
                        config.flush = FlushPolicy::Interval;
                        config.flush_interval_ms = ms as u64;
                    }
                    _ => return Err(ConfigError::new(field, "must not be negative")),
                },
                _ => {
                    config.flush = match value {
                        "always" => FlushPolicy::Always,
                        "interval" => FlushPolicy::Interval,
                        "never" => FlushPolicy::Never,
                        _ => {
                            return Err(ConfigError::new(
                                field,
                                "must be always, interval or never",
                            ))
                        }
                    }
                }
            }
        }
        config.validate()?;
        Ok(config)
    }
}

/// Settings of a whole broker process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where partitions live: `<data_dir>/<topic>/<partition>/`.
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors); 0 means one per available core.
    pub shards: usize,
    /// Memory each shard reserves for direct I/O buffers (glommio `io_memory`).
    pub shard_io_memory_bytes: usize,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval_ms: u64,
    /// This broker's id in Kafka metadata.
    pub node_id: i32,
    /// Address every shard listens on for the Kafka protocol (port 0: chosen at start).
    pub kafka_listen: String,
    /// `host:port` given to Kafka clients in metadata; defaults to the bound listen address.
    pub advertised_kafka_addr: Option<String>,
    /// Address of the Prometheus endpoint (`GET /metrics`; port 0: chosen at start).
    pub metrics_listen: String,
    /// Most Kafka connections the node holds (split evenly over shards); more are closed at accept.
    pub kafka_connections_max: u32,
    /// A Kafka connection silent this long between requests is closed (Kafka's
    /// connections.max.idle.ms).
    pub kafka_idle_timeout_ms: u64,
    /// Once a request has begun, its bytes must arrive within this long, and a response must be
    /// taken by the client within this long: slow senders and clients that do not read are closed.
    pub kafka_request_timeout_ms: u64,
    /// Largest Kafka request accepted; larger ones close the connection unread.
    pub kafka_frame_bytes_max: u32,
    /// Produce requests one Kafka connection may have waiting for their appends while the next
    /// request is read (answers still go out in request order); 1 serves a connection one
    /// request at a time. Any other request waits for the Produce requests before it.
    pub kafka_produce_in_flight_max: u32,
    /// Create a topic when a client produces to or asks metadata for one that does not exist.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of a CreateTopics asking for the default.
    pub default_partitions: u32,
    /// Most partitions a topic may have (creation asking for more is refused).
    pub topic_partitions_max: u32,
    /// Address every shard listens on for the native protocol (port 0: chosen at start).
    pub native_listen: String,
    /// Most native connections the node holds (split evenly over shards).
    pub native_connections_max: u32,
    /// Largest native frame accepted; a larger one gets an error frame and the connection closes.
    pub native_frame_bytes_max: u32,
    /// A native connection silent this long (pings count) is closed and its consumers detached;
    /// one that does not take what is sent to it for this long is closed too.
    pub native_session_timeout_ms: u64,
    /// Produce requests one native connection may have in flight; past it the broker stops
    /// reading from that connection until one completes.
    pub native_produce_in_flight_max: u32,
    /// Bytes of messages queued for one native connection and not yet written to it. A client
    /// that lets more pile up while nothing could be written to it for
    /// `native_write_stall_ms`, or twice as much at all (permits it does not read), is
    /// disconnected, and its messages go to other consumers.
    pub native_outbound_bytes_max: u64,
    /// How long a native connection's writes may make no progress before a full outbound queue
    /// disconnects it.
    pub native_write_stall_ms: u64,
    /// Most bytes the records of one compressed batch may decompress to. Produce refuses a
    /// batch that decompresses past it (a decompression bomb), and a subscription stops in
    /// front of a stored one rather than exhaust memory.
    pub batch_decompressed_bytes_max: u64,
    /// Requests one shard's inbox holds from the others before senders wait (the mesh is
    /// bounded: a shard that falls behind slows its senders instead of growing without limit).
    pub shard_inbox_messages_max: u32,
    /// Defaults for every topic's log.
    pub log: LogConfig,
    /// Limits of subscriptions and their dispatchers.
    pub subscriptions: SubscriptionConfig,
}

/// Limits of subscriptions (native protocol), per subscription and partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Reliable: most messages delivered and not yet acknowledged (the window).
    pub unacked_messages_max: u32,
    /// Reliable: a message unacknowledged this long after delivery is delivered again.
    pub ack_timeout_ms: u64,
    /// Reliable: deliveries after the first before a message goes to the dead-letter topic.
    pub redeliveries_max: u32,
    /// Reliable: the cursor is written at most this often while it moves (and on shutdown).
    pub cursor_persist_interval_ms: u64,
    /// Messages read from the log ahead of dispatch (per subscription and partition).
    pub read_ahead_messages_max: u32,
    /// Bytes read from the log in one read.
    pub read_bytes_max: u32,
    /// Largest number of permits one flow frame may grant (more is refused as bad input).
    pub permits_per_flow_max: u32,
    /// Most acks or nacks in one frame.
    pub acks_per_frame_max: u32,
    /// Longest nack delay a consumer may ask for.
    pub nack_delay_max_ms: u64,
    /// Most consumers attached to one subscription.
    pub consumers_max: u32,
    /// Bytes of decoded messages of compressed batches kept per partition, so that several
    /// subscriptions reading the same batch decompress it once.
    pub decoded_cache_bytes_max: u64,
}

impl Default for SubscriptionConfig {
    fn default() -> SubscriptionConfig {
        SubscriptionConfig {
            unacked_messages_max: 10_000,
            ack_timeout_ms: 30_000,
            redeliveries_max: 16,
            cursor_persist_interval_ms: 1_000,
            read_ahead_messages_max: 4_096,
            read_bytes_max: 1 << 20,
            permits_per_flow_max: 1 << 20,
            acks_per_frame_max: 1 << 16,
            nack_delay_max_ms: 24 * 3600 * 1000,
            consumers_max: 1024,
            decoded_cache_bytes_max: 16 << 20,
        }
    }
}

impl SubscriptionConfig {
    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            (
                "subscriptions.unacked_messages_max",
                self.unacked_messages_max as u64,
            ),
            ("subscriptions.ack_timeout_ms", self.ack_timeout_ms),
            (
                "subscriptions.cursor_persist_interval_ms",
                self.cursor_persist_interval_ms,
            ),
            (
                "subscriptions.read_ahead_messages_max",
                self.read_ahead_messages_max as u64,
            ),
            ("subscriptions.read_bytes_max", self.read_bytes_max as u64),
            (
                "subscriptions.permits_per_flow_max",
                self.permits_per_flow_max as u64,
            ),
            (
                "subscriptions.acks_per_frame_max",
                self.acks_per_frame_max as u64,
            ),
            ("subscriptions.consumers_max", self.consumers_max as u64),
            (
                "subscriptions.decoded_cache_bytes_max",
                self.decoded_cache_bytes_max,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be positive"));
            }
        }
        if self.unacked_messages_max > 1 << 24 {
            return Err(ConfigError::new(
                "subscriptions.unacked_messages_max",
                "must be at most 16777216",
            ));
        }
        if self.read_ahead_messages_max > 1 << 20 {
            return Err(ConfigError::new(
                "subscriptions.read_ahead_messages_max",
                "must be at most 1048576",
            ));
        }
        Ok(())
    }
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            data_dir: PathBuf::from("oxbow-data"),
            shards: 0,
            shard_io_memory_bytes: 16 << 20,
            retention_check_interval_ms: 5 * 60 * 1000,
            node_id: 0,
            kafka_listen: "127.0.0.1:9092".to_string(),
            advertised_kafka_addr: None,
            metrics_listen: "127.0.0.1:9644".to_string(),
            kafka_connections_max: 10_000,
            kafka_idle_timeout_ms: 10 * 60 * 1000,
            kafka_request_timeout_ms: 30_000,
            kafka_frame_bytes_max: 100 << 20,
            kafka_produce_in_flight_max: 8,
            auto_create_topics: true,
            default_partitions: 1,
            topic_partitions_max: 10_000,
            native_listen: "127.0.0.1:6650".to_string(),
            native_connections_max: 10_000,
            native_frame_bytes_max: 16 << 20,
            native_session_timeout_ms: 30_000,
            native_produce_in_flight_max: 1024,
            native_outbound_bytes_max: 64 << 20,
            native_write_stall_ms: 1_000,
            batch_decompressed_bytes_max: 64 << 20,
            shard_inbox_messages_max: 16_384,
            log: LogConfig::default(),
            subscriptions: SubscriptionConfig::default(),
        }
    }
}

/// Upper bound on `kafka_frame_bytes_max`: keeps every legitimate request allocation far below
/// the size the Kafka decoder's allocation guard treats as absurd (see `oxbow_net::alloc`).
pub const KAFKA_FRAME_BYTES_LIMIT: u32 = 512 << 20;

/// Upper bound on `topic_partitions_max`: each partition is a directory, files and a writer
/// task; more than this per topic is a configuration mistake.
pub const TOPIC_PARTITIONS_LIMIT: u32 = 100_000;

/// Upper bound of `kafka_produce_in_flight_max`: each waiting request holds its frame.
pub const KAFKA_PRODUCE_IN_FLIGHT_LIMIT: u32 = 1024;

/// Upper bound on `batch_decompressed_bytes_max`: one decompression holds this much memory.
pub const BATCH_DECOMPRESSED_BYTES_LIMIT: u64 = 1 << 30;

/// Upper bound on `shards`: more executors than this is a configuration mistake.
pub const SHARDS_MAX: usize = 1024;

impl BrokerConfig {
    /// Parses a TOML document; missing settings keep their defaults.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::new("<file>", e.to_string()))
    }

    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards > SHARDS_MAX {
            return Err(ConfigError::new(
                "shards",
                format!("{} exceeds {SHARDS_MAX}", self.shards),
            ));
        }
        if self.shard_io_memory_bytes < 10 << 20 {
            // Measured here: 1 MiB of io_memory cost ~30% of DMA throughput.
            return Err(ConfigError::new(
                "shard_io_memory_bytes",
                "must be at least 10 MiB",
            ));
        }
        if self.kafka_frame_bytes_max < 1024 || self.kafka_frame_bytes_max > KAFKA_FRAME_BYTES_LIMIT
        {
            return Err(ConfigError::new(
                "kafka_frame_bytes_max",
                format!("must be 1 KiB to {} MiB", KAFKA_FRAME_BYTES_LIMIT >> 20),
            ));
        }
        for (field, addr) in [
            ("kafka_listen", &self.kafka_listen),
            ("metrics_listen", &self.metrics_listen),
            ("native_listen", &self.native_listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(field, "must be an ip:port address"));
            }
        }
        if self.native_frame_bytes_max < 1024 || self.native_frame_bytes_max > BATCH_BYTES_LIMIT * 2
        {
            return Err(ConfigError::new(
                "native_frame_bytes_max",
                format!("must be 1 KiB to {} MiB", (BATCH_BYTES_LIMIT * 2) >> 20),
            ));
        }
        if self.native_outbound_bytes_max < 1 << 20 {
            return Err(ConfigError::new(
                "native_outbound_bytes_max",
                "must be at least 1 MiB",
            ));
        }
        if !(1..=KAFKA_PRODUCE_IN_FLIGHT_LIMIT).contains(&self.kafka_produce_in_flight_max) {
            return Err(ConfigError::new(
                "kafka_produce_in_flight_max",
                format!("must be 1 to {KAFKA_PRODUCE_IN_FLIGHT_LIMIT}"),
            ));
        }
        if self.native_produce_in_flight_max == 0 {
            return Err(ConfigError::new(
                "native_produce_in_flight_max",
                "must be positive",
            ));
        }
        if self.native_connections_max == 0 {
            return Err(ConfigError::new(
                "native_connections_max",
                "must be positive",
            ));
        }
        if self.kafka_connections_max == 0 {
            return Err(ConfigError::new(
                "kafka_connections_max",
                "must be positive",
            ));
        }
        for (field, ms) in [
            ("kafka_idle_timeout_ms", self.kafka_idle_timeout_ms),
            ("kafka_request_timeout_ms", self.kafka_request_timeout_ms),
            ("native_session_timeout_ms", self.native_session_timeout_ms),
            ("native_write_stall_ms", self.native_write_stall_ms),
        ] {
            if ms < 100 {
                return Err(ConfigError::new(field, "must be at least 100 ms"));
            }
        }
        if !(1..=TOPIC_PARTITIONS_LIMIT).contains(&self.topic_partitions_max) {
            return Err(ConfigError::new(
                "topic_partitions_max",
                format!("must be 1 to {TOPIC_PARTITIONS_LIMIT}"),
            ));
        }
        if !(1..=self.topic_partitions_max).contains(&self.default_partitions) {
            return Err(ConfigError::new(
                "default_partitions",
                "must be 1 to topic_partitions_max",
            ));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(ConfigError::new(
                "retention_check_interval_ms",
                "must be positive",
            ));
        }
        if self.batch_decompressed_bytes_max < self.log.batch_bytes_max as u64
            || self.batch_decompressed_bytes_max > BATCH_DECOMPRESSED_BYTES_LIMIT
        {
            // A batch's records never need less room than the batch itself took uncompressed.
            return Err(ConfigError::new(
                "batch_decompressed_bytes_max",
                format!(
                    "must be log.batch_bytes_max to {} MiB",
                    BATCH_DECOMPRESSED_BYTES_LIMIT >> 20
                ),
            ));
        }
        if !(16..=1 << 24).contains(&self.shard_inbox_messages_max) {
            return Err(ConfigError::new(
                "shard_inbox_messages_max",
                "must be 16 to 16777216",
            ));
        }
        self.subscriptions.validate()?;
        self.log.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_overrides_them() {
        BrokerConfig::default().validate().unwrap();
        let config = BrokerConfig::from_toml(
            "shards = 2\n[log]\nsegment_bytes_max = 4194304\nflush = \"interval\"\nflush_interval_ms = 5\n",
        )
        .unwrap();
        assert_eq!(config.shards, 2);
        assert_eq!(config.log.segment_bytes_max, 4 << 20);
        assert_eq!(config.log.flush, FlushPolicy::Interval);
        assert_eq!(config.log.flush_interval_ms, 5);
        config.validate().unwrap();
    }

    #[test]
    fn topic_overrides_apply_on_top_and_are_validated() {
        let base = LogConfig::default();
        let topic = base
            .with_overrides([
                ("segment.bytes", "1048576"),
                ("retention.ms", "-1"),
                ("flush.ms", "50"),
            ])
            .unwrap();
        assert_eq!(topic.segment_bytes_max, 1 << 20);
        assert_eq!(topic.retention_age_max_ms, None);
        assert_eq!(
            (topic.flush, topic.flush_interval_ms),
            (FlushPolicy::Interval, 50)
        );
        assert_eq!(topic.index_interval_bytes, base.index_interval_bytes);
        assert!(base.with_overrides([("segment.bytes", "10")]).is_err());
        assert!(base.with_overrides([("compression.type", "zstd")]).is_err());
        assert!(base.with_overrides([("segment.ms", "soon")]).is_err());
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut config = BrokerConfig::default();
        config.log.segment_bytes_max = 10;
        assert_eq!(
            config.validate().unwrap_err().field,
            "log.segment_bytes_max"
        );
        assert_eq!(
            BrokerConfig::from_toml("nonsense = 1").unwrap_err().field,
            "<file>"
        );
        for in_flight in [0, KAFKA_PRODUCE_IN_FLIGHT_LIMIT + 1] {
            let config = BrokerConfig {
                kafka_produce_in_flight_max: in_flight,
                ..BrokerConfig::default()
            };
            assert_eq!(
                config.validate().unwrap_err().field,
                "kafka_produce_in_flight_max"
            );
        }
    }
}
