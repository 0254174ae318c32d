//! More partitions for a topic (Kafka's CreatePartitions), coordinated on shard 0 as topic
//! creation is: checked against the metadata, placed over the unfenced brokers like a new
//! topic's partitions (or where the request says), committed through the metadata group, then
//! opened by their replicas before the answer.

use super::Shard;
use oxbow_cluster::controller::assign_replicas;
use oxbow_cluster::metadata_group::ProposeError;
use oxbow_cluster::{BrokerMeta, MetadataChange, MetadataError, PartitionMeta};

/// Why no partitions were added; each is one of Kafka's error codes.
#[derive(Debug, thiserror::Error)]
pub enum CreatePartitionsError {
    /// No topic of that name.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The count asked for is not more than the topic has, or past `topic_partitions_max`.
    #[error("{0}")]
    InvalidPartitions(String),
    /// Fewer live brokers than the topic's replication factor.
    #[error("{0}")]
    InvalidReplication(String),
    /// The replicas asked for do not fit the topic (count, brokers, repeats).
    #[error("{0}")]
    InvalidAssignment(String),
    /// An internal topic keeps its partitions.
    #[error("{0}")]
    Internal(String),
    /// The metadata group did not commit it in time; it may still be.
    #[error("{0}")]
    TimedOut(String),
    /// Opening a new partition failed.
    #[error("opening the new partitions failed: {0}")]
    Storage(String),
}

impl Shard {
    /// Grows `topic` to `count` partitions, placing the new ones where `assignments` says (one
    /// replica list per new partition) or, without it, as a new topic's are placed. With
    /// `validate_only`, only checks. Shard 0 only.
    pub async fn create_partitions(
        &self,
        topic: &str,
        count: u32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), CreatePartitionsError> {
        use CreatePartitionsError as Why;
        assert_eq!(self.id, 0, "metadata changes are serialised on shard 0");
        let _admin = self.admin.acquire_permit(1).await;
        let metadata = self.metadata();
        let meta = (metadata.topic(topic)).ok_or_else(|| Why::UnknownTopic(topic.into()))?;
        if meta.internal {
            return Err(Why::Internal(format!("{topic} is internal")));
        }
        let current = meta.partitions.len() as u32;
        if count <= current {
            return Err(Why::InvalidPartitions(format!(
                "{topic} has {current} partitions: asked for {count}, it can only grow"
            )));
        }
        let most = self.config.topic_partitions_max;
        if count > most {
            return Err(Why::InvalidPartitions(format!(
                "{count} partitions is more than topic_partitions_max ({most})"
            )));
        }
        let added = count - current;
        let replication = meta.partitions.first().map_or(1, |p| p.replicas.len());
        let replicas = match assignments {
            Some(asked) if asked.len() != added as usize => {
                return Err(Why::InvalidAssignment(format!(
                    "{} assignments for {added} new partitions",
                    asked.len()
                )))
            }
            Some(asked) => asked,
            None => {
                let brokers: Vec<BrokerMeta> = metadata.unfenced_brokers().cloned().collect();
                let rng = &mut self.rng.borrow_mut();
                assign_replicas(&brokers, added, replication, rng)
                    .map_err(|e| Why::InvalidReplication(e.to_string()))?
            }
        };
        let partitions = (replicas.into_iter())
            .map(|replicas| PartitionMeta {
                leader: replicas.first().copied().unwrap_or(-1),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            })
            .collect();
        let change = MetadataChange::CreatePartitions {
            topic: topic.to_string(),
            partitions,
        };
        // The metadata's own checks, on a copy: the answer a commit would give.
        (*metadata).clone().apply(&change).map_err(|e| match e {
            MetadataError::UnknownTopic(_) => Why::UnknownTopic(topic.into()),
            e => Why::InvalidAssignment(e.to_string()),
        })?;
        if validate_only {
            return Ok(());
        }
        let committed = self.commit(change).await.map_err(|e| match e {
            ProposeError::Refused(MetadataError::UnknownTopic(_)) => {
                Why::UnknownTopic(topic.into())
            }
            ProposeError::Refused(e) => Why::InvalidAssignment(e.to_string()),
            e => Why::TimedOut(e.to_string()),
        })?;
        match self.carry_out(committed).await.remove(topic) {
            Some(e) => Err(Why::Storage(e)),
            None => Ok(()),
        }
    }
}
