//! Which brokers the controller counts as alive, and what follows when that changes.
//!
//! Every node is a member of the metadata group, so the group's own traffic is the heartbeat:
//! the leader sends to each member every heartbeat interval and each answers. A broker the
//! leader has not heard from within the session timeout (Kafka's `broker.session.timeout.ms`)
//! is fenced and its partitions get new leaders; heard again, it is unfenced and the partitions
//! that went offline with it come back. A node that has just become leader heard nobody yet:
//! it gives every broker one full session before fencing any, except the leader it followed:
//! that one's heartbeats it did hear, so its silence is already known (the usual reason for an
//! election), and its partitions move a session after its last message, not a session after
//! the election.

use super::elections;
use crate::metadata::{Metadata, MetadataChange};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The leader's view of its members' liveness.
#[derive(Debug, Clone)]
pub struct Liveness {
    session: Duration,
    /// When this node became leader (`None`: it does not lead).
    leading_since: Option<Instant>,
    /// The last other broker seen leading the group: the one whose heartbeats this node heard.
    followed: Option<i32>,
}

impl Liveness {
    /// A view with a session timeout of `session`.
    pub fn new(session: Duration) -> Liveness {
        Liveness {
            session,
            leading_since: None,
            followed: None,
        }
    }

    /// Records which broker leads the group at `now` (`None`: none known), as seen by `me`.
    pub fn observe_leader(&mut self, leader: Option<i32>, me: i32, now: Instant) {
        if leader == Some(me) {
            _ = self.leading_since.get_or_insert(now);
            return;
        }
        self.leading_since = None;
        if leader.is_some() {
            self.followed = leader;
        }
    }

    /// Whether this node leads the group.
    pub fn leading(&self) -> bool {
        self.leading_since.is_some()
    }

    /// The brokers that count as alive at `now`: `me`, registered or not yet (the node running
    /// the controller is alive, and its partitions must not go offline while its registration
    /// commits), and every registered broker whose last message `heard` reports within the
    /// session (during the first session of leadership, all of them but the leader this node
    /// followed). Empty when this node does not lead.
    pub fn live(
        &self,
        metadata: &Metadata,
        me: i32,
        now: Instant,
        heard: impl Fn(i32) -> Option<Instant>,
    ) -> BTreeSet<i32> {
        let Some(since) = self.leading_since else {
            return BTreeSet::new();
        };
        let fresh = |at: Instant| now.saturating_duration_since(at) < self.session;
        (metadata.brokers.keys().copied())
            .filter(|&broker| {
                let grace = fresh(since) && self.followed != Some(broker);
                grace || heard(broker).is_some_and(fresh)
            })
            .chain(std::iter::once(me))
            .collect()
    }
}

/// The changes the controller proposes when only `live` brokers answer: fence the silent,
/// unfence the heard (not those shutting down), then the elections that follow.
pub fn liveness_changes(metadata: &Metadata, live: &BTreeSet<i32>) -> Vec<MetadataChange> {
    let mut changes: Vec<MetadataChange> = Vec::new();
    for &id in metadata.brokers.keys() {
        match (metadata.fenced.contains(&id), live.contains(&id)) {
            (false, false) => changes.push(MetadataChange::FenceBroker { id }),
            (true, true) if !metadata.shutting_down.contains(&id) => {
                changes.push(MetadataChange::UnfenceBroker { id })
            }
            _ => {}
        }
    }
    changes.extend(elections(metadata, live));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::broker;
    use crate::metadata::{TopicId, TopicMeta, NO_LEADER};
    use std::collections::{BTreeMap, HashMap};

    fn metadata() -> Metadata {
        let mut metadata = Metadata::default();
        for id in 0..3 {
            metadata
                .apply(&MetadataChange::RegisterBroker(broker(id)))
                .unwrap();
        }
        let topic = TopicMeta::on_one_broker("t".into(), TopicId([1; 16]), 1, 2, BTreeMap::new());
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        metadata
    }

    #[test]
    fn a_broker_silent_past_the_session_is_fenced_and_its_partitions_go_offline_until_it_returns() {
        let session = Duration::from_secs(9);
        let start = Instant::now();
        let mut liveness = Liveness::new(session);
        let mut metadata = metadata();
        let mut heard: HashMap<i32, Instant> = HashMap::new();
        assert!(liveness.live(&metadata, 0, start, |_| None).is_empty());
        liveness.observe_leader(Some(0), 0, start);
        let later = start + session + Duration::from_secs(1);
        heard.insert(1, later - Duration::from_secs(1));
        let live = |l: &Liveness, m: &Metadata, h: &HashMap<i32, Instant>, at| {
            l.live(m, 0, at, |b| h.get(&b).copied())
        };
        // Within the first session nobody can be judged.
        let grace = live(&liveness, &metadata, &heard, start + Duration::from_secs(1));
        assert_eq!(grace, BTreeSet::from([0, 1, 2]));
        assert!(liveness_changes(&metadata, &grace).is_empty());
        let now = live(&liveness, &metadata, &heard, later);
        assert_eq!(now, BTreeSet::from([0, 1]));
        let changes = liveness_changes(&metadata, &now);
        assert_eq!(changes[0], MetadataChange::FenceBroker { id: 2 });
        for change in &changes {
            metadata.apply(change).unwrap();
        }
        assert_eq!(metadata.topics["t"].partitions[0].leader, NO_LEADER);
        assert!(liveness_changes(&metadata, &now).is_empty(), "settled");
        heard.insert(2, later);
        let back = live(&liveness, &metadata, &heard, later);
        let changes = liveness_changes(&metadata, &back);
        assert_eq!(changes[0], MetadataChange::UnfenceBroker { id: 2 });
        for change in &changes {
            metadata.apply(change).unwrap();
        }
        let partition = &metadata.topics["t"].partitions[0];
        assert_eq!((partition.leader, partition.leader_epoch), (2, 2));
        liveness.observe_leader(Some(1), 0, later);
        assert!(!liveness.leading());
    }

    #[test]
    fn a_new_leader_judges_the_leader_it_followed_by_its_last_heartbeat() {
        // Node 0 followed node 1, whose last heartbeat came at `start`; node 0 wins the election
        // a second later. Node 2 it never heard from (followers do not talk to each other).
        let session = Duration::from_millis(1500);
        let start = Instant::now();
        let mut liveness = Liveness::new(session);
        let metadata = metadata();
        liveness.observe_leader(Some(1), 0, start);
        liveness.observe_leader(None, 0, start + Duration::from_millis(900));
        let elected = start + Duration::from_secs(1);
        liveness.observe_leader(Some(0), 0, elected);
        let heard = |b: i32| (b == 1).then_some(start);
        let live = |at| liveness.live(&metadata, 0, at, heard);
        assert_eq!(live(elected), BTreeSet::from([0, 1, 2]));
        let past_its_session = start + session;
        assert_eq!(
            live(past_its_session),
            BTreeSet::from([0, 2]),
            "2 keeps its grace"
        );
        assert_eq!(live(elected + session), BTreeSet::from([0]));
    }

    #[test]
    fn the_controllers_own_node_is_alive_before_its_registration_commits() {
        // A single node whose partitions exist (a data directory from before) and whose
        // registration has not committed yet: its partitions keep their leader.
        let mut metadata = Metadata::default();
        let topic = TopicMeta::on_one_broker("t".into(), TopicId([1; 16]), 2, 0, BTreeMap::new());
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        let start = Instant::now();
        let mut liveness = Liveness::new(Duration::from_secs(9));
        liveness.observe_leader(Some(0), 0, start);
        let much_later = start + Duration::from_secs(60);
        let live = liveness.live(&metadata, 0, much_later, |_| None);
        assert_eq!(live, BTreeSet::from([0]));
        assert!(liveness_changes(&metadata, &live).is_empty());
    }
}
