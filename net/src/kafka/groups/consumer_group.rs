//! One group of Kafka's consumer group protocol (KIP-848, `group.protocol=consumer`): the
//! broker owns membership, sessions and assignment, and every member converges on its share
//! through heartbeats alone.
//!
//! The state is Kafka's. The *group epoch* moves whenever what assignment depends on moves (a
//! member joins or leaves, a subscription changes, a subscribed topic gains partitions); the
//! *target assignment* is recomputed for it by the server-side assignor and stamped with that
//! epoch (the *assignment epoch*). Each member then reconciles towards its target on its own
//! heartbeats, as Kafka's `CurrentAssignmentBuilder` does: partitions it must give up are
//! revoked first, at its old *member epoch*; once it reports them released it moves to the
//! assignment epoch and gets the new partitions no other member still holds; partitions still
//! held elsewhere follow on a later heartbeat, once released. No partition is ever owned by two
//! members at once. A member silent for the session timeout, or one that does not revoke within
//! its rebalance timeout, is removed.
//!
//! Sans-IO: the coordinator (`heartbeat.rs`) owns one per group on the group's shard, feeds it
//! requests with the time and the topics there are, and turns answers into wire responses.

use super::super::wire::code;
use super::assignor::{contains, flatten, intersect, subtract, Assignment, Assignor};
use super::member_heartbeat::{compile, refuse, validate};
pub use super::member_heartbeat::{
    Accepted, Heartbeat, Limits, Pattern, Refused, JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use crate::session::Session;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The topics members may be assigned, as of one metadata version: partition count and id
/// by name. A topic deleted and created again under its name has a new id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Changes whenever topics or the ACLs that hide them change.
    pub version: u64,
    pub topics: BTreeMap<String, (u32, u128)>,
}

/// Whether the principal of a session may see (describe) a topic: the coordinator's
/// authorizer, or always when it is off.
pub type Sees<'a> = &'a dyn Fn(&Session, &str) -> bool;

/// Where a member stands in reaching its target (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// It owns its target.
    Stable,
    /// It must release `revoking` before it gets anything new.
    UnrevokedPartitions,
    /// It waits for partitions other members still hold.
    UnreleasedPartitions,
}

/// One member of the group.
#[derive(Debug, Clone)]
pub struct Member {
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub instance_id: Option<String>,
    /// A static member away for a restart ([`STATIC_LEAVE_EPOCH`]): it keeps its place and
    /// partitions until its session times out or its instance joins again.
    pub away: bool,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_names: BTreeSet<String>,
    pub subscribed_regex: Option<Pattern>,
    /// See [`Heartbeat::session`].
    pub session: Option<Session>,
    /// The topics its subscription names or matches that exist (and it may see), as of the
    /// group's catalog version or its last subscription change.
    pub resolved: BTreeSet<String>,
    pub server_assignor: Option<Assignor>,
    pub rebalance_timeout: Duration,
    pub last_seen: Instant,
    /// What the member may own now.
    pub assigned: Assignment,
    /// What it must release before it advances.
    pub revoking: Assignment,
    /// When it is removed if it has not released `revoking`.
    pub revoke_deadline: Option<Instant>,
    /// What it last reported owning.
    pub owned: Assignment,
}

impl Member {
    /// The topics this member subscribes to in `catalog`.
    fn resolve(&self, catalog: &Catalog, sees: Sees) -> BTreeSet<String> {
        let topics = &catalog.topics;
        let by_name = (self.subscribed_names.iter()).filter(|t| topics.contains_key(*t));
        let by_regex = (self.subscribed_regex.iter())
            .flat_map(|p| topics.keys().filter(|t| p.matches(t)))
            .filter(|t| self.session.as_ref().is_none_or(|s| sees(s, t)));
        by_name.chain(by_regex).cloned().collect()
    }
}

/// One consumer group; see the module docs.
#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: Option<Assignor>,
    pub members: BTreeMap<String, Member>,
    /// Each member's target at the assignment epoch.
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics (partition count, id) the group epoch was last computed with.
    pub(super) subscribed_topics: BTreeMap<String, (u32, u128)>,
    /// The catalog version members' subscriptions were last resolved at.
    pub(super) catalog_version: Option<u64>,
    /// Membership or a subscription changed since the group epoch last moved: the next
    /// [`ConsumerGroup::refresh`] moves it (once, however many changes came).
    pub(super) changed: bool,
    /// What changed since the group was last stored (see `consumer_group_store.rs`): members
    /// whose record may differ, members gone, and whether the group's own record may differ.
    pub(super) unstored: Unstored,
}

/// Changes not yet written to the group's offsets log.
#[derive(Debug, Default)]
pub struct Unstored {
    pub members: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    pub group: bool,
    /// The bytes last written for each record of the group (members by id; `None`: the
    /// group's own), so that a heartbeat that changed nothing writes nothing.
    pub written: BTreeMap<Option<String>, bytes::Bytes>,
}

impl ConsumerGroup {
    /// Kafka's name of the group's state.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.changed || self.epoch > self.assignment_epoch {
            "Assigning"
        } else if (self.members.values())
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Whether any member subscribes to `topic` (by name or pattern).
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| {
            m.subscribed_names.contains(topic)
                || (m.subscribed_regex.as_ref()).is_some_and(|p| p.matches(topic))
        })
    }

    /// Answers one heartbeat at `now`. `catalog` holds the topics members may subscribe to;
    /// `new_member_id` names a member joining without an id.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        request: Heartbeat,
        catalog: &Catalog,
        sees: Sees,
        limits: Limits,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<Accepted, Refused> {
        validate(&request, limits)?;
        // Compiled before anything changes, so that a bad pattern leaves the group as it was.
        let pattern = match &request.subscribed_topic_regex {
            Some(text) if !text.is_empty() => Some(Some(self.pattern(text)?)),
            Some(_) => Some(None),
            None => None,
        };
        if request.member_epoch == LEAVE_EPOCH || request.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(request);
        }
        let full = request.member_epoch == JOIN_EPOCH
            || (request.rebalance_timeout_ms != -1
                && request.subscribed_topic_names.is_some()
                && request.owned.is_some());
        let member_id = match request.member_epoch {
            JOIN_EPOCH => self.join(now, &request, limits, new_member_id)?,
            _ => {
                self.check_member(&request)?;
                request.member_id.clone()
            }
        };
        let member = self.members.get_mut(&member_id).expect("joined or checked");
        let (before, sent_epoch) = (member.assigned.clone(), request.member_epoch);
        if self.update(&member_id, now, request, pattern) {
            let member = self.members.get_mut(&member_id).expect("a member");
            member.resolved = member.resolve(catalog, sees);
            self.changed = true;
        }
        self.refresh(catalog, sees);
        self.reconcile(&member_id, now);
        self.unstored.members.insert(member_id.clone());
        let member = &self.members[&member_id];
        // Also sent when only the epoch moved: a topic deleted and created again under its
        // name leaves the names alone but not the ids the member must learn.
        let send = full || member.assigned != before || member.epoch != sent_epoch;
        Ok(Accepted {
            member_id,
            member_epoch: member.epoch,
            assignment: send.then(|| member.assigned.clone()),
        })
    }

    /// Removes members whose session or revocation deadline passed; returns their ids.
    pub fn expire(&mut self, now: Instant, limits: Limits) -> Vec<String> {
        let expired: Vec<String> = (self.members.iter())
            .filter(|(_, m)| {
                now.saturating_duration_since(m.last_seen) > limits.session_timeout
                    || m.revoke_deadline.is_some_and(|d| now >= d)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired
    }

    /// Moves the group epoch if membership, a subscription or the subscribed topics changed
    /// (a topic created, deleted, grown or hidden), and recomputes the target for it. Members'
    /// subscriptions are resolved again only when the catalog changed, so that a heartbeat of
    /// a settled group costs no work per member.
    pub fn refresh(&mut self, catalog: &Catalog, sees: Sees) {
        let stale = self.catalog_version != Some(catalog.version);
        if stale {
            for member in self.members.values_mut() {
                member.resolved = member.resolve(catalog, sees);
            }
            self.catalog_version = Some(catalog.version);
        }
        if stale || self.changed {
            let subscribed: BTreeMap<String, (u32, u128)> = (self.members.values())
                .flat_map(|m| m.resolved.iter())
                .filter_map(|t| Some((t.clone(), *catalog.topics.get(t)?)))
                .collect();
            if std::mem::take(&mut self.changed) || subscribed != self.subscribed_topics {
                self.subscribed_topics = subscribed;
                self.epoch += 1;
                self.unstored.group = true;
            }
        }
        if self.epoch == self.assignment_epoch {
            return;
        }
        let subscriptions: BTreeMap<String, BTreeSet<String>> = (self.members.iter())
            .map(|(id, m)| (id.clone(), m.resolved.clone()))
            .collect();
        let counts: BTreeMap<String, u32> = (self.subscribed_topics.iter())
            .map(|(t, (n, _))| (t.clone(), *n))
            .collect();
        let assignor = self.preferred_assignor();
        self.target = assignor.assign(&subscriptions, &counts, &self.target);
        self.assignor = Some(assignor);
        self.assignment_epoch = self.epoch;
        // Every member's record holds its target.
        (self.unstored.members).extend(self.members.keys().cloned());
    }

    /// The compiled form of subscription pattern `text`: another member's if one subscribes
    /// with the same text.
    fn pattern(&self, text: &str) -> Result<Pattern, Refused> {
        let shared = (self.members.values())
            .filter_map(|m| m.subscribed_regex.as_ref())
            .find(|p| p.text == text);
        match shared {
            Some(pattern) => Ok(pattern.clone()),
            None => compile(text.to_string()),
        }
    }

    /// The assignor most members ask for (Kafka's rule), uniform when none asks.
    fn preferred_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for assignor in self.members.values().filter_map(|m| m.server_assignor) {
            *votes.entry(assignor.name()).or_default() += 1;
        }
        (votes.into_iter())
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .and_then(|(name, _)| Assignor::named(name))
            .unwrap_or(Assignor::Uniform)
    }

    fn leave(&mut self, request: Heartbeat) -> Result<Accepted, Refused> {
        let id = request.member_id;
        let Some(member) = self.members.get_mut(&id) else {
            return Err(refuse(
                code::UNKNOWN_MEMBER_ID,
                format!("{id} is not a member of the group"),
            ));
        };
        if request.member_epoch == STATIC_LEAVE_EPOCH && member.instance_id.is_some() {
            // Away for a restart: its partitions wait for it until its session times out.
            member.away = true;
            self.unstored.members.insert(id.clone());
        } else {
            self.remove(&id);
        }
        Ok(Accepted {
            member_id: id,
            member_epoch: request.member_epoch,
            assignment: None,
        })
    }

    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.changed = true;
            self.unstored.members.remove(id);
            self.unstored.removed.insert(id.to_string());
        }
    }

    /// A member joining with epoch 0: a new one, a static member back from a restart (it takes
    /// over its old self's place), or a known one rejoining after it lost its partitions.
    fn join(
        &mut self,
        now: Instant,
        request: &Heartbeat,
        limits: Limits,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<String, Refused> {
        let id = match request.member_id.is_empty() {
            true => new_member_id(),
            false => request.member_id.clone(),
        };
        let holder = (request.instance_id.as_deref()).and_then(|instance| {
            (self.members.iter())
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                .map(|(held_by, m)| (held_by.clone(), m.away))
        });
        match holder {
            Some((held_by, _)) if held_by == id => {}
            Some((held_by, true)) => {
                // Its old self's place, epoch and partitions, with no rebalance.
                let mut member = self.members.remove(&held_by).expect("held");
                member.away = false;
                member.last_seen = now;
                self.unstored.members.remove(&held_by);
                self.unstored.removed.insert(held_by.clone());
                self.members.insert(id.clone(), member);
                if let Some(target) = self.target.remove(&held_by) {
                    self.target.insert(id.clone(), target);
                }
                return Ok(id);
            }
            Some(_) => {
                return Err(refuse(
                    code::UNRELEASED_INSTANCE_ID,
                    "another member holds this instance id: it must leave first",
                ))
            }
            None => {}
        }
        if let Some(member) = self.members.get_mut(&id) {
            // It lost its partitions (fenced, or it gave up): it starts again from nothing,
            // and its partitions go back to it through reconciliation.
            member.assigned.clear();
            member.revoking.clear();
            member.revoke_deadline = None;
            member.owned.clear();
            member.away = false;
            member.epoch = JOIN_EPOCH;
            member.state = MemberState::Stable;
            return Ok(id);
        }
        if self.members.len() >= limits.members_max {
            return Err(refuse(
                code::GROUP_MAX_SIZE_REACHED,
                format!("the group has reached its {} members", limits.members_max),
            ));
        }
        self.members.insert(
            id.clone(),
            Member {
                epoch: JOIN_EPOCH,
                previous_epoch: JOIN_EPOCH,
                state: MemberState::Stable,
                instance_id: request.instance_id.clone(),
                away: false,
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                subscribed_names: BTreeSet::new(),
                subscribed_regex: None,
                session: None,
                resolved: BTreeSet::new(),
                server_assignor: None,
                rebalance_timeout: Duration::ZERO,
                last_seen: now,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                revoke_deadline: None,
                owned: Assignment::new(),
            },
        );
        self.changed = true;
        Ok(id)
    }

    /// Kafka's epoch check for a member already in the group.
    fn check_member(&self, request: &Heartbeat) -> Result<(), Refused> {
        let id = &request.member_id;
        let Some(member) = self.members.get(id) else {
            // A static member replaced by its instance's new self is told so, as Kafka does.
            let replaced = (request.instance_id.as_ref()).is_some_and(|i| {
                self.members
                    .values()
                    .any(|m| m.instance_id.as_ref() == Some(i))
            });
            return Err(match replaced {
                true => refuse(
                    code::FENCED_INSTANCE_ID,
                    "another member holds this instance id now",
                ),
                false => refuse(
                    code::UNKNOWN_MEMBER_ID,
                    format!("{id} is not a member of the group"),
                ),
            });
        };
        if request.instance_id.is_some() && member.instance_id != request.instance_id {
            return Err(refuse(
                code::FENCED_INSTANCE_ID,
                "the instance id belongs to another member",
            ));
        }
        let received = request.member_epoch;
        let fenced = || {
            Err(refuse(
                code::FENCED_MEMBER_EPOCH,
                format!(
                    "member epoch {received} is not the coordinator's {}: the member must \
                     give up its partitions and rejoin",
                    member.epoch
                ),
            ))
        };
        if received > member.epoch {
            return fenced();
        }
        if received < member.epoch {
            // Accepted only if the answer that moved it on was lost: it comes with its
            // previous epoch, owning no more than it was given.
            let within = (request.owned.as_ref()).is_some_and(|owned| {
                (owned.iter()).all(|(topic, partitions)| {
                    partitions.is_empty()
                        || (member.assigned.get(topic)).is_some_and(|a| partitions.is_subset(a))
                })
            });
            if received != member.previous_epoch || !within {
                return fenced();
            }
        }
        Ok(())
    }

    /// Takes the request's fields into member `id` (`pattern`: its new subscription pattern,
    /// if the request sent one); whether what assignment depends on changed (its subscription
    /// or assignor), which moves the group epoch.
    fn update(
        &mut self,
        id: &str,
        now: Instant,
        request: Heartbeat,
        pattern: Option<Option<Pattern>>,
    ) -> bool {
        let member = self.members.get_mut(id).expect("a member");
        member.last_seen = now;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        if request.rack_id.is_some() {
            member.rack_id = request.rack_id;
        }
        if request.rebalance_timeout_ms > 0 {
            member.rebalance_timeout = Duration::from_millis(request.rebalance_timeout_ms as u64);
        }
        if let Some(owned) = request.owned {
            member.owned = owned;
        }
        member.session = request.session;
        let mut changed = false;
        if let Some(names) = request.subscribed_topic_names {
            changed |= names != member.subscribed_names;
            member.subscribed_names = names;
        }
        if let Some(pattern) = pattern {
            let old_text = member.subscribed_regex.as_ref().map(|p| &p.text);
            changed |= old_text != pattern.as_ref().map(|p| &p.text);
            member.subscribed_regex = pattern;
        }
        if let Some(name) = request.server_assignor {
            let assignor = Assignor::named(&name).expect("validated");
            changed |= member.server_assignor != Some(assignor);
            member.server_assignor = Some(assignor);
        }
        changed
    }

    /// Moves member `id` towards its target as far as it may go now (Kafka's
    /// `CurrentAssignmentBuilder`).
    fn reconcile(&mut self, id: &str, now: Instant) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let assignment_epoch = self.assignment_epoch;
        // What other members hold, needed only when this one has partitions to take up (not
        // on the heartbeats of a settled group).
        let adding = (self.members.get(id))
            .is_some_and(|m| m.state != MemberState::Stable || m.epoch != assignment_epoch)
            && !subtract(&target, &self.members[id].assigned).is_empty();
        let held_elsewhere: BTreeSet<(String, i32)> = match adding {
            true => (self.members.iter())
                .filter(|(other, _)| other.as_str() != id)
                .flat_map(|(_, m)| flatten(&m.assigned).chain(flatten(&m.revoking)))
                .collect(),
            false => BTreeSet::new(),
        };
        let member = self.members.get_mut(id).expect("a member");
        if member.state == MemberState::UnrevokedPartitions {
            let released = !flatten(&member.revoking).any(|tp| contains(&member.owned, &tp));
            if !released {
                return;
            }
            member.revoking.clear();
            member.revoke_deadline = None;
        }
        if member.epoch == assignment_epoch && member.state == MemberState::Stable {
            return;
        }
        let keep = intersect(&member.assigned, &target);
        let revoke = subtract(&member.assigned, &target);
        if !revoke.is_empty() {
            member.assigned = keep;
            member.revoking = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revoke_deadline = Some(now + member.rebalance_timeout);
            return;
        }
        let mut assigned = keep;
        let mut waiting = false;
        for (topic, p) in flatten(&subtract(&target, &member.assigned)) {
            if held_elsewhere.contains(&(topic.clone(), p)) {
                waiting = true;
            } else {
                assigned.entry(topic).or_default().insert(p);
            }
        }
        member.assigned = assigned;
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
        member.state = match waiting {
            true => MemberState::UnreleasedPartitions,
            false => MemberState::Stable,
        };
    }
}

#[cfg(test)]
#[path = "consumer_group_tests.rs"]
mod tests;
