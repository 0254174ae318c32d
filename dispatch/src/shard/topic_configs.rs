//! Changing a topic's configs (Kafka's AlterConfigs and IncrementalAlterConfigs): the whole new
//! set of overrides is checked as CreateTopics checks them, committed through the metadata
//! group on shard 0, and every node's open partitions take it as the metadata reaches them
//! (`Shard::apply_changed_topic_configs`).

use super::{PartitionHost, Shard};
use oxbow_cluster::metadata_group::ProposeError;
use oxbow_cluster::{Metadata, MetadataChange, MetadataError, TopicMeta};
use std::collections::BTreeMap;

/// Why a topic's configs were not changed; each is one of Kafka's error codes.
#[derive(Debug, thiserror::Error)]
pub enum AlterConfigsError {
    /// No topic of that name.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// A config is unknown or its value out of bounds.
    #[error("{0}")]
    InvalidConfig(String),
    /// The metadata group did not commit it in time; it may still be.
    #[error("{0}")]
    TimedOut(String),
}

/// How often a change computed from configs that another node changed meanwhile is computed
/// again before it fails.
const STALE_RETRIES: usize = 3;

impl Shard {
    /// Applies `changes` (a config and its new value, or `None` to remove the override) to
    /// `topic`'s overrides, or with `replace` makes them its only overrides; with
    /// `validate_only`, only checks. Shard 0 only.
    pub async fn change_topic_configs(
        &self,
        topic: &str,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    ) -> Result<(), AlterConfigsError> {
        use AlterConfigsError as Why;
        assert_eq!(self.id, 0, "metadata changes are serialised on shard 0");
        let _admin = self.admin.acquire_permit(1).await;
        for _ in 0..STALE_RETRIES {
            let previous =
                (self.topic_overrides(topic)).map_err(|_| Why::UnknownTopic(topic.into()))?;
            let mut configs = if replace {
                BTreeMap::new()
            } else {
                previous.clone()
            };
            for (name, value) in &changes {
                match value {
                    Some(value) => configs.insert(name.clone(), value.clone()),
                    None => configs.remove(name),
                };
            }
            (self.config.log)
                .with_overrides(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| Why::InvalidConfig(e.to_string()))?;
            if validate_only {
                return Ok(());
            }
            let change = MetadataChange::AlterTopicConfigs {
                topic: topic.to_string(),
                previous,
                configs,
            };
            match self.commit(change).await {
                Ok(committed) => {
                    self.carry_out(committed).await;
                    tracing::info!(topic, "topic configs altered");
                    return Ok(());
                }
                // Another node's change came first: the group has applied it by now, and the
                // shards learn it before the change is computed again.
                Err(ProposeError::Refused(MetadataError::Stale(_))) => {
                    if let Some(node) = self.metadata_node() {
                        self.carry_out(node.metadata()).await;
                    }
                }
                Err(ProposeError::Refused(MetadataError::UnknownTopic(_))) => {
                    return Err(Why::UnknownTopic(topic.into()))
                }
                Err(e) => return Err(Why::TimedOut(e.to_string())),
            }
        }
        Err(Why::TimedOut(format!(
            "{topic}'s configs kept changing: tried {STALE_RETRIES} times"
        )))
    }

    /// The partitions this shard holds of topics whose configs differ from `previous` (the
    /// metadata this shard served before the current one) run with the new configs. Only
    /// changed topics are looked at again: most metadata changes are about leaders and ISRs.
    pub(super) fn apply_changed_topic_configs(&self, previous: &Metadata) {
        let metadata = self.metadata();
        for host in self.owned() {
            let Some(topic) = metadata.topic(&host.topic) else {
                continue;
            };
            let before = previous.topic(&topic.name).map(|t| (t.id, &t.configs));
            if before != Some((topic.id, &topic.configs)) {
                self.apply_topic_configs(&host, topic);
            }
        }
    }

    /// A partition this shard holds runs with its topic's configs as the metadata has them.
    fn apply_topic_configs(&self, host: &PartitionHost, topic: &TopicMeta) {
        let overrides = (topic.configs.iter()).map(|(k, v)| (k.as_str(), v.as_str()));
        let config = match self.config.log.with_overrides(overrides) {
            Ok(config) => config,
            Err(e) => {
                // Checked before it was committed: only a node with other defaults gets here.
                tracing::error!(topic = %topic.name, error = %e, "topic configs not applied");
                return;
            }
        };
        if host.log.config() != config {
            match host.log.set_config(config) {
                Ok(()) => tracing::info!(topic = %topic.name, partition = host.partition,
                    "partition runs with the topic's new configs"),
                Err(e) => tracing::error!(topic = %topic.name, error = %e,
                    "topic configs not applied"),
            }
        }
    }
}
