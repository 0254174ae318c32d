//! How a topic's old records go (Kafka's `cleanup.policy`: retention deletes whole segments,
//! compaction keeps the latest record of each key), and the broker's compaction settings.

use super::ConfigError;
use serde::Deserialize;

/// Kafka's `cleanup.policy`: `delete`, `compact`, or both (`compact,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CleanupPolicy {
    /// Retention deletes the oldest segments by size and age.
    pub delete: bool,
    /// The cleaner keeps only the newest record of each key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// Retention only: Kafka's default.
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };

    /// The policy in Kafka's spelling.
    pub fn name(self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

impl std::str::FromStr for CleanupPolicy {
    type Err = String;

    /// A comma-separated list of `delete` and `compact` (Kafka's list syntax), not empty.
    fn from_str(value: &str) -> Result<CleanupPolicy, String> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return Err(format!("{value:?}: must be delete, compact or both")),
            }
        }
        Ok(policy)
    }
}

impl TryFrom<String> for CleanupPolicy {
    type Error = String;

    fn try_from(value: String) -> Result<CleanupPolicy, String> {
        value.parse()
    }
}

/// Kafka's `min.cleanable.dirty.ratio`: the share of a log not yet compacted at which the
/// cleaner takes it, from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct DirtyRatio(f64);

impl DirtyRatio {
    /// The ratio, within 0..=1.
    pub fn get(self) -> f64 {
        self.0
    }
}

// Only finite values in 0..=1 are ever held, so equality is total.
impl Eq for DirtyRatio {}

impl TryFrom<f64> for DirtyRatio {
    type Error = String;

    fn try_from(ratio: f64) -> Result<DirtyRatio, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(DirtyRatio(ratio))
        } else {
            Err(format!("{ratio} is outside 0..=1"))
        }
    }
}

impl Default for DirtyRatio {
    fn default() -> DirtyRatio {
        DirtyRatio(0.5)
    }
}

/// The cleaner every shard runs over its compacted partitions (the `[compaction]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// How often each shard looks for partitions due for cleaning (Kafka's
    /// `log.cleaner.backoff.ms`).
    pub check_interval_ms: u64,
    /// Memory one cleaning may hold for the newest offset of each key it saw (keys included).
    /// A log with more keys is cleaned in several passes, each up to where the map filled
    /// (Kafka's `log.cleaner.dedupe.buffer.size`).
    pub key_map_bytes_max: u64,
    /// Bytes per second the cleaner of one shard reads and writes, together, so that cleaning
    /// does not take the disk from producers and consumers (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`).
    pub io_bytes_per_sec: u64,
}

impl Default for CompactionConfig {
    fn default() -> CompactionConfig {
        CompactionConfig {
            check_interval_ms: 15_000,
            key_map_bytes_max: 64 << 20,
            io_bytes_per_sec: 100 << 20,
        }
    }
}

impl CompactionConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.check_interval_ms == 0 {
            return Err(ConfigError::new(
                "compaction.check_interval_ms",
                "must be positive",
            ));
        }
        if self.key_map_bytes_max < 64 * 1024 {
            return Err(ConfigError::new(
                "compaction.key_map_bytes_max",
                "must be at least 64 KiB",
            ));
        }
        if self.io_bytes_per_sec < 1 << 20 {
            return Err(ConfigError::new(
                "compaction.io_bytes_per_sec",
                "must be at least 1 MiB/s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_in_any_order_and_name_themselves_as_kafka_does() {
        for (text, name) in [
            ("delete", "delete"),
            ("compact", "compact"),
            ("compact,delete", "compact,delete"),
            ("delete, compact", "compact,delete"),
        ] {
            assert_eq!(text.parse::<CleanupPolicy>().unwrap().name(), name);
        }
        for bad in ["", "compacted", "delete,,compact"] {
            assert!(bad.parse::<CleanupPolicy>().is_err(), "{bad:?}");
        }
        assert!(DirtyRatio::try_from(1.5).is_err());
        assert!(DirtyRatio::try_from(f64::NAN).is_err());
    }
}
