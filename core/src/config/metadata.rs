//! Settings of the metadata group (the Raft group that holds topics, replicas and leaders).

use super::ConfigError;
use serde::Deserialize;

/// How the metadata group keeps its log and how fast it reacts to a lost leader.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataGroupConfig {
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Ticks without hearing a leader before a node campaigns: a random count from this to
    /// twice this (0.7 to 1.4 s by default, shorter than KRaft's 1 to 2 s, so that a crashed
    /// node that also led the group is fenced within `cluster.broker_session_timeout_ms`
    /// of its last heartbeat, like any other; pre-vote keeps a slow node from disrupting).
    pub election_ticks: u32,
    /// Ticks between a leader's heartbeats (which are also the brokers' liveness, see
    /// `cluster.broker_session_timeout_ms`); well below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Entries applied between snapshots; the log before a snapshot is deleted.
    pub snapshot_entries: u64,
    /// Segment size of the metadata log.
    pub segment_bytes_max: u64,
    /// How long a change waits to be committed before the request fails (no leader, or no
    /// quorum).
    pub proposal_timeout_ms: u64,
}

impl Default for MetadataGroupConfig {
    fn default() -> MetadataGroupConfig {
        MetadataGroupConfig {
            tick_ms: 100,
            election_ticks: 7,
            heartbeat_ticks: 1,
            snapshot_entries: 1_000,
            segment_bytes_max: 1 << 20,
            proposal_timeout_ms: 10_000,
        }
    }
}

impl MetadataGroupConfig {
    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.tick_ms) {
            return Err(ConfigError::new("metadata.tick_ms", "must be 1 to 10000"));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::new(
                "metadata.election_ticks",
                "must exceed metadata.heartbeat_ticks, which must be at least 1",
            ));
        }
        if self.snapshot_entries == 0 {
            return Err(ConfigError::new(
                "metadata.snapshot_entries",
                "must be at least 1",
            ));
        }
        if !(64 << 10..=1 << 30).contains(&self.segment_bytes_max) {
            return Err(ConfigError::new(
                "metadata.segment_bytes_max",
                "must be 64 KiB to 1 GiB",
            ));
        }
        if self.proposal_timeout_ms < self.tick_ms {
            return Err(ConfigError::new(
                "metadata.proposal_timeout_ms",
                "must be at least one tick",
            ));
        }
        Ok(())
    }
}
