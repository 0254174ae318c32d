//! The Rust client of Oxbow's native protocol, on tokio.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oxbow_client::ClientError> {
//! use oxbow_client::{Client, Mode, SubscriptionType};
//! let client = Client::builder().broker("127.0.0.1:6650").connect().await?;
//! client.create_topic("orders", 4).await?;
//! let producer = client.producer("orders").build().await?;
//! let offset = producer.send(Some(b"customer-7"), b"hello").await?.await?;
//! let mut consumer = client
//!     .consumer("orders", "billing")
//!     .kind(SubscriptionType::Shared)
//!     .mode(Mode::Reliable)
//!     .build()
//!     .await?;
//! let message = consumer.recv().await?;
//! consumer.ack(&message)?;
//! # let _ = offset; Ok(()) }
//! ```
//!
//! A [`Client`] connects to one broker and learns the cluster from it: producers send each
//! batch to its partition's leader and consumers attach on every leader, over one connection
//! per broker that all producers and consumers of the client share.
//!
//! # Producing
//!
//! [`Producer::send`] adds a message to its partition's batch and returns at once; awaiting
//! the returned [`PendingSend`] gives its offset once the broker acknowledged it (`acks`).
//! A keyed message goes where Kafka's default partitioner puts it, so Kafka consumers of the
//! same topic see the same partitions. Under `Acks::All` a producer is idempotent by default
//! ([`ProducerBuilder::idempotence`]): its batches carry a producer id and per-partition
//! sequences, so the batches in flight when a broker goes away are sent again (with backoff,
//! for up to [`ProducerBuilder::delivery_timeout`]) and stored once, whether or not the broker
//! had appended them before their answer was lost. [`Producer::typed`] serializes keys and
//! values with a [`Serializer`] ([`Utf8`], [`Json`], [`RawBytes`] or your own).
//!
//! ```no_run
//! # async fn demo(client: oxbow_client::Client) -> Result<(), oxbow_client::ClientError> {
//! use oxbow_client::{Json, Utf8};
//! #[derive(serde::Serialize)]
//! struct Order { id: u32, item: String }
//! let orders = client.producer("orders").build().await?.typed(Utf8, Json::<Order>::new());
//! let sent = orders.send(Some("customer-7"), &Order { id: 1, item: "tea".into() }).await?;
//! let delivered = sent.await?; // partition and offset, once acknowledged
//! # let _ = delivered; Ok(()) }
//! ```
//!
//! # Consuming: three tiers
//!
//! One subscription name, of a type (exclusive, shared, failover, key_shared) and a mode
//! (reliable: acknowledged, redelivered, its cursor durable; non-reliable: at most once).
//! A consumer hands messages over in one of three tiers, which all implement [`Receive`]
//! (`next_batch`, `next_batch_within`, `try_next_batch`, `acker`), so that code can be
//! written once for any of them; [`ConsumerBuilder::build_tier`] picks one from
//! configuration. The stream tier, one message per wake-up, for the lowest latency:
//!
//! ```no_run
//! # async fn demo(client: oxbow_client::Client) -> Result<(), oxbow_client::ClientError> {
//! let mut consumer = client.consumer("orders", "billing").build().await?;
//! while let Some(message) = consumer.poll(std::time::Duration::from_secs(1)).await? {
//!     consumer.ack(&message)?;
//! }
//! let _messages = consumer.stream(); // the same, as an async `Stream` of messages
//! # Ok(()) }
//! ```
//!
//! The buffered tier, vectors of up to N messages, for fewer wake-ups per message:
//!
//! ```no_run
//! # async fn demo(client: oxbow_client::Client) -> Result<(), oxbow_client::ClientError> {
//! let mut consumer = client.consumer("orders", "billing").build().await?;
//! let batch = consumer.recv_batch(256).await?;
//! consumer.ack_all(&batch)?;
//! # Ok(()) }
//! ```
//!
//! The dedicated tier, its own connection on its own thread feeding a channel, for the most
//! throughput and for threads outside any runtime (`poll_blocking`):
//!
//! ```no_run
//! # async fn demo(client: oxbow_client::Client) -> Result<(), oxbow_client::ClientError> {
//! use oxbow_client::Receive;
//! let mut consumer = client.consumer("orders", "billing").dedicated(1024).await?;
//! let acker = consumer.acker();
//! let batch = consumer.next_batch().await?;
//! acker.ack_all(&batch)?;
//! # Ok(()) }
//! ```
//!
//! [`Receive::typed`] deserializes any tier's messages into `Message<K, V>`; one that does
//! not deserialize is [`ClientError::Undeserializable`], carrying the message to nack (it
//! comes again, and goes to the dead-letter topic after its redeliveries) or to acknowledge.
//! [`Client::consumer_of_topics`] and [`Client::consumer_of_pattern`] read one subscription
//! over several topics (a pattern picks up topics created later).
//!
//! # Acknowledging, and knowing it is durable
//!
//! `ack` is fire-and-forget: the broker stores the cursor within its
//! `cursor_persist_interval_ms`, and a crash before that delivers those messages again (at
//! least once). [`Acker::commit`] (and `commit_all`, `commit_cumulative`) resolves only once
//! the cursor holding the acknowledgement is synced on the leader and held by its in-sync
//! replicas: a committed message is never delivered again, even after kill -9. Committing
//! a message that is not this consumer's any more (redelivered elsewhere after its ack
//! timeout) fails with the `CommitFailed` code. [`Consumer::committed_positions`] says how
//! far commits were confirmed, [`Consumer::current_positions`] how far messages arrived.
//!
//! ```no_run
//! # async fn demo(client: oxbow_client::Client) -> Result<(), oxbow_client::ClientError> {
//! let mut consumer = client.consumer("orders", "billing").build().await?;
//! let message = consumer.recv().await?;
//! // ... the application's work, then:
//! consumer.commit(&message).await?; // durable when this returns
//! # Ok(()) }
//! ```
//!
//! # When brokers go away
//!
//! Connections come back by themselves. A producer opens a new connection for its next
//! batch and sends again what was in flight (idempotent producers). A consumer that loses a
//! leader's connection, whatever its tier, looks the leaders up again and attaches anew under
//! its name, with backoff ([`ClientBuilder::retry_backoff`] doubling up to
//! [`ClientBuilder::retry_backoff_max`], ±20%), for up to
//! [`ConsumerBuilder::reconnect_timeout`]; the application sees no error meanwhile, and a
//! reliable subscription delivers again what was not acknowledged. Past that timeout the next
//! receive is [`ClientError::ReconnectFailed`]. Errors that retrying cannot change (refused
//! credentials, authorization, unknown topics, bad settings) end at once.
//!
//! # TLS and authentication
//!
//! A listener may require TLS, SASL or both. [`ClientBuilder::tls_ca_file`] turns TLS on and
//! trusts only the CA certificates in that PEM file (no system roots); each broker's
//! certificate must carry the host of its address, or the name given to
//! [`ClientBuilder::tls_server_name`] (DNS names and IP addresses both work).
//! [`ClientBuilder::sasl`] authenticates every connection right after the version handshake,
//! with SCRAM-SHA-256, SCRAM-SHA-512 (the broker must prove it holds the credential, or the
//! connection fails) or PLAIN (the password crosses the wire: use it over TLS only). Every
//! connection the client opens, to every broker of the cluster, does both before it is used.
//! Failures are [`ClientError::Tls`] and [`ClientError::Authentication`]; neither ever
//! carries the password, and neither does any `Debug` output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oxbow_client::ClientError> {
//! use oxbow_client::{Client, SaslMechanism};
//! let password = std::env::var("OXBOW_SASL_PASSWORD").unwrap_or_default();
//! let client = Client::builder()
//!     .broker("broker-1.example:6650")
//!     .tls_ca_file("/etc/oxbow/ca.pem")
//!     .sasl(SaslMechanism::ScramSha256, "alice", password)
//!     .connect()
//!     .await?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! [`ClientConfig`] reads the same settings from TOML (`tls_ca_file`, `tls_server_name`,
//! `sasl_mechanism`, `sasl_username`, `sasl_password`) or the environment
//! (`OXBOW_TLS_CA_FILE`, `OXBOW_TLS_SERVER_NAME`, `OXBOW_SASL_MECHANISM`,
//! `OXBOW_SASL_USERNAME`, `OXBOW_SASL_PASSWORD`).
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
