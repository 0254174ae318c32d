//! Changing a topic's configs (Kafka's AlterConfigs and IncrementalAlterConfigs): the whole new
//! set of overrides is checked as CreateTopics checks them, committed through the metadata
//! group on shard 0, and every node's open partitions take it as the metadata reaches them
//! (`Shard::reconcile_roles`).

use super::{PartitionHost, Shard};
use oxbow_cluster::metadata_group::ProposeError;
use oxbow_cluster::{MetadataChange, MetadataError, TopicMeta};
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
        let current = (self.topic_overrides(topic))
            .map_err(|_| AlterConfigsError::UnknownTopic(topic.into()))?;
        let mut configs = if replace { BTreeMap::new() } else { current };
        for (name, value) in changes {
            match value {
                Some(value) => configs.insert(name, value),
                None => configs.remove(&name),
            };
        }
        self.alter_topic_configs(topic, configs, validate_only)
            .await
    }

    /// Gives `topic` exactly the overrides `configs` (Kafka names); with `validate_only`, only
    /// checks them. Shard 0 only.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), AlterConfigsError> {
        use AlterConfigsError as Why;
        assert_eq!(self.id, 0, "metadata changes are serialised on shard 0");
        let _admin = self.admin.acquire_permit(1).await;
        if self.metadata().topic(topic).is_none() {
            return Err(Why::UnknownTopic(topic.into()));
        }
        (self.config.log)
            .with_overrides(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| Why::InvalidConfig(e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let change = MetadataChange::AlterTopicConfigs {
            topic: topic.to_string(),
            configs,
        };
        let committed = self.commit(change).await.map_err(|e| match e {
            ProposeError::Refused(MetadataError::UnknownTopic(_)) => {
                Why::UnknownTopic(topic.into())
            }
            e => Why::TimedOut(e.to_string()),
        })?;
        self.carry_out(committed).await;
        tracing::info!(topic, "topic configs altered");
        Ok(())
    }

    /// A partition this shard holds runs with its topic's configs as the metadata has them.
    pub(super) fn apply_topic_configs(&self, host: &PartitionHost, topic: &TopicMeta) {
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
