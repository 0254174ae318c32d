//! Configuration with a named bound on everything.
//!
//! Every limit has a name here, a default, and a check in `validate()`; units go last in names.
//! Broker-wide settings come from embedded defaults, then an optional TOML file, then flags.

use serde::Deserialize;
use std::path::PathBuf;

mod cleanup;
mod cluster;
mod consumer_groups;
mod listeners;
mod log;
mod metadata;
mod read_cache;
mod state;
mod subscriptions;
#[cfg(test)]
mod tests;
mod transactions;

pub use cleanup::{CleanupPolicy, CompactionConfig, DirtyRatio};
pub use cluster::{ClusterConfig, Voter, CLUSTER_FRAME_BYTES_LIMIT};
pub use consumer_groups::ConsumerGroupConfig;
pub use listeners::{
    AuthenticationConfig, AuthorizerConfig, ListenerConfig, SecurityProtocol,
    LISTENER_NAME_BYTES_MAX, SASL_MECHANISMS,
};
pub use log::{
    min_insync_replicas_override, FlushPolicy, LogConfig, BATCH_BYTES_LIMIT, CLEANUP_POLICY_CONFIG,
    MIN_INSYNC_REPLICAS_CONFIG, SEGMENT_BYTES_LIMIT, UNCLEAN_ELECTION_CONFIG,
};
pub use metadata::MetadataGroupConfig;
pub use read_cache::{ReadCacheConfig, READ_BLOCK_BYTES_LIMIT};
pub use state::StateLogConfig;
pub use subscriptions::SubscriptionConfig;
pub use transactions::TransactionConfig;

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
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields).
    Json,
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
    /// Pin shard *i* to online CPU *i* mod the CPU count (the default). Off, the OS schedules
    /// the shards: for several brokers on one machine, as in a local test bed, whose shards
    /// would otherwise all share the first cores.
    pub pin_shards: bool,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval_ms: u64,
    /// The cleaner of compacted topics.
    pub compaction: CompactionConfig,
    /// This broker's id in Kafka metadata (Kafka's `node.id`, not negative).
    pub node_id: i32,
    /// The rack this broker stands in (Kafka's `broker.rack`): replicas of a partition are
    /// placed in as many racks as there are.
    pub rack: Option<String>,
    /// Address every shard listens on for the Kafka protocol (port 0: chosen at start).
    pub kafka_listen: String,
    /// `host:port` given to Kafka clients in metadata; defaults to the bound listen address.
    pub advertised_kafka_addr: Option<String>,
    /// Kafka listeners by name with their security protocols. When any is given they replace
    /// `kafka_listen` / `advertised_kafka_addr` (the shorthand for one PLAINTEXT listener).
    pub kafka_listeners: Vec<ListenerConfig>,
    /// Limits on connections that have not authenticated yet.
    pub authentication: AuthenticationConfig,
    /// Who may do what (Kafka's ACLs).
    pub authorizer: AuthorizerConfig,
    /// Address of the Prometheus endpoint (`GET /metrics`; port 0: chosen at start).
    pub metrics_listen: String,
    /// The Prometheus endpoint as a listener with a security protocol: PLAINTEXT, or SSL
    /// (HTTPS, with `tls_client_ca_file` for scrapers that must present a certificate). When
    /// given it replaces `metrics_listen`.
    pub metrics_listener: Option<ListenerConfig>,
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
    /// Replicas per partition of an auto-created topic, and of a CreateTopics (Kafka or native)
    /// asking for the default (Kafka's `default.replication.factor`).
    pub default_replication_factor: u16,
    /// Most partitions a topic may have (creation asking for more is refused).
    pub topic_partitions_max: u32,
    /// Address every shard listens on for the native protocol (port 0: chosen at start).
    pub native_listen: String,
    /// `host:port` native clients are told to connect to (a partition's leader, in
    /// `Metadata`); defaults to the bound listen address.
    pub advertised_native_addr: Option<String>,
    /// Native listeners by name with their security protocols; when any is given they replace
    /// `native_listen` / `advertised_native_addr`. Native clients are told each broker's first.
    pub native_listeners: Vec<ListenerConfig>,
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
    /// How the broker logs: `text` for people, `json` (one object per line) for collectors.
    pub log_format: LogFormat,
    /// Defaults for every topic's log.
    pub log: LogConfig,
    /// Each shard's cache of bytes read from disk.
    pub read_cache: ReadCacheConfig,
    /// Limits of subscriptions and their dispatchers.
    pub subscriptions: SubscriptionConfig,
    /// Longest metadata string a committed offset may carry (Kafka's
    /// `offset.metadata.max.bytes`); longer ones get OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_bytes_max: u32,
    /// Partitions of the internal topic of consumer-group offsets (Kafka's
    /// `offsets.topic.num.partitions`), fixed when the topic is first created.
    pub offsets_topic_partitions: u32,
    /// Replicas of each partition of that topic (Kafka's `offsets.topic.replication.factor`),
    /// fewer when fewer brokers are registered when it is created; committed offsets then
    /// survive the loss of the coordinator's node and the coordinator moves with leadership.
    pub offsets_topic_replication_factor: u32,
    /// How long an offset commit waits for the in-sync replicas of its offsets partition
    /// before it is answered REQUEST_TIMED_OUT (Kafka's `offsets.commit.timeout.ms`).
    pub offsets_commit_timeout_ms: u64,
    /// Groups of Kafka's consumer group protocol (KIP-848).
    pub consumer_groups: ConsumerGroupConfig,
    /// The transaction coordinator.
    pub transactions: TransactionConfig,
    /// The logs that hold consumer state.
    pub state_logs: StateLogConfig,
    /// The metadata group.
    pub metadata: MetadataGroupConfig,
    /// The other nodes, when this one runs with them.
    pub cluster: ClusterConfig,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            data_dir: PathBuf::from("oxbow-data"),
            shards: 0,
            shard_io_memory_bytes: 16 << 20,
            pin_shards: true,
            retention_check_interval_ms: 5 * 60 * 1000,
            compaction: CompactionConfig::default(),
            node_id: 0,
            rack: None,
            kafka_listen: "127.0.0.1:9092".to_string(),
            advertised_kafka_addr: None,
            kafka_listeners: Vec::new(),
            authentication: AuthenticationConfig::default(),
            authorizer: AuthorizerConfig::default(),
            metrics_listen: "127.0.0.1:9644".to_string(),
            metrics_listener: None,
            kafka_connections_max: 10_000,
            kafka_idle_timeout_ms: 10 * 60 * 1000,
            kafka_request_timeout_ms: 30_000,
            kafka_frame_bytes_max: 100 << 20,
            kafka_produce_in_flight_max: 8,
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            topic_partitions_max: 10_000,
            native_listen: "127.0.0.1:6650".to_string(),
            advertised_native_addr: None,
            native_listeners: Vec::new(),
            native_connections_max: 10_000,
            native_frame_bytes_max: 16 << 20,
            native_session_timeout_ms: 30_000,
            native_produce_in_flight_max: 1024,
            native_outbound_bytes_max: 64 << 20,
            native_write_stall_ms: 1_000,
            batch_decompressed_bytes_max: 64 << 20,
            shard_inbox_messages_max: 16_384,
            log_format: LogFormat::Text,
            log: LogConfig::default(),
            read_cache: ReadCacheConfig::default(),
            subscriptions: SubscriptionConfig::default(),
            offset_metadata_bytes_max: 4096,
            offsets_topic_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_commit_timeout_ms: 5_000,
            consumer_groups: ConsumerGroupConfig::default(),
            transactions: TransactionConfig::default(),
            state_logs: StateLogConfig::default(),
            metadata: MetadataGroupConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Longest rack name (a Kafka protocol string kept short, as rack names are).
pub const RACK_BYTES_MAX: usize = 255;

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
    /// The Kafka listeners the node runs: `kafka_listeners`, or the one PLAINTEXT listener of
    /// `kafka_listen` when none is given. The first is the one the node registers as its
    /// Kafka address for clients of listeners the other brokers do not have.
    pub fn kafka_listeners_in_effect(&self) -> Vec<ListenerConfig> {
        if self.kafka_listeners.is_empty() {
            let advertised = self.advertised_kafka_addr.as_deref();
            vec![ListenerConfig::plaintext(&self.kafka_listen, advertised)]
        } else {
            self.kafka_listeners.clone()
        }
    }

    /// The native listeners the node runs: `native_listeners`, or the one PLAINTEXT listener
    /// of `native_listen`.
    pub fn native_listeners_in_effect(&self) -> Vec<ListenerConfig> {
        if self.native_listeners.is_empty() {
            let advertised = self.advertised_native_addr.as_deref();
            vec![ListenerConfig::plaintext(&self.native_listen, advertised)]
        } else {
            self.native_listeners.clone()
        }
    }

    /// The metrics endpoint's listener: `metrics_listener`, or a PLAINTEXT one on
    /// `metrics_listen`.
    pub fn metrics_listener_in_effect(&self) -> ListenerConfig {
        (self.metrics_listener.clone())
            .unwrap_or_else(|| ListenerConfig::plaintext(&self.metrics_listen, None))
    }

    /// Parses a TOML document; missing settings keep their defaults.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::new("<file>", e.to_string()))
    }

    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id < 0 {
            return Err(ConfigError::new("node_id", "must not be negative"));
        }
        if self
            .rack
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.len() > RACK_BYTES_MAX)
        {
            return Err(ConfigError::new(
                "rack",
                format!("must be 1 to {RACK_BYTES_MAX} bytes"),
            ));
        }
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
        if !(1..=i16::MAX as u16).contains(&self.default_replication_factor) {
            return Err(ConfigError::new(
                "default_replication_factor",
                "must be 1 to 32767",
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
        if self.offset_metadata_bytes_max as u64 > self.log.batch_bytes_max as u64 / 2 {
            // A commit of one offset must fit in one batch of the offsets log.
            return Err(ConfigError::new(
                "offset_metadata_bytes_max",
                "must be at most half of log.batch_bytes_max",
            ));
        }
        if !(1..=self.topic_partitions_max).contains(&self.offsets_topic_partitions) {
            return Err(ConfigError::new(
                "offsets_topic_partitions",
                "must be 1 to topic_partitions_max",
            ));
        }
        if !(1..=16).contains(&self.offsets_topic_replication_factor) {
            return Err(ConfigError::new(
                "offsets_topic_replication_factor",
                "must be 1 to 16",
            ));
        }
        if !(1..=3_600_000).contains(&self.offsets_commit_timeout_ms) {
            return Err(ConfigError::new(
                "offsets_commit_timeout_ms",
                "must be 1 ms to 1 hour",
            ));
        }
        listeners::validate(&self.kafka_listeners, &listeners::KAFKA)?;
        listeners::validate(&self.native_listeners, &listeners::NATIVE)?;
        if let Some(metrics) = &self.metrics_listener {
            listeners::validate_metrics(metrics)?;
        }
        self.authentication.validate()?;
        self.authorizer.validate()?;
        self.subscriptions.validate()?;
        self.read_cache.validate()?;
        self.compaction.validate()?;
        self.state_logs.validate()?;
        self.consumer_groups.validate()?;
        self.transactions.validate(self.topic_partitions_max)?;
        self.metadata.validate()?;
        self.cluster.validate(self.node_id)?;
        let heartbeat_ms = self.metadata.tick_ms * self.metadata.heartbeat_ticks as u64;
        if self.cluster.broker_session_timeout_ms < 2 * heartbeat_ms {
            // A session must outlast at least two heartbeats, or one lost frame fences a broker.
            return Err(ConfigError::new(
                "cluster.broker_session_timeout_ms",
                "must be at least two metadata heartbeats (2 x tick_ms x heartbeat_ticks)",
            ));
        }
        self.log.validate()
    }
}
