//! Whether an election or an in-sync replica change applies to a partition as it stands:
//! the checks that keep a stale or impossible leadership change out of the metadata.

use super::{MetadataError, PartitionMeta, NO_LEADER};
use std::collections::BTreeSet;

/// Why an election does not apply to a partition (before the topic is named).
pub(super) enum ElectionError {
    Invalid(String),
    Stale(String),
}

impl ElectionError {
    pub(super) fn within(self, topic: &str, partition: u32) -> MetadataError {
        match self {
            ElectionError::Invalid(why) => {
                MetadataError::Invalid(format!("{topic}-{partition}: {why}"))
            }
            ElectionError::Stale(why) => {
                MetadataError::Stale(format!("{topic}-{partition}: {why}"))
            }
        }
    }
}

pub(super) fn check_election(
    current: &PartitionMeta,
    leader: i32,
    leader_epoch: i32,
    isr: &[i32],
) -> Result<(), ElectionError> {
    if leader_epoch != current.leader_epoch.saturating_add(1) {
        return Err(ElectionError::Stale(format!(
            "leader epoch {leader_epoch} does not follow {}",
            current.leader_epoch
        )));
    }
    let offline = leader == NO_LEADER;
    if !offline && (!current.replicas.contains(&leader) || !isr.contains(&leader)) {
        return Err(ElectionError::Invalid(format!(
            "leader {leader} is not an in-sync replica"
        )));
    }
    if isr.iter().any(|r| !current.replicas.contains(r)) {
        return Err(ElectionError::Invalid(format!(
            "in-sync replicas {isr:?} are not all replicas"
        )));
    }
    Ok(())
}

pub(super) fn check_isr_change(
    current: &PartitionMeta,
    leader: i32,
    leader_epoch: i32,
    isr: &[i32],
    fenced: &BTreeSet<i32>,
) -> Result<(), ElectionError> {
    if leader != current.leader || leader_epoch != current.leader_epoch {
        return Err(ElectionError::Stale(format!(
            "proposed by leader {leader} at epoch {leader_epoch}; the leader is {} at epoch {}",
            current.leader, current.leader_epoch
        )));
    }
    if !isr.contains(&leader) || isr.iter().any(|r| !current.replicas.contains(r)) {
        return Err(ElectionError::Invalid(format!(
            "in-sync replicas {isr:?} must hold the leader and only replicas"
        )));
    }
    // A fenced broker may stay (the controller's election removes it), not join (KIP-841).
    if let Some(r) = (isr.iter()).find(|r| !current.isr.contains(r) && fenced.contains(r)) {
        return Err(ElectionError::Invalid(format!(
            "broker {r} is fenced and cannot join the in-sync replicas"
        )));
    }
    Ok(())
}
