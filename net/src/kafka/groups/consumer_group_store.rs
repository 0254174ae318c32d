//! KIP-848 groups as records of their offsets partition's state log, as Kafka keeps them in
//! `__consumer_offsets`: one record per group (its epochs and the topics its epoch was
//! computed with) and one per member (its epochs, subscription, what it owns, is revoking and
//! is meant to own). A heartbeat that changed a record is answered once the record is as
//! durable as a commit, so a coordinator that restarts, or moves with the partition's
//! leadership, takes the group up where it was: members keep their partitions and epochs, with
//! no rebalance, and no partition is handed to a second member while the first may still own it.
//!
//! Keys start with 0xFFFF, which no commit key does (a commit key starts with its group id's
//! length, and group ids are shorter than 65,535 bytes), then a kind byte (0: group, 1: member)
//! and the group and member ids each after a u16 length. Values are JSON.

use super::assignor::{Assignment, Assignor};
use super::consumer_group::{ConsumerGroup, Member, MemberState};
use super::member_heartbeat::compile;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const MARK: [u8; 2] = [0xFF, 0xFF];
const GROUP: u8 = 0;
const MEMBER: u8 = 1;

/// The key of `group`'s own record, or of its member `member`'s.
pub(super) fn key(group: &str, member: Option<&str>) -> Bytes {
    let mut key = BytesMut::from(&MARK[..]);
    key.put_u8(if member.is_some() { MEMBER } else { GROUP });
    for part in std::iter::once(group).chain(member) {
        key.put_u16(part.len() as u16);
        key.put_slice(part.as_bytes());
    }
    key.freeze()
}

/// The group and member a key of this module names; `None` for any other key.
pub(super) fn decode_key(key: &[u8]) -> Option<(String, Option<String>)> {
    let rest = key.strip_prefix(&MARK[..])?;
    let (&kind, mut rest) = rest.split_first()?;
    let mut take = || -> Option<String> {
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let text = String::from_utf8(rest.get(2..2 + len)?.to_vec()).ok()?;
        rest = &rest[2 + len..];
        Some(text)
    };
    let group = take()?;
    match kind {
        GROUP => Some((group, None)),
        MEMBER => Some((group, Some(take()?))),
        _ => None,
    }
}

/// Whether a state-log key is one of this module's (not a commit).
pub(super) fn is_group_record(key: &[u8]) -> bool {
    key.starts_with(&MARK)
}

#[derive(Serialize, Deserialize)]
struct StoredGroup {
    epoch: i32,
    assignment_epoch: i32,
    assignor: Option<String>,
    /// Topic → (partitions, id as 32 hex digits).
    subscribed_topics: BTreeMap<String, (u32, String)>,
}

#[derive(Serialize, Deserialize)]
struct StoredMember {
    epoch: i32,
    previous_epoch: i32,
    /// 0 stable, 1 revoking, 2 waiting for partitions held elsewhere.
    state: u8,
    instance_id: Option<String>,
    away: bool,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    subscribed_names: BTreeSet<String>,
    subscribed_regex: Option<String>,
    server_assignor: Option<String>,
    rebalance_timeout_ms: u64,
    assigned: Assignment,
    revoking: Assignment,
    owned: Assignment,
    target: Assignment,
}

impl ConsumerGroup {
    /// The log changes that bring `name`'s stored records up to date with this state (puts
    /// and tombstones), forgetting what was pending. Empty when nothing changed.
    pub(super) fn take_changes(&mut self, name: &str) -> Vec<(Bytes, Option<Bytes>)> {
        let mut unstored = std::mem::take(&mut self.unstored);
        let mut changes = Vec::new();
        for id in std::mem::take(&mut unstored.removed) {
            if !self.members.contains_key(&id)
                && unstored.written.remove(&Some(id.clone())).is_some()
            {
                changes.push((key(name, Some(&id)), None));
            }
        }
        if self.members.is_empty() {
            if unstored.written.remove(&None).is_some() {
                changes.push((key(name, None), None));
            }
            return changes;
        }
        let mut records: Vec<(Option<String>, Vec<u8>)> = Vec::new();
        if std::mem::take(&mut unstored.group) || !unstored.written.contains_key(&None) {
            records.push((None, self.stored_group()));
        }
        for id in std::mem::take(&mut unstored.members) {
            if let Some(member) = self.members.get(&id) {
                let target = self.target.get(&id).cloned().unwrap_or_default();
                records.push((Some(id), stored_member(member, target)));
            }
        }
        for (id, value) in records {
            let value = Bytes::from(value);
            if unstored.written.get(&id) != Some(&value) {
                changes.push((key(name, id.as_deref()), Some(value.clone())));
                unstored.written.insert(id, value);
            }
        }
        self.unstored = unstored;
        changes
    }

    fn stored_group(&self) -> Vec<u8> {
        let stored = StoredGroup {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.map(|a| a.name().to_string()),
            subscribed_topics: (self.subscribed_topics.iter())
                .map(|(t, (n, id))| (t.clone(), (*n, format!("{id:032x}"))))
                .collect(),
        };
        serde_json::to_vec(&stored).expect("a group record serializes")
    }

    /// The group `records` (its own and its members', by member id) describe, at `now`: every
    /// member gets a full session to heartbeat here, and one revoking partitions a full
    /// rebalance timeout. `None` if its own record is missing or does not decode.
    pub(super) fn restore(
        records: Vec<(Option<String>, Bytes)>,
        now: Instant,
    ) -> Option<ConsumerGroup> {
        let mut group = ConsumerGroup::default();
        let mut own = None;
        for (id, value) in records {
            match id {
                None => own = Some(value),
                Some(id) => {
                    let Ok(stored) = serde_json::from_slice::<StoredMember>(&value) else {
                        tracing::warn!(member = %id, "a consumer group member record does not decode");
                        continue;
                    };
                    let target = stored.target.clone();
                    group.members.insert(id.clone(), member_of(stored, now));
                    group.target.insert(id.clone(), target);
                    group.unstored.written.insert(Some(id), value);
                }
            }
        }
        let value = own?;
        let stored: StoredGroup = serde_json::from_slice(&value).ok()?;
        group.epoch = stored.epoch;
        group.assignment_epoch = stored.assignment_epoch;
        group.assignor = stored.assignor.as_deref().and_then(Assignor::named);
        group.subscribed_topics = (stored.subscribed_topics.into_iter())
            .filter_map(|(t, (n, id))| Some((t, (n, u128::from_str_radix(&id, 16).ok()?))))
            .collect();
        group.unstored.written.insert(None, value);
        (!group.members.is_empty()).then_some(group)
    }
}

fn stored_member(m: &Member, target: Assignment) -> Vec<u8> {
    let stored = StoredMember {
        epoch: m.epoch,
        previous_epoch: m.previous_epoch,
        state: match m.state {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        },
        instance_id: m.instance_id.clone(),
        away: m.away,
        rack_id: m.rack_id.clone(),
        client_id: m.client_id.clone(),
        client_host: m.client_host.clone(),
        subscribed_names: m.subscribed_names.clone(),
        subscribed_regex: m.subscribed_regex.as_ref().map(|p| p.text.clone()),
        server_assignor: m.server_assignor.map(|a| a.name().to_string()),
        rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
        assigned: m.assigned.clone(),
        revoking: m.revoking.clone(),
        owned: m.owned.clone(),
        target,
    };
    serde_json::to_vec(&stored).expect("a member record serializes")
}

fn member_of(stored: StoredMember, now: Instant) -> Member {
    let rebalance_timeout = Duration::from_millis(stored.rebalance_timeout_ms);
    Member {
        epoch: stored.epoch,
        previous_epoch: stored.previous_epoch,
        state: match stored.state {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        },
        instance_id: stored.instance_id,
        away: stored.away,
        rack_id: stored.rack_id,
        client_id: stored.client_id,
        client_host: stored.client_host,
        subscribed_names: stored.subscribed_names,
        // A pattern that compiled once compiles again (the limits only ever grow).
        subscribed_regex: stored.subscribed_regex.and_then(|text| compile(text).ok()),
        session: None,
        resolved: BTreeSet::new(),
        server_assignor: stored.server_assignor.as_deref().and_then(Assignor::named),
        rebalance_timeout,
        last_seen: now,
        revoke_deadline: (!stored.revoking.is_empty()).then(|| now + rebalance_timeout),
        assigned: stored.assigned,
        revoking: stored.revoking,
        owned: stored.owned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_read_as_commits() {
        for (group, member) in [("g", None), ("orders", Some("m-1")), ("", Some(""))] {
            let k = key(group, member);
            assert!(is_group_record(&k));
            let decoded = decode_key(&k).unwrap();
            assert_eq!((decoded.0.as_str(), decoded.1.as_deref()), (group, member));
            assert_eq!(super::super::offsets::decode_commit(&k, &[0; 8]), None);
        }
        assert_eq!(decode_key(b"\xff\xff\x07"), None);
    }
}
