//! The control messages of the native protocol: what a client sends and what a broker sends.

// rkyv's derive generates an `Archived*` twin of every type here, without docs.
#![allow(missing_docs)]

use super::{
    Acks, BrokerInfo, ErrorCode, MessageMeta, Mode, PartitionInfo, StartPosition, SubscriptionInfo,
    SubscriptionType, TopicInfo, TopicLeaders,
};

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
        /// Replicas per partition; 0 for the broker's `default_replication_factor`.
        replication_factor: u16,
    },
    /// Grows a topic to `partitions` partitions (never fewer), placed as a new topic's are.
    CreatePartitions {
        /// Request id.
        request_id: u64,
        /// Name.
        name: String,
        /// The partition count asked for.
        partitions: u32,
    },
    /// Changes a topic's config overrides (Kafka names): `set` adds or replaces, `delete`
    /// removes (back to the broker's setting).
    AlterTopicConfigs {
        /// Request id.
        request_id: u64,
        /// Name.
        name: String,
        /// Configs and their new values.
        set: Vec<(String, String)>,
        /// Configs whose overrides go.
        delete: Vec<String>,
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
    /// The live brokers and who leads each partition of these topics; answered by
    /// `Metadata` (a topic that does not exist is left out).
    Metadata {
        /// Request id.
        request_id: u64,
        /// Topics.
        topics: Vec<String>,
    },
    /// Offsets of the partitions of a topic this broker leads; answered by
    /// `TopicDescription`.
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
    /// Attaches a consumer to a subscription on partitions of a topic this broker leads;
    /// answered by `Subscribed`. Messages follow as permits are granted.
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
        /// Which partitions (all must be led here); `None`: every partition of the topic.
        partitions: Option<Vec<u32>>,
        /// The consumer attaches again after it lost its connection: a session still attached
        /// under its name is its own, stale (the old connection may not have closed yet on
        /// this side), and is replaced at once, whatever the type. Without it, only Exclusive
        /// and Failover replace a session of the same name (Shared and Key_Shared consumers
        /// may share a name).
        reattaching: bool,
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
    /// Acknowledges messages (`cumulative`: every message up to and including the one
    /// offset, exclusive and failover only) and answers `Done` once the subscription's cursor
    /// holding them is durable: written and synced here and held by the partition's in-sync
    /// replicas. Refused with `CommitFailed` when a message is not this consumer's to
    /// acknowledge any more (redelivered to another consumer, or the consumer attached again).
    Commit {
        /// Request id.
        request_id: u64,
        /// Consumer.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// The messages' offsets (one, when cumulative).
        offsets: Vec<u64>,
        /// Up to and including the offset.
        cumulative: bool,
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
    /// Limits how fast a subscription delivers, on every partition this broker leads (per
    /// partition, as Pulsar's dispatch rate); 0 lifts a limit. Kept with the subscription's
    /// cursor (reliable), durable when `Done` is answered.
    SetDispatchRate {
        /// Request id.
        request_id: u64,
        /// Topic.
        topic: String,
        /// Subscription.
        subscription: String,
        /// Messages per second (0: no limit).
        messages_per_second: u64,
        /// Bytes per second (0: no limit).
        bytes_per_second: u64,
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
    /// One step of SASL authentication, on a listener that requires it: the first names the
    /// mechanism (`SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`) and carries the client's first
    /// message; the next ones carry the following messages (their mechanism is ignored).
    /// Answered by `AuthenticationStep`, or an `AuthenticationFailed` error that closes the
    /// connection. Until it is done, every other frame but `Ping` is refused.
    Authenticate {
        /// Request id.
        request_id: u64,
        /// The mechanism.
        mechanism: String,
        /// The SASL message.
        token: Vec<u8>,
    },
    /// Asks for a producer id, so that the batches the client sends again after a lost
    /// answer are appended once (Kafka's idempotent producer: the batches carry the id, its
    /// epoch and per-partition sequences). Answered by `ProducerId`; needs Write on some topic.
    InitProducer {
        /// Request id.
        request_id: u64,
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
        /// This broker's node id.
        broker_id: i32,
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
    /// Answer to `Metadata`.
    Metadata {
        /// Request id.
        request_id: u64,
        /// The brokers not fenced.
        brokers: Vec<BrokerInfo>,
        /// The topics asked for that exist.
        topics: Vec<TopicLeaders>,
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
    /// The broker's answer to one `Authenticate`: its SASL message, and whether the client is
    /// now authenticated (after SCRAM's server-final message, which the client should verify).
    AuthenticationStep {
        /// Request id.
        request_id: u64,
        /// The SASL message.
        token: Vec<u8>,
        /// The client is authenticated.
        done: bool,
    },
    /// Answer to `InitProducer`: a producer id unique in the cluster, and its epoch.
    ProducerId {
        /// Request id.
        request_id: u64,
        /// The id.
        producer_id: i64,
        /// Its epoch.
        epoch: i16,
    },
}
