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
//!
//! A listener that requires TLS and SASL (top-level keys, before any table):
//!
//! ```toml
//! broker = "broker-1.example:6650"
//! tls_ca_file = "/etc/oxbow/ca.pem"      # trust only this CA; connections use TLS
//! tls_server_name = "oxbow.example"      # default: the host of each broker's address
//! sasl_mechanism = "SCRAM-SHA-256"       # SCRAM-SHA-256 | SCRAM-SHA-512 | PLAIN
//! sasl_username = "alice"
//! # sasl_password: better from OXBOW_SASL_PASSWORD than in a file
//! ```

use crate::auth::{SaslCredentials, SaslMechanism};
use crate::error::ClientError;
use oxbow_core::native::{Acks, Mode, StartPosition, SubscriptionType};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

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
    /// Unanswered batches; while this many are out, messages gather in their partition's
    /// open batch, and `send` waits once that is full.
    pub in_flight_batches_max: usize,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// Level for gzip (1-9), lz4 (1-17) or zstd (1-22); absent: the codec's default.
    pub compression_level: Option<i32>,
    /// Whether batches carry a producer id and sequences, so those sent again after a lost
    /// connection are appended once; absent: on with `acks = "all"`, off otherwise.
    pub idempotence: Option<bool>,
    /// How long a message may take from `send` to its answer, retries included.
    pub delivery_timeout_ms: u64,
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
            idempotence: None,
            delivery_timeout_ms: crate::producer::DEFAULT_DELIVERY_TIMEOUT.as_millis() as u64,
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

/// How long a consumer keeps trying to attach again after losing a connection, by default:
/// long enough for a broker to restart or a partition's leadership to move.
pub const DEFAULT_RECONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// How long a consumer that lost a leader's connection keeps trying to attach again
    /// before it ends (0: it ends at once).
    pub reconnect_timeout_ms: u64,
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
            reconnect_timeout_ms: DEFAULT_RECONNECT_TIMEOUT.as_millis() as u64,
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

/// Everything a client application configures. `Debug` never prints `sasl_password`.
#[derive(Clone, Deserialize)]
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
    /// Wait before such a retry, and the first wait after a lost broker.
    pub retry_backoff_ms: u64,
    /// Longest wait between attempts to reach a broker again.
    pub retry_backoff_max_ms: u64,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// Consumer settings.
    pub consumer: ConsumerConfig,
    /// PEM file of the CA certificates to trust; when set, every connection uses TLS and
    /// trusts only these (no system roots). A relative path is relative to the working
    /// directory. Connecting fails with [`ClientError::Config`] if the file cannot be read or
    /// holds no certificate, and with [`ClientError::Tls`] if a broker's certificate does not
    /// chain to it.
    pub tls_ca_file: Option<PathBuf>,
    /// The name every broker's certificate must carry (a DNS name or an IP address); default:
    /// the host of the address each connection dials. Only with `tls_ca_file`.
    pub tls_server_name: Option<String>,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`: authenticate every connection with SASL
    /// (needs `sasl_username` and `sasl_password`). PLAIN sends the password as is: use it
    /// over TLS only. A refusal is [`ClientError::Authentication`].
    pub sasl_mechanism: Option<String>,
    /// The user to authenticate as (with `sasl_mechanism`).
    pub sasl_username: Option<String>,
    /// That user's password (with `sasl_mechanism`); never printed.
    pub sasl_password: Option<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("broker", &self.broker)
            .field("client_name", &self.client_name)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("not_leader_retries", &self.not_leader_retries)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .field("retry_backoff_max_ms", &self.retry_backoff_max_ms)
            .field("producer", &self.producer)
            .field("consumer", &self.consumer)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            broker: "127.0.0.1:6650".into(),
            client_name: "oxbow-client".into(),
            request_timeout_ms: 30_000,
            not_leader_retries: 5,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
            tls_ca_file: None,
            tls_server_name: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
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
    /// `OXBOW_CONSUMER_NAME`, `OXBOW_CONSUMER_TIER` (`stream`, `buffered:N`, `dedicated`),
    /// `OXBOW_TLS_CA_FILE`, `OXBOW_TLS_SERVER_NAME`, `OXBOW_SASL_MECHANISM`,
    /// `OXBOW_SASL_USERNAME` and `OXBOW_SASL_PASSWORD`.
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
        if let Some(v) = var("OXBOW_TLS_CA_FILE") {
            self.tls_ca_file = Some(v.into());
        }
        if let Some(v) = var("OXBOW_TLS_SERVER_NAME") {
            self.tls_server_name = Some(v);
        }
        if let Some(v) = var("OXBOW_SASL_MECHANISM") {
            self.sasl_mechanism = Some(v);
        }
        if let Some(v) = var("OXBOW_SASL_USERNAME") {
            self.sasl_username = Some(v);
        }
        if let Some(v) = var("OXBOW_SASL_PASSWORD") {
            self.sasl_password = Some(v);
        }
        self.validate()?;
        Ok(self)
    }

    /// The SASL mechanism, parsed (`None`: no authentication).
    pub fn sasl_mechanism(&self) -> Result<Option<SaslMechanism>, ClientError> {
        self.sasl_mechanism.as_deref().map(str::parse).transpose()
    }

    /// The mechanism with its username and password, checked: both must be given with a
    /// mechanism, and neither without one.
    pub(crate) fn sasl_credentials(&self) -> Result<Option<SaslCredentials>, ClientError> {
        let Some(mechanism) = self.sasl_mechanism()? else {
            if self.sasl_username.is_some() || self.sasl_password.is_some() {
                return Err(ClientError::Config(
                    "sasl_username and sasl_password need sasl_mechanism".into(),
                ));
            }
            return Ok(None);
        };
        let (Some(username), Some(password)) = (&self.sasl_username, &self.sasl_password) else {
            return Err(ClientError::Config(format!(
                "sasl_mechanism {mechanism} needs both sasl_username and sasl_password"
            )));
        };
        let credentials = SaslCredentials {
            mechanism,
            username: username.clone(),
            password: password.clone(),
        };
        credentials.validate()?;
        Ok(Some(credentials))
    }

    fn validate(&self) -> Result<(), ClientError> {
        self.producer.acks()?;
        self.consumer.kind()?;
        self.consumer.mode()?;
        self.consumer.start()?;
        self.sasl_credentials()?;
        if let Some(name) = &self.tls_server_name {
            if self.tls_ca_file.is_none() {
                return Err(ClientError::Config(
                    "tls_server_name needs tls_ca_file".into(),
                ));
            }
            crate::tls::parse_server_name(name)?;
        }
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

    #[test]
    fn tls_and_sasl_come_from_toml() {
        let config = ClientConfig::from_toml(
            "tls_ca_file = \"certs/ca.pem\"\ntls_server_name = \"10.0.0.1\"\n\
             sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"alice\"\n\
             sasl_password = \"hunter2\"\n",
        )
        .unwrap();
        assert_eq!(config.tls_ca_file, Some(PathBuf::from("certs/ca.pem")));
        assert_eq!(config.tls_server_name.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            config.sasl_mechanism().unwrap(),
            Some(SaslMechanism::ScramSha512)
        );
        let credentials = config.sasl_credentials().unwrap().unwrap();
        assert_eq!(credentials.username, "alice");
        assert_eq!(credentials.password, "hunter2");
        let plain = ClientConfig::default();
        assert_eq!(plain.sasl_credentials().unwrap(), None);
        assert_eq!(plain.tls_ca_file, None);
    }

    #[test]
    fn tls_and_sasl_come_from_the_environment() {
        let env = ClientConfig::default()
            .with_env(|name| match name {
                "OXBOW_TLS_CA_FILE" => Some("/etc/oxbow/ca.pem".into()),
                "OXBOW_TLS_SERVER_NAME" => Some("oxbow.example".into()),
                "OXBOW_SASL_MECHANISM" => Some("PLAIN".into()),
                "OXBOW_SASL_USERNAME" => Some("bob".into()),
                "OXBOW_SASL_PASSWORD" => Some("s3cret".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(env.tls_ca_file, Some(PathBuf::from("/etc/oxbow/ca.pem")));
        assert_eq!(env.tls_server_name.as_deref(), Some("oxbow.example"));
        let credentials = env.sasl_credentials().unwrap().unwrap();
        assert_eq!(credentials.mechanism, SaslMechanism::Plain);
        assert_eq!(credentials.username, "bob");
        assert_eq!(credentials.password, "s3cret");
    }

    #[test]
    fn bad_security_settings_are_refused() {
        let refused = |toml: &str| {
            let error = ClientConfig::from_toml(toml).unwrap_err();
            assert!(matches!(error, ClientError::Config(_)), "{toml}: {error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
            error.to_string()
        };
        let unknown = refused("sasl_mechanism = \"GSSAPI\"\nsasl_username = \"a\"\n");
        assert!(unknown.contains("GSSAPI"), "{unknown}");
        let no_password = refused("sasl_mechanism = \"PLAIN\"\nsasl_username = \"a\"\n");
        assert!(no_password.contains("sasl_password"), "{no_password}");
        refused("sasl_mechanism = \"SCRAM-SHA-256\"\nsasl_password = \"hunter2\"\n");
        refused("sasl_username = \"a\"\nsasl_password = \"hunter2\"\n");
        refused("sasl_mechanism = \"PLAIN\"\nsasl_username = \"\"\nsasl_password = \"hunter2\"\n");
        refused("tls_server_name = \"oxbow.example\"\n");
        refused("tls_ca_file = \"ca.pem\"\ntls_server_name = \"not a name\"\n");
        refused("sasl_mechanizm = \"PLAIN\"\n");
        let env = ClientConfig::default().with_env(|name| match name {
            "OXBOW_SASL_MECHANISM" => Some("SCRAM-SHA-256".into()),
            "OXBOW_SASL_PASSWORD" => Some("hunter2".into()),
            _ => None,
        });
        assert!(env.unwrap_err().to_string().contains("sasl_username"));
    }

    #[test]
    fn debug_never_prints_the_password() {
        let config = ClientConfig::from_toml(
            "sasl_mechanism = \"PLAIN\"\nsasl_username = \"alice\"\nsasl_password = \"hunter2\"\n",
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("alice") && shown.contains("<redacted>"),
            "{shown}"
        );
        let builder = crate::Client::builder().sasl(SaslMechanism::ScramSha256, "alice", "hunter2");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
