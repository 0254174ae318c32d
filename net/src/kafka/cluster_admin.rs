//! The cluster on the Kafka protocol, as KRaft exposes it: DescribeQuorum (KIP-595) describes
//! the metadata group (leader, epoch = Raft term, high watermark = commit index, voters and
//! observers with their progress), UnregisterBroker (KIP-631) removes a broker. Both run on
//! shard 0, where the metadata group's node lives.

use super::wire::{code, text};
use crate::shard::Shard;
use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};
use oxbow_cluster::metadata_group::{
    broker_id, raft_id, ConfChangeSingle, ConfChangeType, ConfChangeV2, Member, NodeStatus,
};
use oxbow_cluster::MetadataChange;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The name KRaft gives the metadata log; DescribeQuorum asks for its partition 0.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Kafka's BROKER_ID_NOT_REGISTERED.
const BROKER_ID_NOT_REGISTERED: i16 = 102;

/// What shard 0 knows about the group, carried to the shard that answers.
struct QuorumView {
    status: NodeStatus,
    leading: bool,
    /// Each member, and for how long it has been silent (as the leader hears it).
    members: Vec<(Member, Option<Duration>)>,
}

pub(super) async fn describe_quorum(
    shard: &Shard,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let view = shard
        .run_on(0, |shard| async move {
            let node = shard.metadata_node()?;
            let status = node.status();
            let leading = status.leader == raft_id(shard.config.node_id);
            let now = Instant::now();
            let members = (node.members().into_iter())
                .map(|m| (m, node.last_heard(m.id).map(|at| now - at)))
                .collect();
            Some(QuorumView {
                status,
                leading,
                members,
            })
        })
        .await
        .flatten();
    let mut response = DescribeQuorumResponse::default();
    for asked in &request.topics {
        let mut topic = TopicData::default();
        topic.topic_name = asked.topic_name.clone();
        for wanted in &asked.partitions {
            let mut partition = PartitionData::default();
            partition.partition_index = wanted.partition_index;
            match (&view, asked.topic_name.as_str() == METADATA_TOPIC) {
                (Some(view), true) if wanted.partition_index == 0 => {
                    describe(view, shard.config.node_id, &mut partition);
                }
                _ => partition.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            }
            topic.partitions.push(partition);
        }
        response.topics.push(topic);
    }
    response
}

fn describe(view: &QuorumView, me: i32, partition: &mut PartitionData) {
    partition.leader_id = BrokerId(broker_id(view.status.leader).unwrap_or(-1));
    partition.leader_epoch = view.status.term as i32;
    partition.high_watermark = view.status.commit as i64;
    if !view.leading {
        // Only the leader knows its members' progress (Kafka answers the same).
        partition.error_code = code::NOT_LEADER_OR_FOLLOWER;
        return;
    }
    let now_ms = oxbow_storage::now_ms();
    for (member, silent) in &view.members {
        let Some(id) = broker_id(member.id) else {
            continue;
        };
        let mut replica = ReplicaState::default();
        replica.replica_id = BrokerId(id);
        replica.log_end_offset = member.matched.map_or(-1, |m| m as i64);
        replica.last_fetch_timestamp = match (id == me, silent) {
            (true, _) => now_ms,
            (false, Some(silent)) => now_ms - silent.as_millis() as i64,
            (false, None) => -1,
        };
        replica.last_caught_up_timestamp = -1;
        match member.learner {
            true => partition.observers.push(replica),
            false => partition.current_voters.push(replica),
        }
    }
}

pub(super) async fn unregister_broker(
    shard: &Shard,
    request: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let id = request.broker_id.0;
    let outcome = shard
        .run_on(0, move |shard| remove_broker(shard, id))
        .await
        .unwrap_or_else(|| Err((code::KAFKA_STORAGE_ERROR, "shard 0 is gone".into())));
    let mut response = UnregisterBrokerResponse::default();
    if let Err((error, message)) = outcome {
        response.error_code = error;
        response.error_message = Some(text(&message));
    }
    response
}

/// Takes broker `id` out of the metadata group, then out of the registered brokers. Refused
/// while it holds replicas (there is nowhere to move them yet) and for the group's leader.
async fn remove_broker(shard: Rc<Shard>, id: i32) -> Result<(), (i16, String)> {
    let invalid = |message: String| (code::INVALID_REQUEST, message);
    let node = (shard.metadata_node()).ok_or_else(|| invalid("no metadata node".into()))?;
    let metadata = node.metadata();
    if !metadata.brokers.contains_key(&id) {
        return Err((
            BROKER_ID_NOT_REGISTERED,
            format!("broker {id} is not registered"),
        ));
    }
    if let Some(topic) = metadata.topics.values().find(|t| t.has_replica_on(id)) {
        return Err(invalid(format!(
            "broker {id} still holds replicas of {}: delete or move them first",
            topic.name
        )));
    }
    let member = raft_id(id);
    if node.members().iter().any(|m| m.id == member) {
        if node.status().leader == member {
            return Err(invalid(format!(
                "broker {id} leads the metadata group; stop it first so that another leads"
            )));
        }
        let mut change = ConfChangeV2::default();
        let mut remove = ConfChangeSingle::default();
        remove.set_change_type(ConfChangeType::RemoveNode);
        remove.node_id = member;
        change.mut_changes().push(remove);
        let timed_out = || {
            (
                code::REQUEST_TIMED_OUT,
                format!("broker {id} was not removed from the metadata group in time"),
            )
        };
        let timeout = Duration::from_millis(shard.config.metadata.proposal_timeout_ms);
        let deadline = Instant::now() + timeout;
        let tick = Duration::from_millis(shard.config.metadata.tick_ms);
        node.propose_membership(change)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        // Committed when it is gone from the membership this node applied.
        while node.members().iter().any(|m| m.id == member) {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            glommio::timer::sleep(tick).await;
        }
    }
    shard
        .change_cluster(MetadataChange::UnregisterBroker { id })
        .await
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(broker = id, "broker removed from the cluster");
    Ok(())
}
