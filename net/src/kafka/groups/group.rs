//! One consumer group's membership state: its members, generation, leader and protocol, and
//! the two steps of a rebalance (everyone rejoins, then the leader's assignment is handed out).

use super::super::wire::{code, text};
use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

pub(super) struct Member {
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    /// Set while the member waits in JoinGroup for the rebalance to complete.
    pub(super) join: Option<(flume::Sender<JoinGroupResponse>, i16)>,
    /// Set while the member waits in SyncGroup for the leader's assignment.
    pub(super) sync: Option<flume::Sender<SyncGroupResponse>>,
}

pub(super) struct Group {
    pub(super) state: State,
    pub(super) generation: i32,
    pub(super) protocol_type: String,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, accepted on the rejoin until they expire.
    pub(super) pending_ids: HashMap<String, Instant>,
    pub(super) rebalance_deadline: Option<Instant>,
}

impl Group {
    pub(super) fn new(protocol_type: String) -> Group {
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
    pub(super) fn prepare_rebalance(&mut self, now: Instant) {
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
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = Some(now + self.rebalance_timeout());
    }

    /// How long a rebalance waits for members to rejoin: the longest any member asked for.
    fn rebalance_timeout(&self) -> Duration {
        (self.members.values())
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Ends the join phase: dynamic members that did not rejoin are dropped (static ones stay
    /// until their session expires, as KIP-345 has it: a static member restarting through a
    /// rebalance keeps its place), the generation advances, and every waiting member gets its
    /// JoinGroup response (the leader with the member list).
    pub(super) fn complete_join(&mut self, now: Instant) {
        self.members
            .retain(|_, m| m.join.is_some() || m.group_instance_id.is_some());
        if !self.members.is_empty() && self.members.values().all(|m| m.join.is_none()) {
            // Only static members are left and none came back: wait another rebalance
            // timeout (their sessions expire them meanwhile), as Kafka's coordinator does.
            self.rebalance_deadline = Some(now + self.rebalance_timeout());
            return;
        }
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        // The leader must be a member that rejoined: only it gets the member list.
        let rejoined = |id: &String| self.members.get(id).is_some_and(|m| m.join.is_some());
        if !self.leader.as_ref().is_some_and(rejoined) {
            self.leader = self.members.keys().find(|id| rejoined(id)).cloned();
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
        let answers: Vec<_> = (self.members.iter_mut())
            .filter_map(|(id, member)| Some((id.clone(), member.join.take()?.0)))
            .collect();
        for (id, waiter) in answers {
            let _ = waiter.send(self.join_response(&id));
        }
    }

    /// The JoinGroup answer of member `id` in the current generation: the leader also gets
    /// every member with its metadata for the chosen protocol.
    pub(super) fn join_response(&self, id: &str) -> JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let mut response = JoinGroupResponse::default();
        response.generation_id = self.generation;
        response.protocol_type = Some(text(&self.protocol_type));
        response.protocol_name = Some(text(&protocol));
        response.leader = text(&leader);
        response.member_id = text(id);
        if id == leader {
            response.members = (self.members.iter())
                .map(|(id, m)| {
                    let mut entry = JoinGroupResponseMember::default();
                    entry.member_id = text(id);
                    entry.group_instance_id = m.group_instance_id.as_deref().map(text);
                    entry.metadata = m.metadata_for(&protocol);
                    entry
                })
                .collect();
        }
        response
    }

    /// The member holding static instance id `instance` (KIP-345), if any.
    pub(super) fn instance_holder(&self, instance: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(_, m)| m.group_instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.as_str())
    }

    /// Whether `member_id` may act for static instance `instance` (none: a dynamic member):
    /// another member holding the instance means this one was replaced, FENCED_INSTANCE_ID.
    pub(super) fn instance_error(&self, member_id: &str, instance: Option<&str>) -> Option<i16> {
        match self.instance_holder(instance?) {
            Some(holder) if holder == member_id => None,
            Some(_) => Some(code::FENCED_INSTANCE_ID),
            None => Some(code::UNKNOWN_MEMBER_ID),
        }
    }

    /// A static member came back under a new member id (`new`): it takes over the old one's
    /// place, assignment and leadership without a rebalance; whatever the old one still waits
    /// for is answered FENCED_INSTANCE_ID.
    pub(super) fn replace_static_member(&mut self, old: &str, new: &str) {
        let Some(mut member) = self.members.remove(old) else {
            return;
        };
        member.dismiss(old, code::FENCED_INSTANCE_ID);
        self.members.insert(new.to_string(), member);
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(new.to_string());
        }
    }
}

impl Member {
    /// This member, `id`, no longer stands (removed, or replaced by its static instance's new
    /// self): whatever it still waits for in JoinGroup or SyncGroup is answered `error_code`.
    pub(super) fn dismiss(&mut self, id: &str, error_code: i16) {
        if let Some((waiter, _)) = self.join.take() {
            let _ = waiter.send(join_error(error_code, id));
        }
        if let Some(waiter) = self.sync.take() {
            let _ = waiter.send(sync_response(error_code, Bytes::new(), None));
        }
    }

    /// The metadata this member sent for `protocol`.
    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        (self.protocols.iter())
            .find(|(n, _)| n == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup answer refusing `member_id` with `error_code`.
pub(super) fn join_error(error_code: i16, member_id: &str) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = error_code;
    response.generation_id = -1;
    response.member_id = text(member_id);
    response
}

pub(super) fn sync_response(
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
