//! A partition log's settings, and the topic overrides (Kafka names) that change them.

use super::cleanup::{CleanupPolicy, DirtyRatio};
use super::ConfigError;
use serde::Deserialize;

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
    /// Whether retention deletes old segments, compaction keeps the newest record per key, or
    /// both.
    pub cleanup_policy: CleanupPolicy,
    /// Compaction keeps a tombstone (a record without a value) this long after it was first
    /// cleaned, so a reader that started from the beginning before then still sees the delete.
    pub delete_retention_ms: u64,
    /// Compaction takes a log once this share of it has not been cleaned yet.
    pub min_cleanable_dirty_ratio: DirtyRatio,
    /// Records newer than this are never compacted away: their segment is not cleaned yet.
    pub min_compaction_lag_ms: u64,
    /// A log whose uncleaned records are older than this is cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: Option<u64>,
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
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: DirtyRatio::default(),
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
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
        if self
            .max_compaction_lag_ms
            .is_some_and(|max| max < self.min_compaction_lag_ms)
        {
            return Err(ConfigError::new(
                "log.max_compaction_lag_ms",
                "must be at least log.min_compaction_lag_ms",
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
/// The last two are replication settings, read by the partition's leader and the controller,
/// not by the log; they are checked here with the rest.
pub const TOPIC_CONFIG_NAMES: [&str; 14] = [
    CLEANUP_POLICY_CONFIG,
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "segment.bytes",
    "segment.ms",
    "retention.bytes",
    "retention.ms",
    "max.message.bytes",
    "flush.ms",
    "oxbow.flush",
    MIN_INSYNC_REPLICAS_CONFIG,
    UNCLEAN_ELECTION_CONFIG,
];

/// How old records go: `delete` (retention), `compact` (the newest record of each key is
/// kept), or `compact,delete`.
pub const CLEANUP_POLICY_CONFIG: &str = "cleanup.policy";

/// acks=all needs at least this many in-sync replicas (a topic's override of
/// `cluster.min_insync_replicas`).
pub const MIN_INSYNC_REPLICAS_CONFIG: &str = "min.insync.replicas";

/// Lets a partition with no live in-sync replica be led by a replica that may lack
/// acknowledged records (off unless a topic sets it).
pub const UNCLEAN_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// A topic's `min.insync.replicas`, if its overrides set it validly.
pub fn min_insync_replicas_override<'a>(
    mut overrides: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<u32> {
    (overrides.find(|(name, _)| *name == MIN_INSYNC_REPLICAS_CONFIG))
        .and_then(|(_, value)| value.parse().ok())
        .filter(|&n| n >= 1)
}

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
                CLEANUP_POLICY_CONFIG => {
                    config.cleanup_policy =
                        value.parse().map_err(|why| ConfigError::new(field, why))?;
                }
                "delete.retention.ms" => {
                    config.delete_retention_ms = u64::try_from(number()?)
                        .map_err(|_| ConfigError::new(field, "must not be negative"))?;
                }
                "min.compaction.lag.ms" => {
                    config.min_compaction_lag_ms = u64::try_from(number()?)
                        .map_err(|_| ConfigError::new(field, "must not be negative"))?;
                }
                // Kafka's default is Long.MAX_VALUE: no bound.
                "max.compaction.lag.ms" => match number()? {
                    i64::MAX => config.max_compaction_lag_ms = None,
                    ms if ms > 0 => config.max_compaction_lag_ms = Some(ms as u64),
                    _ => return Err(ConfigError::new(field, "must be positive")),
                },
                "min.cleanable.dirty.ratio" => {
                    let ratio = value.parse::<f64>().map_err(|_| {
                        ConfigError::new(field, format!("{value:?} is not a number"))
                    })?;
                    config.min_cleanable_dirty_ratio =
                        DirtyRatio::try_from(ratio).map_err(|why| ConfigError::new(field, why))?;
                }
                MIN_INSYNC_REPLICAS_CONFIG => {
                    if !(1..=i64::from(u16::MAX)).contains(&number()?) {
                        return Err(ConfigError::new(field, "must be at least 1"));
                    }
                }
                UNCLEAN_ELECTION_CONFIG => {
                    if value != "true" && value != "false" {
                        return Err(ConfigError::new(field, "must be true or false"));
                    }
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
