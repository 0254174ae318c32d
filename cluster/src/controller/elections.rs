//! Which partitions need a new leader when brokers stop answering, and whom: the decisions of
//! Kafka's controller, as changes to propose.

use crate::metadata::{Metadata, MetadataChange, PartitionMeta, NO_LEADER};
use std::collections::BTreeSet;

pub use oxbow_core::config::UNCLEAN_ELECTION_CONFIG;

/// The elections that follow from only `live` brokers answering:
/// - a partition whose leader is not live gets the first live in-sync replica (in replica
///   order, so the preferred leader wins when it can) at the next epoch, its in-sync replicas
///   cut to the live ones;
/// - with no live in-sync replica it goes offline ([`NO_LEADER`], in-sync replicas kept, so the
///   last of them leads again when it returns), unless its topic allows an unclean election,
///   where the first live replica leads alone;
/// - an offline partition one of whose in-sync replicas is live again gets it as leader.
///
/// A broker in controlled shutdown keeps what it leads (it is live) but is elected nowhere.
pub fn elections(metadata: &Metadata, live: &BTreeSet<i32>) -> Vec<MetadataChange> {
    let electable: BTreeSet<i32> = live.difference(&metadata.shutting_down).copied().collect();
    let mut changes = Vec::new();
    for topic in metadata.topics.values() {
        let unclean = topic
            .configs
            .get(UNCLEAN_ELECTION_CONFIG)
            .is_some_and(|v| v == "true");
        for (number, partition) in topic.partitions.iter().enumerate() {
            if live.contains(&partition.leader) {
                continue;
            }
            let Some((leader, isr)) = choose(partition, &electable, unclean) else {
                continue;
            };
            changes.push(MetadataChange::ElectLeader {
                topic: topic.name.clone(),
                partition: number as u32,
                leader,
                leader_epoch: partition.leader_epoch + 1,
                isr,
            });
        }
    }
    changes
}

/// The new leader and in-sync replicas of a partition whose leader is gone, or `None` when
/// nothing changes (it is offline and stays so).
fn choose(
    partition: &PartitionMeta,
    live: &BTreeSet<i32>,
    unclean: bool,
) -> Option<(i32, Vec<i32>)> {
    let live_isr: Vec<i32> = (partition.isr.iter().copied())
        .filter(|r| live.contains(r))
        .collect();
    let in_sync = (partition.replicas.iter()).find(|r| live_isr.contains(r));
    if let Some(&leader) = in_sync {
        return Some((leader, live_isr));
    }
    if unclean {
        if let Some(&leader) = partition.replicas.iter().find(|r| live.contains(r)) {
            return Some((leader, vec![leader]));
        }
    }
    (partition.leader != NO_LEADER).then(|| (NO_LEADER, partition.isr.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{TopicId, TopicMeta};
    use std::collections::BTreeMap;

    fn metadata(unclean: bool) -> Metadata {
        let partition = PartitionMeta {
            replicas: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 7,
            isr: vec![1, 2, 3],
        };
        let configs = match unclean {
            true => BTreeMap::from([(UNCLEAN_ELECTION_CONFIG.to_string(), "true".to_string())]),
            false => BTreeMap::new(),
        };
        let topic = TopicMeta {
            name: "t".into(),
            id: TopicId([1; 16]),
            partitions: vec![partition],
            configs,
            internal: false,
        };
        let mut metadata = Metadata::default();
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        metadata
    }

    fn apply_all(metadata: &mut Metadata, live: &[i32]) -> Vec<MetadataChange> {
        let changes = elections(metadata, &live.iter().copied().collect());
        for change in &changes {
            metadata.apply(change).unwrap();
        }
        changes
    }

    fn state(metadata: &Metadata) -> (i32, i32, Vec<i32>) {
        let p = &metadata.topics["t"].partitions[0];
        (p.leader, p.leader_epoch, p.isr.clone())
    }

    #[test]
    fn a_lost_leader_hands_over_to_the_next_live_in_sync_replica() {
        let mut m = metadata(false);
        assert!(apply_all(&mut m, &[1, 2, 3]).is_empty());
        apply_all(&mut m, &[2, 3]);
        assert_eq!(state(&m), (2, 8, vec![2, 3]));
        // The old leader returning changes nothing: it rejoins the ISR through replication.
        assert!(apply_all(&mut m, &[1, 2, 3]).is_empty());
    }

    #[test]
    fn a_broker_shutting_down_is_elected_nowhere() {
        let mut m = metadata(false);
        m.apply(&MetadataChange::RegisterBroker(
            crate::metadata::tests::broker(2),
        ))
        .unwrap();
        m.apply(&MetadataChange::ShutDownBroker { id: 2 }).unwrap();
        // Leader 1 lost: 2 is live and in sync but stopping, so 3 leads.
        apply_all(&mut m, &[2, 3]);
        assert_eq!(state(&m), (3, 8, vec![3]));
        // With only 2 left the partition waits offline rather than go to it.
        apply_all(&mut m, &[2]);
        assert_eq!(state(&m), (NO_LEADER, 9, vec![3]));
    }

    #[test]
    fn with_no_live_in_sync_replica_the_partition_waits_offline_unless_unclean_is_allowed() {
        let mut m = metadata(false);
        apply_all(&mut m, &[2, 3]);
        apply_all(&mut m, &[3]);
        assert_eq!(state(&m), (3, 9, vec![3]));
        apply_all(&mut m, &[1, 2]);
        assert_eq!(state(&m), (NO_LEADER, 10, vec![3]));
        assert!(
            apply_all(&mut m, &[1, 2]).is_empty(),
            "offline stays offline"
        );
        apply_all(&mut m, &[1, 2, 3]);
        assert_eq!(state(&m), (3, 11, vec![3]));

        let mut unclean = metadata(true);
        apply_all(&mut unclean, &[3]);
        apply_all(&mut unclean, &[2]);
        assert_eq!(state(&unclean), (2, 9, vec![2]));
    }
}
