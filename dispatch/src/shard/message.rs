//! What shards send each other, and the outcomes they answer with. Nothing here knows a client
//! protocol: the Kafka and native layers map these to their own codes.

use super::Shard;
use oxbow_core::RecordBatch;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Why a partition request failed, in terms a protocol can map to its error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The topic or partition does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas` (Kafka's
    /// NOT_ENOUGH_REPLICAS).
    #[error("not enough in-sync replicas for acks=all")]
    NotEnoughReplicas,
    /// The partition exists but this broker does not lead it (clients refresh their
    /// metadata and go to the leader).
    #[error("this broker does not lead the partition (its leader is broker {leader})")]
    NotLeader {
        /// The partition's leader, as the metadata says (-1: none).
        leader: i32,
    },
    /// The offset is outside the log.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// The batch is larger than the topic allows.
    #[error("batch too large")]
    BatchTooLarge,
    /// An idempotent producer skipped or repeated sequences out of order.
    #[error("out-of-order sequence")]
    OutOfOrderSequence,
    /// An idempotent producer's epoch is stale.
    #[error("producer fenced by a newer epoch")]
    ProducerFenced,
    /// Stored bytes failed their checksum.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The disk failed; the message says how.
    #[error("storage error: {0}")]
    Storage(String),
    /// Clients may not write or delete an internal topic.
    #[error("the topic is internal to the broker")]
    InternalTopic,
    /// The principal may not do this to the topic (the authorizer said no).
    #[error("not authorized for the topic")]
    TopicAuthorizationFailed,
    /// acks=all: the in-sync replicas did not all hold the records within the request's
    /// timeout (they stay appended; Kafka's REQUEST_TIMED_OUT).
    #[error("the in-sync replicas did not confirm the records in time")]
    TimedOut,
}

/// Result of a produce to one partition: base offset of the first batch and the log start.
pub type ProduceOutcome = Result<(u64, u64), PartitionError>;

/// Result of a fetch from one partition.
#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    /// Offset after the last readable record.
    pub high_watermark: u64,
    /// Offset below which no transaction is open (Kafka's last stable offset).
    pub last_stable_offset: u64,
    /// For a `read_committed` fetch: the aborted transactions with records among `batches`.
    pub aborted: Vec<oxbow_storage::AbortedTxn>,
    /// First readable offset.
    pub log_start_offset: u64,
    /// Whole stored batches starting with the one holding the fetch offset.
    pub batches: Vec<RecordBatch>,
    /// Set when the fetch failed.
    pub error: Option<PartitionError>,
}

/// One partition of a fetch.
#[derive(Debug, Clone)]
pub struct FetchPart {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Byte budget (at least one batch is returned anyway).
    pub max_bytes: usize,
    /// Kafka's `read_committed` isolation: read only below the last stable offset.
    pub read_committed: bool,
}

/// Why a topic could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateTopicError {
    /// The topic exists already.
    #[error("topic already exists")]
    Exists,
    /// The name breaks the naming rules.
    #[error("{0}")]
    InvalidName(String),
    /// Zero or more than `topic_partitions_max` partitions.
    #[error("invalid partition count {0} (1..={1}, topic_partitions_max)")]
    InvalidPartitions(i64, u32),
    /// A config override is unknown or out of bounds.
    #[error("{0}")]
    InvalidConfig(String),
    /// The metadata group did not answer in time (no leader, no quorum); the topic may still
    /// be created.
    #[error("{0}")]
    TimedOut(String),
    /// The replicas cannot be placed (too few brokers).
    #[error("{0}")]
    InvalidReplication(String),
    /// Opening a partition failed.
    #[error("creating partition failed: {0}")]
    Storage(String),
}

/// How many copies must hold a produced batch before it is acknowledged. `Leader`: the local
/// append under the topic's flush policy; `All`: that, and every in-sync replica holding it
/// under the same policy (the same thing when the partition has one replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No answer is sent (the append still completes).
    None,
    /// The leader's log holds it.
    Leader,
    /// Every in-sync replica holds it.
    All,
}

/// Work to run on another shard, with that shard in hand: how a protocol layer reaches the
/// services it hosts there (the Kafka group coordinator, its metrics) without the shard layer
/// knowing their types.
pub type RemoteWork = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A request to a shard. Everything in it is `Send`: it crosses threads.
pub enum ShardMessage {
    /// Append batches to a partition this shard owns.
    Produce {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Validated batches, appended in order.
        batches: Vec<RecordBatch>,
        /// When the append counts as done.
        acks: Acks,
        /// How long acks=all waits for the in-sync replicas before answering TimedOut (the
        /// records stay appended, as in Kafka); `None`: until they hold it or leadership moves.
        timeout: Option<Duration>,
        /// Where to answer.
        reply: flume::Sender<ProduceOutcome>,
    },
    /// Read from a partition this shard owns, once: right away when there is data at `offset`,
    /// otherwise when data arrives, `max_wait` passes, or the fetch stops waiting.
    Fetch {
        /// What to read.
        part: FetchPart,
        /// Longest wait for data when there is none at `offset`.
        max_wait: Duration,
        /// Ends the wait when its sender is dropped (another partition answered enough).
        stop_waiting: flume::Receiver<()>,
        /// Where to answer, with the part's index in its fetch.
        reply: flume::Sender<(usize, FetchOutcome)>,
        /// The part's index.
        slot: usize,
    },
    /// Offsets of a partition: log start, log end, or the first offset at a timestamp.
    ListOffset {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// -2 earliest, -1 latest, otherwise milliseconds.
        timestamp: i64,
        /// Latest means the last stable offset (Kafka's `read_committed` isolation).
        read_committed: bool,
        /// Where to answer: (offset, timestamp of that batch or -1).
        reply: flume::Sender<Result<(i64, i64), PartitionError>>,
    },
    /// Create a topic (sent to shard 0, which serialises creations).
    CreateTopic {
        /// Name.
        name: String,
        /// Partition count.
        partitions: i64,
        /// Per-topic config overrides (Kafka names).
        configs: Vec<(String, String)>,
        /// The broker creates one of its internal topics (clients may not).
        internal: bool,
        /// Replicas per partition.
        replication_factor: usize,
        /// Where to answer.
        reply: flume::Sender<Result<(), CreateTopicError>>,
    },
    /// Open (creating) a partition this shard owns.
    OpenPartition {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// The topic's log settings.
        config: oxbow_core::LogConfig,
        /// Where to answer.
        reply: flume::Sender<Result<(), String>>,
    },
    /// Delete a topic (sent to shard 0, which serialises creations and deletions).
    DeleteTopic {
        /// Name.
        name: String,
        /// Where to answer.
        reply: flume::Sender<Result<(), PartitionError>>,
    },
    /// Close a partition this shard owns and delete its files.
    DropPartition {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Where to answer.
        reply: flume::Sender<Result<(), String>>,
    },
    /// The metadata changed (shard 0 committed it); this shard serves the new version.
    MetadataChanged {
        /// The new metadata.
        metadata: Arc<oxbow_cluster::Metadata>,
        /// Acknowledgement.
        reply: flume::Sender<()>,
    },
    /// This shard's copy of the topic table: name → partition count.
    DescribeTopics {
        /// Where to answer.
        reply: flume::Sender<BTreeMap<String, u32>>,
    },
    /// A subscription command for a partition this shard owns.
    Subscription(Box<crate::subscriptions::Command>),
    /// Run this on the shard (see [`RemoteWork`]).
    Run(RemoteWork),
    /// A replication frame from another node for a partition this shard owns.
    Replica {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// The frame.
        frame: oxbow_cluster::replication::ReplicaFrame,
    },
}
