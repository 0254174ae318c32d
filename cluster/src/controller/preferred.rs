//! Preferred-leader rebalancing (Kafka's `auto.leader.rebalance.enable`): the first replica of
//! each partition is its preferred leader, and placement spreads those over the brokers, so
//! leadership is balanced when every partition is led by its preferred replica. Failures and
//! controlled shutdowns move leadership away; once the preferred replica is back in the ISR,
//! this moves it home.

use crate::metadata::{Metadata, MetadataChange};
use std::collections::{BTreeMap, BTreeSet};

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
                && !metadata.fenced.contains(&first)
                && !metadata.shutting_down.contains(&first)
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
