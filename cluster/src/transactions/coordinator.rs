//! The transaction coordinator's rules (Kafka's TransactionCoordinator), without I/O.
//!
//! Every change is first a *pending* record: the shell appends it to the transaction log and
//! calls [`TxnCoordinator::persisted`]; only then does the change take effect and the reply
//! go out. Meanwhile other requests for the same id get CONCURRENT_TRANSACTIONS, which clients
//! retry. Ending a transaction takes two records: "prepare" (the decision, durable before the
//! client hears of it) and, once the shell has written a marker to every partition of the
//! transaction, "complete".

use super::metadata::{TxnMetadata, TxnStatus};
use std::collections::{BTreeMap, BTreeSet};

/// Named bounds of the coordinator (Kafka's broker configs of the same meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnSettings {
    /// Longest transaction timeout a producer may ask for (`transaction.max.timeout.ms`).
    pub timeout_max_ms: u32,
    /// An id idle this long with no open transaction is forgotten
    /// (`transactional.id.expiration.ms`).
    pub id_expiration_ms: u64,
}

impl Default for TxnSettings {
    fn default() -> TxnSettings {
        TxnSettings {
            timeout_max_ms: 900_000,
            id_expiration_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// Why a transactional request was refused (each is a Kafka error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The id is being changed (or its markers written): retry.
    #[error("the transaction is being changed by another request; retry")]
    ConcurrentTransactions,
    /// A newer instance of the producer holds the id.
    #[error("the producer's epoch is not the transactional id's current one")]
    ProducerFenced,
    /// The producer id is not the one the transactional id holds (or the id is unknown).
    #[error("the producer id does not hold this transactional id")]
    InvalidProducerIdMapping,
    /// The request does not fit where the transaction is (e.g. commit after abort).
    #[error("the request does not fit the transaction's state")]
    InvalidTxnState,
    /// The timeout is not positive or above the broker's maximum.
    #[error("the transaction timeout is out of range")]
    InvalidTransactionTimeout,
}

/// Markers the shell writes once a "prepare" record is durable: one control batch per
/// partition, of the producer at the epoch given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    /// Whose transaction.
    pub transactional_id: String,
    /// The producer id the markers carry.
    pub producer_id: i64,
    /// The epoch the markers carry (a fenced transaction's is the bumped one).
    pub producer_epoch: i16,
    /// Commit or abort.
    pub commit: bool,
    /// Where.
    pub partitions: Vec<(String, u32)>,
}

/// What the shell does for a request: append `record` (if any) to the transaction log and
/// call [`TxnCoordinator::persisted`]; then answer `reply` (an error instead if the append
/// failed); then write `markers` (if any) and call [`TxnCoordinator::markers_written`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T> {
    /// The answer, once `record` is durable.
    pub reply: Result<T, TxnError>,
    /// The record to append first: the transactional id and its new state.
    pub record: Option<(String, TxnMetadata)>,
    /// Markers to write after that.
    pub markers: Option<MarkerJob>,
}

impl<T> Step<T> {
    fn refuse(error: TxnError) -> Step<T> {
        Step {
            reply: Err(error),
            record: None,
            markers: None,
        }
    }

    fn answer(reply: T) -> Step<T> {
        Step {
            reply: Ok(reply),
            record: None,
            markers: None,
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    current: Option<TxnMetadata>,
    /// A record on its way to the log.
    pending: Option<TxnMetadata>,
    /// The pending record is the id's tombstone.
    expiring: bool,
}

/// The transactional ids of one transaction-log partition.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    settings: TxnSettings,
    ids: BTreeMap<String, Entry>,
}

impl TxnCoordinator {
    /// A coordinator with no ids (they come from [`TxnCoordinator::restore`] and requests).
    pub fn new(settings: TxnSettings) -> TxnCoordinator {
        TxnCoordinator {
            settings,
            ids: BTreeMap::new(),
        }
    }

    /// Takes a record read back from the transaction log (`None`: a tombstone).
    pub fn restore(&mut self, id: &str, record: Option<TxnMetadata>) {
        match record {
            Some(metadata) => {
                self.ids.entry(id.to_string()).or_default().current = Some(metadata);
            }
            None => {
                self.ids.remove(id);
            }
        }
    }

    /// Markers that must still be written: transactions whose "prepare" record is durable
    /// but not their "complete" one (after a restart, or a failed marker write).
    pub fn unfinished(&self) -> Vec<MarkerJob> {
        (self.ids.iter())
            .filter(|(_, entry)| entry.pending.is_none())
            .filter_map(|(id, entry)| {
                let current = entry.current.as_ref()?;
                current
                    .status
                    .is_preparing()
                    .then(|| marker_job(id, current))
            })
            .collect()
    }

    /// The state of an id, as the log holds it.
    pub fn describe(&self, id: &str) -> Option<&TxnMetadata> {
        self.ids.get(id)?.current.as_ref()
    }

    /// Every id with its state, by id.
    pub fn list(&self) -> impl Iterator<Item = (&str, &TxnMetadata)> + '_ {
        (self.ids.iter()).filter_map(|(id, e)| Some((id.as_str(), e.current.as_ref()?)))
    }

    /// InitProducerId with a transactional id: a new producer id, or the id's next epoch
    /// (fencing older instances). An open transaction is aborted first (the answer is then
    /// CONCURRENT_TRANSACTIONS, and the client's retry gets the epoch). `expected` is the
    /// producer id and epoch the client already holds (KIP-360), if any.
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: i64,
        new_producer_id: impl FnOnce() -> i64,
    ) -> Step<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms as u32 > self.settings.timeout_max_ms {
            return Step::refuse(TxnError::InvalidTransactionTimeout);
        }
        let entry = self.ids.entry(id.to_string()).or_default();
        if entry.pending.is_some() {
            return Step::refuse(TxnError::ConcurrentTransactions);
        }
        let Some(current) = &entry.current else {
            let metadata = TxnMetadata {
                producer_id: new_producer_id(),
                producer_epoch: 0,
                previous: (-1, -1),
                timeout_ms: timeout_ms as u32,
                status: TxnStatus::Empty,
                partitions: BTreeSet::new(),
                started_ms: -1,
                updated_ms: now_ms,
            };
            let reply = (metadata.producer_id, metadata.producer_epoch);
            return pend(entry, id, metadata, Ok(reply), false);
        };
        let held = (current.producer_id, current.producer_epoch);
        if let Some(expected) = expected {
            let idle = matches!(
                current.status,
                TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
            );
            if expected == current.previous && idle {
                // A retry whose answer was lost: the bump it asked for is done.
                return Step::answer(held);
            }
            if expected != held {
                return Step::refuse(TxnError::ProducerFenced);
            }
        }
        match current.status {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                Step::refuse(TxnError::ConcurrentTransactions)
            }
            TxnStatus::Ongoing => {
                let metadata = fenced_abort(current, now_ms);
                pend(
                    entry,
                    id,
                    metadata,
                    Err(TxnError::ConcurrentTransactions),
                    true,
                )
            }
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                let mut metadata = bumped(current, new_producer_id);
                metadata.timeout_ms = timeout_ms as u32;
                metadata.updated_ms = now_ms;
                let reply = (metadata.producer_id, metadata.producer_epoch);
                pend(entry, id, metadata, Ok(reply), false)
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition): the
    /// partitions join the producer's transaction, which opens if it was not.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
        now_ms: i64,
    ) -> Step<()> {
        let entry = match self.checked(id, producer_id, epoch) {
            Ok(entry) => entry,
            Err(e) => return Step::refuse(e),
        };
        let current = entry.current.as_ref().expect("checked");
        if current.status.is_preparing() {
            return Step::refuse(TxnError::ConcurrentTransactions);
        }
        let open = current.status == TxnStatus::Ongoing;
        if open && partitions.iter().all(|p| current.partitions.contains(p)) {
            return Step::answer(());
        }
        let mut metadata = current.clone();
        if !open {
            metadata.partitions.clear();
            metadata.started_ms = now_ms;
        }
        metadata.status = TxnStatus::Ongoing;
        metadata.partitions.extend(partitions.iter().cloned());
        metadata.updated_ms = now_ms;
        pend(entry, id, metadata, Ok(()), false)
    }

    /// EndTxn: commit or abort the producer's open transaction. A retry of an ending that is
    /// done (or under way) is answered as the first was.
    pub fn end_txn(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Step<()> {
        let entry = match self.checked(id, producer_id, epoch) {
            Ok(entry) => entry,
            Err(e) => return Step::refuse(e),
        };
        let current = entry.current.as_ref().expect("checked");
        match (current.status, commit) {
            (TxnStatus::Ongoing, _) => {
                let mut metadata = current.clone();
                metadata.status = match commit {
                    true => TxnStatus::PrepareCommit,
                    false => TxnStatus::PrepareAbort,
                };
                metadata.updated_ms = now_ms;
                pend(entry, id, metadata, Ok(()), true)
            }
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
                Step::answer(())
            }
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Step::refuse(TxnError::ConcurrentTransactions)
            }
            _ => Step::refuse(TxnError::InvalidTxnState),
        }
    }

    /// Transactions open longer than their timeout: each aborts under a bumped epoch, so the
    /// producer that left it is fenced (its next request fails and it must start again).
    pub fn time_out(&mut self, now_ms: i64) -> Vec<Step<()>> {
        let mut steps = Vec::new();
        for (id, entry) in self.ids.iter_mut() {
            let Some(current) = &entry.current else {
                continue;
            };
            let expired = current.status == TxnStatus::Ongoing
                && current.started_ms + current.timeout_ms as i64 <= now_ms;
            if entry.pending.is_some() || !expired {
                continue;
            }
            let metadata = fenced_abort(current, now_ms);
            steps.push(pend(entry, id, metadata, Ok(()), true));
        }
        steps
    }

    /// Ids idle past the expiration with no transaction open, each now waiting for its
    /// tombstone: the shell appends it and calls [`TxnCoordinator::persisted`] (requests for
    /// the id meanwhile get CONCURRENT_TRANSACTIONS).
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let horizon = now_ms.saturating_sub(self.settings.id_expiration_ms as i64);
        let mut expired = Vec::new();
        for (id, entry) in self.ids.iter_mut() {
            let idle = entry.pending.is_none()
                && entry.current.as_ref().is_some_and(|c| {
                    c.updated_ms < horizon
                        && matches!(
                            c.status,
                            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                        )
                });
            if idle {
                entry.pending = entry.current.clone();
                entry.expiring = true;
                expired.push(id.clone());
            }
        }
        expired
    }

    /// Whether a record of `id` is on its way to the log (its state is about to change).
    pub fn is_pending(&self, id: &str) -> bool {
        self.ids.get(id).is_some_and(|e| e.pending.is_some())
    }

    /// The shell's append of the pending record of `id` finished: durable (the change takes
    /// effect) or failed (it never happened).
    pub fn persisted(&mut self, id: &str, durable: bool) {
        let Some(entry) = self.ids.get_mut(id) else {
            return;
        };
        let pending = entry.pending.take();
        let expiring = std::mem::take(&mut entry.expiring);
        if durable {
            entry.current = if expiring { None } else { pending };
        }
        if entry.current.is_none() && entry.pending.is_none() {
            self.ids.remove(id);
        }
    }

    /// Every marker of `id`'s ending transaction is written: the "complete" record to append
    /// (then [`TxnCoordinator::persisted`]); `None` if the transaction is not ending.
    pub fn markers_written(&mut self, id: &str, now_ms: i64) -> Option<(String, TxnMetadata)> {
        let entry = self.ids.get_mut(id)?;
        let current = entry.current.as_ref()?;
        if entry.pending.is_some() || !current.status.is_preparing() {
            return None;
        }
        let mut metadata = current.clone();
        metadata.status = match current.status {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            _ => TxnStatus::CompleteAbort,
        };
        metadata.partitions.clear();
        metadata.started_ms = -1;
        metadata.updated_ms = now_ms;
        entry.pending = Some(metadata.clone());
        Some((id.to_string(), metadata))
    }

    /// The entry of a request from `producer_id` at `epoch`, if they hold `id` and nothing
    /// is pending for it.
    fn checked(&mut self, id: &str, producer_id: i64, epoch: i16) -> Result<&mut Entry, TxnError> {
        let entry = self
            .ids
            .get_mut(id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if entry.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let current = entry
            .current
            .as_ref()
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if current.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if current.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(entry)
    }
}

/// The id's next producer id and epoch: the epoch bumped, or a new producer id once the epoch
/// is exhausted (as Kafka does).
fn bumped(current: &TxnMetadata, new_producer_id: impl FnOnce() -> i64) -> TxnMetadata {
    let mut metadata = current.clone();
    metadata.previous = (current.producer_id, current.producer_epoch);
    if current.producer_epoch >= i16::MAX - 1 {
        metadata.producer_id = new_producer_id();
        metadata.producer_epoch = 0;
    } else {
        metadata.producer_epoch += 1;
    }
    metadata.status = TxnStatus::Empty;
    metadata.partitions.clear();
    metadata.started_ms = -1;
    metadata
}

/// The abort of an open transaction that also fences its producer: the markers carry the next
/// epoch (when there is one), so the partitions refuse what the old instance sends later.
fn fenced_abort(current: &TxnMetadata, now_ms: i64) -> TxnMetadata {
    let mut metadata = current.clone();
    if current.producer_epoch < i16::MAX - 1 {
        metadata.previous = (current.producer_id, current.producer_epoch);
        metadata.producer_epoch += 1;
    }
    metadata.status = TxnStatus::PrepareAbort;
    metadata.updated_ms = now_ms;
    metadata
}

fn marker_job(id: &str, metadata: &TxnMetadata) -> MarkerJob {
    MarkerJob {
        transactional_id: id.to_string(),
        producer_id: metadata.producer_id,
        producer_epoch: metadata.producer_epoch,
        commit: metadata.status == TxnStatus::PrepareCommit,
        partitions: metadata.partitions.iter().cloned().collect(),
    }
}

/// Makes `metadata` the pending record of `entry`; markers follow it when `ends` is set.
fn pend<T>(
    entry: &mut Entry,
    id: &str,
    metadata: TxnMetadata,
    reply: Result<T, TxnError>,
    ends: bool,
) -> Step<T> {
    let markers = ends.then(|| marker_job(id, &metadata));
    entry.pending = Some(metadata.clone());
    Step {
        reply,
        record: Some((id.to_string(), metadata)),
        markers,
    }
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
