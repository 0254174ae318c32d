//! What the cluster agrees on: topics, their partitions and where each partition's replicas
//! are, as one versioned value. Changes are values too ([`MetadataChange`]), applied in order;
//! every node applies the same changes and so serves the same view.

use oxbow_core::auth::{Mechanism, ScramCredential};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One partition: its replicas (broker ids, the preferred leader first), the current leader,
/// the leader epoch (bumped on every leader change) and the in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Brokers holding a replica.
    pub replicas: Vec<i32>,
    /// The broker leading it.
    pub leader: i32,
    /// Epoch of the current leader.
    pub leader_epoch: i32,
    /// Replicas caught up with the leader.
    pub isr: Vec<i32>,
}

/// The internal topic of consumer-group offsets (Kafka's name).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The internal topic of transaction state (Kafka's name).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Whether a topic name is reserved for the broker's own state: clients may read such a topic
/// but not create, write or delete it.
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}

/// A topic: its id, partitions (index = partition number) and config overrides (Kafka names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Name.
    pub name: String,
    /// Id.
    pub id: TopicId,
    /// Partitions, by number.
    pub partitions: Vec<PartitionMeta>,
    /// Config overrides, already validated.
    pub configs: BTreeMap<String, String>,
    /// Holds the broker's own state (see [`is_internal_topic`]).
    #[serde(default)]
    pub internal: bool,
}

/// The leader of a partition that has none: no in-sync replica is alive (Kafka's -1).
pub const NO_LEADER: i32 = -1;

/// A broker of the cluster, as it registered: where clients and peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    /// Broker id (Kafka's `node.id`).
    pub id: i32,
    /// Kafka protocol address clients are told (`host:port`).
    pub kafka_addr: String,
    /// Native protocol address (`host:port`).
    pub native_addr: String,
    /// Cluster transport address (`ip:port`), when the broker runs with others.
    #[serde(default)]
    pub cluster_addr: Option<String>,
    /// Rack, for spreading replicas (Kafka's `broker.rack`).
    #[serde(default)]
    pub rack: Option<String>,
    /// Shards (cores) it runs.
    pub shards: u32,
    /// Kafka listeners by name and the address each advertises: a client is told the other
    /// brokers' addresses on the listener it is connected to, as in Kafka. A broker without a
    /// listener of that name is reached at `kafka_addr`.
    #[serde(default)]
    pub kafka_listeners: BTreeMap<String, String>,
    /// Native listeners by name and the address each advertises, used as `kafka_listeners`
    /// is; a broker without a listener of that name is reached at `native_addr`.
    #[serde(default)]
    pub native_listeners: BTreeMap<String, String>,
}

/// The whole metadata, as of `version` changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Changes applied so far; every change adds one.
    pub version: u64,
    /// The cluster's id (Kafka's `cluster.id`), set once.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Registered brokers by id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// Registered brokers the controller has not heard from within the session timeout
    /// (Kafka's fenced brokers): no new replicas or leadership go to them, and clients are not
    /// sent to them, until they are heard again.
    #[serde(default)]
    pub fenced: BTreeSet<i32>,
    /// Brokers in controlled shutdown (fenced too): the controller elects none of them and
    /// does not unfence them while they are still heard, until they register again.
    #[serde(default)]
    pub shutting_down: BTreeSet<i32>,
    /// Reassignments in progress: topic → partition → the move (see `reassign.rs`).
    #[serde(default)]
    pub reassignments: BTreeMap<String, BTreeMap<u32, Reassignment>>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// SASL/SCRAM users and their salted credentials (see `users.rs`).
    #[serde(default)]
    pub users: Users,
    /// Kafka ACLs, sorted and without duplicates (see `acls.rs`).
    #[serde(default)]
    pub acls: Vec<Acl>,
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataChange {
    /// Names the cluster; only once.
    SetClusterId(String),
    /// A broker joins, or registers again with new addresses after a restart.
    RegisterBroker(BrokerMeta),
    /// A broker leaves for good; refused while it holds a replica (drain it first).
    UnregisterBroker {
        /// Broker id.
        id: i32,
    },
    /// The controller lost a broker's heartbeats.
    FenceBroker {
        /// Broker id.
        id: i32,
    },
    /// A broker is about to stop (Kafka's controlled shutdown): it is fenced, the partitions
    /// it leads go to other in-sync replicas, and it leaves the in-sync replicas, so clients
    /// move before it stops instead of after its session lapses.
    ShutDownBroker {
        /// Broker id.
        id: i32,
    },
    /// A partition is to move to `replicas` (Kafka's AlterPartitionReassignments): the new
    /// ones join its replicas at once and catch up; see `reassign.rs`.
    ReassignPartition {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The replicas asked for, the preferred leader first.
        replicas: Vec<i32>,
    },
    /// A topic gets more partitions (Kafka's CreatePartitions): `partitions` are appended,
    /// numbered after the existing ones, each led by its first replica at epoch 0 with every
    /// replica in sync (they are empty). See `grow.rs`.
    CreatePartitions {
        /// Topic name.
        topic: String,
        /// The new partitions, in order.
        partitions: Vec<PartitionMeta>,
    },
    /// A topic's config overrides become `configs` (Kafka's AlterConfigs and
    /// IncrementalAlterConfigs, resolved to the whole set by the node that proposes it, and
    /// checked there as a whole). Refused as stale unless the topic still has `previous`: two
    /// changes made at once through different nodes never lose one of them.
    AlterTopicConfigs {
        /// Topic name.
        topic: String,
        /// The overrides the proposer saw.
        previous: BTreeMap<String, String>,
        /// Every override the topic has from now on (Kafka names).
        configs: BTreeMap<String, String>,
    },
    /// A reassignment in progress is called off (Kafka's AlterPartitionReassignments with no
    /// replicas): the partition goes back to the replicas it had, see `reassign.rs`.
    CancelReassignment {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
    },
    /// Every replica a reassignment adds is in sync: the partition keeps only the replicas
    /// asked for (the controller proposes it).
    CompleteReassignment {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The leader epoch it was decided at: a stale proposal is refused.
        leader_epoch: i32,
    },
    /// The controller hears a fenced broker again.
    UnfenceBroker {
        /// Broker id.
        id: i32,
    },
    /// A new topic.
    CreateTopic(TopicMeta),
    /// A topic is gone.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// A partition gets a new leader at the next leader epoch (the controller's choice when
    /// the old leader's lease lapsed, or a preferred leader taking over again).
    ElectLeader {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The new leader, one of the replicas.
        leader: i32,
        /// Must be the current epoch + 1: a proposal made from a stale view is refused.
        leader_epoch: i32,
        /// The in-sync replicas under the new leader (the leader among them).
        isr: Vec<i32>,
    },
    /// ACLs are added (Kafka's CreateAcls); one that exists already is not added twice.
    CreateAcls {
        /// The ACLs.
        acls: Vec<Acl>,
    },
    /// Every ACL that one of the filters matches is removed (Kafka's DeleteAcls).
    DeleteAcls {
        /// The filters.
        filters: Vec<AclFilter>,
    },
    /// A user gets a SCRAM credential for a mechanism, or a new one in place of the old
    /// (Kafka's AlterUserScramCredentials upsertion).
    SetScramCredential {
        /// User name.
        user: String,
        /// The mechanism the credential is for.
        mechanism: Mechanism,
        /// Salt, iterations and the keys derived from the password.
        credential: ScramCredential,
    },
    /// A user's credential for a mechanism is removed; a user without any is gone.
    DeleteScramCredential {
        /// User name.
        user: String,
        /// The mechanism.
        mechanism: Mechanism,
    },
    /// A partition's leader changes its in-sync replicas (Kafka's AlterPartition): a follower
    /// fell behind, or caught up again.
    AlterIsr {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The leader proposing it.
        leader: i32,
        /// Its epoch: a proposal from a leader that was replaced meanwhile is refused.
        leader_epoch: i32,
        /// The new in-sync replicas (the leader among them; a member it adds must be live).
        isr: Vec<i32>,
    },
}

/// Why a change does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A topic of that name exists.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// No topic of that name.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The change contradicts itself.
    #[error("invalid change: {0}")]
    Invalid(String),
    /// The change was made from an older view of the metadata than the current one.
    #[error("stale change: {0}")]
    Stale(String),
}

impl Metadata {
    /// A topic, by name.
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// Registered brokers that are not fenced: those that may be given replicas and
    /// leadership, and that clients are sent to.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        (self.brokers.values()).filter(|broker| !self.fenced.contains(&broker.id))
    }

    /// A topic's partition count, if it exists.
    pub fn partition_count(&self, name: &str) -> Option<u32> {
        self.topics.get(name).map(|t| t.partitions.len() as u32)
    }

    /// Applies a change, or refuses it and changes nothing.
    pub fn apply(&mut self, change: &MetadataChange) -> Result<(), MetadataError> {
        match change {
            MetadataChange::SetClusterId(id) => {
                if let Some(current) = &self.cluster_id {
                    return Err(MetadataError::Invalid(format!(
                        "the cluster is already named {current}"
                    )));
                }
                self.cluster_id = Some(id.clone());
            }
            MetadataChange::RegisterBroker(broker) => {
                if broker.id < 0 {
                    return Err(MetadataError::Invalid(format!("broker id {}", broker.id)));
                }
                let started_again = self.brokers.contains_key(&broker.id);
                self.brokers.insert(broker.id, broker.clone());
                // Registering is being heard.
                self.fenced.remove(&broker.id);
                self.shutting_down.remove(&broker.id);
                if started_again {
                    self.forget_in_sync(broker.id);
                }
            }
            MetadataChange::FenceBroker { id } => {
                if !self.brokers.contains_key(id) || !self.fenced.insert(*id) {
                    return Err(MetadataError::Invalid(format!(
                        "broker {id} is not registered and unfenced"
                    )));
                }
            }
            MetadataChange::ShutDownBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return Err(MetadataError::Invalid(format!("no broker {id}")));
                }
                self.fenced.insert(*id);
                self.shutting_down.insert(*id);
                self.hand_over(*id);
            }
            MetadataChange::UnfenceBroker { id } => {
                if self.shutting_down.contains(id) {
                    return Err(MetadataError::Invalid(format!(
                        "broker {id} is shutting down"
                    )));
                }
                if !self.fenced.remove(id) {
                    return Err(MetadataError::Invalid(format!("broker {id} is not fenced")));
                }
            }
            MetadataChange::UnregisterBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return Err(MetadataError::Invalid(format!("no broker {id}")));
                }
                if let Some(topic) = self.topics.values().find(|t| t.has_replica_on(*id)) {
                    return Err(MetadataError::Invalid(format!(
                        "broker {id} still holds replicas of {}",
                        topic.name
                    )));
                }
                self.brokers.remove(id);
                self.fenced.remove(id);
                self.shutting_down.remove(id);
            }
            MetadataChange::CreateTopic(topic) => {
                if self.topics.contains_key(&topic.name) {
                    return Err(MetadataError::TopicExists(topic.name.clone()));
                }
                if topic.partitions.is_empty() {
                    return Err(MetadataError::Invalid(format!(
                        "topic {} has no partitions",
                        topic.name
                    )));
                }
                if self.topics.values().any(|t| t.id == topic.id) {
                    return Err(MetadataError::Invalid(format!(
                        "topic id of {} is taken",
                        topic.name
                    )));
                }
                self.topics.insert(topic.name.clone(), topic.clone());
            }
            MetadataChange::DeleteTopic { name } => {
                if self.topics.remove(name).is_none() {
                    return Err(MetadataError::UnknownTopic(name.clone()));
                }
                self.reassignments.remove(name);
            }
            MetadataChange::ReassignPartition {
                topic,
                partition,
                replicas,
            } => self.start_reassignment(topic, *partition, replicas)?,
            MetadataChange::CompleteReassignment {
                topic,
                partition,
                leader_epoch,
            } => self.complete_reassignment(topic, *partition, *leader_epoch)?,
            MetadataChange::CancelReassignment { topic, partition } => {
                self.cancel_reassignment(topic, *partition)?
            }
            MetadataChange::CreatePartitions { topic, partitions } => {
                self.add_partitions(topic, partitions)?
            }
            MetadataChange::AlterTopicConfigs {
                topic,
                previous,
                configs,
            } => {
                let meta = (self.topics.get_mut(topic))
                    .ok_or_else(|| MetadataError::UnknownTopic(topic.clone()))?;
                if meta.configs != *previous {
                    let why = format!("{topic}'s configs changed meanwhile");
                    return Err(MetadataError::Stale(why));
                }
                meta.configs = configs.clone();
            }
            MetadataChange::ElectLeader {
                topic,
                partition,
                leader,
                leader_epoch,
                isr,
            } => {
                let current = partition_mut(&mut self.topics, topic, *partition)?;
                check_election(current, *leader, *leader_epoch, isr)
                    .map_err(|e| e.within(topic, *partition))?;
                current.leader = *leader;
                current.leader_epoch = *leader_epoch;
                current.isr = isr.clone();
            }
            MetadataChange::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                isr,
            } => {
                let current = partition_mut(&mut self.topics, topic, *partition)?;
                check_isr_change(current, *leader, *leader_epoch, isr, &self.fenced)
                    .map_err(|e| e.within(topic, *partition))?;
                current.isr = isr.clone();
            }
            MetadataChange::SetScramCredential {
                user,
                mechanism,
                credential,
            } => self.set_scram_credential(user, *mechanism, credential)?,
            MetadataChange::DeleteScramCredential { user, mechanism } => {
                self.delete_scram_credential(user, *mechanism)?
            }
            MetadataChange::CreateAcls { acls } => self.create_acls(acls)?,
            MetadataChange::DeleteAcls { filters } => self.delete_acls(filters),
        }
        self.version += 1;
        Ok(())
    }
}

impl Metadata {
    /// Broker `id` registered again: it started again, and under a flush policy other than
    /// `always` its log may be shorter than what it reported to its leader. It leaves every
    /// in-sync set it was in (it rejoins once caught up), and a partition it led goes to the
    /// next in-sync replica at a new epoch, or stays with it at a new epoch when it was the only
    /// one (so its followers truncate against what it has now). Offline partitions wait for
    /// the controller.
    fn forget_in_sync(&mut self, id: i32) {
        for partition in self
            .topics
            .values_mut()
            .flat_map(|t| t.partitions.iter_mut())
        {
            if !partition.isr.contains(&id) || partition.leader == NO_LEADER {
                continue;
            }
            let others: Vec<i32> = (partition.isr.iter().copied())
                .filter(|&r| r != id)
                .collect();
            if partition.leader == id {
                partition.leader_epoch += 1;
                let next = (partition.replicas.iter()).find(|r| others.contains(r));
                if let Some(&next) = next {
                    partition.leader = next;
                    partition.isr = others;
                }
            } else {
                partition.isr = others;
            }
        }
    }

    /// Broker `id` shuts down: a partition it leads goes to its first in-sync replica that is
    /// not fenced, at a new epoch, and it leaves every in-sync set where such a replica
    /// remains. Where none does it stays (leading alone, the partition goes offline only
    /// when it stops, as it would have anyway).
    fn hand_over(&mut self, id: i32) {
        let fenced = &self.fenced;
        for partition in (self.topics.values_mut()).flat_map(|t| t.partitions.iter_mut()) {
            if !partition.isr.contains(&id) || partition.leader == NO_LEADER {
                continue;
            }
            let others: Vec<i32> = (partition.isr.iter().copied())
                .filter(|&r| r != id)
                .collect();
            let next =
                (partition.replicas.iter()).find(|r| others.contains(r) && !fenced.contains(r));
            let Some(&next) = next else {
                continue;
            };
            if partition.leader == id {
                partition.leader = next;
                partition.leader_epoch += 1;
            }
            partition.isr = others;
        }
    }
}

/// A partition to change, or why there is none.
pub(crate) fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicMeta>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut PartitionMeta, MetadataError> {
    (topics.get_mut(topic))
        .ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?
        .partitions
        .get_mut(partition as usize)
        .ok_or_else(|| MetadataError::Invalid(format!("{topic} has no partition {partition}")))
}

impl TopicMeta {
    /// Whether any partition has a replica on `broker`.
    pub fn has_replica_on(&self, broker: i32) -> bool {
        self.partitions.iter().any(|p| p.replicas.contains(&broker))
    }

    /// A topic led by one broker: every partition's only replica, at epoch 0.
    pub fn on_one_broker(
        name: String,
        id: TopicId,
        partitions: u32,
        broker: i32,
        configs: BTreeMap<String, String>,
    ) -> TopicMeta {
        let partition = PartitionMeta {
            replicas: vec![broker],
            leader: broker,
            leader_epoch: 0,
            isr: vec![broker],
        };
        TopicMeta {
            internal: is_internal_topic(&name),
            name,
            id,
            partitions: vec![partition; partitions as usize],
            configs,
        }
    }
}

mod acls;
mod checks;
mod grow;
mod ids;
mod reassign;
mod users;
pub use acls::{
    Access, Acl, AclFilter, AuthorizerRules, Operation, PatternFilter, PatternType, Permission,
    ResourceType, CLUSTER_RESOURCE,
};
use checks::{check_election, check_isr_change};
pub use ids::{random_cluster_id, TopicId};
pub use reassign::Reassignment;
pub use users::{Users, USER_NAME_BYTES_MAX};

#[cfg(test)]
pub(crate) mod tests;
