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
//! One [`Client`] is one connection; producers and consumers made from it share it. A consumer
//! offers three tiers: [`Consumer::stream`] (one message at a time, lowest latency),
//! [`Consumer::buffered_stream`] (vectors of messages, fewer wake-ups), and
//! [`ConsumerBuilder::dedicated`] (its own connection on its own thread feeding a channel, for
//! the most throughput). [`ConsumerBuilder::build_tier`] picks one from configuration.
#![warn(missing_docs)]

pub mod config;
mod connection;
mod consumer;
mod dedicated;
mod error;
mod message;
pub mod partitioner;
mod producer;

pub use config::{ClientConfig, ConsumerConfig, ProducerConfig, Tier};
pub use consumer::{
    Acker, BufferedStream, Consumer, ConsumerBuilder, MessageStream, TieredConsumer,
};
pub use dedicated::DedicatedConsumer;
pub use error::ClientError;
pub use message::Message;
pub use oxbow_core::native::{
    Acks, ErrorCode, Mode, PartitionInfo, StartPosition, SubscriptionInfo, SubscriptionType,
    TopicInfo,
};
pub use oxbow_core::Codec;
pub use producer::{Delivered, PendingSend, Producer, ProducerBuilder};

use connection::Shared;
use oxbow_core::native::{ClientFrame, ServerFrame};
use std::sync::Arc;
use std::time::Duration;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    broker: String,
    client_name: String,
    request_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            broker: "127.0.0.1:6650".into(),
            client_name: "oxbow-client".into(),
            request_timeout: Duration::from_secs(30),
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

    /// Connects (must run inside a tokio runtime).
    pub async fn connect(self) -> Result<Client, ClientError> {
        let shared =
            connection::connect(&self.broker, &self.client_name, self.request_timeout).await?;
        Ok(Client {
            shared,
            settings: Arc::new(self),
        })
    }
}

/// A connection to a broker; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    settings: Arc<ClientBuilder>,
}

impl Client {
    /// Connection settings, to be filled in.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with the settings of a [`ClientConfig`].
    pub async fn from_config(config: &ClientConfig) -> Result<Client, ClientError> {
        Client::builder()
            .broker(&config.broker)
            .client_name(&config.client_name)
            .request_timeout(Duration::from_millis(config.request_timeout_ms))
            .connect()
            .await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
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

    async fn request(
        &self,
        build: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<ServerFrame, ClientError> {
        let request_id = self.shared.next_id();
        self.shared
            .request(request_id, &build(request_id), &[])
            .await
    }

    /// Creates a topic.
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<(), ClientError> {
        self.request(|request_id| ClientFrame::CreateTopic {
            request_id,
            name: name.to_string(),
            partitions,
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

    /// The offsets of every partition of a topic.
    pub async fn describe_topic(&self, name: &str) -> Result<Vec<PartitionInfo>, ClientError> {
        match self
            .request(|request_id| ClientFrame::DescribeTopic {
                request_id,
                name: name.to_string(),
            })
            .await?
        {
            ServerFrame::TopicDescription { partitions, .. } => Ok(partitions),
            other => Err(unexpected(other)),
        }
    }

    /// The subscriptions of a topic, one entry per subscription and partition.
    pub async fn list_subscriptions(
        &self,
        topic: &str,
    ) -> Result<Vec<SubscriptionInfo>, ClientError> {
        match self
            .request(|request_id| ClientFrame::ListSubscriptions {
                request_id,
                topic: topic.to_string(),
            })
            .await?
        {
            ServerFrame::Subscriptions { subscriptions, .. } => Ok(subscriptions),
            other => Err(unexpected(other)),
        }
    }

    /// Moves a subscription's cursor on every partition.
    pub async fn reset_subscription(
        &self,
        topic: &str,
        subscription: &str,
        position: StartPosition,
    ) -> Result<(), ClientError> {
        self.request(|request_id| ClientFrame::ResetSubscription {
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
        match self
            .request(|request_id| ClientFrame::SkipBatch {
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
        self.request(|request_id| ClientFrame::DeleteSubscription {
            request_id,
            topic: topic.to_string(),
            subscription: subscription.to_string(),
        })
        .await
        .map(drop)
    }
}

fn unexpected(frame: ServerFrame) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {frame:?}"))
}
