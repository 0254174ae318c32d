//! The native protocol: frames and control messages shared by the broker and the Rust client.
//!
//! A frame is `[u32 length][u32 control length][control][payload]` (big-endian lengths; the
//! first length counts everything after itself). The control part is an rkyv-archived
//! [`ClientFrame`] or [`ServerFrame`], checked with bytecheck before use; the payload carries
//! record data without re-encoding it: a record batch in the shared batch format for
//! `Produce`, and the keys and values of the messages for `Messages`. The byte layout and the
//! conversation are specified in `core/docs/native-protocol.md`.
//!
//! Decoding is sans-IO: [`decode_frame`] takes whatever bytes have arrived and returns a frame
//! once a whole one is there, so the same code serves the glommio broker and the tokio client.

// rkyv's derive generates an `Archived*` twin of every type here, without docs.
#![allow(missing_docs)]

mod codec;
mod frames;
#[cfg(test)]
mod tests;

pub use codec::{decode_frame, encode_frame, validate_name, Frame, FrameError};
pub use frames::{ArchivedClientFrame, ArchivedServerFrame, ClientFrame, ServerFrame};

/// The protocol version this build speaks. The first frame of a connection names the client's.
pub const PROTOCOL_VERSION: u16 = 6;

/// How a `ConsumerClosed` reason begins when the consumer's partition got a new leader (or
/// has none for now): the client should attach again through fresh metadata. Any other
/// reason (subscription or topic deleted, a session replaced, Read revoked) is final.
pub const LEADER_MOVED: &str = "leader moved: ";

/// Bytes of the two length fields in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Longest name a client may give (client, consumer, subscription).
pub const NAME_BYTES_MAX: usize = 249;

/// Delivery guarantee of a subscription.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
)]
#[rkyv(derive(Debug))]
pub enum Mode {
    /// At-least-once: messages are acknowledged, redelivered when not, the cursor is durable.
    Reliable,
    /// At-most-once from the tail: no acknowledgements, a slow consumer's messages are dropped.
    NonReliable,
}

/// How a subscription spreads messages over its consumers.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
)]
#[rkyv(derive(Debug))]
pub enum SubscriptionType {
    /// One consumer; a second is refused.
    Exclusive,
    /// Round-robin over the consumers that have permits.
    Shared,
    /// One active consumer per partition, the others stand by (ordered by priority, then name).
    Failover,
    /// The same key always goes to the same consumer while membership is stable.
    KeyShared,
}

/// Where a new subscription starts reading (an existing one keeps its cursor).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum StartPosition {
    /// The first offset still in the log.
    Earliest,
    /// The log end: only messages produced from now on.
    Latest,
    /// This offset (clamped to the log).
    Offset(u64),
    /// The first message with a timestamp at or after this many milliseconds since the epoch.
    Timestamp(i64),
}

/// How many copies must hold a produced batch before it is acknowledged.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Acks {
    /// No answer at all (fire and forget).
    None,
    /// The leader's log holds it (under the topic's flush policy).
    Leader,
    /// Every in-sync replica holds it (on one node: the leader, after fdatasync).
    All,
}

/// Why a request failed.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ErrorCode {
    /// The first frame named a protocol version this broker does not speak.
    UnsupportedVersion,
    /// The frame could not be decoded or broke the conversation's rules.
    BadRequest,
    /// A frame or a value is larger than the broker allows.
    TooLarge,
    /// The topic or partition does not exist.
    UnknownTopic,
    /// The topic exists already.
    TopicExists,
    /// The subscription does not exist.
    UnknownSubscription,
    /// The consumer id is not attached on this connection.
    UnknownConsumer,
    /// An exclusive subscription has a consumer already, or the subscription exists with
    /// another type or mode.
    ConsumerBusy,
    /// The name breaks the naming rules.
    InvalidName,
    /// The storage failed.
    Storage,
    /// The broker is at a limit (connections, consumers).
    LimitReached,
    /// A stored batch cannot be split into messages (its records do not decode, or decompress
    /// past `batch_decompressed_bytes_max`).
    Undecodable,
    /// Another broker leads the partition (or none does now): ask `Metadata` and go there.
    NotLeader,
    /// A topic cannot have that many replicas (more than the live brokers).
    InvalidReplicationFactor,
    /// The request was valid but did not complete in time (the cluster could not commit it).
    TimedOut,
    /// A topic config is unknown or its value out of bounds.
    InvalidConfig,
    /// A partition count a topic cannot have (fewer than it has, or past the broker's limit).
    InvalidPartitions,
    /// The ACLs do not allow it.
    NotAuthorized,
    /// Authentication failed, or a frame came before it was done on a listener that requires
    /// it; the connection is closed.
    AuthenticationFailed,
    /// An idempotent producer's batch does not follow its previous one on the partition (one
    /// sent before it has not arrived yet): send it again after the earlier ones.
    OutOfOrderSequence,
    /// An idempotent producer's epoch is older than the partition has seen: another instance
    /// took its id over.
    ProducerFenced,
    /// A commit named a message that is not the consumer's to acknowledge (any more): it was
    /// redelivered elsewhere, or the subscription is not reliable. It will come again.
    CommitFailed,
}

/// A message as delivered: where it is in the log, and where its bytes are in the payload.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MessageMeta {
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the epoch, as produced.
    pub timestamp: i64,
    /// How many times it was delivered before this one.
    pub redeliveries: u32,
    /// Key length in the payload; -1: no key.
    pub key_len: i32,
    /// Value length in the payload (follows the key).
    pub value_len: u32,
    /// Length of the headers in the payload (follow the value), encoded as a Kafka record's
    /// header section: a varint count, then each key and value with varint lengths (a value
    /// of length -1 is null). 0: no headers.
    pub headers_len: u32,
}

/// A topic and its partition count.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
}

/// A broker of the cluster and where its native listener is.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// Its advertised native-protocol address (`host:port`).
    pub native_addr: String,
}

/// Who leads each partition of a topic.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicLeaders {
    /// Name.
    pub name: String,
    /// Per partition, in partition order: the leader's node id, -1 while it has none.
    pub leaders: Vec<i32>,
}

/// Offsets of one partition.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset in the log.
    pub log_start: u64,
    /// Offset after the last message.
    pub log_end: u64,
}

/// One subscription on one partition.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct SubscriptionInfo {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Subscription name.
    pub name: String,
    /// Type.
    pub kind: SubscriptionType,
    /// Mode.
    pub mode: Mode,
    /// Every offset below this one is acknowledged (reliable) or passed (non-reliable).
    pub cursor: u64,
    /// Reliable: every offset below this one is acknowledged and the cursor saying so is
    /// stored durably (what a restart resumes from).
    pub persisted: u64,
    /// Log end − cursor.
    pub lag: u64,
    /// Delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers attached now.
    pub consumers: u32,
    /// Non-reliable: messages dropped because no consumer could take them.
    pub dropped: u64,
    /// Reliable: the undecodable batch (first and last offset) delivery is stopped at.
    pub blocked: Option<(u64, u64)>,
    /// Reliable: batches an operator skipped (first and last offset), the newest last.
    pub skipped: Vec<(u64, u64)>,
    /// Reliable: messages delivered again (nacked, or not acknowledged in time) since the
    /// partition was opened here.
    pub redelivered: u64,
    /// Reliable: messages sent to the dead-letter topic since the partition was opened here.
    pub dead_lettered: u64,
    /// Dispatch rate limit in messages per second (0: none).
    pub rate_messages_per_second: u64,
    /// Dispatch rate limit in bytes per second (0: none).
    pub rate_bytes_per_second: u64,
}
