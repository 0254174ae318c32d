//! Settings of the internal state logs (consumer-group offsets, subscription cursors).

use super::ConfigError;
use serde::Deserialize;

/// How the logs that hold consumer state are cut into segments and compacted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateLogConfig {
    /// Segment size of a state log: compaction deletes whole segments, so several must fit
    /// below `compaction_bytes_min`.
    pub segment_bytes_max: u64,
    /// A state log is compacted once it holds more than this and more than twice its live
    /// state; it stays below about this plus twice the live state plus two segments.
    pub compaction_bytes_min: u64,
}

impl Default for StateLogConfig {
    fn default() -> StateLogConfig {
        StateLogConfig {
            segment_bytes_max: 1 << 20,
            compaction_bytes_min: 8 << 20,
        }
    }
}

/// Segments that must fit below the compaction threshold.
const SEGMENTS_PER_COMPACTION_MIN: u64 = 4;

impl StateLogConfig {
    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(64 << 10..=1 << 30).contains(&self.segment_bytes_max) {
            return Err(ConfigError::new(
                "state_logs.segment_bytes_max",
                "must be 64 KiB to 1 GiB",
            ));
        }
        if self.compaction_bytes_min < SEGMENTS_PER_COMPACTION_MIN * self.segment_bytes_max {
            return Err(ConfigError::new(
                "state_logs.compaction_bytes_min",
                format!("must be at least {SEGMENTS_PER_COMPACTION_MIN} segments"),
            ));
        }
        Ok(())
    }
}
