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

use bytes::{Buf, Bytes, BytesMut};
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

/// The protocol version this build speaks. The first frame of a connection names the client's.
pub const PROTOCOL_VERSION: u16 = 2;

/// Bytes of the two length fields in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Longest name a client may give (client, consumer, subscription).
pub const NAME_BYTES_MAX: usize = 249;

/// Delivery guarantee of a subscription.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Mode {
    /// At-least-once: messages are acknowledged, redelivered when not, the cursor is durable.
    Reliable,
    /// At-most-once from the tail: no acknowledgements, a slow consumer's messages are dropped.
    NonReliable,
}

/// How a subscription spreads messages over its consumers.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
}

/// Offsets of one partition.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
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
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
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
}

/// Frames a client sends. `request_id` is chosen by the client and echoed in the answer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub enum ClientFrame {
    /// Must be the first frame; answered by `Connected` or an `UnsupportedVersion` error.
    Connect {
        /// Protocol version the client speaks.
        version: u16,
        /// For the broker's logs.
        client_name: String,
    },
    /// Keeps an idle connection alive; answered by `Pong`.
    Ping,
    /// Creates a topic.
    CreateTopic {
        /// Request id.
        request_id: u64,
        /// Name.
        name: String,
        /// Partition count.
        partitions: u32,
    },
    /// Deletes a topic, its data and its subscriptions.
    DeleteTopic {
        /// Request id.
        request_id: u64,
        /// Name.
        name: String,
    },
    /// Lists topics; answered by `Topics`.
    ListTopics {
        /// Request id.
        request_id: u64,
    },
    /// Offsets of every partition of a topic; answered by `TopicDescription`.
    DescribeTopic {
        /// Request id.
        request_id: u64,
        /// Name.
        name: String,
    },
    /// Appends the record batch in the payload; answered by `Produced` unless acks is `None`.
    Produce {
        /// Request id.
        request_id: u64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// When to answer.
        acks: Acks,
    },
    /// Attaches a consumer to a subscription on every partition of a topic; answered by
    /// `Subscribed`. Messages follow as permits are granted.
    Subscribe {
        /// Request id.
        request_id: u64,
        /// The client's id for this consumer, unique on the connection.
        consumer_id: u64,
        /// Topic.
        topic: String,
        /// Subscription name.
        subscription: String,
        /// Type.
        kind: SubscriptionType,
        /// Mode.
        mode: Mode,
        /// Consumer name: a consumer reconnecting under the same name takes its place again.
        consumer_name: String,
        /// Failover order: lower goes first.
        priority: i32,
        /// Where a subscription that does not exist yet starts.
        start: StartPosition,
    },
    /// Grants permits: the broker may push this many more messages on one partition, or on
    /// each partition when `partition` is `None`.
    Flow {
        /// Consumer.
        consumer_id: u64,
        /// Which partition; `None`: every partition.
        partition: Option<u32>,
        /// Additional permits.
        permits: u32,
    },
    /// Acknowledges messages individually.
    Ack {
        /// Consumer.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// Offsets.
        offsets: Vec<u64>,
    },
    /// Acknowledges every message up to and including an offset (exclusive and failover).
    AckCumulative {
        /// Consumer.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// Last offset acknowledged.
        offset: u64,
    },
    /// Asks for messages to be delivered again after a delay.
    Nack {
        /// Consumer.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// Offsets.
        offsets: Vec<u64>,
        /// Delay before redelivery.
        delay_ms: u64,
    },
    /// Moves the subscription's cursor on every partition; unacknowledged state is dropped.
    Seek {
        /// Request id.
        request_id: u64,
        /// Consumer.
        consumer_id: u64,
        /// New position.
        position: StartPosition,
    },
    /// Detaches the consumer and deletes the subscription.
    Unsubscribe {
        /// Request id.
        request_id: u64,
        /// Consumer.
        consumer_id: u64,
    },
    /// Detaches the consumer; a reliable subscription keeps its cursor.
    CloseConsumer {
        /// Request id.
        request_id: u64,
        /// Consumer.
        consumer_id: u64,
    },
    /// Lists the subscriptions of a topic; answered by `Subscriptions`.
    ListSubscriptions {
        /// Request id.
        request_id: u64,
        /// Topic.
        topic: String,
    },
    /// Moves a subscription's cursor on every partition (admin: no consumer needed).
    ResetSubscription {
        /// Request id.
        request_id: u64,
        /// Topic.
        topic: String,
        /// Subscription.
        subscription: String,
        /// New position.
        position: StartPosition,
    },
    /// Deletes a subscription on every partition, detaching its consumers.
    DeleteSubscription {
        /// Request id.
        request_id: u64,
        /// Topic.
        topic: String,
        /// Subscription.
        subscription: String,
    },
    /// An operator's decision to pass over the undecodable batch holding `offset`: the
    /// subscriptions stopped at it acknowledge it and go on (the skip is kept in their
    /// cursors). Answered by `Skipped`, or an error when no subscription is stopped there.
    SkipBatch {
        /// Request id.
        request_id: u64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// An offset inside the batch.
        offset: u64,
        /// Only this subscription; `None`: every subscription stopped at that batch.
        subscription: Option<String>,
    },
}

/// Frames the broker sends.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub enum ServerFrame {
    /// The connection is accepted.
    Connected {
        /// Version both sides speak from now on.
        version: u16,
        /// Silence longer than this closes the connection.
        session_timeout_ms: u64,
        /// Largest frame the broker accepts.
        frame_bytes_max: u32,
    },
    /// Answer to `Ping`.
    Pong,
    /// A request failed (`request_id` 0: the connection failed and is being closed).
    Error {
        /// Request id.
        request_id: u64,
        /// What kind of failure.
        code: ErrorCode,
        /// For people.
        message: String,
    },
    /// A request without a result succeeded.
    Done {
        /// Request id.
        request_id: u64,
    },
    /// A batch was appended.
    Produced {
        /// Request id.
        request_id: u64,
        /// Offset of its first record.
        base_offset: u64,
    },
    /// Answer to `ListTopics`.
    Topics {
        /// Request id.
        request_id: u64,
        /// Topics.
        topics: Vec<TopicInfo>,
    },
    /// Answer to `DescribeTopic`.
    TopicDescription {
        /// Request id.
        request_id: u64,
        /// Partitions.
        partitions: Vec<PartitionInfo>,
    },
    /// The consumer is attached on every partition.
    Subscribed {
        /// Request id.
        request_id: u64,
        /// Partition count of the topic.
        partitions: u32,
    },
    /// Messages for a consumer; keys and values follow in the payload, in order.
    Messages {
        /// Consumer.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// The messages.
        messages: Vec<MessageMeta>,
    },
    /// The broker detached a consumer (its topic or subscription was deleted).
    ConsumerClosed {
        /// Consumer.
        consumer_id: u64,
        /// Why.
        reason: String,
    },
    /// Answer to `ListSubscriptions`.
    Subscriptions {
        /// Request id.
        request_id: u64,
        /// One entry per subscription and partition.
        subscriptions: Vec<SubscriptionInfo>,
    },
    /// Delivery on a partition stopped in front of a batch that cannot be decoded: nothing at
    /// or after it reaches this consumer until an operator skips it (`SkipBatch`). Sent when
    /// it happens and to every consumer that attaches while it lasts; other partitions go on.
    DeliveryBlocked {
        /// Consumer.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// First offset of the batch.
        base_offset: u64,
        /// Last offset of the batch.
        last_offset: u64,
        /// What failed.
        reason: String,
    },
    /// Answer to `SkipBatch`: the batch skipped and the subscriptions that went past it.
    Skipped {
        /// Request id.
        request_id: u64,
        /// First offset of the batch.
        base_offset: u64,
        /// Last offset of the batch.
        last_offset: u64,
        /// Subscriptions that acknowledged it.
        subscriptions: Vec<String>,
    },
}

/// Why bytes could not be read as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field exceeds the limit.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Limit.
        max: u32,
    },
    /// The control length does not fit in the frame.
    #[error("control part of {control} bytes does not fit in a frame of {frame}")]
    BadControlLength {
        /// Announced control length.
        control: u32,
        /// Frame length.
        frame: u32,
    },
    /// The control part failed validation.
    #[error("malformed control message: {0}")]
    Malformed(String),
}

/// A decoded frame: the control message and the payload that came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<T> {
    /// The control message.
    pub control: T,
    /// Record data (may be empty).
    pub payload: Bytes,
}

/// Takes one whole frame off the front of `buffer`, or returns `None` when more bytes are
/// needed. A length over `frame_bytes_max` is refused before anything is buffered for it.
pub fn decode_frame<T>(
    buffer: &mut BytesMut,
    frame_bytes_max: u32,
) -> Result<Option<Frame<T>>, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<RkyvError>>,
{
    if buffer.len() < 4 {
        return Ok(None);
    }
    let frame_len = u32::from_be_bytes(buffer[..4].try_into().expect("4 bytes"));
    if frame_len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            size: frame_len as u64,
            max: frame_bytes_max,
        });
    }
    if frame_len < 4 {
        return Err(FrameError::BadControlLength {
            control: 0,
            frame: frame_len,
        });
    }
    if buffer.len() < 4 + frame_len as usize {
        buffer.reserve(4 + frame_len as usize - buffer.len());
        return Ok(None);
    }
    let control_len = u32::from_be_bytes(buffer[4..8].try_into().expect("4 bytes"));
    if control_len > frame_len - 4 {
        return Err(FrameError::BadControlLength {
            control: control_len,
            frame: frame_len,
        });
    }
    buffer.advance(FRAME_HEADER_BYTES);
    let control_bytes = buffer.split_to(control_len as usize);
    let payload = buffer
        .split_to((frame_len - 4 - control_len) as usize)
        .freeze();
    // rkyv needs its root aligned; a copy of a small control part is cheaper than a check.
    let mut aligned = AlignedVec::<16>::with_capacity(control_bytes.len());
    aligned.extend_from_slice(&control_bytes);
    let control = rkyv::from_bytes::<T, RkyvError>(&aligned)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(Some(Frame { control, payload }))
}

/// Encodes a frame's header and control part; the caller sends `payload_len` payload bytes
/// right after it.
pub fn encode_frame<T>(control: &T, payload_len: usize) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            RkyvError,
        >,
    >,
{
    let archived = rkyv::to_bytes::<RkyvError>(control).expect("serialising to memory cannot fail");
    let frame_len = 4 + archived.len() + payload_len;
    let mut out = Vec::with_capacity(4 + frame_len - payload_len);
    out.extend_from_slice(&(frame_len as u32).to_be_bytes());
    out.extend_from_slice(&(archived.len() as u32).to_be_bytes());
    out.extend_from_slice(&archived);
    out
}

/// Checks a client-chosen name (consumer, subscription): 1 to [`NAME_BYTES_MAX`] bytes of ASCII
/// letters, digits, `.`, `_` and `-` (subscription names become file names).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!("{what} name must be 1 to {NAME_BYTES_MAX} bytes"));
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err(format!("{what} name must not start with '.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{what} name may contain only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(frame: &ClientFrame, payload: &[u8]) -> Frame<ClientFrame> {
        let mut bytes = BytesMut::from(&encode_frame(frame, payload.len())[..]);
        bytes.extend_from_slice(payload);
        let whole = bytes.clone();
        // Every strict prefix asks for more bytes.
        for cut in 0..whole.len() {
            let mut prefix = BytesMut::from(&whole[..cut]);
            assert_eq!(decode_frame::<ClientFrame>(&mut prefix, 1 << 20), Ok(None));
        }
        let decoded = decode_frame::<ClientFrame>(&mut bytes, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(bytes.is_empty());
        decoded
    }

    #[test]
    fn frames_round_trip_with_their_payload() {
        let produce = ClientFrame::Produce {
            request_id: 7,
            topic: "orders".into(),
            partition: 3,
            acks: Acks::All,
        };
        let decoded = round_trip(&produce, b"batch bytes");
        assert_eq!(decoded.control, produce);
        assert_eq!(&decoded.payload[..], b"batch bytes");
        let ack = ClientFrame::Ack {
            consumer_id: 1,
            partition: 0,
            offsets: vec![1, 5, 9],
        };
        assert_eq!(round_trip(&ack, b"").control, ack);
    }

    #[test]
    fn oversized_and_inconsistent_lengths_are_refused() {
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode_frame::<ClientFrame>(&mut huge, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let mut bad = BytesMut::new();
        bad.extend_from_slice(&8u32.to_be_bytes());
        bad.extend_from_slice(&100u32.to_be_bytes());
        bad.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_frame::<ClientFrame>(&mut bad, 1 << 20),
            Err(FrameError::BadControlLength { .. })
        ));
    }

    #[test]
    fn names_follow_the_file_name_rules() {
        assert!(validate_name("subscription", "billing-v2.eu_1").is_ok());
        for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(250)] {
            assert!(validate_name("subscription", bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            // Decoding garbage either waits for more, fails cleanly, or yields a valid frame.
            while let Ok(Some(_)) = decode_frame::<ClientFrame>(&mut buffer, 4096) {}
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_frame::<ServerFrame>(&mut buffer, 4096) {}
        }

        #[test]
        fn corrupted_frames_never_panic(flip in 0usize..200, value in any::<u8>()) {
            let frame = ClientFrame::Subscribe {
                request_id: 1,
                consumer_id: 2,
                topic: "t".into(),
                subscription: "s".into(),
                kind: SubscriptionType::KeyShared,
                mode: Mode::Reliable,
                consumer_name: "c".into(),
                priority: 0,
                start: StartPosition::Offset(42),
            };
            let mut bytes = encode_frame(&frame, 0);
            let at = flip % bytes.len();
            bytes[at] = value;
            let mut buffer = BytesMut::from(&bytes[..]);
            let _ = decode_frame::<ClientFrame>(&mut buffer, 4096);
        }
    }
}
