#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod acker;
mod auth;
mod backoff;
pub mod config;
mod connection;
mod consumer;
mod dedicated;
mod error;
mod handshake;
mod message;
mod multi_topic;
pub mod partitioner;
mod producer;
mod reattach;
mod routing;
mod serde_codec;
mod tiers;
mod tls;
mod typed;

pub use acker::Acker;
pub use auth::SaslMechanism;

/// The client's side of a SASL exchange (SCRAM, PLAIN), for any protocol that carries SASL
/// tokens: the native connection runs it in its handshake, the `oxbow` CLI over Kafka's
/// SaslAuthenticate.
pub mod sasl {
    pub use crate::auth::{SaslCredentials, SaslExchange, SaslMechanism, Step};
}
pub use config::{ClientConfig, ConsumerConfig, ProducerConfig, Tier};
pub use consumer::{Consumer, ConsumerBuilder, DEFAULT_PATTERN_REFRESH};
pub use dedicated::DedicatedConsumer;
pub use error::ClientError;
pub use message::Message;
pub use multi_topic::MultiTopicConsumer;
pub use oxbow_core::native::{
    Acks, ErrorCode, Mode, PartitionInfo, StartPosition, SubscriptionInfo, SubscriptionType,
    TopicInfo,
};
pub use oxbow_core::Codec;
pub use producer::{Delivered, PendingSend, Producer, ProducerBuilder};
pub use serde_codec::{CodecError, Deserializer, Json, RawBytes, Serializer, Utf8};
pub use tiers::{BufferedStream, MessageStream, Receive, TieredConsumer};
pub use typed::{TypedConsumer, TypedProducer};

use connection::{Security, Shared};
use oxbow_core::native::{ClientFrame, ServerFrame};
use routing::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to connect. `Debug` never prints the SASL password.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    broker: String,
    client_name: String,
    request_timeout: Duration,
    not_leader_retries: u32,
    retry_backoff: Duration,
    retry_backoff_max: Duration,
    tls_ca_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    sasl: Option<sasl::SaslCredentials>,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            broker: "127.0.0.1:6650".into(),
            client_name: "oxbow-client".into(),
            request_timeout: Duration::from_secs(30),
            not_leader_retries: 5,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            tls_ca_file: None,
            tls_server_name: None,
            sasl: None,
        }
    }
}

impl ClientBuilder {
    /// The broker's native-protocol address (`host:port`).
    pub fn broker(mut self, addr: impl Into<String>) -> ClientBuilder {
        self.broker = addr.into();
        self
    }

    /// A name for the broker's logs.
    pub fn client_name(mut self, name: impl Into<String>) -> ClientBuilder {
        self.client_name = name.into();
        self
    }

    /// How long a request may wait for its answer.
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// How many times a produce or subscribe refused with `NotLeader` (leadership moved) is
    /// tried again after asking for fresh metadata (default 5).
    pub fn not_leader_retries(mut self, retries: u32) -> ClientBuilder {
        self.not_leader_retries = retries;
        self
    }

    /// Wait before such a retry (default 100 ms), so a leader election can finish; also the
    /// first wait of a producer or consumer that lost its broker, each next wait twice as long
    /// up to [`retry_backoff_max`](Self::retry_backoff_max), each spread by ±20%.
    pub fn retry_backoff(mut self, backoff: Duration) -> ClientBuilder {
        self.retry_backoff = backoff;
        self
    }

    /// Longest wait between two attempts to reach a broker again (default 1 s, as Kafka's
    /// `retry.backoff.max.ms`).
    pub fn retry_backoff_max(mut self, backoff: Duration) -> ClientBuilder {
        self.retry_backoff_max = backoff;
        self
    }

    /// Connects over TLS, trusting only the CA certificates in this PEM file (no system
    /// roots). The file is read when [`connect`](Self::connect) runs: it fails with
    /// [`ClientError::Config`] if the file cannot be read or holds no valid certificate, and
    /// with [`ClientError::Tls`] if a broker's certificate does not chain to these CAs, does
    /// not carry the server name, or the listener does not speak TLS.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> ClientBuilder {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// The name every broker's certificate must carry, a DNS name or an IP address (default:
    /// the host of the address each connection dials, which suits a cluster whose brokers
    /// have certificates of their own). Needs [`tls_ca_file`](Self::tls_ca_file):
    /// [`connect`](Self::connect) fails with [`ClientError::Config`] without it, or when the
    /// name is neither a DNS name nor an IP address.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> ClientBuilder {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Authenticates every connection with SASL after the version handshake. With SCRAM the
    /// password never crosses the wire and the broker must prove it holds the credential;
    /// PLAIN sends the password as is, so use it with [`tls_ca_file`](Self::tls_ca_file).
    /// [`connect`](Self::connect) fails with [`ClientError::Config`] if the username or
    /// password is empty, longer than 1024 bytes or holds a NUL, and with
    /// [`ClientError::Authentication`] if the broker refuses the credentials or its SCRAM
    /// signature does not verify (the broker closes the connection either way). The whole
    /// exchange is bounded by the [request timeout](Self::request_timeout).
    pub fn sasl(
        self,
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> ClientBuilder {
        self.sasl_credentials(sasl::SaslCredentials::new(mechanism, username, password))
    }

    /// As [`sasl`](Self::sasl), with the credentials already made.
    pub fn sasl_credentials(mut self, credentials: sasl::SaslCredentials) -> ClientBuilder {
        self.sasl = Some(credentials);
        self
    }

    /// Connects to the broker (must run inside a tokio runtime); others open on first use.
    /// Fails with [`ClientError::Config`] on bad TLS or SASL settings, before dialling.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let security = self.security()?;
        let router = Router::connect(Arc::new(self), security).await?;
        Ok(Client {
            router: Arc::new(router),
        })
    }

    /// Checks the TLS and SASL settings and reads the CA file.
    fn security(&self) -> Result<Security, ClientError> {
        let tls = match (&self.tls_ca_file, &self.tls_server_name) {
            (Some(ca), name) => Some(tls::TlsConnector::load(ca, name.as_deref())?),
            (None, Some(_)) => {
                return Err(ClientError::Config(
                    "a TLS server name needs a TLS CA file".into(),
                ))
            }
            (None, None) => None,
        };
        if let Some(sasl) = &self.sasl {
            sasl.validate()?;
        }
        Ok(Security {
            tls,
            sasl: self.sasl.clone(),
        })
    }
}

/// Connections to the brokers of a cluster; cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
}

impl Client {
    /// Connection settings, to be filled in.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with the settings of a [`ClientConfig`], TLS and SASL included.
    pub async fn from_config(config: &ClientConfig) -> Result<Client, ClientError> {
        let mut builder = Client::builder()
            .broker(&config.broker)
            .client_name(&config.client_name)
            .request_timeout(Duration::from_millis(config.request_timeout_ms))
            .not_leader_retries(config.not_leader_retries)
            .retry_backoff(Duration::from_millis(config.retry_backoff_ms))
            .retry_backoff_max(Duration::from_millis(config.retry_backoff_max_ms));
        builder.tls_ca_file.clone_from(&config.tls_ca_file);
        builder.tls_server_name.clone_from(&config.tls_server_name);
        builder.sasl = config.sasl_credentials()?;
        builder.connect().await
    }

    /// Whether every connection has ended.
    pub fn is_closed(&self) -> bool {
        self.router.is_closed()
    }

    /// A producer for `topic`, to be configured.
    pub fn producer(&self, topic: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder::new(self.clone(), topic.into())
    }

    /// A consumer of `topic` under `subscription`, to be configured.
    pub fn consumer(
        &self,
        topic: impl Into<String>,
        subscription: impl Into<String>,
    ) -> ConsumerBuilder {
        ConsumerBuilder::new(self.clone(), topic.into(), subscription.into())
    }

    /// A consumer of `subscription` on each of `topics`, built with
    /// [`ConsumerBuilder::build_multi`]: one subscription name across them, messages of all of
    /// them from one [`MultiTopicConsumer`], one [`Acker`] for all.
    pub fn consumer_of_topics<T: AsRef<str>>(
        &self,
        topics: &[T],
        subscription: impl Into<String>,
    ) -> ConsumerBuilder {
        let topics = topics.iter().map(|t| t.as_ref().to_string()).collect();
        let selection = multi_topic::Selection::Topics(topics);
        ConsumerBuilder::of(self.clone(), selection, subscription.into())
    }

    /// A consumer of `subscription` on every topic whose whole name matches the regular
    /// expression `pattern`, now and later: it looks for new matching topics every
    /// [`ConsumerBuilder::pattern_refresh`]. A pattern that does not compile is
    /// [`ClientError::Config`].
    pub fn consumer_of_pattern(
        &self,
        pattern: &str,
        subscription: impl Into<String>,
    ) -> Result<ConsumerBuilder, ClientError> {
        let selection = multi_topic::Selection::Pattern(multi_topic::whole_name_pattern(pattern)?);
        Ok(ConsumerBuilder::of(
            self.clone(),
            selection,
            subscription.into(),
        ))
    }

    /// A request any broker answers alike (topics are cluster metadata).
    async fn request(
        &self,
        build: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<ServerFrame, ClientError> {
        let shared = self.router.any().await?;
        request_on(&shared, build).await
    }

    /// A request for the partitions of `topic` each leader holds, sent to every leader.
    async fn request_leaders(
        &self,
        topic: &str,
        build: impl Fn(u64) -> ClientFrame,
    ) -> Result<Vec<ServerFrame>, ClientError> {
        self.router.refresh(topic).await?;
        let mut answers = Vec::new();
        for (shared, _) in self.router.by_leader(topic).await? {
            answers.push(request_on(&shared, &build).await?);
        }
        Ok(answers)
    }

    /// Creates a topic with the broker's `default_replication_factor`.
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<(), ClientError> {
        self.create_replicated_topic(name, partitions, 0).await
    }

    /// Creates a topic with `replication_factor` replicas per partition (0: the broker's
    /// default); more than the cluster's live brokers is refused.
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
    ) -> Result<(), ClientError> {
        self.request(|request_id| ClientFrame::CreateTopic {
            request_id,
            name: name.to_string(),
            partitions,
            replication_factor,
        })
        .await
        .map(drop)
    }

    /// Grows a topic to `partitions` partitions (never fewer); producers see the new ones at
    /// their next metadata lookup.
    pub async fn create_partitions(&self, name: &str, partitions: u32) -> Result<(), ClientError> {
        self.request(|request_id| ClientFrame::CreatePartitions {
            request_id,
            name: name.to_string(),
            partitions,
        })
        .await?;
        self.router.forget(name);
        Ok(())
    }

    /// Changes a topic's config overrides (Kafka names, e.g. `retention.ms`): `set` adds or
    /// replaces, `delete` removes; the partitions run with the new values at once.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: &[(&str, &str)],
        delete: &[&str],
    ) -> Result<(), ClientError> {
        self.request(|request_id| ClientFrame::AlterTopicConfigs {
            request_id,
            name: name.to_string(),
            set: (set.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        })
        .await
        .map(drop)
    }

    /// Deletes a topic with its data and subscriptions.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.request(|request_id| ClientFrame::DeleteTopic {
            request_id,
            name: name.to_string(),
        })
        .await
        .map(drop)
    }

    /// Every topic with its partition count.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        match self
            .request(|request_id| ClientFrame::ListTopics { request_id })
            .await?
        {
            ServerFrame::Topics { topics, .. } => Ok(topics),
            other => Err(unexpected(other)),
        }
    }

    /// The offsets of every partition of a topic (each leader answers for its own).
    pub async fn describe_topic(&self, name: &str) -> Result<Vec<PartitionInfo>, ClientError> {
        let answers = self
            .request_leaders(name, |request_id| ClientFrame::DescribeTopic {
                request_id,
                name: name.to_string(),
            })
            .await?;
        let mut all = Vec::new();
        for answer in answers {
            match answer {
                ServerFrame::TopicDescription { partitions, .. } => all.extend(partitions),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_by_key(|p| p.partition);
        Ok(all)
    }

    /// The subscriptions of a topic, one entry per subscription and partition.
    pub async fn list_subscriptions(
        &self,
        topic: &str,
    ) -> Result<Vec<SubscriptionInfo>, ClientError> {
        let answers = self
            .request_leaders(topic, |request_id| ClientFrame::ListSubscriptions {
                request_id,
                topic: topic.to_string(),
            })
            .await?;
        let mut all = Vec::new();
        for answer in answers {
            match answer {
                ServerFrame::Subscriptions { subscriptions, .. } => all.extend(subscriptions),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_by(|a, b| (&a.name, a.partition).cmp(&(&b.name, b.partition)));
        Ok(all)
    }

    /// Moves a subscription's cursor on every partition.
    pub async fn reset_subscription(
        &self,
        topic: &str,
        subscription: &str,
        position: StartPosition,
    ) -> Result<(), ClientError> {
        self.request_leaders(topic, |request_id| ClientFrame::ResetSubscription {
            request_id,
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            position,
        })
        .await
        .map(drop)
    }

    /// Limits how fast `subscription` of `topic` delivers: at most `messages_per_second`
    /// messages and `bytes_per_second` bytes (keys, values and headers) per second on each
    /// partition, 0 for no limit (both 0: the limit is lifted). A reliable subscription keeps
    /// the limit with its cursor across restarts and leader changes; a non-reliable one while
    /// it lives. Fails with `UnknownSubscription` if it does not exist, `NotAuthorized`
    /// without AlterConfigs on the topic and Read on the subscription.
    pub async fn set_dispatch_rate(
        &self,
        topic: &str,
        subscription: &str,
        messages_per_second: u64,
        bytes_per_second: u64,
    ) -> Result<(), ClientError> {
        self.request_leaders(topic, |request_id| ClientFrame::SetDispatchRate {
            request_id,
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            messages_per_second,
            bytes_per_second,
        })
        .await
        .map(drop)
    }

    /// Moves the subscriptions of `topic` stopped at the undecodable batch that holds `offset`
    /// on `partition` past it (only `subscription`, or every one stopped there). Returns the
    /// batch's first and last offset and the subscriptions that moved.
    pub async fn skip_batch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        subscription: Option<&str>,
    ) -> Result<(u64, u64, Vec<String>), ClientError> {
        self.router.refresh(topic).await?;
        let leader = self.router.leader_of(topic, partition).await?;
        match request_on(&leader, |request_id| ClientFrame::SkipBatch {
            request_id,
            topic: topic.to_string(),
            partition,
            offset,
            subscription: subscription.map(str::to_string),
        })
        .await?
        {
            ServerFrame::Skipped {
                base_offset,
                last_offset,
                subscriptions,
                ..
            } => Ok((base_offset, last_offset, subscriptions)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a subscription, detaching its consumers.
    pub async fn delete_subscription(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<(), ClientError> {
        self.request_leaders(topic, |request_id| ClientFrame::DeleteSubscription {
            request_id,
            topic: topic.to_string(),
            subscription: subscription.to_string(),
        })
        .await
        .map(drop)
    }
}

async fn request_on(
    shared: &Shared,
    build: impl FnOnce(u64) -> ClientFrame,
) -> Result<ServerFrame, ClientError> {
    let request_id = shared.next_id();
    shared.request(request_id, &build(request_id), &[]).await
}

fn unexpected(frame: ServerFrame) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {frame:?}"))
}
