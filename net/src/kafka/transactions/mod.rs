//! Kafka transactions on the wire: the transaction coordinator's requests (InitProducerId with
//! a transactional id, AddPartitionsToTxn, EndTxn), routed to the shard that leads the id's
//! partition of `__transaction_state`, run by the sans-IO core in
//! `oxbow_cluster::transactions`, persisted in that partition's state log, with markers
//! written to the transaction's partitions. Produce checks a transactional batch against the
//! coordinator before it is appended (KIP-890's verification), so a batch outside an open
//! transaction cannot leave a partition's stable offset stuck.
//!
//! - `log.rs`: the coordinators of the partitions a shard leads, loaded from their logs;
//! - `markers.rs`: ending a transaction on its partitions.

mod log;
mod markers;
mod operators;

pub use log::TxnLogs;
pub use operators::{describe, list};

use super::groups::{offsets_partition, offsets_topic_configs};
use super::wire::code;
use crate::authorize::Gate;
use crate::shard::Shard;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, EndTxnResponse,
    InitProducerIdResponse, ProducerId, RequestKind, ResponseKind,
};
use oxbow_cluster::transactions::{TxnError, TxnStatus};
use oxbow_cluster::{is_internal_topic, Operation, OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use oxbow_core::placement::owner_shard;
use std::rc::Rc;

/// The Kafka error code of a refusal. Clients before KIP-588 know PRODUCER_FENCED as
/// INVALID_PRODUCER_EPOCH; the shell maps it for them.
fn error_code(error: TxnError) -> i16 {
    match error {
        TxnError::ConcurrentTransactions => code::CONCURRENT_TRANSACTIONS,
        TxnError::ProducerFenced => code::PRODUCER_FENCED,
        TxnError::InvalidProducerIdMapping => code::INVALID_PRODUCER_ID_MAPPING,
        TxnError::InvalidTxnState => code::INVALID_TXN_STATE,
        TxnError::InvalidTransactionTimeout => code::INVALID_TRANSACTION_TIMEOUT,
    }
}

/// PRODUCER_FENCED as a client of `version` knows it (KIP-588: InitProducerId v4, EndTxn and
/// AddPartitionsToTxn v2 and later).
fn for_version(code: i16, version: i16, fenced_from: i16) -> i16 {
    if code == code::PRODUCER_FENCED && version < fenced_from {
        code::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// Where a transactional id is coordinated: this node's shard that leads its partition of
/// `__transaction_state`, created on first use; else the error code to answer (with the
/// leader elsewhere, NOT_COORDINATOR makes clients look it up again).
pub async fn coordinator_of(shard: &Shard, id: &str) -> Result<(usize, u32), Home> {
    let config = &shard.config;
    let partitions = shard
        .ensure_internal_topic(
            TRANSACTION_STATE_TOPIC,
            (
                config.transactions.state_topic_partitions,
                config.transactions.state_topic_replication_factor,
            ),
            offsets_topic_configs(config),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "creating {TRANSACTION_STATE_TOPIC}");
            Home::Unavailable
        })?;
    let partition = offsets_partition(id, partitions);
    let metadata = shard.metadata();
    let leader = (metadata.topic(TRANSACTION_STATE_TOPIC))
        .and_then(|topic| topic.partitions.get(partition as usize))
        .map(|meta| meta.leader)
        .filter(|&leader| leader >= 0);
    match leader {
        Some(leader) if leader == config.node_id => Ok((
            owner_shard(TRANSACTION_STATE_TOPIC, partition, shard.shards()),
            partition,
        )),
        Some(leader) => Err(Home::Elsewhere(leader)),
        None => Err(Home::Unavailable),
    }
}

/// Where a transactional id is coordinated when not on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// The leader of its partition, another node.
    Elsewhere(i32),
    /// No leader, or its partition cannot be created.
    Unavailable,
}

/// The transactional id a coordinator request names, and the version from which its
/// answer may say PRODUCER_FENCED.
fn transactional_id(request: &RequestKind) -> Option<&str> {
    match request {
        RequestKind::InitProducerId(r) => r.transactional_id.as_deref().map(|id| &**id),
        RequestKind::AddPartitionsToTxn(r) => Some(&r.v3_and_below_transactional_id),
        RequestKind::EndTxn(r) => Some(&r.transactional_id),
        RequestKind::AddOffsetsToTxn(r) => Some(&r.transactional_id),
        _ => None,
    }
}

/// Answers a transaction coordinator request that reached any shard of this node.
pub async fn serve(
    shard: &Shard,
    gate: &Gate<'_>,
    request: RequestKind,
    version: i16,
) -> Result<ResponseKind, String> {
    let Some(id) = transactional_id(&request).map(str::to_string) else {
        return Err("not a transaction coordinator request".into());
    };
    if id.is_empty() {
        return Ok(refused(&request, code::INVALID_REQUEST));
    }
    if shard.metadata().brokers.len() > 1 {
        // Markers and verification do not cross nodes yet: a transaction touching a
        // partition led elsewhere could never end. Refused rather than left hanging.
        tracing::warn!(transactional_id = %id,
            "transactions are not served on a cluster of several brokers yet");
        return Ok(refused(&request, code::UNSUPPORTED_VERSION));
    }
    if !gate.transactional_id(&id, Operation::Write) {
        return Ok(refused(
            &request,
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ));
    }
    if let RequestKind::AddOffsetsToTxn(r) = &request {
        if !gate.group(&r.group_id, Operation::Read) {
            return Ok(refused(&request, code::GROUP_AUTHORIZATION_FAILED));
        }
    }
    if let RequestKind::AddPartitionsToTxn(r) = &request {
        let hidden = (r.v3_and_below_topics.iter()).any(|t| !gate.topic(&t.name, Operation::Write));
        if hidden {
            return Ok(ResponseKind::AddPartitionsToTxn(add_partitions_refused(
                r,
                |topic| match gate.topic(topic, Operation::Write) {
                    true => code::OPERATION_NOT_ATTEMPTED,
                    false => code::TOPIC_AUTHORIZATION_FAILED,
                },
            )));
        }
    }
    let (target, partition) = match coordinator_of(shard, &id).await {
        Ok(home) => home,
        Err(Home::Elsewhere(_)) => return Ok(refused(&request, code::NOT_COORDINATOR)),
        Err(Home::Unavailable) => {
            return Ok(refused(&request, code::COORDINATOR_NOT_AVAILABLE));
        }
    };
    let fallback = refused(&request, code::COORDINATOR_NOT_AVAILABLE);
    let answer = shard
        .run_on(target, move |shard| async move {
            Some(handle(&shard, partition, request, version).await)
        })
        .await
        .flatten();
    Ok(answer.unwrap_or(fallback))
}

/// A request refused as a whole with `error`.
fn refused(request: &RequestKind, error: i16) -> ResponseKind {
    match request {
        RequestKind::InitProducerId(_) => {
            let mut response = InitProducerIdResponse::default();
            response.error_code = error;
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
            ResponseKind::InitProducerId(response)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_refused(r, |_| error))
        }
        RequestKind::AddOffsetsToTxn(_) => {
            let mut response = AddOffsetsToTxnResponse::default();
            response.error_code = error;
            ResponseKind::AddOffsetsToTxn(response)
        }
        _ => {
            let mut response = EndTxnResponse::default();
            response.error_code = error;
            ResponseKind::EndTxn(response)
        }
    }
}

fn add_partitions_refused(
    request: &AddPartitionsToTxnRequest,
    error: impl Fn(&str) -> i16,
) -> AddPartitionsToTxnResponse {
    let mut response = AddPartitionsToTxnResponse::default();
    for topic in &request.v3_and_below_topics {
        let mut result = AddPartitionsToTxnTopicResult::default();
        result.name = topic.name.clone();
        for &index in &topic.partitions {
            let mut partition = AddPartitionsToTxnPartitionResult::default();
            partition.partition_index = index;
            partition.partition_error_code = error(&topic.name);
            result.results_by_partition.push(partition);
        }
        response.results_by_topic_v3_and_below.push(result);
    }
    response
}

/// Runs a request on the shard that leads the id's partition.
async fn handle(
    shard: &Rc<Shard>,
    partition: u32,
    request: RequestKind,
    version: i16,
) -> ResponseKind {
    let Some(logs) = shard.extension::<TxnLogs>() else {
        return refused(&request, code::COORDINATOR_NOT_AVAILABLE);
    };
    let txn = match logs.get(shard, partition).await {
        Ok(txn) => txn,
        Err(error) => return refused(&request, error),
    };
    let now = oxbow_storage::now_ms();
    match request {
        RequestKind::InitProducerId(r) => {
            let id = r
                .transactional_id
                .as_deref()
                .map(|id| id.to_string())
                .unwrap_or_default();
            let mut response = InitProducerIdResponse::default();
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
            // Drawn up front (the core needs one only for a new id or an exhausted epoch).
            let fresh = match super::groups::new_producer_id(shard).await {
                Ok((id, _)) => id,
                Err(_) => {
                    response.error_code = code::COORDINATOR_NOT_AVAILABLE;
                    return ResponseKind::InitProducerId(response);
                }
            };
            let expected = (r.producer_id.0 >= 0).then_some((r.producer_id.0, r.producer_epoch));
            let step = (txn.core.borrow_mut()).init_producer_id(
                &id,
                r.transaction_timeout_ms,
                expected,
                now,
                || fresh,
            );
            match txn.carry_out(shard, step).await {
                Ok((producer_id, epoch)) => {
                    response.producer_id = ProducerId(producer_id);
                    response.producer_epoch = epoch;
                }
                Err(error) => response.error_code = for_version(error, version, 4),
            }
            ResponseKind::InitProducerId(response)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            let mut wanted = Vec::new();
            let mut unknown = false;
            for topic in &r.v3_and_below_topics {
                let count = shard.partition_count(&topic.name);
                for &index in &topic.partitions {
                    match count {
                        Some(n)
                            if index >= 0
                                && (index as u32) < n
                                && !is_internal_topic(&topic.name) =>
                        {
                            wanted.push((topic.name.to_string(), index as u32))
                        }
                        _ => unknown = true,
                    }
                }
            }
            if unknown {
                // Kafka's answer: the unknown ones named, the others not attempted.
                let known = |topic: &str| {
                    shard.partition_count(topic).is_some() && !is_internal_topic(topic)
                };
                return ResponseKind::AddPartitionsToTxn(add_partitions_refused(&r, |topic| {
                    match known(topic) {
                        true => code::OPERATION_NOT_ATTEMPTED,
                        false => code::UNKNOWN_TOPIC_OR_PARTITION,
                    }
                }));
            }
            let step = txn.core.borrow_mut().add_partitions(
                &r.v3_and_below_transactional_id,
                r.v3_and_below_producer_id.0,
                r.v3_and_below_producer_epoch,
                &wanted,
                now,
            );
            let outcome = txn.carry_out(shard, step).await;
            let error = outcome
                .err()
                .map_or(code::NONE, |e| for_version(e, version, 2));
            ResponseKind::AddPartitionsToTxn(add_partitions_refused(&r, |_| error))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let mut response = AddOffsetsToTxnResponse::default();
            // The group's offsets partition joins the transaction (created if need be).
            let partition = match super::groups::coordinator_of(shard, &r.group_id).await {
                Ok(_) => {
                    let count = shard.partition_count(OFFSETS_TOPIC).unwrap_or(1);
                    offsets_partition(&r.group_id, count)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "finding a group's offsets partition");
                    response.error_code = code::COORDINATOR_NOT_AVAILABLE;
                    return ResponseKind::AddOffsetsToTxn(response);
                }
            };
            let wanted = [(OFFSETS_TOPIC.to_string(), partition)];
            let step = txn.core.borrow_mut().add_partitions(
                &r.transactional_id,
                r.producer_id.0,
                r.producer_epoch,
                &wanted,
                now,
            );
            if let Err(error) = txn.carry_out(shard, step).await {
                response.error_code = for_version(error, version, 2);
            }
            ResponseKind::AddOffsetsToTxn(response)
        }
        RequestKind::EndTxn(r) => {
            let step = txn.core.borrow_mut().end_txn(
                &r.transactional_id,
                r.producer_id.0,
                r.producer_epoch,
                r.committed,
                now,
            );
            let mut response = EndTxnResponse::default();
            if let Err(error) = txn.carry_out(shard, step).await {
                response.error_code = for_version(error, version, 2);
            }
            ResponseKind::EndTxn(response)
        }
        other => refused(&other, code::INVALID_REQUEST),
    }
}

/// Whether the coordinator of `id` holds `producer_id` at `epoch` with an open transaction
/// that `topic`-`partition` is part of: a transactional batch is appended only then. The
/// Kafka error otherwise (INVALID_TXN_STATE, or the coordinator's own).
pub async fn verify(
    shard: &Shard,
    id: &str,
    (producer_id, epoch): (i64, i16),
    topic: &str,
    partition: u32,
) -> Result<(), i16> {
    let (target, state_partition) = match coordinator_of(shard, id).await {
        Ok(home) => home,
        Err(Home::Elsewhere(_)) => return Err(code::NOT_COORDINATOR),
        Err(Home::Unavailable) => return Err(code::COORDINATOR_NOT_AVAILABLE),
    };
    let (id, topic) = (id.to_string(), topic.to_string());
    let checked = shard
        .run_on(target, move |shard| async move {
            let logs = shard.extension::<TxnLogs>()?;
            let txn = match logs.get(&shard, state_partition).await {
                Ok(txn) => txn,
                Err(error) => return Some(Err(error)),
            };
            let core = txn.core.borrow();
            if core.is_pending(&id) {
                // An ending may be under way: its markers could overtake this append.
                return Some(Err(code::CONCURRENT_TRANSACTIONS));
            }
            let Some(held) = core.describe(&id) else {
                return Some(Err(code::INVALID_PRODUCER_ID_MAPPING));
            };
            if held.producer_id != producer_id {
                return Some(Err(code::INVALID_PRODUCER_ID_MAPPING));
            }
            if held.producer_epoch != epoch {
                return Some(Err(code::PRODUCER_FENCED));
            }
            let open =
                held.status == TxnStatus::Ongoing && held.partitions.contains(&(topic, partition));
            Some(if open {
                Ok(())
            } else {
                Err(code::INVALID_TXN_STATE)
            })
        })
        .await
        .flatten();
    checked.unwrap_or(Err(code::COORDINATOR_NOT_AVAILABLE))
}

/// Loads every `__transaction_state` partition this shard owns and leads.
async fn load_led(shard: &Shard) {
    let Some(logs) = shard.extension::<TxnLogs>() else {
        return;
    };
    let partitions = shard.partition_count(TRANSACTION_STATE_TOPIC).unwrap_or(0);
    for partition in 0..partitions {
        let owned = owner_shard(TRANSACTION_STATE_TOPIC, partition, shard.shards()) == shard.id;
        if owned && shard.leading(TRANSACTION_STATE_TOPIC, partition).is_ok() {
            let _ = logs.get(shard, partition).await;
        }
    }
}

/// Aborts the transactions of this shard's coordinators that are open past their timeout,
/// resumes endings whose markers are unwritten, and forgets expired ids. Run periodically.
pub async fn check(shard: &Rc<Shard>) {
    let Some(logs) = shard.extension::<TxnLogs>() else {
        return;
    };
    // A transaction left open by a crash times out even if no client asks about its id again.
    load_led(shard).await;
    let now = oxbow_storage::now_ms();
    for txn in logs.loaded() {
        if shard
            .leading(TRANSACTION_STATE_TOPIC, txn.partition)
            .is_err()
        {
            continue;
        }
        let timed_out = txn.core.borrow_mut().time_out(now);
        for step in timed_out {
            if let Some((id, _)) = &step.record {
                tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
            }
            let _ = txn.carry_out(shard, step).await;
        }
        let unfinished = txn.core.borrow().unfinished();
        for job in unfinished {
            markers::start(shard.clone(), txn.clone(), job);
        }
        let expired = txn.core.borrow_mut().expire(now);
        for id in expired {
            let stored = txn.store(shard, &id, None).await;
            txn.core.borrow_mut().persisted(&id, stored.is_ok());
        }
    }
}
