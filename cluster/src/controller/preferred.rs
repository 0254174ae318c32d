//! Preferred-leader rebalancing (Kafka's `auto.leader.rebalance.enable`): the first replica of
//! each partition is its preferred leader, and placement spreads those over the brokers, so
//! leadership is balanced when every partition is led by its preferred replica. Failures and
//! controlled shutdowns move leadership away; once the preferred replica is back in the ISR,
//! this moves it home.

use crate::metadata::{Metadata, MetadataChange, PartitionMeta, NO_LEADER};
use std::collections::{BTreeMap, BTreeSet};

/// Why an election an operator asked for (Kafka's ElectLeaders) does not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElectionRefusal {
    /// No such topic or partition.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// The partition is led as asked already (Kafka's ELECTION_NOT_NEEDED).
    #[error("the partition is already led as asked")]
    NotNeeded,
    /// The preferred replica is not in sync, or fenced, or shutting down (Kafka's
    /// PREFERRED_LEADER_NOT_AVAILABLE).
    #[error("the preferred replica is not an in-sync live broker")]
    PreferredNotAvailable,
    /// An unclean election found no live replica (Kafka's ELIGIBLE_LEADERS_NOT_AVAILABLE).
    #[error("no live replica can lead")]
    NoEligibleLeader,
}

/// Whether `broker` may be handed leadership now: registered, not fenced, not stopping.
fn electable(metadata: &Metadata, broker: i32) -> bool {
    metadata.brokers.contains_key(&broker)
        && !metadata.fenced.contains(&broker)
        && !metadata.shutting_down.contains(&broker)
}

fn partition_of<'a>(
    metadata: &'a Metadata,
    topic: &str,
    partition: u32,
) -> Result<&'a PartitionMeta, ElectionRefusal> {
    (metadata.topic(topic))
        .and_then(|t| t.partitions.get(partition as usize))
        .ok_or(ElectionRefusal::UnknownPartition)
}

/// The election that makes a partition's preferred replica its leader (Kafka's ElectLeaders
/// of type PREFERRED); unfenced brokers count as live, as the controller last judged them.
pub fn elect_preferred(
    metadata: &Metadata,
    topic: &str,
    partition: u32,
) -> Result<MetadataChange, ElectionRefusal> {
    let meta = partition_of(metadata, topic, partition)?;
    let first = *meta
        .replicas
        .first()
        .ok_or(ElectionRefusal::UnknownPartition)?;
    if meta.leader == first {
        return Err(ElectionRefusal::NotNeeded);
    }
    if !electable(metadata, first) || !meta.isr.contains(&first) {
        return Err(ElectionRefusal::PreferredNotAvailable);
    }
    Ok(MetadataChange::ElectLeader {
        topic: topic.to_string(),
        partition,
        leader: first,
        leader_epoch: meta.leader_epoch + 1,
        isr: meta.isr.clone(),
    })
}

/// The election that gives an offline partition (no leader: no in-sync replica is live) its
/// first live replica as leader, alone in the ISR, accepting the loss of whatever it lacks
/// (Kafka's ElectLeaders of type UNCLEAN).
pub fn elect_unclean(
    metadata: &Metadata,
    topic: &str,
    partition: u32,
) -> Result<MetadataChange, ElectionRefusal> {
    let meta = partition_of(metadata, topic, partition)?;
    if meta.leader != NO_LEADER {
        return Err(ElectionRefusal::NotNeeded);
    }
    let leader = (meta.replicas.iter().copied())
        .find(|&r| electable(metadata, r))
        .ok_or(ElectionRefusal::NoEligibleLeader)?;
    Ok(MetadataChange::ElectLeader {
        topic: topic.to_string(),
        partition,
        leader,
        leader_epoch: meta.leader_epoch + 1,
        isr: vec![leader],
    })
}

/// The elections that hand partitions back to their preferred replica, for every broker whose
/// share of partitions it prefers but does not lead is above `imbalance_percent` (Kafka's
/// `leader.imbalance.per.broker.percentage`). A preferred replica qualifies when it is live,
/// neither fenced nor shutting down, and in the ISR.
pub fn preferred_leader_elections(
    metadata: &Metadata,
    live: &BTreeSet<i32>,
    imbalance_percent: u32,
) -> Vec<MetadataChange> {
    // Per preferred broker: partitions it prefers, and those it could lead but does not.
    let mut preferred: BTreeMap<i32, (usize, Vec<MetadataChange>)> = BTreeMap::new();
    for topic in metadata.topics.values() {
        for (number, partition) in topic.partitions.iter().enumerate() {
            let Some(&first) = partition.replicas.first() else {
                continue;
            };
            let entry = preferred.entry(first).or_default();
            entry.0 += 1;
            let electable = live.contains(&first)
                && electable(metadata, first)
                && partition.isr.contains(&first);
            if partition.leader != first && electable {
                entry.1.push(MetadataChange::ElectLeader {
                    topic: topic.name.clone(),
                    partition: number as u32,
                    leader: first,
                    leader_epoch: partition.leader_epoch + 1,
                    isr: partition.isr.clone(),
                });
            }
        }
    }
    (preferred.into_values())
        .filter(|(prefers, moves)| moves.len() * 100 > *prefers * imbalance_percent as usize)
        .flat_map(|(_, moves)| moves)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::broker;
    use crate::metadata::{PartitionMeta, TopicId, TopicMeta};

    fn metadata(leaders: &[(Vec<i32>, i32, Vec<i32>)]) -> Metadata {
        let mut metadata = Metadata::default();
        for id in 0..3 {
            metadata
                .apply(&MetadataChange::RegisterBroker(broker(id)))
                .unwrap();
        }
        let partitions = (leaders.iter())
            .map(|(replicas, leader, isr)| PartitionMeta {
                replicas: replicas.clone(),
                leader: *leader,
                leader_epoch: 3,
                isr: isr.clone(),
            })
            .collect();
        let topic = TopicMeta {
            name: "t".into(),
            id: TopicId([1; 16]),
            partitions,
            configs: BTreeMap::new(),
            internal: false,
        };
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        metadata
    }

    #[test]
    fn leadership_goes_home_to_in_sync_preferred_replicas_past_the_threshold() {
        let all = BTreeSet::from([0, 1, 2]);
        let m = metadata(&[
            // Preferred 0, led by 1: moves back (0 is in sync).
            (vec![0, 1, 2], 1, vec![0, 1, 2]),
            // Preferred 1 out of the ISR: stays with 2.
            (vec![1, 2, 0], 2, vec![2, 0]),
            // Already home.
            (vec![2, 0, 1], 2, vec![0, 1, 2]),
        ]);
        let changes = preferred_leader_elections(&m, &all, 10);
        assert_eq!(
            changes,
            vec![MetadataChange::ElectLeader {
                topic: "t".into(),
                partition: 0,
                leader: 0,
                leader_epoch: 4,
                isr: vec![0, 1, 2],
            }]
        );
        let mut applied = m.clone();
        applied.apply(&changes[0]).unwrap();
        assert!(preferred_leader_elections(&applied, &all, 10).is_empty());
        // Not live, or stopping: no move.
        assert!(preferred_leader_elections(&m, &BTreeSet::from([1, 2]), 10).is_empty());
        let mut stopping = m.clone();
        (stopping.apply(&MetadataChange::ShutDownBroker { id: 0 })).unwrap();
        assert!(preferred_leader_elections(&stopping, &all, 10).is_empty());
    }

    #[test]
    fn operator_elections_say_why_they_do_not_happen() {
        let mut m = metadata(&[
            (vec![0, 1, 2], 1, vec![0, 1, 2]),
            (vec![1, 2, 0], 2, vec![2, 0]),
            (vec![2, 0, 1], 2, vec![0, 1, 2]),
            (vec![0, 1], NO_LEADER, vec![0]),
        ]);
        let moved = elect_preferred(&m, "t", 0).unwrap();
        assert!(matches!(
            moved,
            MetadataChange::ElectLeader {
                leader: 0,
                leader_epoch: 4,
                ..
            }
        ));
        assert_eq!(
            elect_preferred(&m, "t", 1),
            Err(ElectionRefusal::PreferredNotAvailable)
        );
        assert_eq!(elect_preferred(&m, "t", 2), Err(ElectionRefusal::NotNeeded));
        assert_eq!(
            elect_preferred(&m, "t", 9),
            Err(ElectionRefusal::UnknownPartition)
        );
        assert_eq!(elect_unclean(&m, "t", 0), Err(ElectionRefusal::NotNeeded));
        (m.apply(&MetadataChange::FenceBroker { id: 0 })).unwrap();
        let unclean = elect_unclean(&m, "t", 3).unwrap();
        assert_eq!(
            unclean,
            MetadataChange::ElectLeader {
                topic: "t".into(),
                partition: 3,
                leader: 1,
                leader_epoch: 4,
                isr: vec![1],
            }
        );
        m.apply(&unclean).unwrap();
        (m.apply(&MetadataChange::FenceBroker { id: 1 })).unwrap();
        let mut offline = m.clone();
        let p = &mut offline.topics.get_mut("t").unwrap().partitions[3];
        p.leader = NO_LEADER;
        assert_eq!(
            elect_unclean(&offline, "t", 3),
            Err(ElectionRefusal::NoEligibleLeader)
        );
    }

    #[test]
    fn a_broker_below_the_imbalance_threshold_keeps_things_as_they_are() {
        // Broker 0 prefers 20 partitions and misses 2 of them: 10%, not above it.
        let mut partitions = vec![(vec![0, 1, 2], 0, vec![0, 1, 2]); 18];
        partitions.extend(vec![(vec![0, 1, 2], 1, vec![0, 1, 2]); 2]);
        let m = metadata(&partitions);
        let all = BTreeSet::from([0, 1, 2]);
        assert!(preferred_leader_elections(&m, &all, 10).is_empty());
        assert_eq!(preferred_leader_elections(&m, &all, 5).len(), 2);
    }
}
