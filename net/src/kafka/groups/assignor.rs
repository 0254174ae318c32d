//! The server-side assignors of KIP-848 groups: given the members' subscriptions, the
//! subscribed topics' partition counts and the previous target assignment, which partitions
//! each member should own. Pure functions: the coordinator calls them when the group epoch
//! moves past the assignment epoch.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The assignors a member may name in `ServerAssignor` (Kafka's `group.consumer.assignors`,
/// the first being the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Balanced over the members (no member owns two more than another among those that could
    /// take the partition) and sticky: a partition moves only to restore balance.
    Uniform,
    /// Per topic, contiguous ranges of partitions over the topic's subscribers in member id
    /// order, so members of topics with equal partition counts get the same partition numbers
    /// (for joins of co-partitioned topics).
    Range,
}

impl Assignor {
    /// The assignor a member asks for by name, if Oxbow has it.
    pub fn named(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment of every member of `subscriptions` (member id → subscribed topic
    /// names) over `topics` (name → partition count; topics not there are ignored), keeping
    /// what `previous` gave where the assignor allows it. Every partition of a topic someone
    /// subscribes to is assigned to exactly one of its subscribers.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        topics: &BTreeMap<String, u32>,
        previous: &BTreeMap<String, Assignment>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(subscriptions, topics, previous),
            Assignor::Range => range(subscriptions, topics),
        }
    }
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut assigned: BTreeMap<String, Assignment> = (subscriptions.keys())
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    for (topic, &count) in topics {
        let subscribers: Vec<&String> = (subscriptions.iter())
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let (each, extra) = (
            count as usize / subscribers.len(),
            count as usize % subscribers.len(),
        );
        let mut next = 0i32;
        for (rank, id) in subscribers.into_iter().enumerate() {
            let take = each + usize::from(rank < extra);
            let partitions: BTreeSet<i32> = (next..next + take as i32).collect();
            next += take as i32;
            if !partitions.is_empty() {
                assigned
                    .get_mut(id)
                    .expect("a member")
                    .insert(topic.clone(), partitions);
            }
        }
    }
    assigned
}

/// Keeps each member's previous partitions that it still subscribes to, gives each other
/// partition to the subscriber owning fewest (the partitions fewest members could take first),
/// then moves partitions from the most loaded members to subscribers owning at least two fewer
/// until no such move is left. Each move lowers the sum of squared loads, so the loop ends;
/// with equal subscriptions each step finds its member at the ends of the load order, so the
/// whole costs about (partitions + moves) × log(members).
fn uniform(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut subscribers: BTreeMap<&str, usize> = BTreeMap::new();
    for topic in subscriptions.values().flatten() {
        if topics.contains_key(topic) {
            *subscribers.entry(topic).or_default() += 1;
        }
    }
    let mut owned: BTreeMap<&String, BTreeSet<(&str, i32)>> = subscriptions
        .keys()
        .map(|id| (id, BTreeSet::new()))
        .collect();
    let mut taken: BTreeSet<(&str, i32)> = BTreeSet::new();
    for (id, subscribed) in subscriptions {
        for (topic, partitions) in previous.get(id).into_iter().flatten() {
            let Some((topic, &count)) = topics.get_key_value(topic.as_str()) else {
                continue;
            };
            if !subscribed.contains(topic) {
                continue;
            }
            for &p in partitions
                .iter()
                .filter(|&&p| (0..count as i32).contains(&p))
            {
                if taken.insert((topic, p)) {
                    owned.get_mut(id).expect("a member").insert((topic, p));
                }
            }
        }
    }
    let mut loads: Loads = (owned.iter()).map(|(id, o)| (o.len(), *id)).collect();
    let mut unowned: Vec<(usize, &str, i32)> = Vec::new();
    for (topic, &takers) in &subscribers {
        for p in (0..topics[*topic] as i32).filter(|&p| !taken.contains(&(*topic, p))) {
            unowned.push((takers, topic, p));
        }
    }
    unowned.sort();
    for (_, topic, p) in unowned {
        let taker = lightest_taker(&loads, subscriptions, topic, usize::MAX).expect("a subscriber");
        let load = owned[taker].len();
        reload(&mut loads, taker, load, load + 1);
        owned.get_mut(taker).expect("a member").insert((topic, p));
    }
    while let Some((topic, p, from, to)) = move_to_balance(&owned, &loads, subscriptions) {
        let (from_load, to_load) = (owned[from].len(), owned[to].len());
        reload(&mut loads, from, from_load, from_load - 1);
        reload(&mut loads, to, to_load, to_load + 1);
        owned.get_mut(from).expect("a member").remove(&(topic, p));
        owned.get_mut(to).expect("a member").insert((topic, p));
    }
    (owned.into_iter())
        .map(|(id, partitions)| {
            let mut assignment = Assignment::new();
            for (topic, p) in partitions {
                assignment.entry(topic.to_string()).or_default().insert(p);
            }
            (id.clone(), assignment)
        })
        .collect()
}

/// Members ordered by how many partitions they own.
type Loads<'a> = BTreeSet<(usize, &'a String)>;

fn reload<'a>(loads: &mut Loads<'a>, id: &'a String, old: usize, new: usize) {
    assert!(
        loads.remove(&(old, id)),
        "{id} did not own {old} partitions"
    );
    loads.insert((new, id));
}

/// The least loaded subscriber of `topic` owning fewer than `below`, if any (members' ids
/// break ties).
fn lightest_taker<'a>(
    loads: &Loads<'a>,
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topic: &str,
    below: usize,
) -> Option<&'a String> {
    (loads.iter())
        .take_while(|(load, _)| *load < below)
        .find(|(_, id)| subscriptions[*id].contains(topic))
        .map(|(_, id)| *id)
}

/// One partition whose owner holds at least two more than a subscriber that could take it,
/// taken from the most loaded owner that has one (its highest partition, so low partitions
/// stay put).
fn move_to_balance<'a>(
    owned: &BTreeMap<&'a String, BTreeSet<(&'a str, i32)>>,
    loads: &Loads<'a>,
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
) -> Option<(&'a str, i32, &'a String, &'a String)> {
    let &(lightest, _) = loads.first()?;
    for &(load, donor) in loads.iter().rev() {
        if load <= lightest + 1 {
            return None;
        }
        for &(topic, p) in owned[donor].iter().rev() {
            if let Some(taker) = lightest_taker(loads, subscriptions, topic, load - 1) {
                return Some((topic, p, donor, taker));
            }
        }
    }
    None
}

/// Each (topic, partition) of an assignment.
pub(super) fn flatten(assignment: &Assignment) -> impl Iterator<Item = (String, i32)> + '_ {
    (assignment.iter()).flat_map(|(topic, ps)| ps.iter().map(move |&p| (topic.clone(), p)))
}

/// Whether `assignment` holds that partition.
pub(super) fn contains(assignment: &Assignment, (topic, p): &(String, i32)) -> bool {
    assignment.get(topic).is_some_and(|ps| ps.contains(p))
}

/// The partitions in both.
pub(super) fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    filter(a, |tp| contains(b, tp))
}

/// The partitions of `a` not in `b`.
pub(super) fn subtract(a: &Assignment, b: &Assignment) -> Assignment {
    filter(a, |tp| !contains(b, tp))
}

fn filter(a: &Assignment, keep: impl Fn(&(String, i32)) -> bool) -> Assignment {
    let mut out = Assignment::new();
    for tp in flatten(a).filter(|tp| keep(tp)) {
        out.entry(tp.0).or_default().insert(tp.1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriptions(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        (members.iter())
            .map(|(id, topics)| {
                (
                    id.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
        counts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn loads(assigned: &BTreeMap<String, Assignment>) -> Vec<usize> {
        (assigned.values())
            .map(|a| a.values().map(BTreeSet::len).sum())
            .collect()
    }

    /// Every partition of a subscribed topic goes to exactly one of its subscribers.
    fn check_complete(
        subs: &BTreeMap<String, BTreeSet<String>>,
        topics: &BTreeMap<String, u32>,
        assigned: &BTreeMap<String, Assignment>,
    ) {
        let mut seen = BTreeSet::new();
        for (id, assignment) in assigned {
            for (topic, partitions) in assignment {
                assert!(
                    subs[id].contains(topic),
                    "{id} got {topic} without subscribing"
                );
                for &p in partitions {
                    assert!(
                        p >= 0 && p < topics[topic] as i32,
                        "{topic}-{p} does not exist"
                    );
                    assert!(
                        seen.insert((topic.clone(), p)),
                        "{topic}-{p} assigned twice"
                    );
                }
            }
        }
        for (topic, &count) in topics {
            if subs.values().any(|s| s.contains(topic)) {
                for p in 0..count as i32 {
                    assert!(seen.contains(&(topic.clone(), p)), "{topic}-{p} unassigned");
                }
            }
        }
    }

    #[test]
    fn uniform_balances_and_moves_only_what_balance_needs() {
        let all = topics(&[("a", 7), ("b", 5)]);
        let two = subscriptions(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]);
        let first = Assignor::Uniform.assign(&two, &all, &BTreeMap::new());
        check_complete(&two, &all, &first);
        assert_eq!(loads(&first), vec![6, 6]);
        // A third member joins: each of the others gives up exactly two partitions.
        let three = subscriptions(&[
            ("m1", &["a", "b"]),
            ("m2", &["a", "b"]),
            ("m3", &["a", "b"]),
        ]);
        let second = Assignor::Uniform.assign(&three, &all, &first);
        check_complete(&three, &all, &second);
        assert_eq!(loads(&second), vec![4, 4, 4]);
        for id in ["m1", "m2"] {
            let kept: usize = (second[id].iter())
                .map(|(t, ps)| ps.intersection(&first[id][t]).count())
                .sum();
            assert_eq!(kept, 4, "{id} kept its partitions where balance allowed");
        }
        // m1 leaves: its partitions go to the others and nothing else moves.
        let rest = subscriptions(&[("m2", &["a", "b"]), ("m3", &["a", "b"])]);
        let third = Assignor::Uniform.assign(&rest, &all, &second);
        check_complete(&rest, &all, &third);
        assert_eq!(loads(&third), vec![6, 6]);
        for id in ["m2", "m3"] {
            for (topic, partitions) in &second[id] {
                assert!(partitions.is_subset(&third[id][topic]), "{id} lost {topic}");
            }
        }
    }

    #[test]
    fn uniform_gives_each_partition_to_a_subscriber_with_mixed_subscriptions() {
        let all = topics(&[("a", 4), ("b", 6), ("c", 1)]);
        let subs = subscriptions(&[("m1", &["a"]), ("m2", &["a", "b"]), ("m3", &["b", "c"])]);
        let assigned = Assignor::Uniform.assign(&subs, &all, &BTreeMap::new());
        check_complete(&subs, &all, &assigned);
        // 11 partitions over three members: m1 can only take a's four, the rest balance.
        let mut counts = loads(&assigned);
        counts.sort();
        assert_eq!(counts, vec![3, 4, 4]);
    }

    #[test]
    fn uniform_drops_partitions_of_topics_gone_or_unsubscribed() {
        let subs = subscriptions(&[("m1", &["a"])]);
        let mut previous = BTreeMap::new();
        previous.insert(
            "m1".to_string(),
            Assignment::from([
                ("a".to_string(), BTreeSet::from([0, 9])),
                ("gone".to_string(), BTreeSet::from([0])),
            ]),
        );
        let all = topics(&[("a", 2)]);
        let assigned = Assignor::Uniform.assign(&subs, &all, &previous);
        assert_eq!(
            assigned["m1"],
            Assignment::from([("a".to_string(), BTreeSet::from([0, 1]))])
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_and_equal_numbers_across_topics() {
        let all = topics(&[("a", 5), ("b", 5), ("c", 2)]);
        let subs = subscriptions(&[("m1", &["a", "b", "c"]), ("m2", &["a", "b"])]);
        let assigned = Assignor::Range.assign(&subs, &all, &BTreeMap::new());
        check_complete(&subs, &all, &assigned);
        assert_eq!(assigned["m1"]["a"], BTreeSet::from([0, 1, 2]));
        assert_eq!(assigned["m1"]["a"], assigned["m1"]["b"]);
        assert_eq!(assigned["m2"]["b"], BTreeSet::from([3, 4]));
        assert_eq!(assigned["m1"]["c"], BTreeSet::from([0, 1]));
    }

    #[test]
    fn uniform_stays_complete_and_balanced_over_random_membership_changes() {
        let mut rng = fastrand::Rng::with_seed(848);
        let all = topics(&[("a", 12), ("b", 3), ("c", 9)]);
        let names = ["a", "b", "c"];
        let mut previous = BTreeMap::new();
        for _ in 0..300 {
            let members = rng.usize(1..8);
            let homogeneous = rng.bool();
            let mut subs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for m in 0..members {
                if rng.f64() < 0.2 {
                    continue;
                }
                let topics = (names.iter())
                    .filter(|_| homogeneous || rng.f64() < 0.6)
                    .map(|t| t.to_string())
                    .collect();
                subs.insert(format!("m{m}"), topics);
            }
            let assigned = Assignor::Uniform.assign(&subs, &all, &previous);
            check_complete(&subs, &all, &assigned);
            if homogeneous && !subs.is_empty() {
                let counts = loads(&assigned);
                let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(hi - lo <= 1, "unbalanced: {counts:?}");
            }
            previous = assigned;
        }
    }
}
