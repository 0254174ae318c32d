//! DeleteGroups and OffsetDelete: what `kafka-consumer-groups.sh --delete` and
//! `--delete-offsets` (AdminClient's `delete_consumer_groups` and
//! `delete_consumer_group_offsets`) call. Committed offsets go as tombstones in the group's
//! offsets partition, replicated like commits; Kafka's rules decide what may go: a group with
//! members is not deleted (NON_EMPTY_GROUP), and a member's subscribed topic keeps its offsets
//! (GROUP_SUBSCRIBED_TO_TOPIC).

use super::super::wire::code;
use super::group::Group;
use super::offsets::{encode_commit, group_commits, group_partition};
use super::Coordinator;
use crate::shard::Shard;
use bytes::{Buf, Bytes};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

/// Kafka's error codes for group deletion.
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

impl Coordinator {
    /// Deletes `group_id` and its committed offsets (one group of a DeleteGroups request);
    /// the Kafka error code.
    pub(super) async fn delete_group(&self, shard: &Shard, group_id: &str) -> i16 {
        let members = (self.groups.borrow().get(group_id))
            .map(|g| g.members.len())
            .or_else(|| self.consumer_group_members(group_id));
        if members.is_some_and(|n| n > 0) {
            return NON_EMPTY_GROUP;
        }
        let partition = group_partition(shard, group_id);
        let log = match self.offsets_log(shard, partition).await {
            Ok(log) => log,
            Err(_) => return code::COORDINATOR_NOT_AVAILABLE,
        };
        let tombstones: Vec<(Bytes, Option<Bytes>)> = (group_commits(&log, group_id).into_iter())
            .map(|(key, _)| (key, None))
            .collect();
        if tombstones.is_empty() && members.is_none() {
            return GROUP_ID_NOT_FOUND;
        }
        if !tombstones.is_empty() {
            if let Err((error, why)) = self.store_commits(shard, partition, tombstones).await {
                tracing::warn!(group = %group_id, error = %why, "deleting the group failed");
                return error;
            }
        }
        self.groups.borrow_mut().remove(group_id);
        tracing::info!(group = %group_id, "group deleted");
        code::NONE
    }

    /// Deletes the committed offsets a request names, except those of topics the group's
    /// members subscribe to.
    pub(super) async fn delete_offsets(
        &self,
        shard: &Shard,
        request: OffsetDeleteRequest,
    ) -> OffsetDeleteResponse {
        let group_id = request.group_id.to_string();
        let mut response = OffsetDeleteResponse::default();
        let partition = group_partition(shard, &group_id);
        let log = match self.offsets_log(shard, partition).await {
            Ok(log) => log,
            Err(_) => {
                response.error_code = code::COORDINATOR_NOT_AVAILABLE;
                return response;
            }
        };
        let key =
            |topic: &str, p: i32| encode_commit(&(group_id.clone(), topic.into(), p), 0, None).0;
        let known = self.groups.borrow().contains_key(&group_id)
            || self.consumer_group_members(&group_id).is_some();
        let committed_any = !group_commits(&log, &group_id).is_empty();
        if !known && !committed_any {
            response.error_code = GROUP_ID_NOT_FOUND;
            return response;
        }
        let subscribed = |topic: &str| {
            (self.groups.borrow().get(&group_id)).is_some_and(|g| subscribes_to(g, topic))
                || self.consumer_group_subscribes(&group_id, topic)
        };
        let mut tombstones = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            let error = match subscribed(name) {
                true => GROUP_SUBSCRIBED_TO_TOPIC,
                false if shard.partition_count(name).is_none() => code::UNKNOWN_TOPIC_OR_PARTITION,
                false => code::NONE,
            };
            let mut out = OffsetDeleteResponseTopic::default();
            out.name = topic.name.clone();
            for p in &topic.partitions {
                let key = key(name, p.partition_index);
                if error == code::NONE && log.get(&key).is_some() {
                    tombstones.push((key, None));
                }
                out.partitions.push(
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error),
                );
            }
            response.topics.push(out);
        }
        if !tombstones.is_empty() {
            if let Err((error, why)) = self.store_commits(shard, partition, tombstones).await {
                tracing::warn!(group = %group_id, error = %why, "deleting offsets failed");
                response.error_code = error;
                response.topics.clear();
            }
        }
        response
    }
}

/// Whether a member of `group` subscribes to `topic`: consumer groups name their topics in
/// each member's subscription; a subscription that does not decode, or a group of another
/// protocol type with members, counts as subscribed (its offsets stay).
fn subscribes_to(group: &Group, topic: &str) -> bool {
    if group.members.is_empty() {
        return false;
    }
    if group.protocol_type != "consumer" {
        return true;
    }
    let chosen = group.protocol.as_deref();
    group.members.values().any(|member| {
        let metadata = (member.protocols.iter())
            .find(|(name, _)| Some(name.as_str()) == chosen)
            .or(member.protocols.first())
            .map(|(_, metadata)| metadata.clone());
        metadata.is_none_or(|mut bytes| {
            if bytes.remaining() < 2 {
                return true;
            }
            let version = bytes.get_i16();
            match ConsumerProtocolSubscription::decode(&mut bytes, version) {
                Ok(subscription) => subscription.topics.iter().any(|t| t.as_str() == topic),
                Err(_) => true,
            }
        })
    })
}
