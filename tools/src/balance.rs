//! Where replicas go to even out a cluster (`oxbow cluster rebalance`, typically after a node
//! joins): while one live broker holds at least two replicas more than another, a replica of a
//! partition the fuller one holds and the emptier one lacks moves there, in the same place in
//! the replica list, so that preferred leaders spread with the replicas. Each partition moves
//! at most once per plan (one reassignment per partition at a time); where there is a choice,
//! the replica moved is the one that also evens out preferred leaders. Replicas on brokers the
//! metadata does not list (fenced) stay where they are.

use crate::reassign::Move;
use kafka_protocol::messages::{BrokerId, MetadataResponse};
use std::collections::{BTreeMap, BTreeSet};

/// The moves that even out the replicas of every partition in `metadata` over its brokers.
pub fn plan(metadata: &MetadataResponse) -> Result<Vec<Move>, String> {
    let brokers: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    let mut names = Vec::new();
    let mut assignments = Vec::new();
    for topic in &metadata.topics {
        let name = topic.name.clone().ok_or("a topic without a name")?;
        for p in &topic.partitions {
            names.push((name.clone(), p.partition_index));
            assignments.push(p.replica_nodes.iter().map(|b| b.0).collect());
        }
    }
    Ok((moves(&brokers, &assignments).into_iter())
        .map(|(at, replicas)| {
            let (topic, partition) = names[at].clone();
            let ids = replicas.into_iter().map(BrokerId).collect();
            (topic, partition, Some(ids))
        })
        .collect())
}

/// For partitions with `assignments` (replica lists, preferred leader first) over `brokers`:
/// which partitions (by index) get which new replica lists.
fn moves(brokers: &[i32], assignments: &[Vec<i32>]) -> Vec<(usize, Vec<i32>)> {
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    let mut leads: BTreeMap<i32, usize> = load.clone();
    for replicas in assignments {
        for (place, broker) in replicas.iter().enumerate() {
            if let Some(n) = load.get_mut(broker) {
                *n += 1;
                if place == 0 {
                    *leads.get_mut(broker).expect("same keys") += 1;
                }
            }
        }
    }
    let mut moved: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
    while let Some((at, from, to)) = next_move(&load, &leads, assignments, &moved) {
        let mut replicas = assignments[at].clone();
        let place = replicas
            .iter()
            .position(|&r| r == from)
            .expect("chosen holding it");
        replicas[place] = to;
        *load.get_mut(&from).expect("listed") -= 1;
        *load.get_mut(&to).expect("listed") += 1;
        if place == 0 {
            *leads.get_mut(&from).expect("listed") -= 1;
            *leads.get_mut(&to).expect("listed") += 1;
        }
        moved.insert(at, replicas);
    }
    moved.into_iter().collect()
}

/// The next replica to move: from the fullest broker to the emptiest that can take one of its
/// unmoved partitions, while they differ by two or more. `None` once balanced or stuck.
fn next_move(
    load: &BTreeMap<i32, usize>,
    leads: &BTreeMap<i32, usize>,
    assignments: &[Vec<i32>],
    moved: &BTreeMap<usize, Vec<i32>>,
) -> Option<(usize, i32, i32)> {
    let mut fullest: Vec<(usize, i32)> = load.iter().map(|(&b, &n)| (n, b)).collect();
    fullest.sort_unstable_by(|a, b| b.cmp(a));
    let emptiest: BTreeSet<(usize, i32)> = load.iter().map(|(&b, &n)| (n, b)).collect();
    for &(full, from) in &fullest {
        for &(_, to) in emptiest.iter().take_while(|(n, _)| n + 2 <= full) {
            // Move a preferred leadership along when `from` leads more than `to`.
            let lead_too = leads[&from] > leads[&to];
            let candidates = (assignments.iter().enumerate())
                .filter(|(at, _)| !moved.contains_key(at))
                .filter(|(_, r)| r.contains(&from) && !r.contains(&to));
            let mut fallback = None;
            for (at, replicas) in candidates {
                if (replicas[0] == from) == lead_too {
                    return Some((at, from, to));
                }
                fallback.get_or_insert((at, from, to));
            }
            if fallback.is_some() {
                return fallback;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(brokers: &[i32], assignments: &[Vec<i32>]) -> (Vec<usize>, Vec<usize>) {
        let count = |b: i32, only_first: bool| {
            (assignments.iter())
                .filter(|r| {
                    if only_first {
                        r[0] == b
                    } else {
                        r.contains(&b)
                    }
                })
                .count()
        };
        (
            brokers.iter().map(|&b| count(b, false)).collect(),
            brokers.iter().map(|&b| count(b, true)).collect(),
        )
    }

    #[test]
    fn a_joined_broker_gets_its_share_of_replicas_and_preferred_leaders() {
        // Six partitions on three replicas over brokers 0-2; broker 3 has just joined.
        let mut assignments: Vec<Vec<i32>> = (0..6)
            .map(|p| (0..3).map(|i| (p + i) % 3).collect())
            .collect();
        let brokers = [0, 1, 2, 3];
        let planned = moves(&brokers, &assignments);
        for (at, replicas) in &planned {
            let before: BTreeSet<i32> = assignments[*at].iter().copied().collect();
            let after: BTreeSet<i32> = replicas.iter().copied().collect();
            assert_eq!(after.len(), 3, "no broker twice: {replicas:?}");
            assert_eq!(before.difference(&after).count(), 1, "one replica moves");
            assignments[*at] = replicas.clone();
        }
        let (replicas, leaders) = loads(&brokers, &assignments);
        assert_eq!(replicas.iter().sum::<usize>(), 18);
        assert!(replicas.iter().all(|&n| n == 4 || n == 5), "{replicas:?}");
        assert!(leaders.iter().all(|&n| n == 1 || n == 2), "{leaders:?}");
        assert!(moves(&brokers, &assignments).is_empty(), "balanced now");
    }

    #[test]
    fn a_balanced_cluster_and_unlisted_brokers_move_nothing() {
        let assignments = vec![vec![0, 1], vec![1, 2], vec![2, 0]];
        assert!(moves(&[0, 1, 2], &assignments).is_empty());
        // Broker 2 is fenced (not listed): its replicas stay, the others are even.
        assert!(moves(&[0, 1], &assignments).is_empty());
        // One partition per broker pair cannot give a fourth broker more than it can take.
        let single = vec![vec![0, 1, 2]];
        let planned = moves(&[0, 1, 2, 3], &single);
        assert!(planned.is_empty(), "{planned:?}");
    }
}
