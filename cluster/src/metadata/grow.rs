//! More partitions for a topic (Kafka's CreatePartitions): the new ones are appended after
//! the existing ones, so existing partitions keep their numbers and their data; records with
//! a key may hash to another partition from then on, as in Kafka.

use super::{Metadata, MetadataError, PartitionMeta};

impl Metadata {
    /// Appends `partitions` to `topic`: each must name distinct registered brokers as many as
    /// the topic's other partitions have, be led by its first replica at epoch 0, and have
    /// every replica in sync.
    pub(super) fn add_partitions(
        &mut self,
        topic: &str,
        partitions: &[PartitionMeta],
    ) -> Result<(), MetadataError> {
        let invalid = |why: String| MetadataError::Invalid(format!("{topic}: {why}"));
        let meta =
            (self.topics.get(topic)).ok_or_else(|| MetadataError::UnknownTopic(topic.into()))?;
        if meta.internal {
            return Err(invalid("an internal topic keeps its partitions".into()));
        }
        if partitions.is_empty() {
            return Err(invalid("no partitions to add".into()));
        }
        let replication = meta.partitions.first().map_or(1, |p| p.replicas.len());
        for p in partitions {
            let mut distinct = p.replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() != replication || p.replicas.len() != replication {
                return Err(invalid(format!(
                    "replicas {:?}: {replication} distinct brokers expected",
                    p.replicas
                )));
            }
            if let Some(unknown) = p.replicas.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err(invalid(format!("broker {unknown} is not registered")));
            }
            if p.leader != p.replicas[0] || p.leader_epoch != 0 || p.isr != p.replicas {
                return Err(invalid(format!("{p:?}: a new partition starts in sync")));
            }
        }
        let meta = self.topics.get_mut(topic).expect("checked above");
        meta.partitions.extend_from_slice(partitions);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::broker;
    use super::super::{MetadataChange, TopicId, TopicMeta};
    use super::*;
    use std::collections::BTreeMap;

    fn partition(replicas: Vec<i32>) -> PartitionMeta {
        PartitionMeta {
            leader: replicas[0],
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
        }
    }

    #[test]
    fn partitions_are_appended_with_the_topics_replication_and_checked() {
        let mut m = Metadata::default();
        for id in 0..3 {
            m.apply(&MetadataChange::RegisterBroker(broker(id)))
                .unwrap();
        }
        let mut topic =
            TopicMeta::on_one_broker("t".into(), TopicId([1; 16]), 1, 0, BTreeMap::new());
        topic.partitions[0] = partition(vec![0, 1]);
        m.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        let add = |partitions: Vec<PartitionMeta>| MetadataChange::CreatePartitions {
            topic: "t".into(),
            partitions,
        };
        let lagging = PartitionMeta {
            isr: vec![1],
            ..partition(vec![1, 2])
        };
        for bad in [
            vec![],
            vec![partition(vec![1])],
            vec![partition(vec![1, 1])],
            vec![partition(vec![1, 9])],
            vec![lagging],
        ] {
            assert!(m.apply(&add(bad.clone())).is_err(), "{bad:?}");
        }
        let unknown = MetadataChange::CreatePartitions {
            topic: "nope".into(),
            partitions: vec![partition(vec![0, 1])],
        };
        assert!(m.apply(&unknown).is_err());
        m.apply(&add(vec![partition(vec![1, 2]), partition(vec![2, 0])]))
            .unwrap();
        let replicas: Vec<Vec<i32>> = (m.topics["t"].partitions.iter())
            .map(|p| p.replicas.clone())
            .collect();
        assert_eq!(replicas, vec![vec![0, 1], vec![1, 2], vec![2, 0]]);
    }
}
