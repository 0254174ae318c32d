//! Offsets committed inside a transaction (TxnOffsetCommit, the consume-transform-produce
//! loop): kept pending in the group's offsets partition until the transaction ends, then made
//! the group's committed offsets (commit) or dropped (abort), when the transaction coordinator
//! ends the transaction on that partition (its "marker").
//!
//! A pending offset is a record of the offsets partition's state log, as durable as a commit:
//! key 0xFFFF, kind 2, the producer id (i64) and epoch (i16), then group, topic (each after a
//! u16 length) and partition (i32); value as a commit's. An ending applies only its own
//! epoch's offsets and drops those of older epochs (a fenced transaction's, whose store may
//! have landed after its abort). No commit key starts with 0xFFFF (see
//! `consumer_group_store.rs`), and KIP-848 group records use kinds 0 and 1.

use super::offsets::{decode_commit, encode_commit, group_partition, OffsetKey};
use super::Coordinator;
use crate::kafka::wire::code;
use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use oxbow_cluster::OFFSETS_TOPIC;

const MARK: [u8; 3] = [0xFF, 0xFF, 2];

/// The key of a producer's pending offset of (group, topic, partition).
fn pending_key((producer_id, epoch): (i64, i16), (group, topic, partition): &OffsetKey) -> Bytes {
    let mut key = BytesMut::from(&MARK[..]);
    key.put_i64(producer_id);
    key.put_i16(epoch);
    for part in [group.as_bytes(), topic.as_bytes()] {
        key.put_u16(part.len() as u16);
        key.put_slice(part);
    }
    key.put_i32(*partition);
    key.freeze()
}

/// The producer (id, epoch) and (group, topic, partition) of a pending offset's key.
fn decode_pending(key: &[u8]) -> Option<((i64, i16), OffsetKey)> {
    let rest = key.strip_prefix(&MARK[..])?;
    let producer_id = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let epoch = i16::from_be_bytes(rest.get(8..10)?.try_into().ok()?);
    // The rest is laid out as a commit key is.
    let (named, _, _) = decode_commit(&rest[10..], &[0; 8])?;
    Some(((producer_id, epoch), named))
}

/// The answer to a TxnOffsetCommit, `error_of` saying each partition's error.
pub(super) fn txn_commit_response(
    request: &TxnOffsetCommitRequest,
    error_of: impl Fn(&str, i32) -> i16,
) -> TxnOffsetCommitResponse {
    let mut response = TxnOffsetCommitResponse::default();
    for topic in &request.topics {
        let mut out = TxnOffsetCommitResponseTopic::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let mut partition = TxnOffsetCommitResponsePartition::default();
            partition.partition_index = p.partition_index;
            partition.error_code = error_of(topic.name.as_str(), p.partition_index);
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}

impl Coordinator {
    /// TxnOffsetCommit: the offsets wait in the group's offsets partition for the end of the
    /// producer's transaction, which must hold that partition (AddOffsetsToTxn).
    pub(super) async fn txn_commit(
        &self,
        shard: &Shard,
        request: TxnOffsetCommitRequest,
        version: i16,
    ) -> TxnOffsetCommitResponse {
        let group_id = request.group_id.to_string();
        let names_fit = (request.topics.iter()).all(|t| t.name.len() <= u16::MAX as usize);
        if group_id.is_empty() || group_id.len() >= u16::MAX as usize || !names_fit {
            return txn_commit_response(&request, |_, _| code::INVALID_GROUP_ID);
        }
        // From v3 a member commits as itself (KIP-447): one a rebalance removed, or of an
        // older generation, is refused as its OffsetCommit would be.
        if version >= 3 {
            let member = (
                request.member_id.as_str(),
                request.group_instance_id.as_deref(),
            );
            let error = self.member_commit_error(&group_id, member, request.generation_id, true);
            if error != code::NONE {
                return txn_commit_response(&request, |_, _| error);
            }
        }
        let partition = group_partition(shard, &group_id);
        let producer = (request.producer_id.0, request.producer_epoch);
        let id = request.transactional_id.as_str();
        if let Err(error) =
            crate::kafka::transactions::verify(shard, id, producer, OFFSETS_TOPIC, partition).await
        {
            // Before KIP-588 (v3), a fenced producer was told INVALID_PRODUCER_EPOCH.
            let error = match error {
                code::PRODUCER_FENCED if version < 3 => code::INVALID_PRODUCER_EPOCH,
                other => other,
            };
            return txn_commit_response(&request, |_, _| error);
        }
        let metadata_max = shard.config.offset_metadata_bytes_max as usize;
        let refusal = |topic: &str, index: i32, metadata: Option<&str>| {
            let exists = (shard.partition_count(topic))
                .is_some_and(|count| (0..count as i64).contains(&(index as i64)));
            if !exists {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if metadata.is_some_and(|m| m.len() > metadata_max) {
                code::OFFSET_METADATA_TOO_LARGE
            } else {
                code::NONE
            }
        };
        let mut changes = Vec::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                let metadata = p.committed_metadata.as_deref();
                if refusal(&topic.name, p.partition_index, metadata) != code::NONE {
                    continue;
                }
                let named = (group_id.clone(), topic.name.to_string(), p.partition_index);
                let (_, value) = encode_commit(&named, p.committed_offset, metadata);
                changes.push((pending_key(producer, &named), Some(value)));
            }
        }
        if !changes.is_empty() {
            if let Err((error, why)) = self.store_commits(shard, partition, changes).await {
                tracing::warn!(group = %group_id, error = %why, "storing transactional offsets");
                return txn_commit_response(&request, |_, _| error);
            }
        }
        txn_commit_response(&request, |topic, index| {
            let metadata = (request.topics.iter())
                .find(|t| t.name.as_str() == topic)
                .and_then(|t| t.partitions.iter().find(|p| p.partition_index == index))
                .and_then(|p| p.committed_metadata.as_deref());
            refusal(topic, index, metadata)
        })
    }

    /// The transaction of producer (id, epoch) ended on offsets partition `partition`: its
    /// pending offsets become commits (`commit`) or go, and so do any of older epochs.
    /// Idempotent, so a retried ending is harmless.
    pub(super) async fn end_txn_offsets(
        &self,
        shard: &Shard,
        partition: u32,
        (producer_id, epoch): (i64, i16),
        commit: bool,
    ) -> Result<(), String> {
        let log = self.offsets_log(shard, partition).await?;
        let mut changes = Vec::new();
        for (key, value) in log.entries() {
            let Some(((owner, written_at), named)) = decode_pending(&key) else {
                continue;
            };
            if owner != producer_id || written_at > epoch {
                continue;
            }
            if commit && written_at == epoch {
                let (commit_key, _) = encode_commit(&named, 0, None);
                changes.push((commit_key, Some(value)));
            }
            changes.push((key, None));
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.store_commits(shard, partition, changes)
            .await
            .map_err(|(_, why)| why)
    }
}

/// Ends the transaction of producer (id, epoch) on offsets partition `partition`, on the shard
/// that owns it (the transaction coordinator's counterpart of writing a marker).
pub async fn end_transaction(
    shard: &Shard,
    partition: u32,
    producer: (i64, i16),
    commit: bool,
) -> Result<(), String> {
    let owner = oxbow_core::placement::owner_shard(OFFSETS_TOPIC, partition, shard.shards());
    shard
        .run_on(owner, move |shard| async move {
            let coordinator = shard.extension::<Coordinator>()?;
            Some(
                coordinator
                    .end_txn_offsets(&shard, partition, producer, commit)
                    .await,
            )
        })
        .await
        .flatten()
        .unwrap_or_else(|| Err("the group coordinator is unavailable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_keys_round_trip_and_are_neither_commits_nor_group_records() {
        let named = ("g".to_string(), "orders".to_string(), 3);
        let key = pending_key((42, 3), &named);
        assert_eq!(decode_pending(&key), Some(((42, 3), named)));
        assert!(decode_commit(&key, &[0; 8]).is_none());
        assert!(super::super::consumer_group_store::decode_key(&key).is_none());
    }
}
