//! Kafka's transaction coordinator, as a sans-IO core: which transactional ids exist, the
//! producer id and epoch each holds, the partitions its open transaction wrote to, and the
//! steps that end a transaction (a durable "prepare" record, markers written to every
//! partition, a durable "complete" record), with Kafka's rules and error codes.
//!
//! - `metadata.rs`: one transactional id's state, and its record in the transaction log.
//! - `coordinator.rs`: the requests (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
//!   EndTxn), the timeout that aborts, and what the shell must do for each: persist a record,
//!   reply, write markers.
//!
//! The shell keeps the records in a state log (Kafka's `__transaction_state`), so the state
//! survives restarts and, with the cluster, moves with the log's leadership.

mod coordinator;
mod metadata;

pub use coordinator::{MarkerJob, Step, TxnCoordinator, TxnError, TxnSettings};
pub use metadata::{decode_record, encode_record, RecordError, TxnMetadata, TxnStatus};
