//! The shard layer: partition ownership and request routing, below every client protocol.
//!
//! Every partition is owned by one shard ([`oxbow_core::placement::owner_shard`]), which holds
//! it as a [`PartitionHost`]: its log and its subscriptions. A connection on any shard reaches
//! a partition by sending a [`ShardMessage`] to the owner's inbox over the mesh of bounded
//! flume channels built at start (`shard_inbox_messages_max` each; a full inbox makes the
//! sender wait), and awaiting the reply; batches travel as `Bytes`, so nothing is copied
//! between shards. Each shard serves one snapshot of the metadata ([`oxbow_cluster::Metadata`]:
//! topics, ids, partitions, replicas, configs); shard 0 commits every change to the metadata
//! store and gives every shard the new snapshot before it answers, so reads take no lock.
//!
//! A protocol layer reaches the services it hosts on a shard (the Kafka group coordinator, its
//! metrics) with [`Shard::run_on`] and [`Shard::extension`], so this layer never knows their
//! types.

mod admin;
mod controller;
mod delete_records;
mod follow;
mod grow;
mod host;
mod inbox;
mod leader_answers;
mod message;
mod reads;
mod replica;
mod topic_configs;

pub use grow::CreatePartitionsError;
pub use host::PartitionHost;
pub use message::{
    Acks, CreateTopicError, FetchOutcome, FetchPart, PartitionError, ProduceOutcome, RemoteWork,
    ShardMessage,
};
pub use reads::offset_at_time;
pub use replica::{ReplicationInfo, Role};
pub use topic_configs::AlterConfigsError;

use crate::subscriptions::{Command, DeadLetters, DriverSettings};
use oxbow_cluster::metadata_group::MetadataNode;
use oxbow_cluster::Metadata;
use oxbow_core::native::SubscriptionInfo;
use oxbow_core::placement::owner_shard;
use oxbow_core::{BrokerConfig, RecordBatch};
use oxbow_storage::ordered::all_in_order;
use oxbow_storage::{AppendError, Partition};
use replica::ReplicaWait;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// This shard's partitions by topic, then number: lookups borrow the topic name (no allocation
/// per request).
type OwnedPartitions = HashMap<Arc<str>, HashMap<u32, Rc<PartitionHost>>>;

/// One shard: its partitions, its copy of the topic table, and the mesh to every shard.
/// Lives on its own executor thread (`Rc`, never shared).
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Broker configuration.
    pub config: BrokerConfig,
    mesh: Vec<flume::Sender<ShardMessage>>,
    partitions: RefCell<OwnedPartitions>,
    metadata: RefCell<Arc<Metadata>>,
    /// Callers waiting for this shard to serve a metadata version.
    version_waiters: RefCell<Vec<(u64, flume::Sender<()>)>>,
    /// The node of the metadata group, where changes are committed (shard 0 only).
    metadata_node: RefCell<Option<MetadataNode>>,
    /// For topic ids.
    rng: RefCell<fastrand::Rng>,
    /// Held by shard 0 for a whole topic change (commit, open or drop, publish), so every
    /// change is committed on top of the metadata the previous one published.
    admin: glommio::sync::Semaphore,
    /// Services protocol layers host on this shard, by type.
    extensions: RefCell<HashMap<TypeId, Rc<dyn Any>>>,
    /// The cluster network, when the node runs with others (replication frames).
    transport: RefCell<Option<Arc<oxbow_cluster::transport::Transport>>>,
    /// Whether this node's metadata has caught up since it started, so replicated partitions
    /// may take the roles it names (before that its view may name it leader of an old epoch).
    roles_enabled: std::cell::Cell<bool>,
}

/// Sends a request built around a reply channel and waits for the answer (`None`: the shard is
/// gone).
pub(crate) async fn ask<T>(
    to: &flume::Sender<ShardMessage>,
    build: impl FnOnce(flume::Sender<T>) -> ShardMessage,
) -> Option<T> {
    let (tx, rx) = flume::bounded(1);
    to.send_async(build(tx)).await.ok()?;
    rx.recv_async().await.ok()
}

/// Builds the mesh: one bounded inbox per shard; every shard gets all the senders.
pub fn mesh(
    shards: usize,
    inbox_messages_max: usize,
) -> (
    Vec<flume::Sender<ShardMessage>>,
    Vec<flume::Receiver<ShardMessage>>,
) {
    (0..shards)
        .map(|_| flume::bounded::<ShardMessage>(inbox_messages_max))
        .unzip()
}

impl Shard {
    /// A shard with the given mesh (one sender per shard, index = shard id) and metadata.
    pub fn new(
        id: usize,
        config: BrokerConfig,
        mesh: Vec<flume::Sender<ShardMessage>>,
        metadata: Arc<Metadata>,
    ) -> Shard {
        Shard {
            id,
            config,
            mesh,
            partitions: RefCell::default(),
            metadata: RefCell::new(metadata.clone()),
            metadata_node: RefCell::default(),
            version_waiters: RefCell::default(),
            rng: RefCell::new(fastrand::Rng::new()),
            admin: glommio::sync::Semaphore::new(1),
            extensions: RefCell::default(),
            transport: RefCell::default(),
            roles_enabled: std::cell::Cell::new(false),
        }
    }

    /// Gives the shard the cluster network (replication sends over it).
    pub fn set_transport(&self, transport: Arc<oxbow_cluster::transport::Transport>) {
        *self.transport.borrow_mut() = Some(transport);
    }

    fn transport(&self) -> Option<Arc<oxbow_cluster::transport::Transport>> {
        self.transport.borrow().clone()
    }

    /// Number of shards on this node.
    pub fn shards(&self) -> usize {
        self.mesh.len()
    }

    fn driver_settings(&self) -> DriverSettings {
        DriverSettings {
            subscriptions: self.config.subscriptions.clone(),
            batch_decompressed_bytes_max: self.config.batch_decompressed_bytes_max,
            state_logs: self.config.state_logs.clone(),
        }
    }

    /// Hosts a partition this shard opened.
    pub fn adopt(&self, topic: &str, partition: u32, log: Partition) {
        let topic: Arc<str> = Arc::from(topic);
        let host = PartitionHost::new(
            topic.clone(),
            partition,
            log,
            &self.config.data_dir,
            self.driver_settings(),
        );
        self.partitions
            .borrow_mut()
            .entry(topic)
            .or_default()
            .insert(partition, Rc::new(host));
    }

    /// Makes this shard the one that commits metadata changes (shard 0), through the node of
    /// the metadata group it runs.
    pub fn set_metadata_node(&self, node: MetadataNode) {
        assert_eq!(self.id, 0, "metadata changes are serialised on shard 0");
        *self.metadata_node.borrow_mut() = Some(node);
    }

    /// Resolves once this shard serves metadata of at least `version`.
    pub async fn serves_version(&self, version: u64) {
        let waiting = {
            if self.metadata.borrow().version >= version {
                return;
            }
            let (waiter, waiting) = flume::bounded(1);
            self.version_waiters.borrow_mut().push((version, waiter));
            waiting
        };
        let _ = waiting.recv_async().await;
    }

    /// The node of the metadata group this shard runs (shard 0 only).
    pub fn metadata_node(&self) -> Option<MetadataNode> {
        self.metadata_node.borrow().clone()
    }

    /// The metadata this shard serves now.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// Makes `service` available on this shard to [`Shard::extension`] (one per type).
    pub fn set_extension<T: 'static>(&self, service: Rc<T>) {
        self.extensions
            .borrow_mut()
            .insert(TypeId::of::<T>(), service);
    }

    /// The service of type `T` hosted on this shard, if any.
    pub fn extension<T: 'static>(&self) -> Option<Rc<T>> {
        let service = self.extensions.borrow().get(&TypeId::of::<T>())?.clone();
        service.downcast::<T>().ok()
    }

    /// The service of type `T`, made by `make` and kept the first time it is asked for
    /// (state a module keeps per shard, such as counters and schedules).
    pub fn extension_or_insert_with<T: 'static>(&self, make: impl FnOnce() -> T) -> Rc<T> {
        if let Some(service) = self.extension::<T>() {
            return service;
        }
        let service = Rc::new(make());
        self.set_extension(service.clone());
        service
    }

    /// Runs `work` on shard `shard` and returns what it answers (`None`: that shard is gone).
    pub async fn run_on<T, F, Fut>(&self, shard: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        ask(&self.mesh[shard], |reply| {
            ShardMessage::Run(Box::new(move |shard| {
                Box::pin(async move {
                    let _ = reply.send(work(shard).await);
                }) as Pin<Box<dyn Future<Output = ()>>>
            }))
        })
        .await
    }

    /// A topic's config overrides (Kafka names), as the metadata holds them.
    pub fn topic_overrides(&self, topic: &str) -> Result<BTreeMap<String, String>, String> {
        self.metadata
            .borrow()
            .topic(topic)
            .map(|t| t.configs.clone())
            .ok_or_else(|| format!("unknown topic {topic}"))
    }

    /// Whether a topic is compacted (its `cleanup.policy` names `compact`, or it has none and
    /// the broker's does): it refuses records without a key.
    pub fn topic_compacts(&self, topic: &str) -> bool {
        let metadata = self.metadata.borrow();
        let policy = (metadata.topic(topic))
            .and_then(|t| t.configs.get(oxbow_core::config::CLEANUP_POLICY_CONFIG))
            .and_then(|policy| policy.parse::<oxbow_core::config::CleanupPolicy>().ok());
        policy.unwrap_or(self.config.log.cleanup_policy).compact
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
    pub fn owned(&self) -> Vec<Rc<PartitionHost>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|by_number| by_number.values().cloned())
            .collect()
    }

    /// The topic table as this shard knows it: name → partition count.
    pub fn topics(&self) -> BTreeMap<String, u32> {
        self.metadata
            .borrow()
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.partitions.len() as u32))
            .collect()
    }

    /// Partition count of a topic, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.metadata.borrow().partition_count(topic)
    }

    fn owner_inbox(&self, topic: &str, partition: u32) -> &flume::Sender<ShardMessage> {
        &self.mesh[owner_shard(topic, partition, self.shards())]
    }

    /// A partition this shard owns; for one the metadata places on another broker, who leads it.
    pub fn local(&self, topic: &str, partition: u32) -> Result<Rc<PartitionHost>, PartitionError> {
        let hosted = (self.partitions.borrow().get(topic))
            .and_then(|by_number| by_number.get(&partition))
            .cloned();
        hosted.ok_or_else(|| {
            let metadata = self.metadata();
            let placed = (metadata.topic(topic)).and_then(|t| t.partitions.get(partition as usize));
            match placed {
                Some(p) if !p.replicas.contains(&self.config.node_id) => {
                    PartitionError::NotLeader { leader: p.leader }
                }
                _ => PartitionError::UnknownTopicOrPartition,
            }
        })
    }

    /// Every subscription on the partitions this shard serves (alone or as leader), for
    /// metrics. Subscriptions load here if nothing asked for them since the partition opened,
    /// so a subscription with no consumers after a restart still reports its lag.
    pub async fn subscription_infos(self: &Rc<Self>) -> Vec<SubscriptionInfo> {
        let dead_letters: Rc<dyn DeadLetters> = self.clone();
        let mut infos = Vec::new();
        for host in self.owned() {
            if host.role.borrow().serves() {
                if let Err((_, why)) = host.subscriptions.load(&dead_letters).await {
                    tracing::warn!(topic = %host.topic, partition = host.partition, error = %why,
                        "subscriptions not loaded for metrics");
                }
            }
            infos.extend(host.subscriptions.infos());
        }
        infos
    }

    /// Compressed batches decoded for subscriptions on this shard, and reads served without.
    pub fn decoded_counts(&self) -> (u64, u64) {
        self.owned()
            .iter()
            .map(|host| host.subscriptions.decoded_counts())
            .fold((0, 0), |(d, h), (pd, ph)| (d + pd, h + ph))
    }

    /// Sends an append to the partition's owner and returns where the outcome will arrive, so
    /// a request spanning partitions can start them all before waiting for any.
    pub async fn send_produce(
        &self,
        topic: Arc<str>,
        partition: u32,
        batches: Vec<RecordBatch>,
        acks: Acks,
    ) -> flume::Receiver<ProduceOutcome> {
        self.send_produce_within(topic, partition, batches, acks, None)
            .await
    }

    /// [`Shard::send_produce`] whose acks=all wait ends after `timeout` (Kafka's Produce
    /// `timeout_ms`) with [`PartitionError::TimedOut`].
    pub async fn send_produce_within(
        &self,
        topic: Arc<str>,
        partition: u32,
        batches: Vec<RecordBatch>,
        acks: Acks,
        timeout: Option<Duration>,
    ) -> flume::Receiver<ProduceOutcome> {
        let (reply, outcome) = flume::bounded(1);
        let inbox = self.owner_inbox(&topic, partition);
        let _ = inbox
            .send_async(ShardMessage::Produce {
                topic,
                partition,
                batches,
                acks,
                timeout,
                reply,
            })
            .await;
        outcome
    }

    /// Sends a subscription command to the partition's owner (answers, if any, come on the
    /// command's own reply channel).
    pub async fn send_subscription(&self, topic: &str, partition: u32, command: Command) {
        let _ = self
            .owner_inbox(topic, partition)
            .send_async(ShardMessage::Subscription(Box::new(command)))
            .await;
    }

    /// Looks up an offset of a partition on its owner shard: -2 its start, -1 its end (under
    /// `read_committed`, its last stable offset), otherwise the first at a time (ms).
    pub async fn list_offset(
        &self,
        topic: Arc<str>,
        partition: u32,
        timestamp: i64,
        read_committed: bool,
    ) -> Result<(i64, i64), PartitionError> {
        let inbox = self.owner_inbox(&topic, partition);
        ask(inbox, |reply| ShardMessage::ListOffset {
            topic,
            partition,
            timestamp,
            read_committed,
            reply,
        })
        .await
        .unwrap_or(Err(PartitionError::Storage("owner shard is gone".into())))
    }

    /// Creates a topic with `default_replication_factor` replicas through shard 0 and returns
    /// once every shard knows it.
    pub async fn create_topic(
        &self,
        name: String,
        partitions: i64,
        configs: Vec<(String, String)>,
    ) -> Result<(), CreateTopicError> {
        let replicas = self.config.default_replication_factor as usize;
        self.create_replicated_topic(name, partitions, replicas, configs)
            .await
    }

    /// [`Shard::create_topic`] with `replication_factor` replicas per partition.
    pub async fn create_replicated_topic(
        &self,
        name: String,
        partitions: i64,
        replication_factor: usize,
        configs: Vec<(String, String)>,
    ) -> Result<(), CreateTopicError> {
        ask(&self.mesh[0], |reply| ShardMessage::CreateTopic {
            name,
            partitions,
            configs,
            internal: false,
            replication_factor,
            reply,
        })
        .await
        .unwrap_or(Err(CreateTopicError::Storage("shard 0 is gone".into())))
    }

    /// The partition count of an internal topic, created with `partitions` on
    /// `replication_factor` replicas and `configs` if it does not exist yet (a count fixed at
    /// creation is kept).
    pub async fn ensure_internal_topic(
        &self,
        name: &str,
        (partitions, replication_factor): (u32, u32),
        configs: Vec<(String, String)>,
    ) -> Result<u32, CreateTopicError> {
        if let Some(count) = self.partition_count(name) {
            return Ok(count);
        }
        // As many replicas as asked for and brokers allow (Kafka refuses fewer; a node that
        // starts alone would then have no offsets at all).
        let brokers = self.metadata().unfenced_brokers().count();
        let replication_factor = (replication_factor as usize).min(brokers).max(1);
        let created = ask(&self.mesh[0], |reply| ShardMessage::CreateTopic {
            name: name.to_string(),
            partitions: partitions as i64,
            configs,
            replication_factor,
            internal: true,
            reply,
        })
        .await
        .unwrap_or(Err(CreateTopicError::Storage("shard 0 is gone".into())));
        match created {
            Ok(()) | Err(CreateTopicError::Exists) => self
                .partition_count(name)
                .ok_or_else(|| CreateTopicError::Storage(format!("{name} vanished"))),
            Err(e) => Err(e),
        }
    }

    async fn append_local(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<RecordBatch>,
        acks: Acks,
        timeout: Option<Duration>,
    ) -> ProduceOutcome {
        // Every acks setting waits for the local append under the flush policy; `All` waits for
        // the in-sync replicas as well.
        if oxbow_cluster::is_internal_topic(topic) {
            return Err(PartitionError::InternalTopic);
        }
        let host = self.leading(topic, partition)?;
        if acks == Acks::All {
            self.check_acks_all(&host)?;
        }
        let log = host.log.clone();
        // Every batch takes its place in the partition's queue before any is waited for, so the
        // batches of a request pipelined behind this one cannot land between them.
        let appends = batches.into_iter().map(|batch| log.append(batch)).collect();
        let (mut first, mut end) = (None, 0);
        for appended in all_in_order(appends).await {
            let appended = appended.map_err(|e| match e {
                AppendError::TooLarge { .. } => PartitionError::BatchTooLarge,
                AppendError::OutOfOrderSequence { .. } => PartitionError::OutOfOrderSequence,
                AppendError::ProducerFenced { .. } => PartitionError::ProducerFenced,
                other => PartitionError::Storage(other.to_string()),
            })?;
            first.get_or_insert(appended.base_offset);
            end = end.max(appended.last_offset + 1);
        }
        let wait = match acks {
            Acks::All => ReplicaWait::InSync { timeout },
            Acks::None | Acks::Leader => ReplicaWait::LeaderOnly,
        };
        self.replicated(&host, end, wait).await?;
        Ok((
            first.unwrap_or(log.log_end_offset()),
            log.log_start_offset(),
        ))
    }

    /// Applies retention to this shard's partitions every `retention_check_interval_ms`.
    pub async fn apply_retention_forever(self: Rc<Self>) {
        let every = Duration::from_millis(self.config.retention_check_interval_ms);
        loop {
            glommio::timer::sleep(every).await;
            for host in self.owned() {
                if let Err(e) = host.log.apply_retention(oxbow_storage::now_ms()).await {
                    tracing::error!(shard = self.id, error = %e, "retention failed");
                }
            }
        }
    }

    /// Compacts this shard's compacted partitions that are due, every
    /// `compaction.check_interval_ms`, one after another within the shard's I/O budget.
    pub async fn compact_forever(self: Rc<Self>) {
        let settings = self.config.compaction;
        let every = Duration::from_millis(settings.check_interval_ms);
        let cleaner = oxbow_storage::Cleaner {
            key_map_bytes_max: settings.key_map_bytes_max,
            decompressed_bytes_max: self.config.batch_decompressed_bytes_max,
            pace: oxbow_storage::IoPace::new(settings.io_bytes_per_sec),
        };
        loop {
            glommio::timer::sleep(every).await;
            for host in self.owned() {
                if !host.log.config().cleanup_policy.compact {
                    continue;
                }
                match host.log.compact(oxbow_storage::now_ms(), &cleaner).await {
                    Ok(Some(done)) => tracing::info!(shard = self.id, topic = %host.topic,
                        partition = host.partition, segments = done.segments_rewritten,
                        bytes_before = done.bytes_before, bytes_after = done.bytes_after,
                        records_removed = done.records_removed, clean_end = done.clean_end,
                        "compacted"),
                    Ok(None) => {}
                    Err(e) => tracing::error!(shard = self.id, topic = %host.topic,
                        partition = host.partition, error = %e, "compaction failed"),
                }
            }
        }
    }

    /// Stops every subscription (their cursors written) and closes every partition.
    pub async fn close(&self) {
        let node = self.metadata_node.borrow_mut().take();
        if let Some(node) = node {
            node.close().await;
        }
        let hosts = self.owned();
        for host in &hosts {
            host.close().await;
        }
        tracing::info!(shard = self.id, partitions = hosts.len(), "shard stopped");
    }
}

impl DeadLetters for Shard {
    fn produce(
        &self,
        topic: String,
        batch: RecordBatch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            if self.partition_count(&topic).is_none() {
                if let Err(e) = self.create_topic(topic.clone(), 1, Vec::new()).await {
                    tracing::debug!(topic, error = %e, "creating the dead-letter topic");
                }
            }
            let outcome = self
                .send_produce(Arc::from(topic.as_str()), 0, vec![batch], Acks::All)
                .await;
            match outcome.recv_async().await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the dead-letter partition's shard is gone".into()),
            }
        })
    }
}
