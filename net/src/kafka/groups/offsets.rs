//! Committed offsets. A group's commits live in one partition of the internal topic
//! `__consumer_offsets` (the one Kafka's hash of the group id picks) as entries of a state log
//! (key: group, topic, partition; value: offset and metadata), acknowledged once fdatasynced
//! and compacted in the background. The group's coordinator runs on the shard that owns that
//! partition, so the partition is local to it.

use super::super::wire::{code, text};
use super::group::State;
use super::Coordinator;
use crate::shard::{PartitionError, Shard};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use oxbow_cluster::OFFSETS_TOPIC;
use oxbow_storage::{CompactionSettings, StateLog};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// (group, topic, partition).
pub(super) type OffsetKey = (String, String, i32);

/// The partition of `__consumer_offsets` that holds `group`'s offsets: Kafka's
/// `Utils.abs(groupId.hashCode()) % partitions`, so a group lands where Kafka would put it.
pub fn offsets_partition(group: &str, partitions: u32) -> u32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs as u32 % partitions
}

/// The partition of `__consumer_offsets` holding `group`'s offsets, with the topic's partition
/// count as this shard knows it.
pub(super) fn group_partition(shard: &Shard, group: &str) -> u32 {
    offsets_partition(group, shard.partition_count(OFFSETS_TOPIC).unwrap_or(1))
}

/// `group`'s commits in `log`: each key, with the (group, topic, partition) it names.
pub(super) fn group_commits(log: &StateLog, group: &str) -> Vec<(Bytes, OffsetKey)> {
    (log.entries().into_iter())
        .filter_map(|(key, value)| {
            let (named, _, _) = decode_commit(&key, &value)?;
            (named.0 == group).then_some((key, named))
        })
        .collect()
}

/// The overrides `__consumer_offsets` is created with: a state log is fdatasynced before it
/// acknowledges, cut into small segments so compaction can delete them, and never expires.
pub fn offsets_topic_configs(config: &oxbow_core::BrokerConfig) -> Vec<(String, String)> {
    [
        ("oxbow.flush", "always".to_string()),
        (
            "segment.bytes",
            config.state_logs.segment_bytes_max.to_string(),
        ),
        ("retention.ms", "-1".to_string()),
        ("retention.bytes", "-1".to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

/// Key and payload of one commit. Names are at most `u16::MAX` bytes (checked before).
pub(super) fn encode_commit(
    key: &OffsetKey,
    offset: i64,
    metadata: Option<&str>,
) -> (Bytes, Bytes) {
    let (group, topic, partition) = key;
    let mut k = BytesMut::new();
    for part in [group.as_bytes(), topic.as_bytes()] {
        k.put_u16(part.len() as u16);
        k.put_slice(part);
    }
    k.put_i32(*partition);
    let mut v = BytesMut::new();
    v.put_i64(offset);
    v.put_slice(metadata.unwrap_or_default().as_bytes());
    (k.freeze(), v.freeze())
}

pub(super) fn decode_commit(key: &[u8], value: &[u8]) -> Option<(OffsetKey, i64, Option<String>)> {
    if super::consumer_group_store::is_group_record(key) {
        return None;
    }
    let mut at = 0;
    let mut take = |n: usize| {
        let slice = key.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let group_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let group = String::from_utf8(take(group_len)?.to_vec()).ok()?;
    let topic_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let topic = String::from_utf8(take(topic_len)?.to_vec()).ok()?;
    let partition = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let offset = i64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let metadata = String::from_utf8(value[8..].to_vec())
        .ok()
        .filter(|m| !m.is_empty());
    Some(((group, topic, partition), offset, metadata))
}

impl Coordinator {
    /// The state log of an offsets partition this shard owns and leads, replayed on first
    /// use at each leader epoch. A new epoch also forgets the groups of the partition: their
    /// members went to another coordinator meanwhile, and rejoin here.
    pub(super) async fn offsets_log(
        &self,
        shard: &Shard,
        partition: u32,
    ) -> Result<Rc<StateLog>, String> {
        let epoch = (shard.metadata().topic(OFFSETS_TOPIC))
            .and_then(|t| t.partitions.get(partition as usize))
            .map_or(0, |p| p.leader_epoch);
        let cached = |logs: &HashMap<u32, (i32, Rc<StateLog>)>| {
            (logs.get(&partition))
                .filter(|(at, _)| *at == epoch)
                .map(|(_, log)| log.clone())
        };
        if let Some(log) = cached(&self.offset_logs.borrow()) {
            return Ok(log);
        }
        // One replay at a time, so two first requests do not both replay.
        let _loading = self.loading.acquire_permit(1).await;
        if let Some(log) = cached(&self.offset_logs.borrow()) {
            return Ok(log);
        }
        let host = shard
            .leading(OFFSETS_TOPIC, partition)
            .map_err(|e| format!("{OFFSETS_TOPIC}/{partition}: {e}"))?;
        if self.offset_logs.borrow_mut().remove(&partition).is_some() {
            let partitions = shard.partition_count(OFFSETS_TOPIC).unwrap_or(1);
            let elsewhere = |g: &String| offsets_partition(g, partitions) != partition;
            (self.groups.borrow_mut()).retain(|g, _| elsewhere(g));
            (self.consumer_groups.borrow_mut()).retain(|g, _| elsewhere(g));
        }
        let settings = CompactionSettings {
            compaction_bytes_min: shard.config.state_logs.compaction_bytes_min,
        };
        let batch_bytes_max = host.log.config().batch_bytes_max as usize;
        let log = StateLog::open(host.log.clone(), settings, batch_bytes_max)
            .await
            .map_err(|e| format!("{OFFSETS_TOPIC}/{partition}: {e}"))?;
        tracing::debug!(
            partition,
            epoch,
            keys = log.entries().len(),
            "group offsets loaded"
        );
        let log = Rc::new(log);
        self.restore_consumer_groups(&log);
        (self.offset_logs.borrow_mut()).insert(partition, (epoch, log.clone()));
        Ok(log)
    }

    /// Stores commits in an offsets partition once every in-sync replica holds them (Kafka
    /// commits offsets with acks=all), and compacts it in the background when due. Refusals
    /// come as the Kafka error to answer.
    pub(super) async fn store_commits(
        &self,
        shard: &Shard,
        partition: u32,
        changes: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<(), (i16, String)> {
        let unavailable = |e: String| (code::COORDINATOR_NOT_AVAILABLE, e);
        let log = self
            .offsets_log(shard, partition)
            .await
            .map_err(unavailable)?;
        log.put(changes)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        log.compact_in_background_if_due();
        let host = (shard.leading(OFFSETS_TOPIC, partition))
            .map_err(|e| (code::NOT_COORDINATOR, e.to_string()))?;
        let end = host.log.durable_end_offset();
        let timeout = Duration::from_millis(shard.config.offsets_commit_timeout_ms);
        (shard.wait_for_replicas(&host, end, timeout).await).map_err(|e| match e {
            PartitionError::TimedOut => (code::REQUEST_TIMED_OUT, e.to_string()),
            e => (code::NOT_COORDINATOR, e.to_string()),
        })
    }

    pub(super) async fn commit(
        &self,
        shard: &Shard,
        request: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        let group_id = request.group_id.to_string();
        let error = self.commit_error(&group_id, &request, version);
        if error != code::NONE {
            return commit_response(&request, |_, _| error);
        }
        let metadata_max = shard.config.offset_metadata_bytes_max as usize;
        // Per partition, as Kafka answers: a partition that does not exist, or metadata past
        // the limit, is refused; the rest of the request commits.
        let refusal = |topic: &str, p: &OffsetCommitRequestPartition| {
            let exists = (shard.partition_count(topic))
                .is_some_and(|count| (0..count as i64).contains(&(p.partition_index as i64)));
            if !exists {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if (p.committed_metadata.as_ref()).is_some_and(|m| m.len() > metadata_max) {
                code::OFFSET_METADATA_TOO_LARGE
            } else {
                code::NONE
            }
        };
        let mut changes = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            for p in (topic.partitions.iter()).filter(|p| refusal(name, p) == code::NONE) {
                let key = (group_id.clone(), name.to_string(), p.partition_index);
                let metadata = p.committed_metadata.as_ref().map(|m| m.as_str());
                let (k, v) = encode_commit(&key, p.committed_offset, metadata);
                changes.push((k, Some(v)));
            }
        }
        let partition = group_partition(shard, &group_id);
        if !changes.is_empty() {
            if let Err((error, why)) = self.store_commits(shard, partition, changes).await {
                tracing::warn!(group = %group_id, error = %why, "committing offsets failed");
                return commit_response(&request, |_, _| error);
            }
        }
        commit_response(&request, refusal)
    }

    /// Whether the group's membership allows this commit (Kafka's checks, in Kafka's order).
    fn commit_error(&self, group_id: &str, request: &OffsetCommitRequest, version: i16) -> i16 {
        // 65,535 bytes would start a key like a consumer group's record (see
        // `consumer_group_store.rs`).
        if group_id.is_empty() || group_id.len() >= u16::MAX as usize {
            return code::INVALID_GROUP_ID;
        }
        let names_fit = request
            .topics
            .iter()
            .all(|t| t.name.len() <= u16::MAX as usize);
        if !names_fit {
            return code::INVALID_TOPIC;
        }
        let member_id = request.member_id.as_str();
        let epoch = request.generation_id_or_member_epoch;
        let instance = request.group_instance_id.as_deref();
        // Members of the consumer group protocol commit with their member epoch, on v9+.
        self.member_commit_error(group_id, (member_id, instance), epoch, version >= 9)
    }

    /// Whether a member (id, instance id) may commit with `epoch` (a classic group's
    /// generation or a consumer group member's epoch; `epochs` says whether the request's
    /// version carries member epochs), in Kafka's order of checks.
    pub(super) fn member_commit_error(
        &self,
        group_id: &str,
        (member_id, instance): (&str, Option<&str>),
        epoch: i32,
        epochs: bool,
    ) -> i16 {
        if let Some(error) = self.consumer_member_error(group_id, member_id, epoch, epochs) {
            return error;
        }
        let groups = self.groups.borrow();
        match groups.get(group_id) {
            // Simple consumers commit with generation -1 to a group nobody is in.
            None => code::NONE,
            Some(g) if g.members.is_empty() && epoch < 0 => code::NONE,
            Some(g) => match g.instance_error(member_id, instance) {
                Some(fenced) => fenced,
                None if !g.members.contains_key(member_id) => code::UNKNOWN_MEMBER_ID,
                None if g.generation != epoch => code::ILLEGAL_GENERATION,
                // As Kafka: a member of the current generation may commit while the group
                // prepares a rebalance (consumers commit as their partitions are revoked); one
                // that has joined but not yet synced must wait for its assignment.
                None if g.state == State::CompletingRebalance => code::REBALANCE_IN_PROGRESS,
                None => code::NONE,
            },
        }
    }

    pub(super) async fn fetch_offsets(
        &self,
        shard: &Shard,
        request: OffsetFetchRequest,
    ) -> OffsetFetchResponse {
        let group_id = request.group_id.to_string();
        let mut response = OffsetFetchResponse::default();
        let log = match self
            .offsets_log(shard, group_partition(shard, &group_id))
            .await
        {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(group = %group_id, error = %e, "loading group offsets failed");
                response.error_code = code::COORDINATOR_NOT_AVAILABLE;
                return response;
            }
        };
        let committed = |topic: &str, partition: i32| {
            let (key, _) =
                encode_commit(&(group_id.clone(), topic.to_string(), partition), 0, None);
            let value = log.get(&key)?;
            decode_commit(&key, &value).map(|(_, offset, metadata)| (offset, metadata))
        };
        let wanted: Vec<(String, Vec<i32>)> = match &request.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect(),
            None => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (_, (_, topic, partition)) in group_commits(&log, &group_id) {
                    all.entry(topic).or_default().push(partition);
                }
                all.into_iter().collect()
            }
        };
        for (topic, partitions) in wanted {
            let mut out = OffsetFetchResponseTopic::default();
            out.name = TopicName(text(&topic));
            for partition in partitions {
                let mut p = OffsetFetchResponsePartition::default();
                p.partition_index = partition;
                p.committed_leader_epoch = -1;
                let (offset, metadata) = committed(&topic, partition).unwrap_or((-1, None));
                p.committed_offset = offset;
                p.metadata = Some(text(metadata.as_deref().unwrap_or_default()));
                out.partitions.push(p);
            }
            response.topics.push(out);
        }
        response
    }
}

/// Commits of a data directory from before `__consumer_offsets`: the newest of each key in the
/// log at `<data>/.oxbow/group-offsets`, grouped by the offsets partition that now holds them.
pub(super) fn group_by_partition(
    commits: HashMap<Bytes, Bytes>,
    partitions: u32,
) -> BTreeMap<u32, Vec<(Bytes, Option<Bytes>)>> {
    let mut by_partition: BTreeMap<u32, Vec<(Bytes, Option<Bytes>)>> = BTreeMap::new();
    for (key, value) in commits {
        if let Some(((group, _, _), _, _)) = decode_commit(&key, &value) {
            let partition = offsets_partition(&group, partitions);
            by_partition
                .entry(partition)
                .or_default()
                .push((key, Some(value)));
        }
    }
    by_partition
}

/// The answer to `request` with each partition's error code from `error_of(topic, partition)`.
pub(super) fn commit_response(
    request: &OffsetCommitRequest,
    error_of: impl Fn(&str, &OffsetCommitRequestPartition) -> i16,
) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    for topic in &request.topics {
        let mut out = OffsetCommitResponseTopic::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = p.partition_index;
            partition.error_code = error_of(topic.name.as_str(), p);
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_on_the_partition_kafka_picks() {
        // Java: "my-group".hashCode() == -1906497762, and 1906497762 % 50 == 12.
        assert_eq!(offsets_partition("my-group", 50), 12);
        assert_eq!(offsets_partition("", 50), 0);
        let java_hash = |s: &str| {
            s.encode_utf16()
                .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32))
        };
        assert_eq!(java_hash("hello"), 99_162_322);
        // Integer.MIN_VALUE maps to partition 0, as Utils.abs does.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(offsets_partition("polygenelubricants", 50), 0);
    }
}
