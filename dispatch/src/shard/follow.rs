//! Metadata changes this node did not propose itself (another node's, or the controller's)
//! carried out on shard 0 in the order they were applied: partitions of new topics open,
//! every shard gets the new version, partitions of deleted topics close and go. Changes made
//! through topic administration were carried out before they were published, and are skipped.

use super::Shard;
use oxbow_cluster::Metadata;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// Follows the metadata group's applied changes for as long as the node runs (shard 0).
    pub async fn follow_metadata(self: Rc<Self>) {
        let Some(node) = self.metadata_node() else {
            return;
        };
        loop {
            let seen = self.metadata().version;
            if node.applied_version(seen + 1).await.is_none() {
                return;
            }
            let _admin = self.admin.acquire_permit(1).await;
            let current = self.metadata();
            let next = node.metadata();
            if next.version <= current.version {
                continue;
            }
            self.carry_out(&current, next).await;
        }
    }

    async fn carry_out(&self, current: &Metadata, next: Arc<Metadata>) {
        // A name can be deleted and created again between two versions: ids tell.
        let id_in = |metadata: &Metadata, name: &str| metadata.topic(name).map(|t| t.id);
        let created = (next.topics.values()).filter(|t| id_in(current, &t.name) != Some(t.id));
        for topic in created {
            let opened = match self
                .config
                .log
                .with_overrides((topic.configs.iter()).map(|(k, v)| (k.as_str(), v.as_str())))
            {
                Ok(config) => self.open_partitions(topic, &config).await,
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok(()) => tracing::info!(topic = %topic.name, "topic created by the group"),
                // The topic stays in the metadata; its partitions here answer as unavailable
                // until the node restarts and opens them.
                Err(e) => tracing::error!(topic = %topic.name, error = %e, "opening partitions"),
            }
        }
        let gone: Vec<(String, u32)> = (current.topics.values())
            .filter(|t| id_in(&next, &t.name) != Some(t.id))
            .map(|t| (t.name.clone(), t.partitions.len() as u32))
            .collect();
        self.publish(next).await;
        for (name, partitions) in gone {
            match self.drop_partitions(&name, partitions).await {
                Ok(()) => tracing::info!(topic = %name, "topic deleted by the group"),
                Err(e) => tracing::error!(topic = %name, error = %e, "deleting partitions"),
            }
        }
    }
}
