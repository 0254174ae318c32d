//! The metadata a node starts with, and the partitions on disk checked against it.
//!
//! The metadata group is the truth about which topics exist; its log lives in
//! `<data>/.oxbow/metadata/`. A data directory from before the group existed seeds it once:
//! from the metadata file of the previous version (`.oxbow/metadata.json`, moved aside to
//! `metadata.json.migrated` afterwards), or, when there is none either, from its topic
//! directories (and their `.config.toml` overrides). After that, a topic directory the metadata
//! does not know (a delete interrupted by a crash, or a copy dropped in by hand) is set aside
//! under `.stray/`, as Kafka sets aside stray logs: never served, never deleted, and never
//! mistaken for a new topic of the same name.

use super::cluster::{initial_voters, ClusterLink};
use oxbow_cluster::metadata_group::{
    broker_id, open_node, pump_inbound, raft_id, MetadataNode, Nowhere, Outbox, ProposeError,
    TransportOutbox,
};
use oxbow_cluster::transport::Transport;
use oxbow_cluster::{
    random_cluster_id, BrokerMeta, LocalMetadataStore, Metadata, MetadataChange, TopicId, TopicMeta,
};
use oxbow_core::BrokerConfig;
use oxbow_dispatch::shard::Shard;
use oxbow_storage::layout::{
    discover_partitions, partition_dir, set_aside_topic, Discovery, FoundPartition,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The directory of the node's metadata group log.
pub(super) fn group_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(".oxbow").join("metadata")
}

/// Loads the node's metadata (seeding a new group from an older data directory) and lists the
/// partitions each shard should open: every partition the metadata places on this broker, on
/// disk or not (one that is missing was created by a change that committed just before a
/// crash).
pub(super) fn load(config: &BrokerConfig) -> Result<(Metadata, Vec<FoundPartition>), String> {
    let data_dir = &config.data_dir;
    let legacy = LocalMetadataStore::new(data_dir);
    let discovery = discover_partitions(data_dir).map_err(|e| format!("{data_dir:?}: {e}"))?;
    for (path, reason) in &discovery.ignored {
        tracing::warn!(?path, reason, "ignoring entry in data directory");
    }
    // Offered every time; the group takes it only while its log is new, so a first start that
    // failed part way offers it again. Why it cannot be made matters only then.
    let seed = match legacy.load() {
        Ok(Some(kept)) => Ok(kept),
        Ok(None) => adopt(data_dir, &discovery, config.node_id),
        Err(e) => Err(e.to_string()),
    };
    let (metadata, seeded) = recover(config, seed.clone())?;
    if let (true, Ok(seed)) = (seeded, &seed) {
        if legacy.path().exists() {
            tracing::info!(topics = seed.topics.len(), path = ?legacy.path(),
                "metadata moved into the metadata group");
        } else {
            forget_legacy_overrides(data_dir, seed);
            tracing::info!(
                topics = seed.topics.len(),
                "metadata created from the data directory"
            );
        }
    }
    if legacy.path().exists() {
        let aside = legacy.path().with_extension("json.migrated");
        std::fs::rename(legacy.path(), &aside)
            .map_err(|e| format!("moving {:?} aside: {e}", legacy.path()))?;
    }
    set_aside_strays(data_dir, &discovery, &metadata)?;
    let partitions = metadata
        .topics
        .values()
        .flat_map(|topic| {
            let here = |p: &u32| {
                topic.partitions[*p as usize]
                    .replicas
                    .contains(&config.node_id)
            };
            (0..topic.partitions.len() as u32)
                .filter(here)
                .map(|partition| FoundPartition {
                    topic: topic.name.clone(),
                    partition,
                    dir: partition_dir(data_dir, &topic.name, partition),
                })
        })
        .collect();
    Ok((metadata, partitions))
}

/// Starts this broker's node of the metadata group on the current shard (shard 0), talking
/// to the other voters over `link` when the node runs with others.
pub async fn start_node(
    config: &BrokerConfig,
    link: Option<ClusterLink>,
) -> Result<MetadataNode, String> {
    let disk = Rc::new(oxbow_storage::DmaDisk);
    let voters = initial_voters(config);
    let dir = group_dir(&config.data_dir);
    let opened = open_node(&dir, disk, config.node_id, &voters, &config.metadata, None)
        .await
        .map_err(|e| e.to_string())?;
    let (core, log) = (opened.core, opened.disk);
    let group = &config.metadata;
    let tick = Duration::from_millis(group.tick_ms);
    let timeout = Duration::from_millis(group.proposal_timeout_ms);
    let outbox: Box<dyn Outbox> = match &link {
        Some(link) => Box::new(TransportOutbox::new(link.transport.clone())),
        None => Box::new(Nowhere),
    };
    let node = MetadataNode::spawn(core, log, outbox, tick, timeout).map_err(|e| e.to_string())?;
    if let Some(link) = link {
        // Ends when the transport stops.
        let transport = std::sync::Arc::downgrade(&link.transport);
        let pump = pump_inbound(
            link.inbound,
            node.clone(),
            link.joins.0,
            link.replication.0,
            transport,
        );
        glommio::spawn_local(pump).detach();
    }
    Ok(node)
}

/// Names the cluster if it has no name yet, and registers `broker` unless it is registered
/// as it is. A clustered node waits for the group's quorum as long as it takes (the other
/// nodes may be starting too); a node alone fails when its one-voter group cannot commit.
pub(super) async fn register(
    shard: &Shard,
    broker: BrokerMeta,
    transport: Option<Arc<Transport>>,
) -> Result<(), String> {
    let join = (shard.config.cluster.join_via()).expect("validated by BrokerConfig::validate");
    let registered = shard.metadata().brokers.contains_key(&broker.id);
    if let (Some(member), Some(transport), false) = (join, &transport, registered) {
        // Not a member yet: one that is adds it, its log then brings the cluster here.
        let node = shard
            .metadata_node()
            .expect("shard 0 runs the metadata node");
        tracing::info!(via = member.node_id, "joining the cluster");
        super::cluster::join(&node, transport, member.node_id, &broker).await?;
        return Ok(());
    }
    if shard.metadata().cluster_id.is_none() {
        let id = random_cluster_id(&mut fastrand::Rng::new());
        match commit(shard, MetadataChange::SetClusterId(id.clone())).await {
            Ok(()) => tracing::info!(cluster_id = %id, "cluster named"),
            // Refused only when named already: another node named it first.
            Err(ProposeError::Refused(_)) => {}
            Err(e) => return Err(format!("naming the cluster: {e}")),
        }
    }
    // Clustered, the registration is committed on every start even when nothing changed: once
    // it is applied here, this node's metadata holds everything committed before it, and its
    // replicated partitions may take the roles it names.
    let clustered = shard.config.cluster.is_clustered();
    if clustered || shard.metadata().brokers.get(&broker.id) != Some(&broker) {
        let id = broker.id;
        commit(shard, MetadataChange::RegisterBroker(broker))
            .await
            .map_err(|e| format!("registering broker {id}: {e}"))?;
    }
    Ok(())
}

/// Commits `change`, proposing it again while a clustered group has no quorum or changes
/// leader (both changes are idempotent, so a repeat that finds the first committed is harmless
/// or refused).
async fn commit(shard: &Shard, change: MetadataChange) -> Result<(), ProposeError> {
    loop {
        match shard.change_cluster(change.clone()).await {
            Err(e @ (ProposeError::TimedOut(_) | ProposeError::LeaderChanged))
                if shard.config.cluster.is_clustered() =>
            {
                tracing::warn!(reason = %e, "waiting for a quorum of the metadata group");
            }
            outcome => return outcome,
        }
    }
}

/// Opens the metadata group's log on a short-lived executor of this thread (the shards, which
/// need the metadata to open their partitions, are not started yet), seeds it if it is new,
/// and returns the metadata it had committed.
fn recover(
    config: &BrokerConfig,
    seed: Result<Metadata, String>,
) -> Result<(Metadata, bool), String> {
    let config = config.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("metadata-recovery")
        .spawn(move || async move {
            let data_dir = &config.data_dir;
            oxbow_storage::prepare_shard_io(data_dir, "metadata-recovery")
                .await
                .map_err(|e| format!("preparing direct I/O: {e}"))?;
            let disk = Rc::new(oxbow_storage::DmaDisk);
            let voters = initial_voters(&config);
            let opened = open_node(
                &group_dir(data_dir),
                disk,
                config.node_id,
                &voters,
                &config.metadata,
                seed.as_ref().ok(),
            )
            .await
            .map_err(|e| e.to_string())?;
            opened.disk.close().await;
            if let (true, Err(e)) = (opened.was_new, &seed) {
                return Err(format!("the metadata to start the group from: {e}"));
            }
            let unseeded = seed.as_ref().map_or(0, |seed| seed.topics.len());
            if opened.was_new && !opened.seeded && unseeded > 0 {
                return Err(format!(
                    "this data directory holds {unseeded} topic(s) from before the metadata \
                     group, which only a node starting alone moves into it: start it once \
                     without cluster settings first"
                ));
            }
            let conf = opened.core.conf_state();
            let (voters, learners) = (conf.voters, conf.learners);
            let mut configured: Vec<u64> = initial_voters(&config).into_iter().map(raft_id).collect();
            configured.sort_unstable();
            let mut formed = voters.clone();
            formed.sort_unstable();
            if formed != configured && config.cluster.join.is_none() {
                tracing::warn!(group = ?brokers_of(&formed), configured = ?brokers_of(&configured),
                    "the metadata group was formed with other voters; the initial voters are ignored");
            }
            let member = (voters.iter().chain(&learners)).any(|&id| id == raft_id(config.node_id));
            // A joining node is not a member until a member adds it.
            if !member && config.cluster.join.is_none() {
                // Kafka refuses the same (meta.properties): this node would wait for votes forever.
                return Err(format!(
                    "this data directory belongs to broker(s) {:?} of its metadata group; \
                     node_id is {}",
                    brokers_of(&voters),
                    config.node_id
                ));
            }
            let metadata = (**opened.core.metadata()).clone();
            Ok::<(Metadata, bool), String>((metadata, opened.seeded))
        })
        .map_err(|e| format!("starting the recovery thread: {e}"))?
        .join()
        .map_err(|e| format!("recovering the metadata group: {e:?}"))?
}

/// Broker ids of Raft ids.
fn brokers_of(raft_ids: &[u64]) -> Vec<i32> {
    raft_ids.iter().filter_map(|&id| broker_id(id)).collect()
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

    /// Runs the node as a broker's start does: it elects itself and commits a change, so its
    /// log is no longer new.
    fn run_once(config: &BrokerConfig) {
        let config = config.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                oxbow_storage::prepare_shard_io(&config.data_dir, "test")
                    .await
                    .unwrap();
                let node = start_node(&config, None).await.unwrap();
                let name = MetadataChange::SetClusterId("test".into());
                node.propose(name).await.unwrap();
                node.close().await;
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn config(data_dir: &Path, node_id: i32) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.to_path_buf(),
            node_id,
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn a_directory_without_metadata_is_adopted_once_with_its_overrides() {
        let dir = tempfile::tempdir().unwrap();
        for partition in [0, 2] {
            make_partition(dir.path(), "orders", partition);
        }
        let overrides = [("retention.ms".to_string(), "5000".to_string())].into();
        oxbow_storage::topic_config::write_overrides(dir.path(), "orders", &overrides).unwrap();
        let (metadata, partitions) = load(&config(dir.path(), 3)).unwrap();
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
        let (again, _) = load(&config(dir.path(), 3)).unwrap();
        assert_eq!(again, metadata, "adopted once, then loaded");
    }

    #[test]
    fn a_data_directory_of_another_node_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load(&config(dir.path(), 3)).unwrap();
        let refused = load(&config(dir.path(), 4)).unwrap_err();
        assert!(refused.contains("belongs to broker(s) [3]"), "{refused}");
        assert!(load(&config(dir.path(), 3)).is_ok());
    }

    #[test]
    fn a_first_start_that_stopped_before_seeding_seeds_on_the_next() {
        let dir = tempfile::tempdir().unwrap();
        make_partition(dir.path(), "orders", 0);
        // The group's files exist, its log is empty: the seed never became durable.
        let (empty, seeded) = recover(&config(dir.path(), 0), Ok(Metadata::default())).unwrap();
        assert!(empty.topics.is_empty() && !seeded);
        assert!(group_dir(dir.path()).join("state").exists());
        let (metadata, partitions) = load(&config(dir.path(), 0)).unwrap();
        assert!(metadata.topic("orders").is_some());
        assert_eq!(partitions.len(), 1);
        assert!(
            dir.path().join("orders").join("0").is_dir(),
            "not set aside"
        );
    }

    #[test]
    fn the_metadata_file_of_the_previous_version_seeds_the_group_once() {
        let dir = tempfile::tempdir().unwrap();
        make_partition(dir.path(), "orders", 0);
        let legacy = LocalMetadataStore::new(dir.path());
        let topic =
            TopicMeta::on_one_broker("orders".into(), TopicId([7; 16]), 1, 0, BTreeMap::new());
        let mut kept = Metadata::default();
        kept.apply(&oxbow_cluster::MetadataChange::CreateTopic(topic))
            .unwrap();
        legacy.store(&kept).unwrap();
        let (metadata, partitions) = load(&config(dir.path(), 0)).unwrap();
        assert_eq!((metadata, partitions.len()), (kept.clone(), 1));
        assert!(!legacy.path().exists());
        assert!(legacy.path().with_extension("json.migrated").exists());
        let (again, _) = load(&config(dir.path(), 0)).unwrap();
        assert_eq!(again, kept, "read from the group afterwards");
    }

    #[test]
    fn topic_directories_the_metadata_does_not_hold_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (metadata, _) = load(&config(dir.path(), 0)).unwrap();
        assert!(metadata.topics.is_empty());
        run_once(&config(dir.path(), 0));
        make_partition(dir.path(), "deleted", 0);
        std::fs::write(partition_dir(dir.path(), "deleted", 0).join("x"), b"kept").unwrap();
        let (metadata, partitions) = load(&config(dir.path(), 0)).unwrap();
        assert_eq!((metadata.topics.len(), partitions.len()), (0, 0));
        assert!(!dir.path().join("deleted").exists());
        let strays: Vec<_> = std::fs::read_dir(dir.path().join(".stray"))
            .unwrap()
            .collect();
        assert_eq!(strays.len(), 1);
        let kept = strays[0].as_ref().unwrap().path().join("0").join("x");
        assert_eq!(std::fs::read(kept).unwrap(), b"kept");
        assert!(group_dir(dir.path()).join("state").exists());
    }
}
