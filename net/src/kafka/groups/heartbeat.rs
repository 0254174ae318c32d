//! The consumer group protocol of KIP-848 on the wire: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, answered from the [`ConsumerGroup`] state machines this shard's
//! coordinator holds. A group id is either a classic group or a consumer group: a heartbeat to
//! a classic group with members is refused (GROUP_ID_NOT_FOUND, as Kafka answers when groups
//! may not be converted), an empty classic group becomes a consumer group, and a JoinGroup to
//! a consumer group with members is refused in turn (see `membership.rs`).

use super::super::wire::{code, text};
use super::assignor::Assignment;
use super::consumer_group::{Catalog, ConsumerGroup, Heartbeat, Limits};
use super::consumer_group_store::decode_key;
use super::offsets::group_partition;
use super::{Client, Coordinator};
use crate::authorize::Gate;
use crate::session::Session;
use crate::shard::Shard;
use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as described, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as answer};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};
use oxbow_storage::StateLog;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The limits of KIP-848 groups in `config`.
pub fn limits(config: &oxbow_core::config::ConsumerGroupConfig) -> Limits {
    Limits {
        session_timeout: Duration::from_millis(config.session_timeout_ms),
        members_max: config.members_max as usize,
        regex_bytes_max: config.subscription_regex_bytes_max as usize,
        subscribed_topics_max: config.subscription_topics_max as usize,
    }
}

/// Every topic but the broker's own, by name and by id, as of one metadata version; each
/// coordinator shard keeps the last one it built.
pub(super) struct Topics {
    catalog: Catalog,
    names: HashMap<Uuid, String>,
}

impl Topics {
    fn of(shard: &Shard) -> Topics {
        let metadata = shard.metadata();
        let mut topics = Topics {
            catalog: Catalog {
                version: metadata.version,
                topics: BTreeMap::new(),
            },
            names: HashMap::new(),
        };
        for topic in metadata.topics.values().filter(|t| !t.internal) {
            let id = Uuid::from_bytes(topic.id.0);
            let entry = (topic.partitions.len() as u32, id.as_u128());
            (topics.catalog.topics).insert(topic.name.clone(), entry);
            (topics.names).insert(id, topic.name.clone());
        }
        topics
    }

    fn name_of(&self, id: Uuid) -> Option<&String> {
        self.names.get(&id)
    }

    /// An assignment as the wire carries it, by topic id.
    fn to_wire(&self, assignment: &Assignment) -> Vec<(Uuid, Vec<i32>)> {
        (assignment.iter())
            .filter_map(|(topic, ps)| {
                let (_, id) = self.catalog.topics.get(topic)?;
                Some((Uuid::from_u128(*id), ps.iter().copied().collect()))
            })
            .collect()
    }
}

/// Whether `session`'s principal may describe `topic`, by this shard's authorizer.
fn sees(shard: &Shard, session: &Session, topic: &str) -> bool {
    Gate::new(shard, session).sees_topic(topic)
}

impl Coordinator {
    /// The topics as of the shard's metadata, built again only when it changed.
    fn topics(&self, shard: &Shard) -> Rc<Topics> {
        let version = shard.metadata().version;
        let mut cached = self.topics_cache.borrow_mut();
        match cached.as_ref() {
            Some(topics) if topics.catalog.version == version => topics.clone(),
            _ => cached.insert(Rc::new(Topics::of(shard))).clone(),
        }
    }

    pub(super) async fn consumer_heartbeat(
        &self,
        shard: &Shard,
        request: ConsumerGroupHeartbeatRequest,
        client: Client,
        now: Instant,
    ) -> ConsumerGroupHeartbeatResponse {
        let mut response = ConsumerGroupHeartbeatResponse::default();
        let config = &shard.config.consumer_groups;
        response.heartbeat_interval_ms = config.heartbeat_interval_ms as i32;
        let group_id = request.group_id.to_string();
        let refuse = |mut response: ConsumerGroupHeartbeatResponse, error, why: &str| {
            response.error_code = error;
            response.error_message = Some(text(why));
            response
        };
        if group_id.is_empty() {
            return refuse(response, code::INVALID_GROUP_ID, "GroupId can't be empty");
        }
        // Through the group's offsets log, as every group request: this node must lead its
        // partition, and a new leader epoch there forgets the groups this node knew before
        // (their members went to another coordinator meanwhile).
        let partition = group_partition(shard, &group_id);
        if let Err(why) = self.offsets_log(shard, partition).await {
            tracing::debug!(group = %group_id, error = %why, "not coordinating");
            return refuse(response, code::NOT_COORDINATOR, &why);
        }
        if (self.groups.borrow().get(&group_id)).is_some_and(|g| !g.members.is_empty()) {
            return refuse(
                response,
                code::GROUP_ID_NOT_FOUND,
                "the group is a classic group with members",
            );
        }
        // An empty classic group (committed offsets only) becomes a consumer group.
        self.groups.borrow_mut().remove(&group_id);
        let topics = self.topics(shard);
        let owned = (request.topic_partitions.as_ref()).map(|owned| {
            let mut assignment = Assignment::new();
            for tp in owned {
                // A topic deleted since the member was given it: it owns nothing there now.
                if let Some(name) = topics.name_of(tp.topic_id) {
                    let partitions = assignment.entry(name.clone()).or_default();
                    partitions.extend(tp.partitions.iter().copied());
                }
            }
            assignment
        });
        let heartbeat = Heartbeat {
            member_id: request.member_id.to_string(),
            member_epoch: request.member_epoch,
            instance_id: request.instance_id.map(|s| s.to_string()),
            rack_id: request.rack_id.map(|s| s.to_string()),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            subscribed_topic_names: (request.subscribed_topic_names)
                .map(|names| names.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>()),
            subscribed_topic_regex: request.subscribed_topic_regex.map(|s| s.to_string()),
            server_assignor: request.server_assignor.map(|s| s.to_string()),
            owned,
            client_id: client.id,
            client_host: client.host,
            session: client.session,
        };
        let (answered, changes) = {
            let mut groups = self.consumer_groups.borrow_mut();
            let group = groups.entry(group_id.clone()).or_default();
            let new_member_id = || Uuid::from_u128(fastrand::u128(..)).to_string();
            let sees = |session: &Session, topic: &str| sees(shard, session, topic);
            let answered = group.heartbeat(
                now,
                heartbeat,
                &topics.catalog,
                &sees,
                limits(config),
                new_member_id,
            );
            let changes = group.take_changes(&group_id);
            if group.members.is_empty() {
                // Nothing to keep: an empty group is its committed offsets alone.
                groups.remove(&group_id);
            }
            (answered, changes)
        };
        // What the member is told must survive this coordinator: a member that learned an
        // epoch or partitions the next coordinator would not know could be fenced, or share a
        // partition with another member.
        if !changes.is_empty() {
            if let Err((_, why)) = self.store_commits(shard, partition, changes).await {
                tracing::warn!(group = %group_id, error = %why, "storing the group failed");
                return refuse(response, code::COORDINATOR_NOT_AVAILABLE, &why);
            }
        }
        match answered {
            Ok(accepted) => {
                response.member_id = Some(text(&accepted.member_id));
                response.member_epoch = accepted.member_epoch;
                response.assignment = accepted.assignment.map(|assignment| {
                    let partitions = (topics.to_wire(&assignment).into_iter())
                        .map(|(id, partitions)| {
                            answer::TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(partitions)
                        })
                        .collect();
                    answer::Assignment::default().with_topic_partitions(partitions)
                });
                response
            }
            Err(refused) => refuse(response, refused.code, &refused.message),
        }
    }

    /// Removes members of consumer groups whose session or revocation deadline passed; the
    /// next [`Coordinator::store_consumer_groups`] deletes their records.
    pub(super) fn expire_consumer_members(&self, now: Instant, limits: Limits) {
        let mut groups = self.consumer_groups.borrow_mut();
        for (name, group) in groups.iter_mut() {
            let expired = group.expire(now, limits);
            if !expired.is_empty() {
                tracing::info!(group = %name, ?expired,
                    "consumer group members removed: session or revocation timeout");
            }
        }
    }

    /// Writes what changed in consumer groups outside heartbeats (members expired), and
    /// forgets the groups left empty once their records are deleted. Call after every tick.
    pub async fn store_consumer_groups(&self, shard: &Shard) {
        let mut by_partition: BTreeMap<u32, Vec<(Bytes, Option<Bytes>)>> = BTreeMap::new();
        {
            let mut groups = self.consumer_groups.borrow_mut();
            for (name, group) in groups.iter_mut() {
                let changes = group.take_changes(name);
                if !changes.is_empty() {
                    let partition = group_partition(shard, name);
                    by_partition.entry(partition).or_default().extend(changes);
                }
            }
            groups.retain(|_, group| !group.members.is_empty());
        }
        for (partition, changes) in by_partition {
            if let Err((_, why)) = self.store_commits(shard, partition, changes).await {
                // Not written: a coordinator loading them brings the members back for one
                // session, after which they expire again.
                tracing::warn!(partition, error = %why, "storing expired group members failed");
            }
        }
    }

    /// Takes up the consumer groups an offsets partition's state log holds (it was just
    /// loaded at a new leader epoch): members keep their epochs and partitions, and each
    /// gets a full session to heartbeat here.
    pub(super) fn restore_consumer_groups(&self, log: &StateLog) {
        let mut records: BTreeMap<String, Vec<(Option<String>, Bytes)>> = BTreeMap::new();
        for (key, value) in log.entries() {
            if let Some((group, member)) = decode_key(&key) {
                records.entry(group).or_default().push((member, value));
            }
        }
        let now = Instant::now();
        let mut groups = self.consumer_groups.borrow_mut();
        for (name, records) in records {
            match ConsumerGroup::restore(records, now) {
                Some(group) => {
                    tracing::info!(group = %name, members = group.members.len(),
                        epoch = group.epoch, "consumer group restored");
                    groups.insert(name, group);
                }
                None => tracing::warn!(group = %name, "a consumer group's records do not decode"),
            }
        }
    }

    pub(super) fn consumer_describe(
        &self,
        shard: &Shard,
        request: ConsumerGroupDescribeRequest,
    ) -> ConsumerGroupDescribeResponse {
        let topics = self.topics(shard);
        let wire = |assignment: &Assignment| {
            let partitions = (topics.to_wire(assignment).into_iter())
                .filter_map(|(id, partitions)| {
                    let name = topics.name_of(id)?;
                    Some(
                        described::TopicPartitions::default()
                            .with_topic_id(id)
                            .with_topic_name(TopicName(text(name)))
                            .with_partitions(partitions),
                    )
                })
                .collect();
            described::Assignment::default().with_topic_partitions(partitions)
        };
        let mut groups = self.consumer_groups.borrow_mut();
        let mut response = ConsumerGroupDescribeResponse::default();
        for name in request.group_ids {
            let mut out = DescribedGroup::default().with_group_id(name.clone());
            let Some(group) = groups.get_mut(name.as_str()) else {
                let classic = self.groups.borrow().contains_key(name.as_str());
                out.error_code = code::GROUP_ID_NOT_FOUND;
                out.error_message = Some(text(match classic {
                    true => "the group is a classic group",
                    false => "no such consumer group",
                }));
                response.groups.push(out);
                continue;
            };
            // What it shows is current: the target of the epoch it is at.
            group.refresh(&topics.catalog, &|session, topic| {
                sees(shard, session, topic)
            });
            out.group_state = text(group.state_name());
            out.group_epoch = group.epoch;
            out.assignment_epoch = group.assignment_epoch;
            out.assignor_name = text(group.assignor.map_or("uniform", |a| a.name()));
            for (id, m) in &group.members {
                let mut member = described::Member::default()
                    .with_member_id(text(id))
                    .with_instance_id(m.instance_id.as_deref().map(text))
                    .with_rack_id(m.rack_id.as_deref().map(text))
                    .with_member_epoch(m.epoch)
                    .with_client_id(text(&m.client_id))
                    .with_client_host(text(&m.client_host))
                    .with_subscribed_topic_regex(m.subscribed_regex.as_ref().map(|p| text(&p.text)))
                    .with_assignment(wire(&m.assigned))
                    .with_target_assignment(wire(
                        &group.target.get(id).cloned().unwrap_or_default(),
                    ));
                member.subscribed_topic_names = (m.subscribed_names.iter())
                    .map(|t| TopicName(text(t)))
                    .collect();
                // v1's member type: 1 for members of this protocol (0 would be classic).
                member.member_type = 1;
                out.members.push(member);
            }
            response.groups.push(out);
        }
        response
    }

    /// Why `member_id` at `epoch` may not commit or fetch offsets of consumer group
    /// `group_id` (Kafka's rules for KIP-848 groups), or `None` if it may, or if the group is
    /// not a consumer group. `version_ok`: the request is OffsetCommit v9+ / OffsetFetch v9+,
    /// which a member of this protocol must use.
    pub(super) fn consumer_member_error(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
        version_ok: bool,
    ) -> Option<i16> {
        let groups = self.consumer_groups.borrow();
        // Groups without members are not kept: commits without a member epoch (an admin
        // client's, or a consumer's that assigns itself partitions) go to them as to any. A
        // member's commit to a group this coordinator does not know (its members expired, or
        // it coordinates since a leader change) is refused, so that the member heartbeats and
        // rejoins instead of committing for partitions it may no longer own.
        let Some(group) = groups.get(group_id) else {
            let orphan = version_ok && epoch > 0 && !member_id.is_empty();
            let classic = self.groups.borrow().contains_key(group_id);
            return (orphan && !classic).then_some(code::UNKNOWN_MEMBER_ID);
        };
        let Some(member) = group.members.get(member_id) else {
            return Some(code::UNKNOWN_MEMBER_ID);
        };
        if !version_ok {
            return Some(code::UNSUPPORTED_VERSION);
        }
        (epoch != member.epoch).then_some(code::STALE_MEMBER_EPOCH)
    }

    /// The consumer group `group_id`'s members, if it is one (for deletion rules).
    pub(super) fn consumer_group_members(&self, group_id: &str) -> Option<usize> {
        (self.consumer_groups.borrow().get(group_id)).map(|g| g.members.len())
    }

    /// Whether consumer group `group_id` has a member subscribed to `topic`.
    pub(super) fn consumer_group_subscribes(&self, group_id: &str, topic: &str) -> bool {
        (self.consumer_groups.borrow().get(group_id)).is_some_and(|g| g.subscribes_to(topic))
    }
}
