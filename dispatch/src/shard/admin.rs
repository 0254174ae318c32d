//! Topic administration, serialised on shard 0: every change is committed to the metadata
//! store first, then carried out, and answered only once every shard has the new metadata.

use super::message::{CreateTopicError, PartitionError, ShardMessage};
use super::{ask, Shard};
use oxbow_cluster::controller::assign_replicas;
use oxbow_cluster::metadata_group::{raft_id, NodeStatus, ProposeError};
use oxbow_cluster::{
    BrokerMeta, Metadata, MetadataChange, MetadataError, PartitionMeta, TopicId, TopicMeta,
};
use oxbow_core::LogConfig;
use oxbow_storage::layout::{partition_dir, set_aside_topic, validate_topic_name};
use oxbow_storage::{OpenOptions, Partition};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

impl Shard {
    /// Opens (creating) a partition this shard owns, with the topic's log settings.
    pub(super) async fn open_local(
        &self,
        topic: &str,
        partition: u32,
        config: LogConfig,
    ) -> Result<(), String> {
        if self.local(topic, partition).is_ok() {
            return Ok(());
        }
        let dir = partition_dir(&self.config.data_dir, topic, partition);
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

    /// Commits a change through the metadata group and returns the metadata that includes it.
    /// Called with the admin lock held.
    pub(super) async fn commit(
        &self,
        change: MetadataChange,
    ) -> Result<Arc<Metadata>, ProposeError> {
        let node =
            (self.metadata_node.borrow().clone()).expect("the metadata group runs on shard 0");
        node.propose(change).await
    }

    /// Commits a change that opens or drops no partition (the cluster id, a broker's
    /// registration) and gives every shard the new metadata. Shard 0 only.
    pub async fn change_cluster(&self, change: MetadataChange) -> Result<(), ProposeError> {
        assert_eq!(self.id, 0, "metadata changes are serialised on shard 0");
        let _admin = self.admin.acquire_permit(1).await;
        let metadata = self.commit(change).await?;
        self.carry_out(metadata).await;
        Ok(())
    }

    /// Controlled shutdown (Kafka's): the metadata group hands the partitions this node leads
    /// to other in-sync replicas and fences it, so that clients move to the new leaders while
    /// this node still answers (NOT_LEADER, then a metadata refresh) instead of timing out
    /// until its session lapses. Gives up after `cluster.controlled_shutdown_timeout_ms`: a
    /// node cut off from the group stops anyway, and its partitions move when its session
    /// lapses. Shard 0 only.
    pub async fn controlled_shutdown(&self) -> Result<(), String> {
        for shard in 0..self.mesh.len() {
            let work =
                |shard: std::rc::Rc<Shard>| async move { shard.replicate_led_cursors().await };
            if self.run_on(shard, work).await.is_none() {
                tracing::warn!(shard, "shard gone before its cursors were replicated");
            }
        }
        let ms = self.config.cluster.controlled_shutdown_timeout_ms;
        let change = MetadataChange::ShutDownBroker {
            id: self.config.node_id,
        };
        let committed =
            futures_lite::future::or(async { Some(self.change_cluster(change).await) }, async {
                glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
                None
            })
            .await;
        match committed {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("not committed within {ms} ms")),
        }
        self.hand_over_metadata_leadership().await;
        Ok(())
    }

    /// Writes the cursors of the reliable subscriptions of every partition this shard leads
    /// and waits for their in-sync followers to hold them (see
    /// `SubscriptionHost::replicate_cursors_now`): the first step of a controlled shutdown.
    async fn replicate_led_cursors(&self) {
        for host in self.owned() {
            if !matches!(&*host.role.borrow(), super::Role::Leader(_)) {
                continue;
            }
            if let Err(e) = host.subscriptions.replicate_cursors_now().await {
                tracing::warn!(topic = %host.topic, partition = host.partition, error = %e,
                    "cursors not replicated before the handover: the next leader redelivers");
            }
        }
    }

    /// A stopping node that leads the metadata group hands that over too, so the group does
    /// not sit out an election timeout; waits (a few election timeouts at most) until another
    /// node leads.
    async fn hand_over_metadata_leadership(&self) {
        let Some(node) = self.metadata_node() else {
            return;
        };
        let me = raft_id(self.config.node_id);
        let Some(target) = node.transfer_leadership().await else {
            return;
        };
        let metadata = &self.config.metadata;
        let tick = std::time::Duration::from_millis(metadata.tick_ms);
        for _ in 0..metadata.election_ticks * 3 {
            let leader = node.status().leader;
            if leader != me && leader != 0 {
                tracing::info!(to = leader, "metadata group leadership handed over");
                return;
            }
            glommio::timer::sleep(tick).await;
        }
        tracing::warn!(
            to = target,
            "metadata group leadership was not taken over in time"
        );
    }

    /// Where the metadata group stands, as shard 0's node last saw it (`None`: no node runs,
    /// as in tests of a bare shard).
    pub async fn metadata_status(&self) -> Option<NodeStatus> {
        self.run_on(0, |shard| async move {
            (shard.metadata_node()).map(|node| node.status())
        })
        .await
        .flatten()
    }

    /// Opens, on their owner shards, the partitions of `topic` this broker holds a replica of.
    pub(super) async fn open_partitions(
        &self,
        topic: &TopicMeta,
        log_config: &LogConfig,
    ) -> Result<(), String> {
        let name: Arc<str> = Arc::from(topic.name.as_str());
        for (number, partition) in topic.partitions.iter().enumerate() {
            if !partition.replicas.contains(&self.config.node_id) {
                continue;
            }
            let partition = number as u32;
            let (topic, config) = (name.clone(), log_config.clone());
            let opened = ask(self.owner_inbox(&name, partition), |reply| {
                ShardMessage::OpenPartition {
                    topic,
                    partition,
                    config,
                    reply,
                }
            })
            .await
            .unwrap_or(Err("owner shard is gone".into()));
            opened.map_err(|e| format!("{name}/{partition}: {e}"))?;
        }
        Ok(())
    }

    /// Closes and deletes one partition on its owner shard (if it has it here).
    pub(super) async fn drop_partition(
        &self,
        topic: &Arc<str>,
        partition: u32,
    ) -> Result<(), String> {
        let inbox = self.owner_inbox(topic, partition);
        let topic = topic.clone();
        ask(inbox, |reply| ShardMessage::DropPartition {
            topic,
            partition,
            reply,
        })
        .await
        .unwrap_or(Err("owner shard is gone".into()))
    }

    /// Closes and deletes a topic's partitions on their owner shards (those it has here), then
    /// its directory. Every shard must already have forgotten the topic.
    pub(super) async fn drop_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<(), PartitionError> {
        let topic: Arc<str> = Arc::from(name);
        let mut result = Ok(());
        for partition in 0..partitions {
            if let Err(e) = self.drop_partition(&topic, partition).await {
                result = Err(PartitionError::Storage(e));
            }
        }
        if result.is_ok() {
            let dir = self.config.data_dir.join(name);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    result = Err(PartitionError::Storage(format!("removing {dir:?}: {e}")));
                }
            }
        }
        result
    }

    /// Gives every shard the new metadata and waits until each has it.
    pub(super) async fn publish(&self, metadata: Arc<Metadata>) {
        for inbox in &self.mesh {
            let metadata = metadata.clone();
            ask(inbox, |reply| ShardMessage::MetadataChanged {
                metadata,
                reply,
            })
            .await;
        }
    }

    pub(super) async fn delete_topic_as_coordinator(
        &self,
        name: String,
    ) -> Result<(), PartitionError> {
        if oxbow_cluster::is_internal_topic(&name) {
            return Err(PartitionError::InternalTopic);
        }
        let _admin = self.admin.acquire_permit(1).await;
        let Some(partitions) = self.partition_count(&name) else {
            return Err(PartitionError::UnknownTopicOrPartition);
        };
        let result = self.delete_committed(&name).await;
        tracing::info!(topic = %name, partitions, ok = result.is_ok(), "topic deleted");
        result
    }

    /// Commits the deletion; then every shard forgets the topic, so no new request reaches it;
    /// then the owners close and delete their partitions; then the topic's directory goes.
    async fn delete_committed(&self, name: &str) -> Result<(), PartitionError> {
        let change = MetadataChange::DeleteTopic {
            name: name.to_string(),
        };
        let metadata = self
            .commit(change)
            .await
            .map_err(|e| PartitionError::Storage(e.to_string()))?;
        match self.carry_out(metadata).await.remove(name) {
            Some(e) => Err(PartitionError::Storage(e)),
            None => Ok(()),
        }
    }

    pub(super) async fn drop_local(&self, topic: &str, partition: u32) -> Result<(), String> {
        let host = {
            let mut partitions = self.partitions.borrow_mut();
            let host = partitions
                .get_mut(topic)
                .and_then(|by_number| by_number.remove(&partition));
            if partitions.get(topic).is_some_and(HashMap::is_empty) {
                partitions.remove(topic);
            }
            host
        };
        if let Some(host) = host {
            host.subscriptions.drop_all().await;
            host.log.close().await;
        }
        let dir = partition_dir(&self.config.data_dir, topic, partition);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {dir:?}: {e}"))
            }
            _ => Ok(()),
        }
    }

    /// Creates `(name, partitions, replication factor)`.
    pub(super) async fn create_topic_as_coordinator(
        &self,
        (name, partitions, replication_factor): (String, i64, usize),
        configs: Vec<(String, String)>,
        internal: bool,
    ) -> Result<(), CreateTopicError> {
        validate_topic_name(&name).map_err(|e| CreateTopicError::InvalidName(e.to_string()))?;
        if oxbow_cluster::is_internal_topic(&name) != internal {
            let why = format!("{name} is reserved for the broker's internal topics");
            return Err(CreateTopicError::InvalidName(why));
        }
        let most = self.config.topic_partitions_max;
        if !(1..=most as i64).contains(&partitions) {
            return Err(CreateTopicError::InvalidPartitions(partitions, most));
        }
        let overrides: BTreeMap<String, String> = configs.into_iter().collect();
        // Checked here, applied by whoever opens the partitions.
        (self.config.log)
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| CreateTopicError::InvalidConfig(e.to_string()))?;
        let _admin = self.admin.acquire_permit(1).await;
        if self.partition_count(&name).is_some() {
            return Err(CreateTopicError::Exists);
        }
        let id = TopicId::random(&mut self.rng.borrow_mut());
        let topic = self.place(name, id, (partitions as u32, replication_factor), overrides)?;
        self.create_committed(topic).await
    }

    /// A new topic's `(partitions, replication factor)` over the registered, unfenced brokers,
    /// replicas and leaders spread by the controller's assignment.
    fn place(
        &self,
        name: String,
        id: TopicId,
        (partitions, replication_factor): (u32, usize),
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, CreateTopicError> {
        let metadata = self.metadata();
        let brokers: Vec<BrokerMeta> = metadata.unfenced_brokers().cloned().collect();
        if brokers.is_empty() {
            // Internal topics made while the broker starts, before it registers.
            let node = self.config.node_id;
            return Ok(TopicMeta::on_one_broker(
                name, id, partitions, node, configs,
            ));
        }
        let rng = &mut self.rng.borrow_mut();
        let replicas = assign_replicas(&brokers, partitions, replication_factor, rng)
            .map_err(|e| CreateTopicError::InvalidReplication(e.to_string()))?;
        Ok(TopicMeta {
            internal: oxbow_cluster::is_internal_topic(&name),
            name,
            id,
            partitions: replicas
                .into_iter()
                .map(|replicas| PartitionMeta {
                    leader: replicas[0],
                    leader_epoch: 0,
                    isr: replicas.clone(),
                    replicas,
                })
                .collect(),
            configs,
        })
    }

    /// Commits the topic; then its owners open its partitions; then every shard learns it.
    /// Only then is it answered, so any request on any shard after the answer finds it.
    async fn create_committed(&self, topic: TopicMeta) -> Result<(), CreateTopicError> {
        let (name, partitions) = (topic.name.clone(), topic.partitions.len() as u32);
        if self.config.data_dir.join(&name).exists() {
            // Left by a delete that could not finish: never let a new topic inherit its data.
            let to = set_aside_topic(&self.config.data_dir, &name)
                .map_err(|e| CreateTopicError::Storage(format!("setting aside old {name}: {e}")))?;
            tracing::warn!(topic = %name, to = ?to, "old topic directory set aside");
        }
        let metadata =
            (self.commit(MetadataChange::CreateTopic(topic)).await).map_err(|e| match e {
                ProposeError::Refused(MetadataError::TopicExists(_)) => CreateTopicError::Exists,
                ProposeError::TimedOut(_) | ProposeError::LeaderChanged => {
                    CreateTopicError::TimedOut(e.to_string())
                }
                e => CreateTopicError::Storage(e.to_string()),
            })?;
        if metadata.topic(&name).is_none() {
            let why = format!("{name} was deleted by another change while it was being created");
            return Err(CreateTopicError::Storage(why));
        }
        if let Some(e) = self.carry_out(metadata).await.remove(&name) {
            // Take it back rather than serve it half open.
            if let Err(undo) = self.delete_committed(&name).await {
                tracing::error!(topic = %name, error = %undo, "undoing the topic");
            }
            return Err(CreateTopicError::Storage(e));
        }
        tracing::info!(topic = %name, partitions, "topic created");
        Ok(())
    }
}
