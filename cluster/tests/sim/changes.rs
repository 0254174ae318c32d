//! The changes proposed in the simulation: every kind the metadata knows, made from a node's
//! possibly stale view (so some are refused), and the marker that ends a schedule.

use oxbow_cluster::controller::elections;
use oxbow_cluster::{
    random_cluster_id, BrokerMeta, Metadata, MetadataChange, PartitionMeta, TopicId, TopicMeta,
};
use std::collections::{BTreeMap, BTreeSet};

const TOPICS: [&str; 4] = ["orders", "payments", "audit", "clicks"];

pub fn random_change(rng: &mut fastrand::Rng, view: &Metadata, brokers: &[u64]) -> MetadataChange {
    let existing: Vec<&TopicMeta> = view.topics.values().collect();
    match rng.u8(..12) {
        // A controller that saw some brokers stop answering: what it would propose first.
        10 => {
            let live: BTreeSet<i32> = brokers
                .iter()
                .map(|&b| b as i32)
                .filter(|_| rng.bool())
                .collect();
            let mut changes = elections(view, &live);
            match changes.is_empty() {
                true => MetadataChange::SetClusterId(random_cluster_id(rng)),
                false => changes.swap_remove(rng.usize(..changes.len())),
            }
        }
        11 => {
            let id = brokers[rng.usize(..brokers.len())] as i32;
            MetadataChange::RegisterBroker(BrokerMeta {
                id,
                kafka_addr: format!("node{id}:{}", rng.u16(..)),
                native_addr: format!("node{id}:6650"),
                cluster_addr: Some(format!("node{id}:9093")),
                rack: None,
                shards: 1,
                kafka_listeners: Default::default(),
                native_listeners: Default::default(),
            })
        }
        0..=3 => {
            let replicas: Vec<i32> = brokers.iter().map(|&b| b as i32).collect();
            let partition = PartitionMeta {
                leader: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            };
            MetadataChange::CreateTopic(TopicMeta {
                name: TOPICS[rng.usize(..TOPICS.len())].to_string(),
                id: TopicId::random(rng),
                partitions: vec![partition; 1 + rng.usize(..3)],
                configs: BTreeMap::new(),
                internal: false,
            })
        }
        4 if !existing.is_empty() => MetadataChange::DeleteTopic {
            name: existing[rng.usize(..existing.len())].name.clone(),
        },
        _ if !existing.is_empty() => {
            let topic = existing[rng.usize(..existing.len())];
            let number = rng.usize(..topic.partitions.len());
            let partition = &topic.partitions[number];
            if rng.bool() {
                // The leader shrinks or grows its in-sync replicas.
                let isr: Vec<i32> = (partition.replicas.iter())
                    .copied()
                    .filter(|&r| r == partition.leader || rng.bool())
                    .collect();
                return MetadataChange::AlterIsr {
                    topic: topic.name.clone(),
                    partition: number as u32,
                    leader: partition.leader,
                    leader_epoch: partition.leader_epoch,
                    isr,
                };
            }
            let leader = partition.replicas[rng.usize(..partition.replicas.len())];
            MetadataChange::ElectLeader {
                topic: topic.name.clone(),
                partition: number as u32,
                leader,
                leader_epoch: partition.leader_epoch + 1,
                isr: partition.replicas.clone(),
            }
        }
        _ => MetadataChange::DeleteTopic {
            name: "never-created".into(),
        },
    }
}

pub fn marker_change(rng: &mut fastrand::Rng) -> MetadataChange {
    MetadataChange::CreateTopic(TopicMeta::on_one_broker(
        format!("marker-{}", rng.u32(..)),
        TopicId::random(rng),
        1,
        1,
        BTreeMap::new(),
    ))
}
