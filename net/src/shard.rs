//! The shard runtime shared by the protocol servers.
//!
//! Every partition is owned by one shard ([`oxbow_core::placement::owner_shard`]). A connection
//! on any shard reaches a partition by sending a [`ShardMessage`] to the owner's inbox over the
//! mesh of flume channels built at start, and awaiting the reply; batches travel as `Bytes`, so
//! nothing is copied between shards. Each shard keeps its own copy of the topic table; shard 0
//! creates topics and broadcasts them, so reads of the table take no lock.

use oxbow_core::placement::owner_shard;
use oxbow_core::{BrokerConfig, RecordBatch};
use oxbow_storage::layout::{partition_dir, validate_topic_name};
use oxbow_storage::{AppendError, OpenOptions, Partition, ReadError};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
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
}

/// Result of a produce to one partition: base offset of the first batch and the log start.
pub type ProduceOutcome = Result<(u64, u64), PartitionError>;

/// Result of a fetch from one partition.
#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    /// Offset after the last readable record.
    pub high_watermark: u64,
    /// First readable offset.
    pub log_start_offset: u64,
    /// Whole stored batches starting with the one holding the fetch offset.
    pub batches: Vec<RecordBatch>,
    /// Set when the fetch failed.
    pub error: Option<PartitionError>,
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
    /// Opening a partition failed.
    #[error("creating partition failed: {0}")]
    Storage(String),
}

/// A request to a shard. All fields are `Send`: they cross threads.
pub enum ShardMessage {
    /// Append batches to a partition this shard owns.
    Produce {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Validated batches, appended in order.
        batches: Vec<RecordBatch>,
        /// Where to answer.
        reply: flume::Sender<ProduceOutcome>,
    },
    /// Read from a partition this shard owns, waiting up to `max_wait` for data.
    Fetch {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// First offset wanted.
        offset: u64,
        /// Byte budget (at least one batch is returned anyway).
        max_bytes: usize,
        /// Longest wait for data when there is none at `offset`.
        max_wait: Duration,
        /// Where to answer.
        reply: flume::Sender<FetchOutcome>,
    },
    /// Offsets of a partition: log start, log end, or the first offset at a timestamp.
    ListOffset {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// -2 earliest, -1 latest, otherwise milliseconds.
        timestamp: i64,
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
        /// Where to answer.
        reply: flume::Sender<Result<(), CreateTopicError>>,
    },
    /// Open (creating) a partition this shard owns.
    OpenPartition {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Where to answer.
        reply: flume::Sender<Result<(), String>>,
    },
    /// A consumer-group request, for the coordinator on shard 0.
    Group {
        /// The decoded request (boxed: it is much larger than the other messages).
        request: Box<kafka_protocol::messages::RequestKind>,
        /// Its API version.
        version: i16,
        /// The client's id from the request header.
        client_id: String,
        /// Where to answer (`None`: not a group request, or no coordinator here).
        reply: flume::Sender<Option<kafka_protocol::messages::ResponseKind>>,
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
    /// A topic is gone; update this shard's table.
    TopicRemoved {
        /// Name.
        name: String,
        /// Acknowledgement.
        reply: flume::Sender<()>,
    },
    /// This shard's metrics, for the endpoint on shard 0.
    Metrics {
        /// Where to answer.
        reply: flume::Sender<crate::metrics::MetricsSnapshot>,
    },
    /// This shard's copy of the topic table: name → partition count.
    DescribeTopics {
        /// Where to answer.
        reply: flume::Sender<BTreeMap<String, u32>>,
    },
    /// A native-protocol subscription command for a partition this shard owns.
    Native(Box<crate::native::registry::Command>),
    /// A topic exists now; update this shard's table.
    TopicAdded {
        /// Name.
        name: String,
        /// Partition count.
        partitions: u32,
        /// Acknowledgement.
        reply: flume::Sender<()>,
    },
}

/// This shard's partitions by topic, then number: lookups borrow the topic name (no allocation
/// per request).
type OwnedPartitions = HashMap<Arc<str>, HashMap<u32, Rc<Partition>>>;

/// One shard: its partitions, its copy of the topic table, and the mesh to every shard.
/// Lives on its own executor thread (`Rc`, never shared).
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Broker configuration.
    pub config: BrokerConfig,
    mesh: Vec<flume::Sender<ShardMessage>>,
    partitions: RefCell<OwnedPartitions>,
    topics: RefCell<BTreeMap<String, u32>>,
    /// Topics shard 0 is creating right now: a second creation of the same name is refused.
    creating: RefCell<std::collections::HashSet<String>>,
    /// The Kafka group coordinator (shard 0 only).
    coordinator: RefCell<Option<Rc<crate::kafka::groups::Coordinator>>>,
    /// This shard's counters.
    pub metrics: crate::metrics::ShardMetrics,
    /// The subscriptions of the partitions this shard owns.
    pub subscriptions: crate::native::registry::Registry,
}

async fn ask<T>(
    to: &flume::Sender<ShardMessage>,
    build: impl FnOnce(flume::Sender<T>) -> ShardMessage,
) -> Option<T> {
    let (tx, rx) = flume::bounded(1);
    to.send_async(build(tx)).await.ok()?;
    rx.recv_async().await.ok()
}

impl Shard {
    /// A shard with the given mesh (one sender per shard, index = shard id) and topic table.
    pub fn new(
        id: usize,
        config: BrokerConfig,
        mesh: Vec<flume::Sender<ShardMessage>>,
        topics: BTreeMap<String, u32>,
    ) -> Shard {
        Shard {
            id,
            config,
            mesh,
            partitions: RefCell::default(),
            topics: RefCell::new(topics),
            creating: RefCell::default(),
            coordinator: RefCell::default(),
            metrics: crate::metrics::ShardMetrics::default(),
            subscriptions: crate::native::registry::Registry::default(),
        }
    }

    /// Number of shards on this node.
    pub fn shards(&self) -> usize {
        self.mesh.len()
    }

    /// Adds a partition this shard opened at start.
    pub fn adopt(&self, topic: &str, partition: u32, log: Partition) {
        self.partitions
            .borrow_mut()
            .entry(Arc::from(topic))
            .or_default()
            .insert(partition, Rc::new(log));
    }

    /// Makes this shard the home of the group coordinator.
    pub fn set_coordinator(&self, coordinator: Rc<crate::kafka::groups::Coordinator>) {
        *self.coordinator.borrow_mut() = Some(coordinator);
    }

    /// The group coordinator, on the shard that hosts it.
    pub fn coordinator(&self) -> Option<Rc<crate::kafka::groups::Coordinator>> {
        self.coordinator.borrow().clone()
    }

    /// Every shard's metrics snapshot (for the endpoint on shard 0).
    pub async fn gather_metrics(&self) -> Vec<crate::metrics::MetricsSnapshot> {
        let mut snapshots = Vec::with_capacity(self.mesh.len());
        for inbox in &self.mesh {
            if let Some(snapshot) = ask(inbox, |reply| ShardMessage::Metrics { reply }).await {
                snapshots.push(snapshot);
            }
        }
        snapshots
    }

    /// Forwards a consumer-group request to the coordinator on shard 0.
    pub async fn coordinate(
        &self,
        request: kafka_protocol::messages::RequestKind,
        version: i16,
        client_id: String,
    ) -> Option<kafka_protocol::messages::ResponseKind> {
        ask(&self.mesh[0], |reply| ShardMessage::Group {
            request: Box::new(request),
            version,
            client_id,
            reply,
        })
        .await
        .flatten()
    }

    /// A topic's overrides, as stored with it.
    pub fn topic_overrides(&self, topic: &str) -> Result<BTreeMap<String, String>, String> {
        oxbow_storage::topic_config::read_overrides(&self.config.data_dir, topic)
    }

    /// A topic's effective log settings: the broker's with the topic's overrides applied.
    pub fn topic_log_config(&self, topic: &str) -> Result<oxbow_core::LogConfig, String> {
        let overrides = self.topic_overrides(topic)?;
        self.config
            .log
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| format!("topic {topic}: {e}"))
    }

    /// Partitions this shard owns.
    pub fn owned(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|by_number| by_number.values().cloned())
            .collect()
    }

    /// The topic table as this shard knows it: name → partition count.
    pub fn topics(&self) -> BTreeMap<String, u32> {
        self.topics.borrow().clone()
    }

    /// Partition count of a topic, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.borrow().get(topic).copied()
    }

    fn owner_inbox(&self, topic: &str, partition: u32) -> &flume::Sender<ShardMessage> {
        &self.mesh[owner_shard(topic, partition, self.shards())]
    }

    /// A partition this shard owns.
    pub(crate) fn local(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Rc<Partition>, PartitionError> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|by_number| by_number.get(&partition))
            .cloned()
            .ok_or(PartitionError::UnknownTopicOrPartition)
    }

    /// Sends an append to the partition's owner and returns where the outcome will arrive, so
    /// a request spanning partitions can start them all before waiting for any.
    pub fn send_produce(
        &self,
        topic: Arc<str>,
        partition: u32,
        batches: Vec<RecordBatch>,
    ) -> flume::Receiver<ProduceOutcome> {
        let (reply, outcome) = flume::bounded(1);
        let inbox = self.owner_inbox(&topic, partition);
        let _ = inbox.send(ShardMessage::Produce {
            topic,
            partition,
            batches,
            reply,
        });
        outcome
    }

    /// Sends a subscription command to the partition's owner (answers, if any, come on the
    /// command's own reply channel).
    pub fn send_native(
        &self,
        topic: &str,
        partition: u32,
        command: crate::native::registry::Command,
    ) {
        let _ = self
            .owner_inbox(topic, partition)
            .send(ShardMessage::Native(Box::new(command)));
    }

    /// Sends a fetch to the partition's owner; see [`Shard::send_produce`].
    pub fn send_fetch(
        &self,
        topic: Arc<str>,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> flume::Receiver<FetchOutcome> {
        let (reply, outcome) = flume::bounded(1);
        let inbox = self.owner_inbox(&topic, partition);
        let _ = inbox.send(ShardMessage::Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            max_wait,
            reply,
        });
        outcome
    }

    /// Looks up an offset of a partition on its owner shard.
    pub async fn list_offset(
        &self,
        topic: Arc<str>,
        partition: u32,
        timestamp: i64,
    ) -> Result<(i64, i64), PartitionError> {
        let inbox = self.owner_inbox(&topic, partition);
        ask(inbox, |reply| ShardMessage::ListOffset {
            topic,
            partition,
            timestamp,
            reply,
        })
        .await
        .unwrap_or(Err(PartitionError::Storage("owner shard is gone".into())))
    }

    /// Creates a topic through shard 0 and returns once every shard knows it.
    pub async fn create_topic(
        &self,
        name: String,
        partitions: i64,
        configs: Vec<(String, String)>,
    ) -> Result<(), CreateTopicError> {
        ask(&self.mesh[0], |reply| ShardMessage::CreateTopic {
            name,
            partitions,
            configs,
            reply,
        })
        .await
        .unwrap_or(Err(CreateTopicError::Storage("shard 0 is gone".into())))
    }

    /// Serves this shard's inbox until every sender is gone. Each message runs as its own task,
    /// so a slow append or a long-poll fetch does not hold up the others.
    pub async fn serve_inbox(self: Rc<Self>, inbox: flume::Receiver<ShardMessage>) {
        while let Ok(message) = inbox.recv_async().await {
            let shard = self.clone();
            glommio::spawn_local(async move { shard.handle(message).await }).detach();
        }
    }

    async fn handle(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Produce {
                topic,
                partition,
                batches,
                reply,
            } => {
                let _ = reply.send(self.append_local(&topic, partition, batches).await);
            }
            ShardMessage::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                max_wait,
                reply,
            } => {
                let _ = reply.send(
                    self.fetch_local(&topic, partition, offset, max_bytes, max_wait)
                        .await,
                );
            }
            ShardMessage::ListOffset {
                topic,
                partition,
                timestamp,
                reply,
            } => {
                let _ = reply.send(self.list_offset_local(&topic, partition, timestamp).await);
            }
            ShardMessage::CreateTopic {
                name,
                partitions,
                configs,
                reply,
            } => {
                assert_eq!(self.id, 0, "topic creation is serialised on shard 0");
                let _ = reply.send(
                    self.create_topic_as_coordinator(name, partitions, configs)
                        .await,
                );
            }
            ShardMessage::OpenPartition {
                topic,
                partition,
                reply,
            } => {
                let _ = reply.send(self.open_local(&topic, partition).await);
            }
            ShardMessage::Group {
                request,
                version,
                client_id,
                reply,
            } => {
                let coordinator = self.coordinator.borrow().clone();
                let response = match coordinator {
                    Some(coordinator) => coordinator.handle(*request, version, client_id).await,
                    None => None,
                };
                let _ = reply.send(response);
            }
            ShardMessage::DeleteTopic { name, reply } => {
                assert_eq!(self.id, 0, "topic deletion is serialised on shard 0");
                let _ = reply.send(self.delete_topic_as_coordinator(name).await);
            }
            ShardMessage::DropPartition {
                topic,
                partition,
                reply,
            } => {
                let _ = reply.send(self.drop_local(&topic, partition).await);
            }
            ShardMessage::TopicRemoved { name, reply } => {
                self.topics.borrow_mut().remove(&name);
                let _ = reply.send(());
            }
            ShardMessage::Metrics { reply } => {
                let count = self.partitions.borrow().values().map(HashMap::len).sum();
                let _ = reply.send(self.metrics.snapshot(
                    count,
                    self.subscriptions.infos(),
                    self.subscriptions.decoded_counts(),
                ));
            }
            ShardMessage::Native(command) => {
                self.subscriptions.handle(&self, *command).await;
            }
            ShardMessage::DescribeTopics { reply } => {
                let _ = reply.send(self.topics());
            }
            ShardMessage::TopicAdded {
                name,
                partitions,
                reply,
            } => {
                self.topics.borrow_mut().insert(name, partitions);
                let _ = reply.send(());
            }
        }
    }

    async fn append_local(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<RecordBatch>,
    ) -> ProduceOutcome {
        let log = self.local(topic, partition)?;
        // Every batch takes its place in the partition's queue before any is waited for, so the
        // batches of a request pipelined behind this one cannot land between them.
        let appends = batches.into_iter().map(|batch| log.append(batch)).collect();
        let mut first = None;
        for appended in all_in_order(appends).await {
            let appended = appended.map_err(|e| match e {
                AppendError::TooLarge { .. } => PartitionError::BatchTooLarge,
                AppendError::OutOfOrderSequence { .. } => PartitionError::OutOfOrderSequence,
                AppendError::ProducerFenced { .. } => PartitionError::ProducerFenced,
                other => PartitionError::Storage(other.to_string()),
            })?;
            first.get_or_insert(appended.base_offset);
        }
        Ok((
            first.unwrap_or(log.log_end_offset()),
            log.log_start_offset(),
        ))
    }

    async fn fetch_local(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> FetchOutcome {
        let log = match self.local(topic, partition) {
            Ok(log) => log,
            Err(e) => {
                return FetchOutcome {
                    high_watermark: 0,
                    log_start_offset: 0,
                    batches: Vec::new(),
                    error: Some(e),
                }
            }
        };
        if offset == log.log_end_offset() && !max_wait.is_zero() {
            // Long poll: answered when data arrives, or when the wait runs out.
            let arrival = log.wait_for_offset(offset);
            let timeout = async {
                glommio::timer::sleep(max_wait).await;
            };
            futures_lite::future::or(arrival, timeout).await;
        }
        let result = log.read(offset, max_bytes).await;
        let (batches, error) = match result {
            Ok(batches) => (batches, None),
            Err(ReadError::OffsetOutOfRange { .. }) => {
                (Vec::new(), Some(PartitionError::OffsetOutOfRange))
            }
            Err(e @ ReadError::Corrupt { .. }) => {
                (Vec::new(), Some(PartitionError::Corrupt(e.to_string())))
            }
            Err(e) => (Vec::new(), Some(PartitionError::Storage(e.to_string()))),
        };
        FetchOutcome {
            high_watermark: log.log_end_offset(),
            log_start_offset: log.log_start_offset(),
            batches,
            error,
        }
    }

    async fn list_offset_local(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<(i64, i64), PartitionError> {
        let log = self.local(topic, partition)?;
        match timestamp {
            -2 => Ok((log.log_start_offset() as i64, -1)),
            -1 => Ok((log.log_end_offset() as i64, -1)),
            at => {
                // The first batch whose newest record is at or after `at`; a linear scan until
                // a time index exists.
                let mut next = log.log_start_offset();
                loop {
                    let batches = log
                        .read(next, 1 << 20)
                        .await
                        .map_err(|e| PartitionError::Storage(e.to_string()))?;
                    let Some(last) = batches.last() else {
                        return Ok((-1, -1));
                    };
                    if let Some(hit) = batches.iter().find(|b| b.max_timestamp() >= at) {
                        return Ok((hit.base_offset() as i64, hit.max_timestamp()));
                    }
                    next = last.last_offset() + 1;
                }
            }
        }
    }

    async fn open_local(&self, topic: &str, partition: u32) -> Result<(), String> {
        if self.local(topic, partition).is_ok() {
            return Ok(());
        }
        let dir = partition_dir(&self.config.data_dir, topic, partition);
        let config = self.topic_log_config(topic)?;
        let log = Partition::open(&dir, config, OpenOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        self.adopt(topic, partition, log);
        Ok(())
    }

    /// Deletes a topic through shard 0 and returns once its files are gone.
    pub async fn delete_topic(&self, name: String) -> Result<(), PartitionError> {
        ask(&self.mesh[0], |reply| ShardMessage::DeleteTopic {
            name,
            reply,
        })
        .await
        .unwrap_or(Err(PartitionError::Storage("shard 0 is gone".into())))
    }

    async fn delete_topic_as_coordinator(&self, name: String) -> Result<(), PartitionError> {
        let Some(partitions) = self.partition_count(&name) else {
            return Err(PartitionError::UnknownTopicOrPartition);
        };
        if !self.creating.borrow_mut().insert(name.clone()) {
            return Err(PartitionError::UnknownTopicOrPartition);
        }
        // First every shard forgets the topic, so no new request reaches it; then the owners
        // close and delete their partitions; then the topic's directory goes.
        for inbox in &self.mesh {
            let name = name.clone();
            ask(inbox, |reply| ShardMessage::TopicRemoved { name, reply }).await;
        }
        let topic: Arc<str> = Arc::from(name.as_str());
        let mut result = Ok(());
        for partition in 0..partitions {
            let inbox = self.owner_inbox(&topic, partition);
            let topic = topic.clone();
            let dropped = ask(inbox, |reply| ShardMessage::DropPartition {
                topic,
                partition,
                reply,
            })
            .await
            .unwrap_or(Err("owner shard is gone".into()));
            if let Err(e) = dropped {
                result = Err(PartitionError::Storage(e));
            }
        }
        if result.is_ok() {
            let dir = self.config.data_dir.join(&name);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    result = Err(PartitionError::Storage(format!("removing {dir:?}: {e}")));
                }
            }
        }
        self.creating.borrow_mut().remove(&name);
        tracing::info!(topic = %name, partitions, ok = result.is_ok(), "topic deleted");
        result
    }

    async fn drop_local(&self, topic: &str, partition: u32) -> Result<(), String> {
        self.subscriptions.drop_partition(topic, partition).await;
        let log = {
            let mut partitions = self.partitions.borrow_mut();
            let log = partitions
                .get_mut(topic)
                .and_then(|by_number| by_number.remove(&partition));
            if partitions.get(topic).is_some_and(HashMap::is_empty) {
                partitions.remove(topic);
            }
            log
        };
        if let Some(log) = log {
            log.close().await;
        }
        let dir = partition_dir(&self.config.data_dir, topic, partition);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {dir:?}: {e}"))
            }
            _ => Ok(()),
        }
    }

    async fn create_topic_as_coordinator(
        &self,
        name: String,
        partitions: i64,
        configs: Vec<(String, String)>,
    ) -> Result<(), CreateTopicError> {
        validate_topic_name(&name).map_err(|e| CreateTopicError::InvalidName(e.to_string()))?;
        let most = self.config.topic_partitions_max;
        if !(1..=most as i64).contains(&partitions) {
            return Err(CreateTopicError::InvalidPartitions(partitions, most));
        }
        let overrides: BTreeMap<String, String> = configs.into_iter().collect();
        self.config
            .log
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| CreateTopicError::InvalidConfig(e.to_string()))?;
        if self.partition_count(&name).is_some() || !self.creating.borrow_mut().insert(name.clone())
        {
            return Err(CreateTopicError::Exists);
        }
        if !overrides.is_empty() {
            if let Err(e) = oxbow_storage::topic_config::write_overrides(
                &self.config.data_dir,
                &name,
                &overrides,
            ) {
                self.creating.borrow_mut().remove(&name);
                return Err(CreateTopicError::Storage(e.to_string()));
            }
        }
        let result = self.create_partitions(&name, partitions as u32).await;
        self.creating.borrow_mut().remove(&name);
        result
    }

    async fn create_partitions(&self, name: &str, partitions: u32) -> Result<(), CreateTopicError> {
        let topic: Arc<str> = Arc::from(name);
        for partition in 0..partitions {
            let inbox = self.owner_inbox(&topic, partition);
            let topic = topic.clone();
            ask(inbox, |reply| ShardMessage::OpenPartition {
                topic,
                partition,
                reply,
            })
            .await
            .unwrap_or(Err("owner shard is gone".into()))
            .map_err(CreateTopicError::Storage)?;
        }
        for inbox in &self.mesh {
            let name = name.to_string();
            ask(inbox, |reply| ShardMessage::TopicAdded {
                name,
                partitions,
                reply,
            })
            .await;
        }
        tracing::info!(topic = %name, partitions, "topic created");
        Ok(())
    }
}

/// Runs futures to completion together, polling each in list order, so each one's first step
/// happens before the next one's; returns their outputs in the same order.
async fn all_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut running: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, output) in running.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                if let std::task::Poll::Ready(value) = future.as_mut().poll(cx) {
                    *output = Some(value);
                    *slot = None;
                }
            }
        }
        match running.iter().all(Option::is_none) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
