//! What operators see of transactions: ListTransactions (the ids this broker coordinates,
//! filtered by state, producer id and age) and DescribeTransactions (an id's producer, state,
//! timeout and partitions), as Kafka answers them (`kafka-transactions.sh list | describe`).

use super::{coordinator_of, Home, TxnLogs};
use crate::authorize::Gate;
use crate::kafka::wire::code;
use crate::shard::Shard;
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_cluster::transactions::{TxnMetadata, TxnStatus};
use oxbow_cluster::{Operation, TRANSACTION_STATE_TOPIC};
use oxbow_core::placement::owner_shard;
use std::collections::BTreeMap;

const STATES: [TxnStatus; 6] = [
    TxnStatus::Empty,
    TxnStatus::Ongoing,
    TxnStatus::PrepareCommit,
    TxnStatus::PrepareAbort,
    TxnStatus::CompleteCommit,
    TxnStatus::CompleteAbort,
];

/// Every id this shard's loaded coordinators hold, with its state.
fn held_here(shard: &Shard) -> Vec<(String, TxnMetadata)> {
    let Some(logs) = shard.extension::<TxnLogs>() else {
        return Vec::new();
    };
    let mut held = Vec::new();
    for txn in logs.loaded() {
        if shard
            .leading(TRANSACTION_STATE_TOPIC, txn.partition)
            .is_err()
        {
            continue;
        }
        let core = txn.core.borrow();
        held.extend(core.list().map(|(id, m)| (id.to_string(), m.clone())));
    }
    held
}

/// ListTransactions: the ids every shard of this node coordinates, as filtered; only those
/// the principal may describe.
pub async fn list(
    shard: &Shard,
    gate: &Gate<'_>,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut response = ListTransactionsResponse::default();
    let mut states = Vec::new();
    for filter in &request.state_filters {
        match STATES.iter().find(|s| s.name() == filter.as_str()) {
            Some(state) => states.push(*state),
            None => response.unknown_state_filters.push(filter.clone()),
        }
    }
    let now = oxbow_storage::now_ms();
    let mut held = Vec::new();
    for target in 0..shard.shards() {
        let found = shard
            .run_on(target, |shard| async move {
                super::load_led(&shard).await;
                held_here(&shard)
            })
            .await;
        held.extend(found.unwrap_or_default());
    }
    for (id, metadata) in held {
        let state_ok = states.is_empty() || states.contains(&metadata.status);
        let producer_ok = request.producer_id_filters.is_empty()
            || (request.producer_id_filters.iter()).any(|p| p.0 == metadata.producer_id);
        // Kafka's duration filter: transactions open longer than it (ms); -1 for any.
        let old_enough = request.duration_filter < 0
            || (metadata.started_ms >= 0 && now - metadata.started_ms >= request.duration_filter);
        let visible = gate.transactional_id(&id, Operation::Describe);
        if state_ok && producer_ok && old_enough && visible {
            let mut state = list_transactions_response::TransactionState::default();
            state.transactional_id = TransactionalId(StrBytes::from_string(id));
            state.producer_id = ProducerId(metadata.producer_id);
            state.transaction_state = StrBytes::from_static_str(metadata.status.name());
            response.transaction_states.push(state);
        }
    }
    response
}

/// DescribeTransactions: each id asked of the shard that coordinates it; NOT_COORDINATOR for
/// those another node does, TRANSACTIONAL_ID_NOT_FOUND for unknown ones.
pub async fn describe(
    shard: &Shard,
    gate: &Gate<'_>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut response = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let mut state = describe_transactions_response::TransactionState::default();
        state.transactional_id = id.clone();
        state.transaction_state = StrBytes::from_static_str("");
        state.producer_id = ProducerId(-1);
        state.producer_epoch = -1;
        state.transaction_start_time_ms = -1;
        let found = match gate.transactional_id(&id, Operation::Describe) {
            false => Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
            true => described(shard, id.to_string()).await,
        };
        match found {
            Ok(metadata) => {
                state.transaction_state = StrBytes::from_static_str(metadata.status.name());
                state.transaction_timeout_ms = metadata.timeout_ms as i32;
                state.transaction_start_time_ms = metadata.started_ms;
                state.producer_id = ProducerId(metadata.producer_id);
                state.producer_epoch = metadata.producer_epoch;
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &metadata.partitions {
                    topics
                        .entry(topic.clone())
                        .or_default()
                        .push(*partition as i32);
                }
                state.topics = (topics.into_iter())
                    .map(|(topic, partitions)| {
                        let mut data = TopicData::default();
                        data.topic = TopicName(StrBytes::from_string(topic));
                        data.partitions = partitions;
                        data
                    })
                    .collect();
            }
            Err(error) => state.error_code = error,
        }
        response.transaction_states.push(state);
    }
    response
}

async fn described(shard: &Shard, id: String) -> Result<TxnMetadata, i16> {
    let (target, partition) = match coordinator_of(shard, &id).await {
        Ok(home) => home,
        Err(Home::Elsewhere(_)) => return Err(code::NOT_COORDINATOR),
        Err(Home::Unavailable) => return Err(code::COORDINATOR_NOT_AVAILABLE),
    };
    debug_assert_eq!(
        target,
        owner_shard(TRANSACTION_STATE_TOPIC, partition, shard.shards())
    );
    let found = shard
        .run_on(target, move |shard| async move {
            let logs = shard.extension::<TxnLogs>()?;
            Some(match logs.get(&shard, partition).await {
                Ok(txn) => (txn.core.borrow().describe(&id).cloned())
                    .ok_or(code::TRANSACTIONAL_ID_NOT_FOUND),
                Err(error) => Err(error),
            })
        })
        .await
        .flatten();
    found.unwrap_or(Err(code::COORDINATOR_NOT_AVAILABLE))
}
