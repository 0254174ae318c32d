//! The metadata a node starts with, and the partitions on disk checked against it.
//!
//! The metadata store is the truth about which topics exist. A data directory from before the
//! store existed is adopted once: its topic directories (and their `.config.toml` overrides)
//! become the first metadata. After that, a topic directory the metadata does not know (a
//! delete interrupted by a crash, or a copy dropped in by hand) is set aside under
//! `.stray/`, as Kafka sets aside stray logs: never served, never deleted, and never
//! mistaken for a new topic of the same name.

use oxbow_cluster::{LocalMetadataStore, Metadata, MetadataStore, TopicId, TopicMeta};
use oxbow_storage::layout::{
    discover_partitions, partition_dir, set_aside_topic, Discovery, FoundPartition,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Loads the node's metadata (adopting a directory without any) and lists the partitions
/// each shard should open: every partition the metadata holds, on disk or not (one that is
/// missing was created by a change that committed just before a crash).
pub(super) fn load(
    data_dir: &Path,
    node_id: i32,
) -> Result<(LocalMetadataStore, Metadata, Vec<FoundPartition>), String> {
    let store = LocalMetadataStore::new(data_dir);
    let discovery = discover_partitions(data_dir).map_err(|e| format!("{data_dir:?}: {e}"))?;
    for (path, reason) in &discovery.ignored {
        tracing::warn!(?path, reason, "ignoring entry in data directory");
    }
    let metadata = match store.load().map_err(|e| e.to_string())? {
        Some(metadata) => metadata,
        None => {
            let adopted = adopt(data_dir, &discovery, node_id)?;
            store.store(&adopted).map_err(|e| e.to_string())?;
            forget_legacy_overrides(data_dir, &adopted);
            tracing::info!(topics = adopted.topics.len(), path = ?store.path(),
                "metadata created from the data directory");
            adopted
        }
    };
    set_aside_strays(data_dir, &discovery, &metadata)?;
    let partitions = metadata
        .topics
        .values()
        .flat_map(|topic| {
            (0..topic.partitions.len() as u32).map(|partition| FoundPartition {
                topic: topic.name.clone(),
                partition,
                dir: partition_dir(data_dir, &topic.name, partition),
            })
        })
        .collect();
    Ok((store, metadata, partitions))
}

/// The metadata of a data directory written before the store existed.
fn adopt(data_dir: &Path, discovery: &Discovery, node_id: i32) -> Result<Metadata, String> {
    let mut counts = BTreeMap::<&str, u32>::new();
    for found in &discovery.partitions {
        let count = counts.entry(&found.topic).or_default();
        *count = (*count).max(found.partition + 1);
    }
    let mut rng = fastrand::Rng::new();
    let mut metadata = Metadata::default();
    for (name, partitions) in counts {
        let configs = oxbow_storage::topic_config::read_overrides(data_dir, name)?;
        let topic = TopicMeta::on_one_broker(
            name.to_string(),
            TopicId::random(&mut rng),
            partitions,
            node_id,
            configs,
        );
        metadata
            .apply(&oxbow_cluster::MetadataChange::CreateTopic(topic))
            .map_err(|e| e.to_string())?;
    }
    Ok(metadata)
}

/// Removes the override files the metadata now holds, so no stale copy is left to edit.
fn forget_legacy_overrides(data_dir: &Path, metadata: &Metadata) {
    for name in metadata.topics.keys() {
        let path = oxbow_storage::topic_config::overrides_path(data_dir, name);
        if let Err(e) = oxbow_storage::layout::remove_if_present(&path) {
            tracing::warn!(?path, error = %e, "removing adopted topic overrides");
        }
    }
}

/// Moves topic directories the metadata does not hold to `<data>/.stray/`.
fn set_aside_strays(
    data_dir: &Path,
    discovery: &Discovery,
    metadata: &Metadata,
) -> Result<(), String> {
    let mut strays: Vec<&str> = discovery
        .partitions
        .iter()
        .filter(|found| metadata.topic(&found.topic).is_none())
        .map(|found| found.topic.as_str())
        .collect();
    strays.dedup();
    for topic in strays {
        let to =
            set_aside_topic(data_dir, topic).map_err(|e| format!("setting aside {topic}: {e}"))?;
        tracing::warn!(topic, to = ?to, "topic directory not in the metadata set aside");
    }
    for found in &discovery.partitions {
        if let Some(topic) = metadata.topic(&found.topic) {
            if found.partition as usize >= topic.partitions.len() {
                tracing::warn!(dir = ?found.dir, "partition directory not in the metadata ignored");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_partition(data_dir: &Path, topic: &str, partition: u32) {
        std::fs::create_dir_all(partition_dir(data_dir, topic, partition)).unwrap();
    }

    #[test]
    fn a_directory_without_metadata_is_adopted_once_with_its_overrides() {
        let dir = tempfile::tempdir().unwrap();
        for partition in [0, 2] {
            make_partition(dir.path(), "orders", partition);
        }
        let overrides = [("retention.ms".to_string(), "5000".to_string())].into();
        oxbow_storage::topic_config::write_overrides(dir.path(), "orders", &overrides).unwrap();
        let (_, metadata, partitions) = load(dir.path(), 3).unwrap();
        let orders = metadata.topic("orders").unwrap();
        assert_eq!(
            orders.partitions.len(),
            3,
            "the highest partition sets the count"
        );
        assert_eq!(
            (orders.partitions[1].leader, &orders.configs),
            (3, &overrides)
        );
        assert_eq!(partitions.len(), 3);
        let overrides_file = oxbow_storage::topic_config::overrides_path(dir.path(), "orders");
        assert!(!overrides_file.exists());
        let (_, again, _) = load(dir.path(), 3).unwrap();
        assert_eq!(again, metadata, "adopted once, then loaded");
    }

    #[test]
    fn topic_directories_the_metadata_does_not_hold_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (store, metadata, _) = load(dir.path(), 0).unwrap();
        assert!(metadata.topics.is_empty());
        make_partition(dir.path(), "deleted", 0);
        std::fs::write(partition_dir(dir.path(), "deleted", 0).join("x"), b"kept").unwrap();
        let (_, metadata, partitions) = load(dir.path(), 0).unwrap();
        assert_eq!((metadata.topics.len(), partitions.len()), (0, 0));
        assert!(!dir.path().join("deleted").exists());
        let strays: Vec<_> = std::fs::read_dir(dir.path().join(".stray"))
            .unwrap()
            .collect();
        assert_eq!(strays.len(), 1);
        let kept = strays[0].as_ref().unwrap().path().join("0").join("x");
        assert_eq!(std::fs::read(kept).unwrap(), b"kept");
        assert!(store.path().exists());
    }
}
