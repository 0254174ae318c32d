//! The Kafka group coordinator: membership, rebalances, and committed offsets.
//!
//! One coordinator per node, owned by shard 0; other shards forward group requests to it. The
//! protocol is Kafka's classic one: members JoinGroup (the coordinator waits until every known
//! member has rejoined or the rebalance timeout passes), the leader gets the member list and runs
//! the assignor client-side, SyncGroup hands each member its assignment, Heartbeat keeps the
//! session alive and tells members to rejoin. A member silent past its session timeout is
//! removed even if its connection is gone. Committed offsets are appended to an internal log
//! (`<data>/.oxbow/group-offsets`) with flush `always` before the commit is acknowledged, and
//! replayed at start, so they survive kill -9.

use super::wire::{code, text};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId, RequestKind,
    ResponseKind, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig};
use oxbow_storage::{OpenError, OpenOptions, Partition};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often sessions and rebalance deadlines are checked.
pub const COORDINATOR_TICK: Duration = Duration::from_millis(100);

/// How long a member id handed out with MEMBER_ID_REQUIRED waits for its rejoin.
const PENDING_MEMBER_ID_TTL: Duration = Duration::from_secs(60);

/// Session timeouts a member may ask for (Kafka's broker defaults).
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<i32> = 6_000..=1_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

struct Member {
    client_id: String,
    client_host: String,
    group_instance_id: Option<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    /// Set while the member waits in JoinGroup for the rebalance to complete.
    join: Option<(flume::Sender<JoinGroupResponse>, i16)>,
    /// Set while the member waits in SyncGroup for the leader's assignment.
    sync: Option<flume::Sender<SyncGroupResponse>>,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, accepted on the rejoin until they expire.
    pending_ids: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new(protocol_type: String) -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: HashMap::new(),
            rebalance_deadline: None,
        }
    }

    /// Moves to PreparingRebalance: members must rejoin; waiting syncs are told so.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::PreparingRebalance {
            return;
        }
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync.take() {
                let _ = waiter.send(sync_response(
                    code::REBALANCE_IN_PROGRESS,
                    Bytes::new(),
                    None,
                ));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    /// Ends the join phase: members that did not rejoin are dropped, the generation advances,
    /// and every waiting member gets its JoinGroup response (the leader with the member list).
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.join.is_some());
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().expect("a member leads");
        let chosen = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
        self.protocol = chosen;
        self.state = State::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let member_list: Vec<JoinGroupResponseMember> = self
            .members
            .iter()
            .map(|(id, m)| {
                let mut entry = JoinGroupResponseMember::default();
                entry.member_id = text(id);
                entry.group_instance_id = m.group_instance_id.as_deref().map(text);
                entry.metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                entry
            })
            .collect();
        for (id, member) in self.members.iter_mut() {
            let Some((waiter, _version)) = member.join.take() else {
                continue;
            };
            let mut response = JoinGroupResponse::default();
            response.generation_id = self.generation;
            response.protocol_type = Some(text(&self.protocol_type));
            response.protocol_name = Some(text(&protocol));
            response.leader = text(&leader);
            response.member_id = text(id);
            if *id == leader {
                response.members = member_list.clone();
            }
            let _ = waiter.send(response);
        }
    }
}

fn sync_response(
    error_code: i16,
    assignment: Bytes,
    protocol: Option<(&str, &str)>,
) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default();
    response.error_code = error_code;
    response.assignment = assignment;
    if let Some((kind, name)) = protocol {
        response.protocol_type = Some(text(kind));
        response.protocol_name = Some(text(name));
    }
    response
}

/// (group, topic, partition) → (offset, metadata).
type OffsetKey = (String, String, i32);

/// The node's group coordinator. Lives on shard 0; see the module docs.
pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<HashMap<OffsetKey, (i64, Option<String>)>>,
    log: Partition,
    next_member: Cell<u64>,
    /// Next idempotent producer id: seeded from the clock (2^20 ids per millisecond) so ids stay
    /// unique across restarts without being stored.
    next_producer_id: Cell<i64>,
}

fn encode_commit(key: &OffsetKey, offset: i64, metadata: Option<&str>) -> (Vec<u8>, Vec<u8>) {
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
    (k.to_vec(), v.to_vec())
}

fn decode_commit(key: &[u8], value: &[u8]) -> Option<(OffsetKey, i64, Option<String>)> {
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
    /// Opens the committed-offsets log under `data_dir` and replays it.
    pub async fn open(data_dir: &Path) -> Result<Rc<Coordinator>, OpenError> {
        let config = LogConfig {
            flush: FlushPolicy::Always,
            retention_age_max_ms: None,
            retention_bytes_max: None,
            ..LogConfig::default()
        };
        let log = Partition::open(
            &data_dir.join(".oxbow").join("group-offsets"),
            config,
            OpenOptions::default(),
        )
        .await?;
        let mut offsets = HashMap::new();
        let mut next = log.log_start_offset();
        loop {
            let batches = match log.read(next, 1 << 20).await {
                Ok(batches) if !batches.is_empty() => batches,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "committed offsets after this point are unreadable");
                    break;
                }
            };
            for batch in &batches {
                // The coordinator writes this log uncompressed: a batch bounds its records.
                let records = batch.records(batch.len() as u64);
                for record in records.into_iter().flatten().flatten() {
                    let (Some(key), Some(value)) = (record.key, record.value) else {
                        continue;
                    };
                    if let Some((key, offset, metadata)) = decode_commit(&key, &value) {
                        offsets.insert(key, (offset, metadata));
                    }
                }
            }
            next = batches.last().expect("not empty").last_offset() + 1;
        }
        tracing::debug!(commits = offsets.len(), "group offsets replayed");
        Ok(Rc::new(Coordinator {
            groups: RefCell::default(),
            offsets: RefCell::new(offsets),
            log,
            next_member: Cell::new(0),
            next_producer_id: Cell::new(oxbow_storage::now_ms() << 20),
        }))
    }

    /// Writes and syncs what is queued and closes the offsets log.
    pub async fn close(&self) {
        self.log.close().await;
    }

    /// Expires silent members and closes rebalances whose timeout passed. Call every
    /// [`COORDINATOR_TICK`].
    pub fn tick(&self, now: Instant) {
        for (name, group) in self.groups.borrow_mut().iter_mut() {
            // An id handed out for a rejoin that never came must not pile up.
            group
                .pending_ids
                .retain(|_, issued| now.duration_since(*issued) < PENDING_MEMBER_ID_TTL);
            if group.state == State::PreparingRebalance {
                if group.rebalance_deadline.is_some_and(|d| now >= d) {
                    group.complete_join();
                }
                continue;
            }
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
                tracing::info!(group = %name, ?expired, "session timeout: removing members");
                for id in &expired {
                    group.members.remove(id);
                }
                if group.members.is_empty() {
                    group.state = State::Empty;
                    group.leader = None;
                } else {
                    group.prepare_rebalance(now);
                }
            }
        }
    }

    /// Answers one group request (forwarded from any shard).
    pub async fn handle(
        &self,
        request: RequestKind,
        version: i16,
        client_id: String,
    ) -> Option<ResponseKind> {
        let now = Instant::now();
        Some(match request {
            RequestKind::JoinGroup(r) => {
                ResponseKind::JoinGroup(self.join(r, version, client_id, now).await)
            }
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(self.sync(r, now).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.heartbeat(r, now)),
            RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(self.leave(r, version, now)),
            RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(self.commit(r).await),
            RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(self.fetch_offsets(r)),
            RequestKind::ListGroups(_) => ResponseKind::ListGroups(self.list()),
            RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(self.describe(r)),
            RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(self.init_producer(r)),
            _ => return None,
        })
    }

    async fn join(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client_id: String,
        now: Instant,
    ) -> JoinGroupResponse {
        let fail = |error_code: i16, member_id: &str| {
            let mut response = JoinGroupResponse::default();
            response.error_code = error_code;
            response.generation_id = -1;
            response.member_id = text(member_id);
            response
        };
        let group_id = request.group_id.0.to_string();
        if group_id.is_empty() {
            return fail(code::INVALID_GROUP_ID, "");
        }
        if !SESSION_TIMEOUT_MS.contains(&request.session_timeout_ms) {
            return fail(code::INVALID_SESSION_TIMEOUT, &request.member_id);
        }
        let (waiter, response) = flume::bounded(1);
        {
            let mut groups = self.groups.borrow_mut();
            let group = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(request.protocol_type.to_string()));
            if group.protocol_type != request.protocol_type.as_str() && !group.members.is_empty() {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL, &request.member_id);
            }
            let mut member_id = request.member_id.to_string();
            if member_id.is_empty() {
                let n = self.next_member.get();
                self.next_member.set(n + 1);
                member_id = format!("{client_id}-{n}-{}", oxbow_storage::now_ms());
                // v4+: the client must rejoin with the id, so that a lost response cannot leave
                // a phantom member behind (static members skip this).
                if version >= 4 && request.group_instance_id.is_none() {
                    group.pending_ids.insert(member_id.clone(), now);
                    return fail(code::MEMBER_ID_REQUIRED, &member_id);
                }
            } else if !group.members.contains_key(&member_id)
                && group.pending_ids.remove(&member_id).is_none()
            {
                return fail(code::UNKNOWN_MEMBER_ID, &member_id);
            }
            group.protocol_type = request.protocol_type.to_string();
            let rebalance_timeout = match request.rebalance_timeout_ms {
                t if t > 0 => t,
                _ => request.session_timeout_ms,
            };
            let protocols: Vec<(String, Bytes)> = request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect();
            let member = group
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    client_id: client_id.clone(),
                    client_host: String::new(),
                    group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
                    session_timeout: Duration::ZERO,
                    rebalance_timeout: Duration::ZERO,
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    join: None,
                    sync: None,
                });
            member.session_timeout = Duration::from_millis(request.session_timeout_ms as u64);
            member.rebalance_timeout = Duration::from_millis(rebalance_timeout as u64);
            member.protocols = protocols;
            member.last_seen = now;
            member.join = Some((waiter, version));
            // Any JoinGroup starts (or joins) a rebalance: the client expects a new generation.
            group.prepare_rebalance(now);
            if group.members.values().all(|m| m.join.is_some()) {
                group.complete_join();
            }
        }
        response
            .recv_async()
            .await
            .unwrap_or_else(|_| fail(code::COORDINATOR_NOT_AVAILABLE, ""))
    }

    async fn sync(&self, request: SyncGroupRequest, now: Instant) -> SyncGroupResponse {
        let (waiter, response) = flume::bounded(1);
        {
            let mut groups = self.groups.borrow_mut();
            let member_id = request.member_id.to_string();
            let Some(group) = groups.get_mut(request.group_id.as_str()) else {
                return sync_response(code::UNKNOWN_MEMBER_ID, Bytes::new(), None);
            };
            if !group.members.contains_key(&member_id) {
                return sync_response(code::UNKNOWN_MEMBER_ID, Bytes::new(), None);
            }
            if request.generation_id != group.generation {
                return sync_response(code::ILLEGAL_GENERATION, Bytes::new(), None);
            }
            let protocol = (
                group.protocol_type.clone(),
                group.protocol.clone().unwrap_or_default(),
            );
            let with_protocol = Some((protocol.0.as_str(), protocol.1.as_str()));
            group
                .members
                .get_mut(&member_id)
                .expect("checked")
                .last_seen = now;
            match group.state {
                State::PreparingRebalance | State::Empty => {
                    return sync_response(code::REBALANCE_IN_PROGRESS, Bytes::new(), None)
                }
                State::Stable => {
                    let assignment = group.members[&member_id].assignment.clone();
                    return sync_response(code::NONE, assignment, with_protocol);
                }
                State::CompletingRebalance
                    if group.leader.as_deref() == Some(member_id.as_str()) =>
                {
                    for assignment in &request.assignments {
                        if let Some(member) = group.members.get_mut(assignment.member_id.as_str()) {
                            member.assignment = assignment.assignment.clone();
                        }
                    }
                    group.state = State::Stable;
                    for member in group.members.values_mut() {
                        if let Some(waiter) = member.sync.take() {
                            let _ = waiter.send(sync_response(
                                code::NONE,
                                member.assignment.clone(),
                                with_protocol,
                            ));
                        }
                    }
                    let assignment = group.members[&member_id].assignment.clone();
                    return sync_response(code::NONE, assignment, with_protocol);
                }
                State::CompletingRebalance => {
                    group.members.get_mut(&member_id).expect("checked").sync = Some(waiter);
                }
            }
        }
        response
            .recv_async()
            .await
            .unwrap_or_else(|_| sync_response(code::REBALANCE_IN_PROGRESS, Bytes::new(), None))
    }

    fn heartbeat(&self, request: HeartbeatRequest, now: Instant) -> HeartbeatResponse {
        let mut response = HeartbeatResponse::default();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(request.group_id.as_str()) else {
            response.error_code = code::UNKNOWN_MEMBER_ID;
            return response;
        };
        let Some(member) = group.members.get_mut(request.member_id.as_str()) else {
            response.error_code = code::UNKNOWN_MEMBER_ID;
            return response;
        };
        member.last_seen = now;
        response.error_code = if request.generation_id != group.generation {
            code::ILLEGAL_GENERATION
        } else if group.state == State::PreparingRebalance {
            code::REBALANCE_IN_PROGRESS
        } else {
            code::NONE
        };
        response
    }

    fn leave(&self, request: LeaveGroupRequest, version: i16, now: Instant) -> LeaveGroupResponse {
        let mut response = LeaveGroupResponse::default();
        let leaving: Vec<String> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| m.member_id.to_string())
                .collect()
        } else {
            vec![request.member_id.to_string()]
        };
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(request.group_id.as_str()) else {
            response.error_code = code::UNKNOWN_MEMBER_ID;
            return response;
        };
        for id in leaving {
            let known = group.members.remove(&id).is_some();
            if version >= 3 {
                let mut member = MemberResponse::default();
                member.member_id = text(&id);
                member.error_code = if known {
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                };
                response.members.push(member);
            } else if !known {
                response.error_code = code::UNKNOWN_MEMBER_ID;
            }
        }
        if group.members.is_empty() {
            group.state = State::Empty;
            group.leader = None;
            group.rebalance_deadline = None;
        } else {
            group.prepare_rebalance(now);
            if group.members.values().all(|m| m.join.is_some()) {
                group.complete_join();
            }
        }
        response
    }

    async fn commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group_id = request.group_id.to_string();
        let error = {
            let groups = self.groups.borrow();
            match groups.get(&group_id) {
                // Simple consumers commit with generation -1 to a group nobody is in.
                None => code::NONE,
                Some(g) if g.members.is_empty() && request.generation_id_or_member_epoch < 0 => {
                    code::NONE
                }
                Some(g) if !g.members.contains_key(request.member_id.as_str()) => {
                    code::UNKNOWN_MEMBER_ID
                }
                Some(g) if g.generation != request.generation_id_or_member_epoch => {
                    code::ILLEGAL_GENERATION
                }
                Some(g) if g.state == State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
                Some(_) => code::NONE,
            }
        };
        let mut commits = Vec::new();
        if error == code::NONE {
            let mut builder = BatchBuilder::new(oxbow_storage::now_ms());
            for topic in &request.topics {
                for p in &topic.partitions {
                    let key = (group_id.clone(), topic.name.to_string(), p.partition_index);
                    let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                    let (k, v) = encode_commit(&key, p.committed_offset, metadata.as_deref());
                    builder.push(Some(&k), Some(&v), oxbow_storage::now_ms());
                    commits.push((key, p.committed_offset, metadata));
                }
            }
            if !builder.is_empty() {
                if let Err(e) = self.log.append(builder.build()).await {
                    tracing::error!(group = %group_id, error = %e, "committing offsets failed");
                    return commit_response(&request, code::COORDINATOR_NOT_AVAILABLE);
                }
            }
            let mut offsets = self.offsets.borrow_mut();
            for (key, offset, metadata) in commits {
                offsets.insert(key, (offset, metadata));
            }
        }
        commit_response(&request, error)
    }

    fn fetch_offsets(&self, request: OffsetFetchRequest) -> OffsetFetchResponse {
        let group_id = request.group_id.to_string();
        let offsets = self.offsets.borrow();
        let wanted: Vec<(String, Vec<i32>)> = match &request.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect(),
            None => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (g, t, p) in offsets.keys() {
                    if *g == group_id {
                        all.entry(t.clone()).or_default().push(*p);
                    }
                }
                all.into_iter().collect()
            }
        };
        let mut response = OffsetFetchResponse::default();
        for (topic, partitions) in wanted {
            let mut out = OffsetFetchResponseTopic::default();
            out.name = TopicName(text(&topic));
            for partition in partitions {
                let mut p = OffsetFetchResponsePartition::default();
                p.partition_index = partition;
                p.committed_leader_epoch = -1;
                match offsets.get(&(group_id.clone(), topic.clone(), partition)) {
                    Some((offset, metadata)) => {
                        p.committed_offset = *offset;
                        p.metadata = Some(text(metadata.as_deref().unwrap_or_default()));
                    }
                    None => {
                        p.committed_offset = -1;
                        p.metadata = Some(text(""));
                    }
                }
                out.partitions.push(p);
            }
            response.topics.push(out);
        }
        response
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
        self.next_producer_id.set(id + 1);
        response.producer_id = ProducerId(id);
        response.producer_epoch = 0;
        response
    }

    fn list(&self) -> ListGroupsResponse {
        let mut response = ListGroupsResponse::default();
        for (name, group) in self.groups.borrow().iter() {
            let mut listed = ListedGroup::default();
            listed.group_id = GroupId(text(name));
            listed.protocol_type = text(&group.protocol_type);
            listed.group_state = text(group.state.name());
            listed.group_type = text("classic");
            response.groups.push(listed);
        }
        response
    }

    fn describe(&self, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = self.groups.borrow();
        let mut response = DescribeGroupsResponse::default();
        for name in request.groups {
            let mut described = DescribedGroup::default();
            described.group_id = name.clone();
            match groups.get(name.as_str()) {
                None => described.group_state = text("Dead"),
                Some(group) => {
                    described.group_state = text(group.state.name());
                    described.protocol_type = text(&group.protocol_type);
                    let protocol = group.protocol.clone().unwrap_or_default();
                    described.protocol_data = text(&protocol);
                    for (id, m) in &group.members {
                        let mut member = DescribedGroupMember::default();
                        member.member_id = text(id);
                        member.group_instance_id = m.group_instance_id.as_deref().map(text);
                        member.client_id = text(&m.client_id);
                        member.client_host = text(&m.client_host);
                        member.member_metadata = m
                            .protocols
                            .iter()
                            .find(|(n, _)| *n == protocol)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default();
                        member.member_assignment = m.assignment.clone();
                        described.members.push(member);
                    }
                }
            }
            response.groups.push(described);
        }
        response
    }
}

fn commit_response(request: &OffsetCommitRequest, error_code: i16) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    for topic in &request.topics {
        let mut out = OffsetCommitResponseTopic::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = p.partition_index;
            partition.error_code = error_code;
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}
