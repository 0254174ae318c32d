//! The KIP-848 group state machine, driven with simulated time and simulated members.

use super::*;

const LIMITS: Limits = Limits {
    session_timeout: Duration::from_secs(45),
    members_max: 10,
    regex_bytes_max: 100,
    subscribed_topics_max: 100,
};

/// Topics with these partition counts (ids from their names; the version from both).
fn topics(counts: &[(&str, u32)]) -> Catalog {
    use std::hash::{Hash, Hasher};
    let id = |name: &str| name.bytes().fold(7u128, |h, b| h * 31 + b as u128);
    let topics: BTreeMap<String, (u32, u128)> = (counts.iter())
        .map(|(t, n)| (t.to_string(), (*n, id(t))))
        .collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    topics.hash(&mut hasher);
    Catalog {
        version: hasher.finish(),
        topics,
    }
}

/// No authorizer: every principal sees every topic.
fn all_see(_: &Session, _: &str) -> bool {
    true
}

fn join(id: &str, subscribed: &[&str]) -> Heartbeat {
    Heartbeat {
        member_id: id.to_string(),
        member_epoch: JOIN_EPOCH,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(subscribed.iter().map(|t| t.to_string()).collect()),
        owned: Some(Assignment::new()),
        ..Heartbeat::default()
    }
}

fn beat(id: &str, epoch: i32, owned: &Assignment) -> Heartbeat {
    Heartbeat {
        member_id: id.to_string(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(owned.clone()),
        ..Heartbeat::default()
    }
}

fn count(assignment: &Assignment) -> usize {
    assignment.values().map(BTreeSet::len).sum()
}

/// No partition is assigned to, or being revoked from, two members at once.
fn assert_exclusive(group: &ConsumerGroup) {
    let mut seen = BTreeSet::new();
    for (id, m) in &group.members {
        for tp in flatten(&m.assigned).chain(flatten(&m.revoking)) {
            assert!(seen.insert(tp.clone()), "{tp:?} held twice (second: {id})");
        }
    }
}

fn no_id() -> String {
    unreachable!("members here bring their own ids")
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_released_them() {
    let t0 = Instant::now();
    let all = topics(&[("orders", 4)]);
    let mut group = ConsumerGroup::default();
    let a = group
        .heartbeat(t0, join("a", &["orders"]), &all, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(a.member_epoch, 1);
    let a_owned = a.assignment.unwrap();
    assert_eq!(count(&a_owned), 4);

    let b = group
        .heartbeat(t0, join("b", &["orders"]), &all, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(b.member_epoch, 2, "b is at the new assignment epoch");
    assert_eq!(
        b.assignment,
        Some(Assignment::new()),
        "a still holds b's share"
    );
    assert_exclusive(&group);

    // a is told to give two up; its epoch stays until it has.
    let a1 = group
        .heartbeat(t0, beat("a", 1, &a_owned), &all, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(a1.member_epoch, 1);
    let kept = a1.assignment.unwrap();
    assert_eq!(count(&kept), 2);
    assert_eq!(group.members["a"].state, MemberState::UnrevokedPartitions);
    // b asks again before a released: still nothing.
    let b1 = group.heartbeat(
        t0,
        beat("b", 2, &Assignment::new()),
        &all,
        &all_see,
        LIMITS,
        no_id,
    );
    assert_eq!(b1.unwrap().assignment, None);
    // a reports the release and moves to epoch 2 (its assignment, unchanged, comes with the
    // new epoch); then b gets the two.
    let a2 = group
        .heartbeat(t0, beat("a", 1, &kept), &all, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!((a2.member_epoch, a2.assignment), (2, Some(kept)));
    let b2 = group.heartbeat(
        t0,
        beat("b", 2, &Assignment::new()),
        &all,
        &all_see,
        LIMITS,
        no_id,
    );
    let b_owned = b2.unwrap().assignment.unwrap();
    assert_eq!(count(&b_owned), 2);
    assert_exclusive(&group);
    assert_eq!(group.state_name(), "Stable");
}

#[test]
fn epochs_are_checked_as_kafka_checks_them() {
    let t0 = Instant::now();
    let all = topics(&[("orders", 2)]);
    let mut group = ConsumerGroup::default();
    let a = group
        .heartbeat(t0, join("a", &["orders"]), &all, &all_see, LIMITS, no_id)
        .unwrap();
    let owned = a.assignment.unwrap();
    let refused = |r: Result<Accepted, Refused>| r.unwrap_err().code;
    // From the future: fenced.
    let ahead = group.heartbeat(t0, beat("a", 5, &owned), &all, &all_see, LIMITS, no_id);
    assert_eq!(refused(ahead), code::FENCED_MEMBER_EPOCH);
    // Unknown member.
    let stranger = group.heartbeat(t0, beat("z", 1, &owned), &all, &all_see, LIMITS, no_id);
    assert_eq!(refused(stranger), code::UNKNOWN_MEMBER_ID);
    // Topic grows: a moves to epoch 2 with a third partition.
    let grown = topics(&[("orders", 3)]);
    let a2 = group
        .heartbeat(t0, beat("a", 1, &owned), &grown, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(a2.member_epoch, 2);
    assert_eq!(count(a2.assignment.as_ref().unwrap()), 3);
    // The answer was lost: a comes back with epoch 1, owning what it had. Accepted.
    let retry = group
        .heartbeat(t0, beat("a", 1, &owned), &grown, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(retry.member_epoch, 2);
    // With its previous epoch but owning more than it was given: fenced.
    let mut too_much = owned.clone();
    too_much.entry("other".into()).or_default().insert(0);
    let greedy = group.heartbeat(t0, beat("a", 1, &too_much), &grown, &all_see, LIMITS, no_id);
    assert_eq!(refused(greedy), code::FENCED_MEMBER_EPOCH);
}

#[test]
fn joins_with_missing_fields_and_unknown_assignors_are_refused() {
    let t0 = Instant::now();
    let all = topics(&[("orders", 2)]);
    let mut group = ConsumerGroup::default();
    let code_of = |group: &mut ConsumerGroup, h: Heartbeat| {
        group
            .heartbeat(t0, h, &all, &all_see, LIMITS, no_id)
            .unwrap_err()
            .code
    };
    let mut no_timeout = join("a", &["orders"]);
    no_timeout.rebalance_timeout_ms = -1;
    assert_eq!(code_of(&mut group, no_timeout), code::INVALID_REQUEST);
    let mut no_topics = join("a", &[]);
    no_topics.subscribed_topic_names = None;
    assert_eq!(code_of(&mut group, no_topics), code::INVALID_REQUEST);
    let mut owning = join("a", &["orders"]);
    owning.owned = Some(Assignment::from([("orders".into(), BTreeSet::from([0]))]));
    assert_eq!(code_of(&mut group, owning), code::INVALID_REQUEST);
    let mut odd = join("a", &["orders"]);
    odd.server_assignor = Some("sticky-ish".into());
    assert_eq!(code_of(&mut group, odd), code::UNSUPPORTED_ASSIGNOR);
    let mut bad_regex = join("a", &[]);
    bad_regex.subscribed_topic_regex = Some("orders(".into());
    assert_eq!(
        code_of(&mut group, bad_regex),
        code::INVALID_REGULAR_EXPRESSION
    );
    assert!(group.members.is_empty(), "nothing refused joined");
    let full = ConsumerGroup::default;
    let mut crowded = full();
    let one = Limits {
        members_max: 1,
        ..LIMITS
    };
    crowded
        .heartbeat(t0, join("a", &["orders"]), &all, &all_see, one, no_id)
        .unwrap();
    let second = crowded.heartbeat(t0, join("b", &["orders"]), &all, &all_see, one, no_id);
    assert_eq!(second.unwrap_err().code, code::GROUP_MAX_SIZE_REACHED);
}

#[test]
fn regex_subscriptions_match_whole_names_and_follow_new_topics() {
    let t0 = Instant::now();
    let mut group = ConsumerGroup::default();
    let mut request = join("a", &[]);
    request.subscribed_topic_names = None;
    request.subscribed_topic_regex = Some("orders-.*".into());
    let before = topics(&[("orders-eu", 1), ("old-orders-eu", 1)]);
    let a = group
        .heartbeat(t0, request, &before, &all_see, LIMITS, no_id)
        .unwrap();
    let owned = a.assignment.unwrap();
    assert_eq!(owned.keys().collect::<Vec<_>>(), ["orders-eu"]);
    let after = topics(&[("orders-eu", 1), ("old-orders-eu", 1), ("orders-us", 2)]);
    let a2 = group.heartbeat(
        t0,
        beat("a", a.member_epoch, &owned),
        &after,
        &all_see,
        LIMITS,
        no_id,
    );
    let now_owned = a2.unwrap().assignment.unwrap();
    assert_eq!(
        now_owned.keys().collect::<Vec<_>>(),
        ["orders-eu", "orders-us"]
    );
    assert!(group.subscribes_to("orders-us") && !group.subscribes_to("old-orders-eu"));
    // With the authorizer on, its principal loses Describe on orders-us (an ACL change: a
    // new catalog version): the pattern no longer matches it.
    let epoch = group.members["a"].epoch;
    let mut hidden = beat("a", epoch, &now_owned);
    hidden.session = Some(Session::anonymous(None));
    group
        .heartbeat(t0, hidden.clone(), &after, &all_see, LIMITS, no_id)
        .unwrap();
    let acl_changed = Catalog {
        version: after.version + 1,
        ..after.clone()
    };
    let not_us = |_: &Session, topic: &str| topic != "orders-us";
    let a3 = group
        .heartbeat(t0, hidden, &acl_changed, &not_us, LIMITS, no_id)
        .unwrap();
    let kept = a3.assignment.expect("told to give orders-us up");
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["orders-eu"]);
}

#[test]
fn silent_members_and_members_that_do_not_revoke_are_removed() {
    let t0 = Instant::now();
    let all = topics(&[("orders", 2)]);
    let mut group = ConsumerGroup::default();
    let a = group
        .heartbeat(t0, join("a", &["orders"]), &all, &all_see, LIMITS, no_id)
        .unwrap();
    let a_owned = a.assignment.unwrap();
    group
        .heartbeat(t0, join("b", &["orders"]), &all, &all_see, LIMITS, no_id)
        .unwrap();
    // a hears it must revoke, then goes quiet while b keeps heartbeating.
    let t1 = t0 + Duration::from_secs(1);
    group
        .heartbeat(t1, beat("a", 1, &a_owned), &all, &all_see, LIMITS, no_id)
        .unwrap();
    let t2 = t1 + Duration::from_secs(30);
    group
        .heartbeat(
            t2,
            beat("b", 2, &Assignment::new()),
            &all,
            &all_see,
            LIMITS,
            no_id,
        )
        .unwrap();
    assert_eq!(
        group.expire(t2, LIMITS),
        ["a"],
        "the 30 s rebalance timeout passed"
    );
    let b = group.heartbeat(
        t2,
        beat("b", 2, &Assignment::new()),
        &all,
        &all_see,
        LIMITS,
        no_id,
    );
    let b = b.unwrap();
    assert_eq!((b.member_epoch, count(&b.assignment.unwrap())), (3, 2));
    // b falls silent: its session ends.
    assert!(group
        .expire(t2 + Duration::from_secs(45), LIMITS)
        .is_empty());
    assert_eq!(group.expire(t2 + Duration::from_secs(46), LIMITS), ["b"]);
    assert_eq!(group.state_name(), "Empty");
}

#[test]
fn a_static_member_restarting_keeps_its_partitions_without_a_rebalance() {
    let t0 = Instant::now();
    let all = topics(&[("orders", 4)]);
    let mut group = ConsumerGroup::default();
    let mut first = join("a1", &["orders"]);
    first.instance_id = Some("host-a".into());
    group
        .heartbeat(t0, first, &all, &all_see, LIMITS, no_id)
        .unwrap();
    let b = group
        .heartbeat(t0, join("b", &["orders"]), &all, &all_see, LIMITS, no_id)
        .unwrap();
    // Settle: a1 revokes, b takes its share.
    let owned = group.members["a1"].assigned.clone();
    let kept = group
        .heartbeat(t0, beat("a1", 1, &owned), &all, &all_see, LIMITS, no_id)
        .unwrap();
    let kept = kept.assignment.unwrap();
    let mut settled = beat("a1", 1, &kept);
    settled.instance_id = Some("host-a".into());
    group
        .heartbeat(t0, settled, &all, &all_see, LIMITS, no_id)
        .unwrap();
    group
        .heartbeat(
            t0,
            beat("b", b.member_epoch, &Assignment::new()),
            &all,
            &all_see,
            LIMITS,
            no_id,
        )
        .unwrap();
    let epoch = group.epoch;
    // a1 leaves for a restart, and its new process joins under a new member id.
    let mut away = beat("a1", 2, &kept);
    away.member_epoch = STATIC_LEAVE_EPOCH;
    away.instance_id = Some("host-a".into());
    group
        .heartbeat(t0, away, &all, &all_see, LIMITS, no_id)
        .unwrap();
    let mut back = join("a2", &["orders"]);
    back.instance_id = Some("host-a".into());
    let a2 = group
        .heartbeat(t0, back, &all, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(a2.assignment, Some(kept.clone()), "the same partitions");
    assert_eq!((a2.member_epoch, group.epoch), (2, epoch), "no rebalance");
    // The instance is held now: another process claiming it is refused.
    let mut twin = join("a3", &["orders"]);
    twin.instance_id = Some("host-a".into());
    let twin = group.heartbeat(t0, twin, &all, &all_see, LIMITS, no_id);
    assert_eq!(twin.unwrap_err().code, code::UNRELEASED_INSTANCE_ID);
    // The old process, still alive somewhere, is told it was replaced.
    let mut zombie = beat("a1", 2, &kept);
    zombie.instance_id = Some("host-a".into());
    let zombie = group.heartbeat(t0, zombie, &all, &all_see, LIMITS, no_id);
    assert_eq!(zombie.unwrap_err().code, code::FENCED_INSTANCE_ID);
}

/// A simulated consumer: what it owns (it processes those partitions) and what it was last
/// given but has not yet taken up. Like a real one, it takes time to reconcile: it releases
/// and takes up partitions between heartbeats, and reports what it owns.
#[derive(Debug, Clone, Default)]
struct Client {
    epoch: i32,
    owned: Assignment,
    given: Option<Assignment>,
}

impl Client {
    /// Sends one heartbeat (having reconciled first, if `reconciled`).
    fn beat(
        &mut self,
        id: &str,
        group: &mut ConsumerGroup,
        now: Instant,
        all: &Catalog,
        reconciled: bool,
    ) -> Result<(), Refused> {
        if reconciled {
            if let Some(given) = self.given.take() {
                self.owned = given;
            }
        }
        let answer = group.heartbeat(
            now,
            beat(id, self.epoch, &self.owned),
            all,
            &all_see,
            LIMITS,
            no_id,
        )?;
        self.epoch = answer.member_epoch;
        if answer.assignment.is_some() {
            self.given = answer.assignment;
        }
        Ok(())
    }

    fn joined(answer: Accepted) -> Client {
        Client {
            epoch: answer.member_epoch,
            owned: Assignment::new(),
            given: answer.assignment,
        }
    }
}

/// Members that follow the protocol, slowly, joining, leaving and crashing at random: no
/// partition is ever owned by two of them, and once changes stop every member reaches its
/// target and every partition is owned.
#[test]
fn random_schedules_never_give_a_partition_to_two_members_and_converge() {
    let all = topics(&[("a", 6), ("b", 3)]);
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut now = Instant::now();
        let mut group = ConsumerGroup::default();
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        let mut next = 0;
        for step in 0..300 {
            now += Duration::from_millis(rng.u64(1..500));
            let changing = step < 200;
            let roll = rng.u8(0..100);
            if changing && (roll < 8 || clients.is_empty()) {
                let id = format!("m{next}");
                next += 1;
                let subscribed: &[&str] = if rng.bool() { &["a", "b"] } else { &["a"] };
                match group.heartbeat(now, join(&id, subscribed), &all, &all_see, LIMITS, no_id) {
                    Ok(answer) => drop(clients.insert(id, Client::joined(answer))),
                    Err(full) => assert_eq!(full.code, code::GROUP_MAX_SIZE_REACHED),
                }
            } else if changing && roll < 11 {
                let id = clients
                    .keys()
                    .nth(rng.usize(..clients.len()))
                    .unwrap()
                    .clone();
                let client = clients.remove(&id).unwrap();
                if rng.bool() {
                    let mut leave = beat(&id, client.epoch, &client.owned);
                    leave.member_epoch = LEAVE_EPOCH;
                    group
                        .heartbeat(now, leave, &all, &all_see, LIMITS, no_id)
                        .unwrap();
                } // else it crashed: only its session ends it.
            } else if !clients.is_empty() {
                let id = clients
                    .keys()
                    .nth(rng.usize(..clients.len()))
                    .unwrap()
                    .clone();
                let client = clients.get_mut(&id).unwrap();
                if let Err(refused) = client.beat(&id, &mut group, now, &all, rng.bool()) {
                    // Fenced or expired: it gives everything up and rejoins.
                    assert!(
                        [code::UNKNOWN_MEMBER_ID, code::FENCED_MEMBER_EPOCH]
                            .contains(&refused.code),
                        "seed {seed}: {refused:?}"
                    );
                    let answer =
                        group.heartbeat(now, join(&id, &["a"]), &all, &all_see, LIMITS, no_id);
                    clients.insert(id, Client::joined(answer.unwrap()));
                }
            }
            group.expire(now, LIMITS);
            assert_exclusive(&group);
            let mut owned_by_clients = BTreeSet::new();
            for (id, client) in &clients {
                for tp in flatten(&client.owned) {
                    let unique = owned_by_clients.insert(tp.clone());
                    assert!(unique, "seed {seed}: {id} and another own {tp:?}");
                }
            }
        }
        // Members that crashed are gone once their sessions end; the others heartbeat in
        // turn, reconciling each time, until nothing moves.
        for round in 0..20 {
            now += match round {
                0 => LIMITS.session_timeout - Duration::from_secs(1),
                _ => Duration::from_secs(2),
            };
            let ids: Vec<String> = clients.keys().cloned().collect();
            for id in ids {
                let client = clients.get_mut(&id).unwrap();
                let beat = client.beat(&id, &mut group, now, &all, true);
                beat.unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
            }
            group.expire(now, LIMITS);
        }
        if clients.is_empty() {
            continue;
        }
        assert_eq!(group.state_name(), "Stable", "seed {seed}");
        let owned: usize = clients.values().map(|c| count(&c.owned)).sum();
        let subscribed_b = group
            .members
            .values()
            .any(|m| m.subscribed_names.contains("b"));
        assert_eq!(owned, 6 + if subscribed_b { 3 } else { 0 }, "seed {seed}");
    }
}

/// A group stored mid-rebalance (one member revoking, one waiting) and restored, as a new
/// coordinator would: members carry on with their epochs and partitions, the rebalance
/// completes as it would have, no partition is handed out twice, and a heartbeat that changes
/// nothing writes nothing.
#[test]
fn a_group_restored_from_its_records_carries_on_where_it_was() {
    let t0 = Instant::now();
    let all = topics(&[("orders", 4)]);
    let mut group = ConsumerGroup::default();
    let a = (group.heartbeat(t0, join("a", &["orders"]), &all, &all_see, LIMITS, no_id)).unwrap();
    let a_owned = a.assignment.unwrap();
    let b = (group.heartbeat(t0, join("b", &["orders"]), &all, &all_see, LIMITS, no_id)).unwrap();
    let told = group.heartbeat(t0, beat("a", 1, &a_owned), &all, &all_see, LIMITS, no_id);
    let kept = told.unwrap().assignment.unwrap();
    assert_eq!(group.members["a"].state, MemberState::UnrevokedPartitions);

    // Everything written so far, as a log would hold it (later puts replace earlier ones).
    let mut log: BTreeMap<bytes::Bytes, bytes::Bytes> = BTreeMap::new();
    let mut write = |changes: Vec<(bytes::Bytes, Option<bytes::Bytes>)>| {
        for (key, value) in changes {
            match value {
                Some(value) => drop(log.insert(key, value)),
                None => drop(log.remove(&key)),
            }
        }
    };
    write(group.take_changes("g"));
    let settled = group.heartbeat(t0, beat("a", 1, &a_owned), &all, &all_see, LIMITS, no_id);
    assert!(settled.is_ok());
    assert!(
        group.take_changes("g").is_empty(),
        "nothing changed, nothing written"
    );

    let records: Vec<(Option<String>, bytes::Bytes)> = (log.iter())
        .map(|(k, v)| {
            (
                super::super::consumer_group_store::decode_key(k).unwrap().1,
                v.clone(),
            )
        })
        .collect();
    let t1 = t0 + Duration::from_secs(40);
    let mut restored = ConsumerGroup::restore(records, t1).expect("restored");
    assert_eq!(
        (restored.epoch, restored.assignment_epoch),
        (group.epoch, group.assignment_epoch)
    );
    assert_eq!(restored.members["a"].revoking, group.members["a"].revoking);
    assert_eq!(restored.target, group.target);
    // Sessions start again at the restore: 40 s after the last heartbeat, nobody expires.
    assert!(restored
        .expire(t1 + Duration::from_secs(5), LIMITS)
        .is_empty());
    let mut group = restored;
    // b still waits; a releases; b gets its share: the rebalance completes.
    let waiting = group.heartbeat(
        t1,
        beat("b", b.member_epoch, &Assignment::new()),
        &all,
        &all_see,
        LIMITS,
        no_id,
    );
    assert_eq!(waiting.unwrap().assignment, None);
    let released = group
        .heartbeat(t1, beat("a", 1, &kept), &all, &all_see, LIMITS, no_id)
        .unwrap();
    assert_eq!(released.member_epoch, 2);
    let given = group.heartbeat(
        t1,
        beat("b", b.member_epoch, &Assignment::new()),
        &all,
        &all_see,
        LIMITS,
        no_id,
    );
    let given = given.unwrap().assignment.unwrap();
    assert_eq!(count(&given) + count(&kept), 4);
    assert_exclusive(&group);
    assert_eq!(group.state_name(), "Stable");
}
