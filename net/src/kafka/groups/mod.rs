//! The Kafka group coordinator: membership, rebalances, and committed offsets.
//!
//! Every shard runs a coordinator for the groups whose offsets it holds: a group belongs to the
//! partition of the internal topic `__consumer_offsets` that Kafka's hash of its id picks, to
//! the node that leads that partition and to the shard there that owns it ([`serve`] routes
//! each request to that shard, creating the topic on first use; another node answers
//! NOT_COORDINATOR, see `routing.rs`). The protocol is Kafka's classic one: members JoinGroup (the
//! coordinator waits until every known member has rejoined or the rebalance timeout passes),
//! the leader gets the member list and runs the assignor client-side, SyncGroup hands each
//! member its assignment, Heartbeat keeps the session alive and tells members to rejoin. A
//! member silent past its session timeout is removed even if its connection is gone.
//! Committed offsets are entries of a state log on the group's offsets partition (see
//! `offsets.rs`): fdatasynced before the commit is acknowledged, compacted in the background,
//! replayed when the partition is first used, so they survive kill -9.

mod assignor;
mod consumer_group;
mod consumer_group_store;
mod deletion;
mod group;
mod heartbeat;
mod legacy;
mod member_heartbeat;
mod membership;
mod offsets;
mod routing;
mod txn_offsets;

pub use legacy::migrate;
pub use offsets::{offsets_partition, offsets_topic_configs};
pub use routing::{coordinator_of, not_coordinator, refused, GroupHome};
pub use txn_offsets::end_transaction;

use super::wire::code;
use crate::authorize::Gate;
use crate::shard::Shard;
use group::State;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{
    offset_fetch_response, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetFetchRequest, ProducerId, RequestKind, ResponseKind,
};
use oxbow_cluster::Operation;
use oxbow_storage::StateLog;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Who sent a group request, as group descriptions report members.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The request header's client id.
    pub id: String,
    /// The client's host (`/1.2.3.4`).
    pub host: String,
    /// Its session, when the authorizer is on: a subscription by regular expression matches
    /// only the topics its principal may describe.
    pub session: Option<crate::session::Session>,
}

/// How often sessions and rebalance deadlines are checked.
pub const COORDINATOR_TICK: Duration = Duration::from_millis(100);

/// The low bits of a producer id that hold the node id handing it out.
const PRODUCER_ID_NODE_MASK: i64 = 0x3FF;

/// How long a member id handed out with MEMBER_ID_REQUIRED waits for its rejoin.
const PENDING_MEMBER_ID_TTL: Duration = Duration::from_secs(60);

/// Session timeouts a member may ask for (Kafka's broker defaults).
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<i32> = 6_000..=1_800_000;

/// One shard's group coordinator; see the module docs.
pub struct Coordinator {
    /// Groups of the classic protocol.
    groups: RefCell<HashMap<String, group::Group>>,
    /// Groups of the consumer group protocol (KIP-848), with members (an id is in at most one
    /// of the two maps).
    consumer_groups: RefCell<HashMap<String, consumer_group::ConsumerGroup>>,
    /// The topics consumer groups are assigned from, as of the last metadata version seen.
    topics_cache: RefCell<Option<Rc<heartbeat::Topics>>>,
    /// State logs of the offsets partitions this shard leads, by partition, once used, with
    /// the leader epoch they were replayed at (a new epoch replays again: what this node
    /// appended or received as a follower since is in the log, not in the old state).
    offset_logs: RefCell<HashMap<u32, (i32, Rc<StateLog>)>>,
    /// Held while an offsets partition is replayed.
    loading: glommio::sync::Semaphore,
    next_member: Cell<u64>,
    /// Next idempotent producer id (shard 0 of each node hands them out): seeded from the
    /// clock (1,024 ids per millisecond) so ids stay unique across restarts without being
    /// stored, with the node id in the low 10 bits so nodes never hand out the same one (a
    /// producer's state follows its partitions to other nodes).
    next_producer_id: Cell<i64>,
}

impl Coordinator {
    /// A coordinator of node `node_id` with no groups yet; offsets partitions are replayed
    /// when first used.
    pub fn new(node_id: i32) -> Rc<Coordinator> {
        Rc::new(Coordinator {
            groups: RefCell::default(),
            consumer_groups: RefCell::default(),
            topics_cache: RefCell::default(),
            offset_logs: RefCell::default(),
            loading: glommio::sync::Semaphore::new(1),
            next_member: Cell::new(0),
            next_producer_id: Cell::new(
                (oxbow_storage::now_ms() << 20) | (node_id as i64 & PRODUCER_ID_NODE_MASK),
            ),
        })
    }

    /// Every committed offset of the offsets partitions this shard has loaded: (group, topic,
    /// partition, offset). For metrics: with the log end offsets the partitions' leaders
    /// export, they give each group's lag per partition.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let logs: Vec<Rc<StateLog>> = (self.offset_logs.borrow().values())
            .map(|(_, log)| log.clone())
            .collect();
        logs.iter()
            .flat_map(|log| log.entries())
            .filter_map(|(key, value)| {
                let ((group, topic, partition), offset, _) = offsets::decode_commit(&key, &value)?;
                Some((group, topic, partition, offset))
            })
            .collect()
    }

    /// Expires silent members and closes rebalances whose timeout passed (`consumer`: the
    /// settings of KIP-848 groups). Call every [`COORDINATOR_TICK`].
    pub fn tick(&self, now: Instant, consumer: &oxbow_core::config::ConsumerGroupConfig) {
        self.expire_consumer_members(now, heartbeat::limits(consumer));
        for (name, group) in self.groups.borrow_mut().iter_mut() {
            // An id handed out for a rejoin that never came must not pile up.
            group
                .pending_ids
                .retain(|_, issued| now.duration_since(*issued) < PENDING_MEMBER_ID_TTL);
            // Silent members expire in every state, as Kafka's heartbeat expiry does: during a
            // rebalance, a member that neither rejoins nor heartbeats is dropped once its
            // session times out, so the others do not wait out the rebalance timeout for it.
            let expired: Vec<String> = group
                .members
                .iter()
                // A member blocked in JoinGroup or SyncGroup cannot heartbeat on its connection
                // (requests are answered one at a time, as Kafka does): it is not expired.
                .filter(|(_, m)| {
                    m.join.is_none()
                        && m.sync.is_none()
                        && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                tracing::info!(group = %name, ?expired, state = group.state.name(),
                    "session timeout: removing members");
                for id in &expired {
                    group.members.remove(id);
                }
                if group.state == State::PreparingRebalance {
                    // The rest may all have rejoined already: the join completes now.
                    if group.members.values().all(|m| m.join.is_some()) {
                        group.complete_join(now);
                    }
                } else if group.members.is_empty() {
                    group.state = State::Empty;
                    group.leader = None;
                } else {
                    group.prepare_rebalance(now);
                }
            }
            if group.state == State::PreparingRebalance
                && group.rebalance_deadline.is_some_and(|d| now >= d)
            {
                group.complete_join(now);
            }
        }
    }

    /// Answers one group request routed here by [`serve`].
    async fn handle(
        &self,
        shard: &Shard,
        request: RequestKind,
        version: i16,
        client: Client,
    ) -> Option<ResponseKind> {
        let now = Instant::now();
        Some(match request {
            RequestKind::JoinGroup(r) => {
                ResponseKind::JoinGroup(self.join(r, version, client, now).await)
            }
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(self.sync(r, now).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.heartbeat(r, now)),
            RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(self.leave(r, version, now)),
            RequestKind::OffsetCommit(r) => {
                ResponseKind::OffsetCommit(self.commit(shard, r, version).await)
            }
            RequestKind::OffsetFetch(r) => {
                ResponseKind::OffsetFetch(self.fetch_offsets(shard, r).await)
            }
            RequestKind::TxnOffsetCommit(r) => {
                ResponseKind::TxnOffsetCommit(self.txn_commit(shard, r, version).await)
            }
            RequestKind::OffsetDelete(r) => {
                ResponseKind::OffsetDelete(self.delete_offsets(shard, r).await)
            }
            RequestKind::DeleteGroups(r) => {
                let mut response = DeleteGroupsResponse::default();
                for group in r.groups_names {
                    let error_code = self.delete_group(shard, &group).await;
                    response.results.push(
                        DeletableGroupResult::default()
                            .with_group_id(group)
                            .with_error_code(error_code),
                    );
                }
                ResponseKind::DeleteGroups(response)
            }
            RequestKind::ListGroups(r) => ResponseKind::ListGroups(self.list(&r)),
            RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(self.describe(r)),
            RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(self.init_producer(r)),
            RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
                self.consumer_heartbeat(shard, r, client, now).await,
            ),
            RequestKind::ConsumerGroupDescribe(r) => {
                ResponseKind::ConsumerGroupDescribe(self.consumer_describe(shard, r))
            }
            _ => return None,
        })
    }

    /// Hands out a producer id for idempotent produce (transactions are not supported), or a
    /// new epoch for a producer that asks to bump its own.
    fn init_producer(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut response = InitProducerIdResponse::default();
        if request.transactional_id.is_some() {
            response.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            return response;
        }
        if request.producer_id.0 >= 0 && (0..i16::MAX).contains(&request.producer_epoch) {
            response.producer_id = request.producer_id;
            response.producer_epoch = request.producer_epoch + 1;
            return response;
        }
        let id = self.next_producer_id.get();
        self.next_producer_id.set(id + PRODUCER_ID_NODE_MASK + 1);
        response.producer_id = ProducerId(id);
        response.producer_epoch = 0;
        response
    }
}

/// A new producer id and its epoch for an idempotent producer of the native protocol, handed
/// out by shard 0's coordinator as InitProducerId's are, so ids never repeat across protocols.
pub async fn new_producer_id(shard: &Shard) -> Result<(i64, i16), String> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = shard
        .run_on(0, move |shard| async move {
            Some(shard.extension::<Coordinator>()?.init_producer(request))
        })
        .await
        .flatten()
        .ok_or_else(|| "the producer id coordinator is unavailable".to_string())?;
    Ok((response.producer_id.0, response.producer_epoch))
}

/// Answers a group request that arrived on any shard, on the shard of its group's coordinator
/// (ListGroups asks every shard; DescribeGroups each group's; InitProducerId shard 0's).
pub async fn serve(
    shard: &Shard,
    gate: &Gate<'_>,
    request: RequestKind,
    version: i16,
    client: Client,
) -> Result<ResponseKind, String> {
    if let Some(denied) = authorize(gate, &request, version) {
        return Ok(denied);
    }
    if let RequestKind::OffsetCommit(commit) = request {
        return commit_readable_topics(shard, gate, commit, version, client).await;
    }
    if let RequestKind::OffsetFetch(fetch) = request {
        return fetch_describable_topics(shard, gate, fetch, version, client).await;
    }
    let group = match &request {
        RequestKind::JoinGroup(r) => r.group_id.to_string(),
        RequestKind::SyncGroup(r) => r.group_id.to_string(),
        RequestKind::Heartbeat(r) => r.group_id.to_string(),
        RequestKind::LeaveGroup(r) => r.group_id.to_string(),
        RequestKind::OffsetCommit(r) => r.group_id.to_string(),
        RequestKind::OffsetFetch(r) => r.group_id.to_string(),
        RequestKind::OffsetDelete(r) => r.group_id.to_string(),
        RequestKind::TxnOffsetCommit(r) => r.group_id.to_string(),
        RequestKind::ConsumerGroupHeartbeat(r) => r.group_id.to_string(),
        RequestKind::ConsumerGroupDescribe(r) => {
            return consumer_describe_each(shard, r.clone(), version).await
        }
        RequestKind::DeleteGroups(r) => return delete_each(shard, r.clone(), version).await,
        RequestKind::ListGroups(r) => return list_everywhere(shard, r.clone()).await,
        RequestKind::DescribeGroups(r) => return describe_each(shard, r.clone(), version).await,
        _ => return on_shard(shard, 0, request, version, client).await,
    };
    match coordinator_of(shard, &group).await? {
        GroupHome::Here { shard: target } => {
            on_shard(shard, target, request, version, client).await
        }
        GroupHome::Elsewhere { .. } => {
            not_coordinator(&request, version).ok_or_else(|| "not a group request".into())
        }
    }
}

/// The refusal of a request the principal may not make: Read on the group for the requests
/// of members and their offsets (Kafka's rule); a producer id needs Write on some topic.
fn authorize(gate: &Gate<'_>, request: &RequestKind, version: i16) -> Option<ResponseKind> {
    let group = match request {
        RequestKind::JoinGroup(r) => &r.group_id,
        RequestKind::SyncGroup(r) => &r.group_id,
        RequestKind::Heartbeat(r) => &r.group_id,
        RequestKind::LeaveGroup(r) => &r.group_id,
        RequestKind::OffsetCommit(r) => &r.group_id,
        RequestKind::OffsetFetch(r) => &r.group_id,
        RequestKind::TxnOffsetCommit(r) => {
            // Kafka's rule: Write on the transactional id and Read on the group.
            if !gate.transactional_id(&r.transactional_id, Operation::Write) {
                return refused(
                    request,
                    version,
                    code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                );
            }
            &r.group_id
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            // Kafka's rule: the member must be allowed to describe every topic it names.
            let hidden = (r.subscribed_topic_names.iter().flatten())
                .any(|t| !gate.topic(t, Operation::Describe));
            if hidden && gate.group(&r.group_id, Operation::Read) {
                return refused(request, version, code::TOPIC_AUTHORIZATION_FAILED);
            }
            &r.group_id
        }
        RequestKind::InitProducerId(r) if r.transactional_id.is_none() => {
            if gate.may_produce_idempotently() {
                return None;
            }
            let mut response = InitProducerIdResponse::default();
            response.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
            return Some(ResponseKind::InitProducerId(response));
        }
        _ => return None,
    };
    match gate.group(group, Operation::Read) {
        true => None,
        false => refused(request, version, code::GROUP_AUTHORIZATION_FAILED),
    }
}

/// An OffsetCommit of the topics the principal may read; the others are answered
/// TOPIC_AUTHORIZATION_FAILED, partition by partition, as Kafka does.
async fn commit_readable_topics(
    shard: &Shard,
    gate: &Gate<'_>,
    mut commit: OffsetCommitRequest,
    version: i16,
    client: Client,
) -> Result<ResponseKind, String> {
    let (readable, denied): (Vec<_>, Vec<_>) = (std::mem::take(&mut commit.topics).into_iter())
        .partition(|t| gate.topic(&t.name, Operation::Read));
    let denied = OffsetCommitRequest::default().with_topics(denied);
    let mut refusals = offsets::commit_response(&denied, |_, _| code::TOPIC_AUTHORIZATION_FAILED);
    if readable.is_empty() {
        return Ok(ResponseKind::OffsetCommit(refusals));
    }
    commit.topics = readable;
    let group = commit.group_id.to_string();
    let request = RequestKind::OffsetCommit(commit);
    let answered = match coordinator_of(shard, &group).await? {
        GroupHome::Here { shard: target } => {
            on_shard(shard, target, request, version, client).await?
        }
        GroupHome::Elsewhere { .. } => {
            not_coordinator(&request, version).ok_or("not a group request")?
        }
    };
    Ok(match answered {
        ResponseKind::OffsetCommit(mut response) => {
            response.topics.append(&mut refusals.topics);
            ResponseKind::OffsetCommit(response)
        }
        other => other,
    })
}

/// An OffsetFetch of the topics the principal may describe: the others named are answered
/// TOPIC_AUTHORIZATION_FAILED per partition, and a fetch of every topic leaves them out, as
/// Kafka does.
async fn fetch_describable_topics(
    shard: &Shard,
    gate: &Gate<'_>,
    mut fetch: OffsetFetchRequest,
    version: i16,
    client: Client,
) -> Result<ResponseKind, String> {
    let mut denied = Vec::new();
    if let Some(topics) = fetch.topics.as_mut() {
        let (describable, refused): (Vec<_>, Vec<_>) = (std::mem::take(topics).into_iter())
            .partition(|t| gate.topic(&t.name, Operation::Describe));
        *topics = describable;
        denied = refused;
    }
    let group = fetch.group_id.to_string();
    let request = RequestKind::OffsetFetch(fetch);
    let answered = match coordinator_of(shard, &group).await? {
        GroupHome::Here { shard: target } => {
            on_shard(shard, target, request, version, client).await?
        }
        GroupHome::Elsewhere { .. } => {
            not_coordinator(&request, version).ok_or("not a group request")?
        }
    };
    let ResponseKind::OffsetFetch(mut response) = answered else {
        return Ok(answered);
    };
    (response.topics).retain(|t| gate.sees_topic(&t.name));
    for topic in denied {
        let partitions = (topic.partition_indexes.iter())
            .map(|&index| {
                offset_fetch_response::OffsetFetchResponsePartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(-1)
                    .with_error_code(code::TOPIC_AUTHORIZATION_FAILED)
            })
            .collect();
        response.topics.push(
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    Ok(ResponseKind::OffsetFetch(response))
}

async fn on_shard(
    shard: &Shard,
    target: usize,
    request: RequestKind,
    version: i16,
    client: Client,
) -> Result<ResponseKind, String> {
    shard
        .run_on(target, move |shard| async move {
            let coordinator = shard.extension::<Coordinator>()?;
            coordinator.handle(&shard, request, version, client).await
        })
        .await
        .flatten()
        .ok_or_else(|| "the group coordinator is unavailable".to_string())
}

async fn list_everywhere(
    shard: &Shard,
    request: ListGroupsRequest,
) -> Result<ResponseKind, String> {
    let mut all = ListGroupsResponse::default();
    for target in 0..shard.shards() {
        let request = request.clone();
        let listed = shard
            .run_on(target, |shard| async move {
                Some(shard.extension::<Coordinator>()?.list(&request))
            })
            .await
            .flatten()
            .ok_or_else(|| "the group coordinator is unavailable".to_string())?;
        all.groups.extend(listed.groups);
    }
    Ok(ResponseKind::ListGroups(all))
}

/// DescribeGroups: each group asked of its coordinator's shard, NOT_COORDINATOR for those
/// another node coordinates.
async fn describe_each(
    shard: &Shard,
    request: DescribeGroupsRequest,
    version: i16,
) -> Result<ResponseKind, String> {
    let mut all = DescribeGroupsResponse::default();
    for group in &request.groups {
        let mut one = request.clone();
        one.groups = vec![group.clone()];
        match ask_coordinator(shard, group, RequestKind::DescribeGroups(one), version).await? {
            ResponseKind::DescribeGroups(described) => all.groups.extend(described.groups),
            _ => return Err("the group coordinator answered out of turn".into()),
        }
    }
    Ok(ResponseKind::DescribeGroups(all))
}

/// ConsumerGroupDescribe: each group asked of its coordinator's shard, NOT_COORDINATOR for
/// those another node coordinates; a group the principal may not describe is refused.
async fn consumer_describe_each(
    shard: &Shard,
    request: ConsumerGroupDescribeRequest,
    version: i16,
) -> Result<ResponseKind, String> {
    let mut all = ConsumerGroupDescribeResponse::default();
    for group in &request.group_ids {
        let mut one = request.clone();
        one.group_ids = vec![group.clone()];
        let asked = RequestKind::ConsumerGroupDescribe(one);
        match ask_coordinator(shard, group, asked, version).await? {
            ResponseKind::ConsumerGroupDescribe(described) => all.groups.extend(described.groups),
            _ => return Err("the group coordinator answered out of turn".into()),
        }
    }
    Ok(ResponseKind::ConsumerGroupDescribe(all))
}

/// DeleteGroups: each group on its coordinator's shard, NOT_COORDINATOR for those another
/// node coordinates (the client asks each group's coordinator).
async fn delete_each(
    shard: &Shard,
    request: DeleteGroupsRequest,
    version: i16,
) -> Result<ResponseKind, String> {
    let mut all = DeleteGroupsResponse::default();
    for group in &request.groups_names {
        let mut one = request.clone();
        one.groups_names = vec![group.clone()];
        match ask_coordinator(shard, group, RequestKind::DeleteGroups(one), version).await? {
            ResponseKind::DeleteGroups(deleted) => all.results.extend(deleted.results),
            _ => return Err("the group coordinator answered out of turn".into()),
        }
    }
    Ok(ResponseKind::DeleteGroups(all))
}

/// `request`, about `group` alone, answered by its coordinator here or refused as
/// NOT_COORDINATOR.
async fn ask_coordinator(
    shard: &Shard,
    group: &str,
    request: RequestKind,
    version: i16,
) -> Result<ResponseKind, String> {
    match coordinator_of(shard, group).await? {
        GroupHome::Here { shard: target } => {
            on_shard(shard, target, request, version, Client::default()).await
        }
        GroupHome::Elsewhere { .. } => {
            not_coordinator(&request, version).ok_or_else(|| "not a group request".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_carry_their_node_and_never_repeat_across_nodes() {
        let new_id = |coordinator: &Coordinator| {
            // An idempotent producer's first ask: no transactional id, no id yet.
            let request = InitProducerIdRequest::default().with_transactional_id(None);
            coordinator.init_producer(request).producer_id.0
        };
        let (one, two) = (Coordinator::new(1), Coordinator::new(2));
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let (a, b) = (new_id(&one), new_id(&two));
            assert_eq!(
                (a & PRODUCER_ID_NODE_MASK, b & PRODUCER_ID_NODE_MASK),
                (1, 2)
            );
            assert!(ids.insert(a) && ids.insert(b));
        }
    }
}
