//! Client configuration from a TOML file or the environment.
//!
//! ```toml
//! broker = "127.0.0.1:6650"
//! [producer]
//! acks = "all"            # none | leader | all
//! linger_ms = 1
//! [consumer]
//! kind = "shared"         # exclusive | shared | failover | key_shared
//! mode = "reliable"       # reliable | non_reliable
//! tier = { buffered = 256 }   # "stream" | { buffered = N } | "dedicated"
//! ```

use crate::error::ClientError;
use oxbow_core::native::{Acks, Mode, StartPosition, SubscriptionType};
use serde::Deserialize;

/// How a consumer hands messages to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// One message at a time (`Consumer::stream`).
    #[default]
    Stream,
    /// Vectors of up to N messages (`Consumer::buffered_stream`).
    Buffered(usize),
    /// A dedicated thread feeding a channel (`ConsumerBuilder::dedicated`).
    Dedicated,
}

impl std::str::FromStr for Tier {
    type Err = ClientError;

    /// `stream`, `buffered:N` or `dedicated`.
    fn from_str(text: &str) -> Result<Tier, ClientError> {
        match text {
            "stream" => Ok(Tier::Stream),
            "dedicated" => Ok(Tier::Dedicated),
            other => other
                .strip_prefix("buffered:")
                .and_then(|n| n.parse().ok())
                .map(Tier::Buffered)
                .ok_or_else(|| {
                    ClientError::Config(format!(
                        "tier {other:?}: expected stream, buffered:N or dedicated"
                    ))
                }),
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// `none`, `leader` or `all`.
    pub acks: String,
    /// Linger before a batch is sent.
    pub linger_ms: u64,
    /// Largest batch.
    pub batch_bytes_max: usize,
    /// Unanswered batches before `send` waits.
    pub in_flight_batches_max: usize,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// Level for gzip (1-9), lz4 (1-17) or zstd (1-22); absent: the codec's default.
    pub compression_level: Option<i32>,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            acks: "all".into(),
            linger_ms: 1,
            batch_bytes_max: 256 * 1024,
            in_flight_batches_max: 64,
            compression: "none".into(),
            compression_level: None,
        }
    }
}

impl ProducerConfig {
    /// The acks setting, parsed.
    pub fn acks(&self) -> Result<Acks, ClientError> {
        parse_acks(&self.acks)
    }

    /// The compression codec, parsed.
    pub fn codec(&self) -> Result<oxbow_core::Codec, ClientError> {
        self.compression.parse().map_err(ClientError::Config)
    }
}

/// `0`/`none`, `1`/`leader`, `all`/`-1`.
pub fn parse_acks(text: &str) -> Result<Acks, ClientError> {
    match text {
        "0" | "none" => Ok(Acks::None),
        "1" | "leader" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(ClientError::Config(format!(
            "acks {other:?}: expected 0, 1 or all"
        ))),
    }
}

/// `exclusive`, `shared`, `failover` or `key_shared`.
pub fn parse_kind(text: &str) -> Result<SubscriptionType, ClientError> {
    match text {
        "exclusive" => Ok(SubscriptionType::Exclusive),
        "shared" => Ok(SubscriptionType::Shared),
        "failover" => Ok(SubscriptionType::Failover),
        "key_shared" | "key-shared" => Ok(SubscriptionType::KeyShared),
        other => Err(ClientError::Config(format!(
            "subscription type {other:?}: expected exclusive, shared, failover or key_shared"
        ))),
    }
}

/// `reliable` or `non_reliable`.
pub fn parse_mode(text: &str) -> Result<Mode, ClientError> {
    match text {
        "reliable" => Ok(Mode::Reliable),
        "non_reliable" | "non-reliable" => Ok(Mode::NonReliable),
        other => Err(ClientError::Config(format!(
            "mode {other:?}: expected reliable or non-reliable"
        ))),
    }
}

/// `earliest`, `latest`, `offset:N` or `timestamp:MS`.
pub fn parse_start(text: &str) -> Result<StartPosition, ClientError> {
    let bad = || {
        ClientError::Config(format!(
            "start {text:?}: expected earliest, latest, offset:N or timestamp:MS"
        ))
    };
    match text {
        "earliest" => Ok(StartPosition::Earliest),
        "latest" => Ok(StartPosition::Latest),
        other => {
            if let Some(n) = other.strip_prefix("offset:") {
                n.parse().map(StartPosition::Offset).map_err(|_| bad())
            } else if let Some(n) = other.strip_prefix("timestamp:") {
                n.parse().map(StartPosition::Timestamp).map_err(|_| bad())
            } else {
                Err(bad())
            }
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Subscription type.
    pub kind: String,
    /// Mode.
    pub mode: String,
    /// Consumer name (default: derived from the process id).
    pub name: Option<String>,
    /// Failover priority.
    pub priority: i32,
    /// Start of a new subscription.
    pub start: String,
    /// Permits per partition.
    pub receiver_queue: u32,
    /// Consumption tier.
    pub tier: Tier,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            kind: "exclusive".into(),
            mode: "reliable".into(),
            name: None,
            priority: 0,
            start: "earliest".into(),
            receiver_queue: 1000,
            tier: Tier::Stream,
        }
    }
}

impl ConsumerConfig {
    /// The type, parsed.
    pub fn kind(&self) -> Result<SubscriptionType, ClientError> {
        parse_kind(&self.kind)
    }
    /// The mode, parsed.
    pub fn mode(&self) -> Result<Mode, ClientError> {
        parse_mode(&self.mode)
    }
    /// The start, parsed.
    pub fn start(&self) -> Result<StartPosition, ClientError> {
        parse_start(&self.start)
    }
}

/// Everything a client application configures.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Broker address.
    pub broker: String,
    /// Name in the broker's logs.
    pub client_name: String,
    /// How long a request waits for its answer.
    pub request_timeout_ms: u64,
    /// Retries of a produce or subscribe another broker leads, after fresh metadata.
    pub not_leader_retries: u32,
    /// Wait before such a retry.
    pub retry_backoff_ms: u64,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// Consumer settings.
    pub consumer: ConsumerConfig,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            broker: "127.0.0.1:6650".into(),
            client_name: "oxbow-client".into(),
            request_timeout_ms: 30_000,
            not_leader_retries: 5,
            retry_backoff_ms: 100,
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
        }
    }
}

impl ClientConfig {
    /// Parses TOML; missing settings keep their defaults. Checks every value.
    pub fn from_toml(text: &str) -> Result<ClientConfig, ClientError> {
        let config: ClientConfig =
            toml::from_str(text).map_err(|e| ClientError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<ClientConfig, ClientError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
        ClientConfig::from_toml(&text)
    }

    /// Defaults overridden by `OXBOW_BROKER`, `OXBOW_CLIENT_NAME`, `OXBOW_ACKS`,
    /// `OXBOW_LINGER_MS`, `OXBOW_SUBSCRIPTION_TYPE`, `OXBOW_SUBSCRIPTION_MODE`,
    /// `OXBOW_CONSUMER_NAME`, `OXBOW_CONSUMER_TIER` (`stream`, `buffered:N`, `dedicated`).
    pub fn from_env() -> Result<ClientConfig, ClientError> {
        ClientConfig::default().with_env(|name| std::env::var(name).ok())
    }

    /// Applies overrides looked up by `var` (the environment, in `from_env`).
    pub fn with_env(
        mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, ClientError> {
        if let Some(v) = var("OXBOW_BROKER") {
            self.broker = v;
        }
        if let Some(v) = var("OXBOW_CLIENT_NAME") {
            self.client_name = v;
        }
        if let Some(v) = var("OXBOW_ACKS") {
            self.producer.acks = v;
        }
        if let Some(v) = var("OXBOW_LINGER_MS") {
            self.producer.linger_ms = v
                .parse()
                .map_err(|_| ClientError::Config(format!("OXBOW_LINGER_MS {v:?}")))?;
        }
        if let Some(v) = var("OXBOW_SUBSCRIPTION_TYPE") {
            self.consumer.kind = v;
        }
        if let Some(v) = var("OXBOW_SUBSCRIPTION_MODE") {
            self.consumer.mode = v;
        }
        if let Some(v) = var("OXBOW_CONSUMER_NAME") {
            self.consumer.name = Some(v);
        }
        if let Some(v) = var("OXBOW_CONSUMER_TIER") {
            self.consumer.tier = v.parse()?;
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ClientError> {
        self.producer.acks()?;
        self.consumer.kind()?;
        self.consumer.mode()?;
        self.consumer.start()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_come_from_toml_and_the_environment() {
        let config = ClientConfig::from_toml(
            "broker = \"10.0.0.1:6650\"\n[consumer]\nkind = \"key_shared\"\ntier = { buffered = 64 }\n",
        )
        .unwrap();
        assert_eq!(config.consumer.tier, Tier::Buffered(64));
        assert_eq!(config.consumer.kind().unwrap(), SubscriptionType::KeyShared);
        let dedicated = ClientConfig::from_toml("[consumer]\ntier = \"dedicated\"\n").unwrap();
        assert_eq!(dedicated.consumer.tier, Tier::Dedicated);
        let env = ClientConfig::default()
            .with_env(|name| match name {
                "OXBOW_CONSUMER_TIER" => Some("buffered:32".into()),
                "OXBOW_ACKS" => Some("1".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(env.consumer.tier, Tier::Buffered(32));
        assert_eq!(env.producer.acks().unwrap(), Acks::Leader);
        assert!(ClientConfig::from_toml("[consumer]\nmode = \"maybe\"\n").is_err());
        assert!("buffered:x".parse::<Tier>().is_err());
    }
}
