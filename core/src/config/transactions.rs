//! Settings of the transaction coordinator (Kafka's `transaction.*` broker configs).

use super::ConfigError;
use serde::Deserialize;

/// How transactions are coordinated and bounded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionConfig {
    /// Partitions of the internal topic of transaction state (Kafka's
    /// `transaction.state.log.num.partitions`), fixed when the topic is first created.
    pub state_topic_partitions: u32,
    /// Replicas of each of its partitions (Kafka's `transaction.state.log.replication.factor`),
    /// fewer when fewer brokers are registered when it is created.
    pub state_topic_replication_factor: u32,
    /// Longest transaction timeout a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`); longer gets INVALID_TRANSACTION_TIMEOUT.
    pub timeout_max_ms: u32,
    /// A transactional id idle this long with no transaction open is forgotten (Kafka's
    /// `transactional.id.expiration.ms`).
    pub id_expiration_ms: u64,
    /// How often open transactions are checked against their timeouts (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub timeout_check_interval_ms: u64,
}

impl Default for TransactionConfig {
    fn default() -> TransactionConfig {
        TransactionConfig {
            state_topic_partitions: 50,
            state_topic_replication_factor: 3,
            timeout_max_ms: 900_000,
            id_expiration_ms: 7 * 24 * 3_600_000,
            timeout_check_interval_ms: 10_000,
        }
    }
}

impl TransactionConfig {
    /// Checks every bound; returns the first that cannot work.
    pub fn validate(&self, topic_partitions_max: u32) -> Result<(), ConfigError> {
        if !(1..=topic_partitions_max).contains(&self.state_topic_partitions) {
            return Err(ConfigError::new(
                "transactions.state_topic_partitions",
                "must be 1 to topic_partitions_max",
            ));
        }
        if !(1..=16).contains(&self.state_topic_replication_factor) {
            return Err(ConfigError::new(
                "transactions.state_topic_replication_factor",
                "must be 1 to 16",
            ));
        }
        if !(1_000..=i32::MAX as u32).contains(&self.timeout_max_ms) {
            return Err(ConfigError::new(
                "transactions.timeout_max_ms",
                "must be 1 s to 2^31 ms",
            ));
        }
        if self.id_expiration_ms < 1_000 {
            return Err(ConfigError::new(
                "transactions.id_expiration_ms",
                "must be at least 1 s",
            ));
        }
        if !(10..=3_600_000).contains(&self.timeout_check_interval_ms) {
            return Err(ConfigError::new(
                "transactions.timeout_check_interval_ms",
                "must be 10 ms to 1 hour",
            ));
        }
        Ok(())
    }
}
