//! The transaction coordinators of the `__transaction_state` partitions a shard leads: each a
//! sans-IO [`TxnCoordinator`] over a state log, loaded on first use at each leader epoch.

use crate::kafka::wire::code;
use crate::shard::{PartitionError, Shard};
use bytes::Bytes;
use oxbow_cluster::transactions::{decode_record, encode_record, TxnCoordinator, TxnMetadata};
use oxbow_cluster::transactions::{Step, TxnSettings};
use oxbow_cluster::TRANSACTION_STATE_TOPIC;
use oxbow_storage::{CompactionSettings, StateLog};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

/// One `__transaction_state` partition this shard leads.
pub(super) struct TxnLog {
    pub(super) partition: u32,
    /// Its leader epoch: the coordinator epoch its markers carry.
    pub(super) epoch: i32,
    pub(super) log: Rc<StateLog>,
    pub(super) core: RefCell<TxnCoordinator>,
    /// Ids whose markers are being written now.
    pub(super) writing: RefCell<HashSet<String>>,
}

/// The shard's transaction logs, by partition.
#[derive(Default)]
pub struct TxnLogs {
    logs: RefCell<HashMap<u32, Rc<TxnLog>>>,
    loading: RefCell<Option<Rc<glommio::sync::Semaphore>>>,
}

impl TxnLogs {
    /// The coordinator of `partition`, replayed from its log on first use at each leader
    /// epoch (a new epoch: what this shard knew may be stale).
    pub(super) async fn get(&self, shard: &Shard, partition: u32) -> Result<Rc<TxnLog>, i16> {
        let epoch = (shard.metadata().topic(TRANSACTION_STATE_TOPIC))
            .and_then(|t| t.partitions.get(partition as usize))
            .map_or(0, |p| p.leader_epoch);
        let cached = |logs: &HashMap<u32, Rc<TxnLog>>| {
            (logs.get(&partition))
                .filter(|log| log.epoch == epoch)
                .cloned()
        };
        if let Some(log) = cached(&self.logs.borrow()) {
            return Ok(log);
        }
        let loading = (self.loading.borrow_mut())
            .get_or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
            .clone();
        let _loading = loading.acquire_permit(1).await;
        if let Some(log) = cached(&self.logs.borrow()) {
            return Ok(log);
        }
        let host = (shard.leading(TRANSACTION_STATE_TOPIC, partition))
            .map_err(|_| code::NOT_COORDINATOR)?;
        let settings = CompactionSettings {
            compaction_bytes_min: shard.config.state_logs.compaction_bytes_min,
        };
        let batch_bytes_max = host.log.config().batch_bytes_max as usize;
        let log = StateLog::open(host.log.clone(), settings, batch_bytes_max)
            .await
            .map_err(|e| {
                tracing::error!(partition, error = %e, "loading transaction state");
                code::COORDINATOR_NOT_AVAILABLE
            })?;
        let config = &shard.config.transactions;
        let mut core = TxnCoordinator::new(TxnSettings {
            timeout_max_ms: config.timeout_max_ms,
            id_expiration_ms: config.id_expiration_ms,
        });
        for (key, value) in log.entries() {
            let id = String::from_utf8_lossy(&key).into_owned();
            match decode_record(&value) {
                Ok(metadata) => core.restore(&id, Some(metadata)),
                Err(e) => tracing::error!(partition, transactional_id = %id, error = %e,
                    "skipping a transaction record"),
            }
        }
        tracing::debug!(
            partition,
            epoch,
            ids = log.entries().len(),
            "transaction state loaded"
        );
        let txn = Rc::new(TxnLog {
            partition,
            epoch,
            log: Rc::new(log),
            core: RefCell::new(core),
            writing: RefCell::default(),
        });
        self.logs.borrow_mut().insert(partition, txn.clone());
        Ok(txn)
    }

    /// Every loaded log (for the timeout check).
    pub(super) fn loaded(&self) -> Vec<Rc<TxnLog>> {
        self.logs.borrow().values().cloned().collect()
    }
}

impl TxnLog {
    /// Appends a record (`None`: the id's tombstone) and waits for the in-sync replicas, as
    /// Kafka's coordinator writes with acks=all; the Kafka error on failure.
    pub(super) async fn store(
        &self,
        shard: &Shard,
        id: &str,
        record: Option<&TxnMetadata>,
    ) -> Result<(), i16> {
        let key = Bytes::copy_from_slice(id.as_bytes());
        let value = record.map(|r| Bytes::from(encode_record(r)));
        let unavailable = |e: String| {
            tracing::warn!(partition = self.partition, error = %e, "storing transaction state");
            code::COORDINATOR_NOT_AVAILABLE
        };
        self.log
            .put(vec![(key, value)])
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        self.log.compact_in_background_if_due();
        let host = (shard.leading(TRANSACTION_STATE_TOPIC, self.partition))
            .map_err(|_| code::NOT_COORDINATOR)?;
        let end = host.log.durable_end_offset();
        let timeout = Duration::from_millis(shard.config.offsets_commit_timeout_ms);
        (shard.wait_for_replicas(&host, end, timeout).await).map_err(|e| match e {
            PartitionError::TimedOut => code::COORDINATOR_NOT_AVAILABLE,
            _ => code::NOT_COORDINATOR,
        })
    }

    /// Persists a step's record (telling the core how it went) and starts its markers; the
    /// step's answer, or the error that kept its record from the log.
    pub(super) async fn carry_out<T>(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        step: Step<T>,
    ) -> Result<T, i16>
    where
        T: 'static,
    {
        if let Some((id, metadata)) = &step.record {
            let stored = self.store(shard, id, Some(metadata)).await;
            self.core.borrow_mut().persisted(id, stored.is_ok());
            stored?;
        }
        if let Some(job) = step.markers {
            super::markers::start(shard.clone(), self.clone(), job);
        }
        step.reply.map_err(super::error_code)
    }
}
