//! Transactions as one partition sees them: which producers have a transaction open here and
//! from which offset (the last stable offset stops at the oldest), which ended in an abort
//! (`read_committed` readers are told to discard their records), and the snapshot file that
//! makes this survive a restart without reading the whole log again.
//!
//! The state follows the log: every batch is recorded when it is given its offsets, and a
//! truncation undoes what it cuts. Transaction markers (control batches, see
//! [`oxbow_core::TxnMarker`]) end transactions; the transaction coordinator writes them.

mod recover;
mod snapshot;
mod state;

pub(crate) use recover::{choose_start, rebuild, replay};

pub(crate) use snapshot::{encode, write};
pub use state::AbortedTxn;
pub(crate) use state::TxnState;
