//! Carrying out applied metadata on this node: partitions of new topics open, every shard gets
//! the new version, partitions of deleted topics close and go. Every change goes this way, in
//! the order the metadata group applied it, whoever proposed it: topic administration after
//! its own proposal (the metadata it gets back may hold other nodes' changes too), and the
//! follower below for changes nobody here proposed (another node's, the controller's, or one
//! that committed after its proposal timed out).

use super::Shard;
use oxbow_cluster::{Metadata, TopicMeta};
use oxbow_storage::layout::set_aside_topic;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// What could not be carried out, by topic name.
pub(super) type Failures = BTreeMap<String, String>;

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
            let next = node.metadata();
            if next.version > self.metadata().version {
                self.carry_out(next).await;
            }
        }
    }

    /// Brings this node from the metadata it serves to `next`; called with the admin permit.
    pub(super) async fn carry_out(&self, next: Arc<Metadata>) -> Failures {
        let current = self.metadata();
        // A name can be deleted and created again between two versions: ids tell.
        let id_in = |metadata: &Metadata, name: &str| metadata.topic(name).map(|t| t.id);
        let created: Vec<&TopicMeta> = (next.topics.values())
            .filter(|t| id_in(&current, &t.name) != Some(t.id))
            .collect();
        let gone: Vec<(String, u32)> = (current.topics.values())
            .filter(|t| id_in(&next, &t.name) != Some(t.id))
            .map(|t| (t.name.clone(), t.partitions.len() as u32))
            .collect();
        let mut failures = Failures::new();
        // A name taken by a new topic: the old one is forgotten and dropped first.
        let (replaced, gone): (Vec<_>, Vec<_>) = gone
            .into_iter()
            .partition(|(name, _)| next.topic(name).is_some());
        if !replaced.is_empty() {
            let mut without = (*current).clone();
            for (name, _) in &replaced {
                without.topics.remove(name);
            }
            self.publish(Arc::new(without)).await;
            self.drop_all(replaced, &mut failures).await;
        }
        for topic in created {
            if let Err(e) = self.open_created(topic).await {
                tracing::error!(topic = %topic.name, error = %e, "opening partitions");
                failures.insert(topic.name.clone(), e);
            }
        }
        // Reassignments: a replica gained here opens before the new metadata makes it a
        // follower; one lost closes and goes once no shard serves it any more.
        let (gained, lost) = replicas_moved(&current, &next, self.config.node_id);
        for topic in gained {
            if let Err(e) = self.open_created(topic).await {
                tracing::error!(topic = %topic.name, error = %e, "opening a new replica");
                failures.insert(topic.name.clone(), e);
            }
        }
        self.publish(next.clone()).await;
        self.drop_all(gone, &mut failures).await;
        for (topic, partition) in lost {
            let name: Arc<str> = Arc::from(topic.as_str());
            match self.drop_partition(&name, partition).await {
                Ok(()) => tracing::info!(topic, partition, "replica moved away, deleted"),
                Err(e) => {
                    tracing::error!(topic, partition, error = %e, "deleting a moved replica");
                    failures.insert(topic, e);
                }
            }
        }
        failures
    }

    async fn open_created(&self, topic: &TopicMeta) -> Result<(), String> {
        let here = topic.has_replica_on(self.config.node_id);
        let dir = self.config.data_dir.join(&topic.name);
        let known = (self.partitions.borrow()).contains_key(topic.name.as_str());
        if here && dir.exists() && !known {
            // Left by a delete that could not finish: never let a new topic inherit its data.
            let to = set_aside_topic(&self.config.data_dir, &topic.name)
                .map_err(|e| format!("setting aside old {}: {e}", topic.name))?;
            tracing::warn!(topic = %topic.name, to = ?to, "old topic directory set aside");
        }
        let overrides = (topic.configs.iter()).map(|(k, v)| (k.as_str(), v.as_str()));
        let config = self
            .config
            .log
            .with_overrides(overrides)
            .map_err(|e| e.to_string())?;
        self.open_partitions(topic, &config).await
    }

    async fn drop_all(&self, topics: Vec<(String, u32)>, failures: &mut Failures) {
        for (name, partitions) in topics {
            if let Err(e) = self.drop_partitions(&name, partitions).await {
                tracing::error!(topic = %name, error = %e, "deleting partitions");
                failures.insert(name, e.to_string());
            }
        }
    }
}

/// Topics (as `next` holds them) in which this node gained a replica between two versions of
/// the metadata, and the (topic, partition) replicas it lost, in topics both versions hold.
fn replicas_moved<'a>(
    current: &Metadata,
    next: &'a Metadata,
    me: i32,
) -> (Vec<&'a TopicMeta>, Vec<(String, u32)>) {
    let (mut gained, mut lost) = (Vec::new(), Vec::new());
    for topic in next.topics.values() {
        let Some(before) = current.topic(&topic.name).filter(|t| t.id == topic.id) else {
            continue;
        };
        let mut gains = false;
        for (number, partition) in topic.partitions.iter().enumerate() {
            let was = (before.partitions.get(number)).is_some_and(|p| p.replicas.contains(&me));
            match (was, partition.replicas.contains(&me)) {
                (false, true) => gains = true,
                (true, false) => lost.push((topic.name.clone(), number as u32)),
                _ => {}
            }
        }
        if gains {
            gained.push(topic);
        }
    }
    (gained, lost)
}
