//! The membership half of the coordinator: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and
//! the group listings.

use super::super::wire::{code, text};
use super::group::{join_error, sync_response, Group, Member, State};
use super::{Coordinator, SESSION_TIMEOUT_MS};
use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::time::{Duration, Instant};

impl Coordinator {
    pub(super) async fn join(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client: super::Client,
        now: Instant,
    ) -> JoinGroupResponse {
        let group_id = request.group_id.0.to_string();
        if group_id.is_empty() {
            return join_error(code::INVALID_GROUP_ID, "");
        }
        if !SESSION_TIMEOUT_MS.contains(&request.session_timeout_ms) {
            return join_error(code::INVALID_SESSION_TIMEOUT, &request.member_id);
        }
        if self.consumer_group_members(&group_id).is_some() {
            // Kafka's answer when classic members may not join a consumer group.
            return join_error(code::INCONSISTENT_GROUP_PROTOCOL, &request.member_id);
        }
        let (waiter, response) = flume::bounded(1);
        {
            let mut groups = self.groups.borrow_mut();
            let group = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(request.protocol_type.to_string()));
            if group.protocol_type != request.protocol_type.as_str() && !group.members.is_empty() {
                return join_error(code::INCONSISTENT_GROUP_PROTOCOL, &request.member_id);
            }
            let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
            let protocols: Vec<(String, Bytes)> = request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect();
            let rebalance_timeout = match request.rebalance_timeout_ms {
                t if t > 0 => t,
                _ => request.session_timeout_ms,
            };
            let mut member_id = request.member_id.to_string();
            // The leader as it was, when a static member came back under a new id.
            let mut replaced_static = None;
            if member_id.is_empty() {
                let n = self.next_member.get();
                self.next_member.set(n + 1);
                member_id = format!("{}-{n}-{}", client.id, oxbow_storage::now_ms());
                let holder = (instance.as_deref())
                    .and_then(|i| group.instance_holder(i))
                    .map(str::to_string);
                if let Some(old) = holder {
                    // KIP-345: a static member back after a restart takes its old place.
                    replaced_static = Some(group.leader.clone().unwrap_or_default());
                    group.replace_static_member(&old, &member_id);
                } else if version >= 4 && instance.is_none() {
                    // v4+: the client must rejoin with the id, so that a lost response cannot
                    // leave a phantom member behind (static members skip this).
                    group.pending_ids.insert(member_id.clone(), now);
                    return join_error(code::MEMBER_ID_REQUIRED, &member_id);
                }
            } else if let Some(error) = group.instance_error(&member_id, instance.as_deref()) {
                return join_error(error, &member_id);
            } else if !group.members.contains_key(&member_id)
                && group.pending_ids.remove(&member_id).is_none()
            {
                return join_error(code::UNKNOWN_MEMBER_ID, &member_id);
            }
            // As Kafka decides it: the returning static member still speaks the group's chosen
            // protocol (its metadata bytes may differ: a Java consumer's do across a restart).
            let keeps_place = replaced_static.is_some()
                && group.state == State::Stable
                && (group.protocol.as_ref())
                    .is_some_and(|chosen| protocols.iter().any(|(name, _)| name == chosen));
            group.protocol_type = request.protocol_type.to_string();
            let member = group
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    client_id: client.id.clone(),
                    client_host: client.host.clone(),
                    group_instance_id: instance.clone(),
                    session_timeout: Duration::ZERO,
                    rebalance_timeout: Duration::ZERO,
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    join: None,
                    sync: None,
                });
            (member.client_id, member.client_host) = (client.id.clone(), client.host.clone());
            member.session_timeout = Duration::from_millis(request.session_timeout_ms as u64);
            member.rebalance_timeout = Duration::from_millis(rebalance_timeout as u64);
            member.protocols = protocols;
            member.last_seen = now;
            if let (true, Some(leader_before)) = (keeps_place, replaced_static) {
                // It keeps its assignment and nobody rebalances. The answer names the leader
                // as it was and no members, as Kafka's does, so a returning leader does not
                // compute an assignment a stable group would not hand out.
                let mut response = group.join_response(&member_id);
                response.leader = text(&leader_before);
                response.members.clear();
                return response;
            }
            member.join = Some((waiter, version));
            // Any JoinGroup starts (or joins) a rebalance: the client expects a new generation.
            group.prepare_rebalance(now);
            if group.members.values().all(|m| m.join.is_some()) {
                group.complete_join(now);
            }
        }
        response
            .recv_async()
            .await
            .unwrap_or_else(|_| join_error(code::COORDINATOR_NOT_AVAILABLE, ""))
    }

    pub(super) async fn sync(&self, request: SyncGroupRequest, now: Instant) -> SyncGroupResponse {
        let (waiter, response) = flume::bounded(1);
        {
            let mut groups = self.groups.borrow_mut();
            let member_id = request.member_id.to_string();
            let Some(group) = groups.get_mut(request.group_id.as_str()) else {
                return sync_response(code::UNKNOWN_MEMBER_ID, Bytes::new(), None);
            };
            let instance = request.group_instance_id.as_deref();
            if let Some(error) = group.instance_error(&member_id, instance) {
                return sync_response(error, Bytes::new(), None);
            }
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

    pub(super) fn heartbeat(&self, request: HeartbeatRequest, now: Instant) -> HeartbeatResponse {
        let mut response = HeartbeatResponse::default();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(request.group_id.as_str()) else {
            response.error_code = code::UNKNOWN_MEMBER_ID;
            return response;
        };
        let instance = request.group_instance_id.as_deref();
        if let Some(error) = group.instance_error(request.member_id.as_str(), instance) {
            response.error_code = error;
            return response;
        }
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

    pub(super) fn leave(
        &self,
        request: LeaveGroupRequest,
        version: i16,
        now: Instant,
    ) -> LeaveGroupResponse {
        let mut response = LeaveGroupResponse::default();
        // (member id, static instance id): v3+ may name a static member by its instance
        // alone (member id empty), as kafka-consumer-groups' removal of members does.
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            (request.members.iter())
                .map(|m| {
                    let instance = m.group_instance_id.as_ref().map(|i| i.to_string());
                    (m.member_id.to_string(), instance)
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(request.group_id.as_str()) else {
            response.error_code = code::UNKNOWN_MEMBER_ID;
            return response;
        };
        let mut any_removed = false;
        for (given_id, instance) in leaving {
            let holder = (instance.as_deref())
                .and_then(|i| group.instance_holder(i))
                .map(str::to_string);
            let (id, error) = match (instance.as_deref(), holder) {
                (Some(_), Some(holder)) if given_id.is_empty() || given_id == holder => {
                    (holder, code::NONE)
                }
                (Some(_), Some(_)) => (given_id, code::FENCED_INSTANCE_ID),
                (Some(_), None) => (given_id, code::UNKNOWN_MEMBER_ID),
                (None, _) => (given_id, code::NONE),
            };
            let mut removed = (error == code::NONE)
                .then(|| group.members.remove(&id))
                .flatten();
            if let Some(member) = &mut removed {
                // Blocked in JoinGroup or SyncGroup: told it is gone, as Kafka tells it.
                member.dismiss(&id, code::UNKNOWN_MEMBER_ID);
            }
            let error = match error {
                code::NONE if removed.is_none() => code::UNKNOWN_MEMBER_ID,
                error => error,
            };
            any_removed |= removed.is_some();
            if version >= 3 {
                let mut member = MemberResponse::default();
                member.member_id = text(&id);
                member.group_instance_id = instance.as_deref().map(text);
                member.error_code = error;
                response.members.push(member);
            } else if error != code::NONE {
                response.error_code = error;
            }
        }
        if !any_removed {
            // A stale or fenced LeaveGroup changes nothing: no rebalance for it.
        } else if group.members.is_empty() {
            group.state = State::Empty;
            group.leader = None;
            group.rebalance_deadline = None;
        } else {
            group.prepare_rebalance(now);
            if group.members.values().all(|m| m.join.is_some()) {
                group.complete_join(now);
            }
        }
        response
    }

    /// The groups of this shard that pass the request's state (v4+) and type (v5+) filters,
    /// both matched without regard to case as Kafka does; an empty filter passes all.
    pub(super) fn list(&self, request: &ListGroupsRequest) -> ListGroupsResponse {
        let passes = |filter: &[StrBytes], value: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
        };
        let mut all: Vec<(String, String, &str, &str)> = Vec::new();
        for (name, group) in self.groups.borrow().iter() {
            all.push((
                name.clone(),
                group.protocol_type.clone(),
                group.state.name(),
                "classic",
            ));
        }
        for (name, group) in self.consumer_groups.borrow().iter() {
            all.push((
                name.clone(),
                "consumer".into(),
                group.state_name(),
                "consumer",
            ));
        }
        let mut response = ListGroupsResponse::default();
        for (name, protocol_type, state, kind) in all {
            if passes(&request.states_filter, state) && passes(&request.types_filter, kind) {
                let mut listed = ListedGroup::default();
                listed.group_id = GroupId(text(&name));
                listed.protocol_type = text(&protocol_type);
                listed.group_state = text(state);
                listed.group_type = text(kind);
                response.groups.push(listed);
            }
        }
        response
    }

    pub(super) fn describe(&self, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
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
                        member.member_metadata = m.metadata_for(&protocol);
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
