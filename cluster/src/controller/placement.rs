//! Where a new topic's replicas go: Kafka's assignment (`AdminUtils.assignReplicasToBrokers`),
//! so that leaders (first replicas) and followers spread evenly over the brokers and, when
//! every broker names a rack, each partition's replicas over as many racks as it can.

use crate::metadata::BrokerMeta;
use std::collections::{BTreeMap, BTreeSet};

/// Why replicas cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// Fewer brokers than replicas asked for (Kafka's INVALID_REPLICATION_FACTOR message).
    #[error("Replication factor: {wanted} larger than available brokers: {brokers}.")]
    TooFewBrokers {
        /// Replicas per partition asked for.
        wanted: usize,
        /// Brokers available.
        brokers: usize,
    },
    /// A replication factor below one.
    #[error("Replication factor must be larger than 0.")]
    NoReplicas,
}

/// Replicas for `partitions` partitions of `replication_factor` replicas each over `brokers`,
/// the preferred leader first. `rng` picks where the rotation starts, so that topics created
/// one after another do not all lead on the same broker.
pub fn assign_replicas(
    brokers: &[BrokerMeta],
    partitions: u32,
    replication_factor: usize,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError::NoReplicas);
    }
    if replication_factor > brokers.len() {
        return Err(PlacementError::TooFewBrokers {
            wanted: replication_factor,
            brokers: brokers.len(),
        });
    }
    let racks: Option<BTreeMap<i32, &str>> = brokers
        .iter()
        .map(|b| b.rack.as_deref().map(|rack| (b.id, rack)))
        .collect();
    let arranged = match &racks {
        Some(racks) => rack_alternated(racks),
        None => {
            let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
            ids.sort_unstable();
            ids
        }
    };
    let rack_count = racks
        .as_ref()
        .map_or(1, |r| r.values().collect::<BTreeSet<_>>().len());
    let n = arranged.len();
    let start = rng.usize(..n);
    let mut shift = rng.usize(..n);
    let mut assignment = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions as usize {
        if partition > 0 && partition.is_multiple_of(n) {
            shift += 1;
        }
        let first = (partition + start) % n;
        let replicas = match &racks {
            None => std::iter::once(arranged[first])
                .chain(
                    (0..replication_factor - 1)
                        .map(|j| arranged[replica_index(first, shift, j, n)]),
                )
                .collect(),
            Some(racks) => rack_aware_replicas(
                &arranged,
                racks,
                rack_count,
                first,
                shift,
                replication_factor,
            ),
        };
        assignment.push(replicas);
    }
    Ok(assignment)
}

/// Kafka's index of the `j`-th follower of a partition whose leader is at `first`.
fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    if n == 1 {
        return first;
    }
    (first + 1 + (shift + j) % (n - 1)) % n
}

/// Followers taken in rotation, skipping a broker in a rack that already holds a replica
/// while some rack holds none, and a broker that already holds one.
fn rack_aware_replicas(
    arranged: &[i32],
    racks: &BTreeMap<i32, &str>,
    rack_count: usize,
    first: usize,
    shift: usize,
    replication_factor: usize,
) -> Vec<i32> {
    let n = arranged.len();
    let leader = arranged[first];
    let mut replicas = vec![leader];
    let mut racks_used = BTreeSet::from([racks[&leader]]);
    let mut k = 0;
    while replicas.len() < replication_factor {
        let broker = arranged[replica_index(first, shift * rack_count, k, n)];
        let rack = racks[&broker];
        let rack_ok = !racks_used.contains(rack) || racks_used.len() == rack_count;
        let broker_ok = !replicas.contains(&broker);
        if rack_ok && broker_ok {
            replicas.push(broker);
            racks_used.insert(rack);
        }
        k += 1;
        assert!(
            k <= n * n + replication_factor,
            "no broker found for replica {} of {replicas:?}",
            replicas.len()
        );
    }
    replicas
}

/// Brokers ordered by taking one from each rack in turn (racks and brokers in id order).
fn rack_alternated(racks: &BTreeMap<i32, &str>) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (&broker, &rack) in racks {
        by_rack.entry(rack).or_default().push(broker);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|i| by_rack.values().filter_map(move |b| b.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<BrokerMeta> {
        racks
            .iter()
            .enumerate()
            .map(|(id, rack)| BrokerMeta {
                id: id as i32 + 1,
                kafka_addr: String::new(),
                native_addr: String::new(),
                cluster_addr: None,
                rack: rack.map(str::to_string),
                shards: 1,
                kafka_listeners: Default::default(),
                native_listeners: Default::default(),
            })
            .collect()
    }

    fn counts(assignment: &[Vec<i32>], leaders_only: bool) -> BTreeMap<i32, usize> {
        let mut counts = BTreeMap::new();
        for replicas in assignment {
            let taken = if leaders_only {
                &replicas[..1]
            } else {
                replicas
            };
            for b in taken {
                *counts.entry(*b).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn leaders_and_replicas_spread_evenly_over_brokers() {
        let mut rng = fastrand::Rng::with_seed(1);
        for n in 1..=7 {
            let brokers = brokers(&vec![None; n]);
            for rf in 1..=n.min(3) {
                for seed in 0..20 {
                    rng.seed(seed);
                    let partitions = (n * 4) as u32;
                    let assignment = assign_replicas(&brokers, partitions, rf, &mut rng).unwrap();
                    for replicas in &assignment {
                        let distinct: BTreeSet<_> = replicas.iter().collect();
                        assert_eq!(distinct.len(), rf, "{replicas:?}");
                    }
                    let leaders = counts(&assignment, true);
                    assert!(leaders.values().all(|&c| c == 4), "{leaders:?}");
                    let all = counts(&assignment, false);
                    assert!(all.values().all(|&c| c == 4 * rf), "{all:?}");
                }
            }
        }
    }

    #[test]
    fn replicas_span_racks_and_too_few_brokers_are_refused() {
        let mut rng = fastrand::Rng::with_seed(2);
        let racked = brokers(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let rack_of = |id: i32| racked[(id - 1) as usize].rack.clone().unwrap();
        for seed in 0..50 {
            rng.seed(seed);
            let assignment = assign_replicas(&racked, 12, 3, &mut rng).unwrap();
            for replicas in &assignment {
                let racks: BTreeSet<String> = replicas.iter().map(|&b| rack_of(b)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?} on racks {racks:?}");
            }
            assert!(counts(&assignment, true).values().all(|&c| c == 2));
        }
        assert_eq!(
            assign_replicas(&racked[..2], 1, 3, &mut rng),
            Err(PlacementError::TooFewBrokers {
                wanted: 3,
                brokers: 2
            })
        );
        assert_eq!(
            assign_replicas(&racked, 1, 0, &mut rng),
            Err(PlacementError::NoReplicas)
        );
    }
}
