//! Which node and shard coordinate a group: the leader of the group's partition of
//! `__consumer_offsets` (Kafka's rule), on the shard that owns that partition. A group request
//! that reaches another node is answered NOT_COORDINATOR, which makes clients look the
//! coordinator up again.

use super::offsets::{offsets_partition, offsets_topic_configs};
use crate::kafka::wire::code;
use crate::shard::Shard;
use kafka_protocol::messages::consumer_group_describe_response;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatResponse, DeleteGroupsResponse,
    DescribeGroupsResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    OffsetDeleteResponse, OffsetFetchResponse, RequestKind, ResponseKind, SyncGroupResponse,
};
use oxbow_cluster::OFFSETS_TOPIC;
use oxbow_core::placement::owner_shard;

/// Where a group is coordinated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupHome {
    /// On this node, by this shard.
    Here {
        /// The shard that owns the group's offsets partition.
        shard: usize,
    },
    /// On another node: the leader of the group's offsets partition, if it has one.
    Elsewhere {
        /// That broker.
        leader: Option<i32>,
    },
}

/// Where `group` is coordinated, creating `__consumer_offsets` on first use (as Kafka does
/// when a coordinator is first looked up).
pub async fn coordinator_of(shard: &Shard, group: &str) -> Result<GroupHome, String> {
    let config = &shard.config;
    let partitions = shard
        .ensure_internal_topic(
            OFFSETS_TOPIC,
            (
                config.offsets_topic_partitions,
                config.offsets_topic_replication_factor,
            ),
            offsets_topic_configs(config),
        )
        .await
        .map_err(|e| format!("creating {OFFSETS_TOPIC}: {e}"))?;
    let partition = offsets_partition(group, partitions);
    let metadata = shard.metadata();
    let leader = (metadata.topic(OFFSETS_TOPIC))
        .and_then(|topic| topic.partitions.get(partition as usize))
        .map(|meta| meta.leader)
        .filter(|&leader| leader >= 0);
    Ok(match leader {
        Some(leader) if leader == config.node_id => GroupHome::Here {
            shard: owner_shard(OFFSETS_TOPIC, partition, shard.shards()),
        },
        leader => GroupHome::Elsewhere { leader },
    })
}

/// The answer to a group request for a group this node does not coordinate.
pub fn not_coordinator(request: &RequestKind, version: i16) -> Option<ResponseKind> {
    refused(request, version, code::NOT_COORDINATOR)
}

/// The answer to a group request refused as a whole with `error`.
pub fn refused(request: &RequestKind, version: i16, error: i16) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::JoinGroup(_) => {
            let mut response = JoinGroupResponse::default();
            response.error_code = error;
            ResponseKind::JoinGroup(response)
        }
        RequestKind::SyncGroup(_) => {
            let mut response = SyncGroupResponse::default();
            response.error_code = error;
            ResponseKind::SyncGroup(response)
        }
        RequestKind::Heartbeat(_) => {
            let mut response = HeartbeatResponse::default();
            response.error_code = error;
            ResponseKind::Heartbeat(response)
        }
        RequestKind::LeaveGroup(_) => {
            let mut response = LeaveGroupResponse::default();
            response.error_code = error;
            ResponseKind::LeaveGroup(response)
        }
        RequestKind::OffsetCommit(request) => {
            ResponseKind::OffsetCommit(super::offsets::commit_response(request, |_, _| error))
        }
        RequestKind::OffsetFetch(request) => {
            let mut response = OffsetFetchResponse::default();
            // The top-level error exists from v2; v1 clients read it per partition.
            response.error_code = error;
            if version < 2 {
                for topic in request.topics.iter().flatten() {
                    let mut out = OffsetFetchResponseTopic::default();
                    out.name = topic.name.clone();
                    for &index in &topic.partition_indexes {
                        let mut partition = OffsetFetchResponsePartition::default();
                        partition.partition_index = index;
                        partition.committed_offset = -1;
                        partition.error_code = error;
                        out.partitions.push(partition);
                    }
                    response.topics.push(out);
                }
            }
            ResponseKind::OffsetFetch(response)
        }
        RequestKind::TxnOffsetCommit(request) => ResponseKind::TxnOffsetCommit(
            super::txn_offsets::txn_commit_response(request, |_, _| error),
        ),
        RequestKind::OffsetDelete(_) => {
            let mut response = OffsetDeleteResponse::default();
            response.error_code = error;
            ResponseKind::OffsetDelete(response)
        }
        RequestKind::DeleteGroups(request) => {
            let mut response = DeleteGroupsResponse::default();
            for group in &request.groups_names {
                response.results.push(
                    DeletableGroupResult::default()
                        .with_group_id(group.clone())
                        .with_error_code(error),
                );
            }
            ResponseKind::DeleteGroups(response)
        }
        RequestKind::ConsumerGroupHeartbeat(_) => {
            let mut response = ConsumerGroupHeartbeatResponse::default();
            response.error_code = error;
            ResponseKind::ConsumerGroupHeartbeat(response)
        }
        RequestKind::ConsumerGroupDescribe(request) => {
            let mut response = ConsumerGroupDescribeResponse::default();
            for group in &request.group_ids {
                let mut described = consumer_group_describe_response::DescribedGroup::default();
                described.group_id = group.clone();
                described.error_code = error;
                response.groups.push(described);
            }
            ResponseKind::ConsumerGroupDescribe(response)
        }
        RequestKind::DescribeGroups(request) => {
            let mut response = DescribeGroupsResponse::default();
            for group in &request.groups {
                let mut described = DescribedGroup::default();
                described.group_id = group.clone();
                described.error_code = error;
                response.groups.push(described);
            }
            ResponseKind::DescribeGroups(response)
        }
        _ => return None,
    })
}
