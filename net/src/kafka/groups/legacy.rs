//! Group offsets of data directories from before `__consumer_offsets`: a private log at
//! `<data>/.oxbow/group-offsets` that was replayed whole at every start and never compacted.
//! Moved into the offsets topic once, at start, before any client is served; the old log is
//! removed only after every commit is stored again (a crash in between repeats the move).

use super::offsets::{decode_commit, group_by_partition};
use super::{offsets_topic_configs, Coordinator};
use crate::shard::Shard;
use bytes::Bytes;
use oxbow_cluster::OFFSETS_TOPIC;
use oxbow_core::placement::owner_shard;
use oxbow_core::{FlushPolicy, LogConfig};
use oxbow_storage::{OpenOptions, Partition};
use std::collections::HashMap;

/// Moves the old log's commits into `__consumer_offsets`; returns how many there were.
pub async fn migrate(shard: &Shard) -> Result<usize, String> {
    let dir = shard.config.data_dir.join(".oxbow").join("group-offsets");
    if !dir.exists() {
        return Ok(0);
    }
    let config = LogConfig {
        flush: FlushPolicy::Always,
        retention_age_max_ms: None,
        retention_bytes_max: None,
        ..LogConfig::default()
    };
    let log = Partition::open(&dir, config, OpenOptions::default())
        .await
        .map_err(|e| format!("{dir:?}: {e}"))?;
    let commits = read_all(&log).await;
    log.close().await;
    let commits = commits.map_err(|e| format!("{dir:?}: {e}"))?;
    let count = commits.len();
    if count > 0 {
        let partitions = shard
            .ensure_internal_topic(
                OFFSETS_TOPIC,
                (
                    shard.config.offsets_topic_partitions,
                    shard.config.offsets_topic_replication_factor,
                ),
                offsets_topic_configs(&shard.config),
            )
            .await
            .map_err(|e| format!("creating {OFFSETS_TOPIC}: {e}"))?;
        for (partition, changes) in group_by_partition(commits, partitions) {
            let target = owner_shard(OFFSETS_TOPIC, partition, shard.shards());
            shard
                .run_on(target, move |shard| async move {
                    let coordinator = shard.extension::<Coordinator>()?;
                    let stored = coordinator.store_commits(&shard, partition, changes).await;
                    Some(stored.map_err(|(_, why)| why))
                })
                .await
                .flatten()
                .unwrap_or_else(|| Err("the coordinator's shard is gone".into()))?;
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {dir:?}: {e}"))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("syncing {parent:?}: {e}"))?;
    }
    tracing::info!(commits = count, "group offsets moved to {OFFSETS_TOPIC}");
    Ok(count)
}

/// The newest commit of each key, in log order.
async fn read_all(log: &Partition) -> Result<HashMap<Bytes, Bytes>, String> {
    let mut commits = HashMap::new();
    let mut next = log.log_start_offset();
    loop {
        let batches = log.read(next, 1 << 20).await.map_err(|e| e.to_string())?;
        let Some(last) = batches.last() else { break };
        next = last.last_offset() + 1;
        for batch in &batches {
            // The old coordinator wrote this log uncompressed: a batch bounds its records.
            let records = batch
                .records(batch.len() as u64)
                .map_err(|e| e.to_string())?;
            for record in records {
                let record = record.map_err(|e| e.to_string())?;
                if let (Some(key), Some(value)) = (record.key, record.value) {
                    if decode_commit(&key, &value).is_some() {
                        commits.insert(key, value);
                    }
                }
            }
        }
    }
    Ok(commits)
}
