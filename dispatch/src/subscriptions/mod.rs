//! The subscriptions of one partition, hosted by its owner shard: what consumers ask of them,
//! and where their messages go.
//!
//! Every subscription on a partition is a [`crate::Subscription`] core plus a driver task on the
//! partition's owner shard (`driver.rs`). The driver reads the log when the core asks, hands
//! deliveries to the consumers' connections (any shard) through their [`ConsumerSink`], produces
//! dead letters through a [`DeadLetters`] handle, stores the cursor debounced, and sleeps
//! until a command, an append or a deadline wakes it. Commands arrive from connections as
//! [`Command`]s over the shard mesh; [`SubscriptionHost`] (`host.rs`) carries them out.
//!
//! Reliable subscriptions are durable: each partition's cursors are entries of a compacted
//! state log kept next to it, `<data>/<topic>/.subscriptions/<partition>/` (`cursor_log.rs`),
//! written when a subscription is created, at most every `cursor_persist_interval_ms` while it
//! moves, and on shutdown. On a replicated partition the leader's cursors are copied to its
//! followers (`replicated.rs`), so the subscriptions resume on the next leader. Non-reliable
//! subscriptions live only while consumers are attached.

mod confirmed;
mod cursor_log;
mod cursor_replicas;
mod driver;
mod host;
mod replicated;
mod stale_session;

pub use driver::payload_bytes;
pub use host::SubscriptionHost;

use crate::message::StoredMessage;
use crate::subscription::ConsumerId;
use oxbow_core::native::{ErrorCode, Mode, StartPosition, SubscriptionInfo, SubscriptionType};
use oxbow_core::RecordBatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A skipped batch's first and last offset, and the subscriptions that went past it.
pub type Skipped = (u64, u64, Vec<String>);

/// A failure to report to the client.
pub type Refusal = (ErrorCode, String);

/// What a subscription tells one of its consumers.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// Messages from one partition, each with its earlier deliveries.
    Messages {
        /// Partition.
        partition: u32,
        /// The messages and their redelivery counts.
        messages: Vec<(StoredMessage, u32)>,
    },
    /// Delivery on a partition stopped in front of a batch that cannot be decoded.
    Blocked {
        /// Partition.
        partition: u32,
        /// First offset of the batch.
        base_offset: u64,
        /// Last offset of the batch.
        last_offset: u64,
        /// What failed.
        reason: String,
    },
    /// The broker detached the consumer (its subscription or topic was deleted).
    Closed {
        /// Why.
        reason: String,
    },
}

/// Where a consumer's events go: its connection, on whichever shard that is. Implemented by the
/// protocol layer; crosses shards, hence `Send`.
pub trait ConsumerSink: Send {
    /// Takes `bytes` of queued messages from the connection's budget. `false`: the client is not
    /// reading; nothing was taken and the consumer must be cut off.
    fn reserve(&self, bytes: u64) -> bool;
    /// Queues an event for the consumer (a closed connection drops it; it detaches itself).
    fn send(&self, event: ConsumerEvent);
}

/// Where a subscription's dead letters go: the narrow handle its driver gets, instead of the
/// whole shard.
pub trait DeadLetters {
    /// Appends `batch` to partition 0 of `topic`, creating the topic if needed.
    fn produce(
        &self,
        topic: String,
        batch: RecordBatch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>>;
}

/// Limits a driver works within.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// Subscription limits.
    pub subscriptions: oxbow_core::SubscriptionConfig,
    /// Most bytes one compressed batch may decompress to.
    pub batch_decompressed_bytes_max: u64,
    /// How cursor logs are cut and compacted.
    pub state_logs: oxbow_core::StateLogConfig,
}

/// Which subscription on which partition.
#[derive(Debug, Clone)]
pub struct Target {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Subscription name.
    pub subscription: String,
}

/// A consumer's request to the partition's owner.
pub enum Command {
    /// Attach a consumer, creating the subscription if needed.
    Attach {
        /// Where.
        target: Target,
        /// Type asked for.
        kind: SubscriptionType,
        /// Mode asked for.
        mode: Mode,
        /// The broker-wide id of this attachment.
        consumer: ConsumerId,
        /// Consumer name.
        name: String,
        /// It attaches again after losing its connection: a session of its name is replaced.
        reattaching: bool,
        /// Failover priority.
        priority: i32,
        /// Start of a new subscription.
        start: StartPosition,
        /// Where its messages go.
        sink: Box<dyn ConsumerSink>,
        /// Answer.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// Detach a consumer.
    Detach {
        /// Where.
        target: Target,
        /// Which.
        consumer: ConsumerId,
    },
    /// Grant permits.
    Flow {
        /// Where.
        target: Target,
        /// Which.
        consumer: ConsumerId,
        /// How many.
        permits: u32,
    },
    /// Individual acks.
    Ack {
        /// Where.
        target: Target,
        /// Offsets.
        offsets: Vec<u64>,
    },
    /// Acks (individual, or cumulative up to the one offset) answered once the cursor holding
    /// them is durable on this node and held by the in-sync replicas.
    Commit {
        /// Where.
        target: Target,
        /// Offsets (one, when cumulative).
        offsets: Vec<u64>,
        /// Up to and including the offset.
        cumulative: bool,
        /// The outcome.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// A new dispatch rate limit, answered once kept durably (reliable).
    SetDispatchRate {
        /// Where.
        target: Target,
        /// The limit.
        rate: crate::DispatchRate,
        /// The outcome.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// Cumulative ack.
    AckCumulative {
        /// Where.
        target: Target,
        /// Last offset acknowledged.
        offset: u64,
    },
    /// Negative acks.
    Nack {
        /// Where.
        target: Target,
        /// Offsets.
        offsets: Vec<u64>,
        /// Redelivery delay.
        delay: Duration,
    },
    /// Move the cursor.
    Seek {
        /// Where.
        target: Target,
        /// New position.
        position: StartPosition,
        /// Answer.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// Delete the subscription (detaching its consumers).
    Delete {
        /// Where.
        target: Target,
        /// Consumer doing it (not told it was closed), if any.
        by: Option<ConsumerId>,
        /// Answer.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// An operator's skip of the undecodable batch holding `offset`.
    Skip {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// An offset in the batch.
        offset: u64,
        /// Only this subscription; `None`: every one stopped at the batch.
        subscription: Option<String>,
        /// Answer: the batch's first and last offset and the subscriptions that passed it.
        reply: flume::Sender<Result<Skipped, Refusal>>,
    },
    /// The subscriptions of a partition.
    List {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Answer.
        reply: flume::Sender<Vec<SubscriptionInfo>>,
    },
}

impl Command {
    /// The partition the command is for: where it must be routed.
    pub fn partition(&self) -> (Arc<str>, u32) {
        match self {
            Command::Attach { target, .. }
            | Command::Detach { target, .. }
            | Command::Flow { target, .. }
            | Command::Ack { target, .. }
            | Command::Commit { target, .. }
            | Command::SetDispatchRate { target, .. }
            | Command::AckCumulative { target, .. }
            | Command::Nack { target, .. }
            | Command::Seek { target, .. }
            | Command::Delete { target, .. } => (target.topic.clone(), target.partition),
            Command::Skip {
                topic, partition, ..
            }
            | Command::List {
                topic, partition, ..
            } => (topic.clone(), *partition),
        }
    }
}
