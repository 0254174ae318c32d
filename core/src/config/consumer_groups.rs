//! Settings of consumer groups that use Kafka's consumer group protocol (KIP-848,
//! `group.protocol=consumer`), where the broker owns sessions and assignment.

use super::ConfigError;
use serde::Deserialize;

/// The coordinator's side of KIP-848 groups. Kafka's names are `group.consumer.*`; with this
/// protocol the session timeout and heartbeat interval are the broker's, not the client's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerGroupConfig {
    /// A member that sends no heartbeat for this long is removed and its partitions are
    /// assigned to the others (Kafka's `group.consumer.session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// How often members are told to heartbeat (Kafka's
    /// `group.consumer.heartbeat.interval.ms`). A member learns of new work at its next
    /// heartbeat, so this also bounds how long a rebalance step waits.
    pub heartbeat_interval_ms: u64,
    /// Most members one group holds; a join past it gets GROUP_MAX_SIZE_REACHED (Kafka's
    /// `group.consumer.max.size`).
    pub members_max: u32,
    /// Longest subscription regular expression accepted (its compiled size is bounded too).
    pub subscription_regex_bytes_max: u32,
    /// Most topic names one member's subscription lists.
    pub subscription_topics_max: u32,
}

impl Default for ConsumerGroupConfig {
    fn default() -> ConsumerGroupConfig {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            members_max: 1_000,
            subscription_regex_bytes_max: 1_024,
            subscription_topics_max: 10_000,
        }
    }
}

impl ConsumerGroupConfig {
    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=i32::MAX as u64).contains(&self.heartbeat_interval_ms) {
            return Err(ConfigError::new(
                "consumer_groups.heartbeat_interval_ms",
                "must be 100 ms to 2^31 ms",
            ));
        }
        if self.session_timeout_ms <= self.heartbeat_interval_ms {
            // Kafka's rule: a session must outlast a heartbeat interval, or members that
            // heartbeat on time are expired.
            return Err(ConfigError::new(
                "consumer_groups.session_timeout_ms",
                "must exceed consumer_groups.heartbeat_interval_ms",
            ));
        }
        if !(1..=100_000).contains(&self.members_max) {
            return Err(ConfigError::new(
                "consumer_groups.members_max",
                "must be 1 to 100000",
            ));
        }
        if !(1..=1_000_000).contains(&self.subscription_topics_max) {
            return Err(ConfigError::new(
                "consumer_groups.subscription_topics_max",
                "must be 1 to 1000000",
            ));
        }
        if !(1..=65_536).contains(&self.subscription_regex_bytes_max) {
            return Err(ConfigError::new(
                "consumer_groups.subscription_regex_bytes_max",
                "must be 1 to 65536",
            ));
        }
        Ok(())
    }
}
