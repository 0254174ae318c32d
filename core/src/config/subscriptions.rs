//! Limits of native subscriptions.

use super::ConfigError;
use serde::Deserialize;

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
    /// Reliable, on a replicated partition: a written cursor counts as persisted once every
    /// in-sync replica holds it; the leader waits at most this long for them (the cursor stays
    /// written on the leader, its persisted position stays behind).
    pub cursor_replication_timeout_ms: u64,
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
            cursor_replication_timeout_ms: 5_000,
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
                "subscriptions.cursor_replication_timeout_ms",
                self.cursor_replication_timeout_ms,
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
