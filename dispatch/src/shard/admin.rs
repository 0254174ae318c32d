//! Topic administration, serialised on shard 0: create and delete, across every shard.

use super::message::{CreateTopicError, PartitionError, ShardMessage};
use super::{ask, Shard};
use oxbow_storage::layout::{partition_dir, validate_topic_name};
use oxbow_storage::{OpenOptions, Partition};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

impl Shard {
    pub(super) async fn open_local(&self, topic: &str, partition: u32) -> Result<(), String> {
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

    pub(super) async fn delete_topic_as_coordinator(
        &self,
        name: String,
    ) -> Result<(), PartitionError> {
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

    pub(super) async fn create_topic_as_coordinator(
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
