//! Moving a partition to other replicas (Kafka's AlterPartitionReassignments, KIP-455): the
//! replicas asked for join the partition's replicas at once, so that their nodes open it and
//! follow the leader from its log start; the ISR takes them in as they catch up (AlterIsr);
//! once every one of them is in sync the controller completes the move, and the partition
//! keeps only the replicas asked for, led by one of them. A move called off before then goes
//! back to the replicas the partition had (Kafka's cancellation, KIP-455). Nothing
//! acknowledged is lost on the way: the ISR only ever shrinks to members that hold everything
//! below the high watermark, and a new leader comes from what is left of it.

use super::{partition_mut, Metadata, MetadataChange, MetadataError, PartitionMeta, NO_LEADER};
use serde::{Deserialize, Serialize};

/// A partition's move in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// The replicas asked for, the preferred leader first.
    pub target: Vec<i32>,
    /// The replicas before the move, in their order: what a cancellation goes back to.
    pub original: Vec<i32>,
}

impl Reassignment {
    /// Replicas the move adds (Kafka's adding replicas).
    pub fn adding(&self) -> Vec<i32> {
        let new = |r: &&i32| !self.original.contains(r);
        self.target.iter().filter(new).copied().collect()
    }

    /// Replicas the move removes (Kafka's removing replicas).
    pub fn removing(&self) -> Vec<i32> {
        let gone = |r: &&i32| !self.target.contains(r);
        self.original.iter().filter(gone).copied().collect()
    }
}

impl Metadata {
    /// Starts moving `topic`/`partition` to `target`.
    pub(super) fn start_reassignment(
        &mut self,
        topic: &str,
        partition: u32,
        target: &[i32],
    ) -> Result<(), MetadataError> {
        let invalid = |why: String| MetadataError::Invalid(format!("{topic}/{partition}: {why}"));
        if target.is_empty() {
            return Err(invalid("no replicas asked for".into()));
        }
        let mut distinct = target.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != target.len() {
            return Err(invalid(format!("replicas {target:?} repeat a broker")));
        }
        if let Some(unknown) = target.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(invalid(format!("broker {unknown} is not registered")));
        }
        let moving = (self.reassignments.get(topic)).is_some_and(|p| p.contains_key(&partition));
        if moving {
            return Err(invalid("a reassignment is in progress".into()));
        }
        let current = partition_mut(&mut self.topics, topic, partition)?;
        if current.replicas == target {
            return Err(invalid(format!("already on {target:?}")));
        }
        // The replicas asked for first (the first is the preferred leader), then those that go.
        let original = current.replicas.clone();
        let mut replicas = target.to_vec();
        replicas.extend(original.iter().filter(|r| !target.contains(r)));
        current.replicas = replicas;
        let target = target.to_vec();
        (self.reassignments.entry(topic.to_string()).or_default())
            .insert(partition, Reassignment { target, original });
        Ok(())
    }

    /// Calls off the move of `topic`/`partition`: the replicas it added go, the ISR keeps the
    /// original replicas in it, and a leader that was only added hands over (at a new epoch)
    /// to the first in-sync original replica that is not fenced, or to none until one
    /// returns. Refused when no original replica is in sync: going back would lose the data.
    pub(super) fn cancel_reassignment(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<(), MetadataError> {
        let moving = (self.reassignments.get(topic))
            .and_then(|p| p.get(&partition))
            .cloned()
            .ok_or_else(|| {
                MetadataError::Invalid(format!("{topic}/{partition}: no reassignment in progress"))
            })?;
        let fenced = self.fenced.clone();
        let current = partition_mut(&mut self.topics, topic, partition)?;
        let isr: Vec<i32> = (current.isr.iter().copied())
            .filter(|r| moving.original.contains(r))
            .collect();
        if isr.is_empty() {
            return Err(MetadataError::Invalid(format!(
                "{topic}/{partition}: none of its original replicas {:?} is in sync",
                moving.original
            )));
        }
        let leader = if moving.original.contains(&current.leader) {
            current.leader
        } else {
            (moving.original.iter().copied())
                .find(|r| isr.contains(r) && !fenced.contains(r))
                .unwrap_or(NO_LEADER)
        };
        current.isr = isr;
        settle(current, moving.original, leader);
        self.end_reassignment(topic, partition);
        Ok(())
    }

    fn end_reassignment(&mut self, topic: &str, partition: u32) {
        if let Some(partitions) = self.reassignments.get_mut(topic) {
            partitions.remove(&partition);
            if partitions.is_empty() {
                self.reassignments.remove(topic);
            }
        }
    }

    /// Finishes a reassignment whose added replicas are all in sync.
    pub(super) fn complete_reassignment(
        &mut self,
        topic: &str,
        partition: u32,
        leader_epoch: i32,
    ) -> Result<(), MetadataError> {
        let target = (self.reassignments.get(topic))
            .and_then(|p| p.get(&partition))
            .map(|moving| moving.target.clone())
            .ok_or_else(|| {
                MetadataError::Invalid(format!("{topic}/{partition}: no reassignment in progress"))
            })?;
        let current = partition_mut(&mut self.topics, topic, partition)?;
        if current.leader_epoch != leader_epoch {
            return Err(MetadataError::Stale(format!(
                "{topic}/{partition} is at epoch {}, not {leader_epoch}",
                current.leader_epoch
            )));
        }
        if let Some(behind) = target.iter().find(|r| !current.isr.contains(r)) {
            return Err(MetadataError::Stale(format!(
                "{topic}/{partition}: replica {behind} is not in sync yet"
            )));
        }
        current.isr.retain(|r| target.contains(r));
        let leader = if target.contains(&current.leader) {
            current.leader
        } else {
            target[0]
        };
        settle(current, target, leader);
        self.end_reassignment(topic, partition);
        Ok(())
    }

    /// The completions the controller proposes: reassignments whose every replica asked for is
    /// in sync.
    pub fn reassignments_done(&self) -> Vec<MetadataChange> {
        let mut done = Vec::new();
        for (topic, partitions) in &self.reassignments {
            for (&partition, Reassignment { target, .. }) in partitions {
                let Some(meta) =
                    (self.topic(topic)).and_then(|t| t.partitions.get(partition as usize))
                else {
                    continue;
                };
                if target.iter().all(|r| meta.isr.contains(r)) {
                    done.push(MetadataChange::CompleteReassignment {
                        topic: topic.clone(),
                        partition,
                        leader_epoch: meta.leader_epoch,
                    });
                }
            }
        }
        done
    }
}

/// Gives a partition the replicas a move ends with, led by `leader`. The leader epoch goes up
/// when the leader changes and also when a replica leaves under the same leader, as in Kafka's
/// KRaft controller: a fetch still in flight from the replica's earlier life then carries a
/// fenced epoch, so if the replica is added again (its log deleted meanwhile) that fetch
/// cannot vouch to the leader for records it no longer holds.
fn settle(partition: &mut PartitionMeta, replicas: Vec<i32>, leader: i32) {
    let replica_left = partition.replicas.iter().any(|r| !replicas.contains(r));
    if replica_left || leader != partition.leader {
        partition.leader_epoch += 1;
    }
    partition.leader = leader;
    partition.replicas = replicas;
}

#[cfg(test)]
mod tests {
    use super::super::tests::broker;
    use super::super::{PartitionMeta, TopicId, TopicMeta};
    use super::*;
    use std::collections::BTreeMap;

    fn metadata() -> Metadata {
        let mut metadata = Metadata::default();
        for id in 0..4 {
            metadata
                .apply(&MetadataChange::RegisterBroker(broker(id)))
                .unwrap();
        }
        let topic = TopicMeta {
            name: "t".into(),
            id: TopicId([1; 16]),
            partitions: vec![PartitionMeta {
                replicas: vec![0, 1, 2],
                leader: 0,
                leader_epoch: 5,
                isr: vec![0, 1, 2],
            }],
            configs: BTreeMap::new(),
            internal: false,
        };
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        metadata
    }

    fn state(m: &Metadata) -> (Vec<i32>, i32, i32, Vec<i32>) {
        let p = &m.topics["t"].partitions[0];
        (p.replicas.clone(), p.leader, p.leader_epoch, p.isr.clone())
    }

    #[test]
    fn a_partition_moves_once_the_new_replicas_are_in_sync_and_its_leader_follows() {
        let mut m = metadata();
        let reassign = |replicas: Vec<i32>| MetadataChange::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas,
        };
        for bad in [vec![], vec![1, 1], vec![1, 9], vec![0, 1, 2]] {
            assert!(m.apply(&reassign(bad.clone())).is_err(), "{bad:?}");
        }
        m.apply(&reassign(vec![3, 1, 2])).unwrap();
        assert_eq!(state(&m), (vec![3, 1, 2, 0], 0, 5, vec![0, 1, 2]));
        assert!(m.apply(&reassign(vec![1, 2, 3])).is_err(), "one at a time");
        // 3 is not in sync: nothing to complete, and a completion is refused.
        assert!(m.reassignments_done().is_empty());
        let complete = MetadataChange::CompleteReassignment {
            topic: "t".into(),
            partition: 0,
            leader_epoch: 5,
        };
        assert!(m.apply(&complete).is_err());
        let caught_up = MetadataChange::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 0,
            leader_epoch: 5,
            isr: vec![0, 1, 2, 3],
        };
        m.apply(&caught_up).unwrap();
        assert_eq!(m.reassignments_done(), vec![complete.clone()]);
        m.apply(&complete).unwrap();
        // The old leader goes: the first replica asked for leads at the next epoch.
        assert_eq!(state(&m), (vec![3, 1, 2], 3, 6, vec![1, 2, 3]));
        assert!(m.reassignments.is_empty() && m.reassignments_done().is_empty());
        assert!(m.apply(&complete).is_err(), "done once");
    }

    #[test]
    fn a_completed_move_that_removes_a_replica_raises_the_epoch_though_the_leader_stays() {
        let mut m = metadata();
        let reassign = MetadataChange::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas: vec![0, 1, 3],
        };
        m.apply(&reassign).unwrap();
        let caught_up = MetadataChange::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 0,
            leader_epoch: 5,
            isr: vec![0, 1, 2, 3],
        };
        m.apply(&caught_up).unwrap();
        for change in m.reassignments_done() {
            m.apply(&change).unwrap();
        }
        // 2 left: a fetch it sent at epoch 5 is fenced now.
        assert_eq!(state(&m), (vec![0, 1, 3], 0, 6, vec![0, 1, 3]));
    }

    #[test]
    fn a_cancelled_move_goes_back_to_the_original_replicas_and_an_added_leader_hands_over() {
        let mut m = metadata();
        let cancel = MetadataChange::CancelReassignment {
            topic: "t".into(),
            partition: 0,
        };
        assert!(m.apply(&cancel).is_err(), "nothing to cancel");
        let reassign = MetadataChange::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas: vec![3, 2],
        };
        m.apply(&reassign).unwrap();
        let moving = &m.reassignments["t"][&0];
        assert_eq!((moving.adding(), moving.removing()), (vec![3], vec![0, 1]));
        // 3 caught up and leads; only it and 1 are in sync.
        let p = &mut m.topics.get_mut("t").unwrap().partitions[0];
        (p.leader, p.leader_epoch, p.isr) = (3, 6, vec![3]);
        assert!(m.apply(&cancel).is_err(), "no original replica is in sync");
        m.topics.get_mut("t").unwrap().partitions[0].isr = vec![3, 1, 0];
        m.fenced.insert(0);
        m.apply(&cancel).unwrap();
        // Back to 0, 1, 2 in their order; 1 leads (0 is fenced) at the next epoch.
        assert_eq!(state(&m), (vec![0, 1, 2], 1, 7, vec![1, 0]));
        assert!(m.reassignments.is_empty());
        // A leader that was there before stays; the replica the move added leaves, so the
        // epoch goes up all the same.
        m.apply(&reassign).unwrap();
        m.apply(&cancel).unwrap();
        assert_eq!(state(&m), (vec![0, 1, 2], 1, 8, vec![1, 0]));
        // A move that only reorders the replicas removes none: the epoch stays.
        let reorder = MetadataChange::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas: vec![1, 0, 2],
        };
        m.apply(&reorder).unwrap();
        m.apply(&cancel).unwrap();
        assert_eq!(state(&m), (vec![0, 1, 2], 1, 8, vec![1, 0]));
    }
}
