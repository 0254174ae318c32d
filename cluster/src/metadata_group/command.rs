//! What a metadata log entry carries: one change, and who proposed it, so that the node that
//! proposed it can answer its caller when the entry is applied.

use crate::metadata::MetadataChange;
use serde::{Deserialize, Serialize};

/// Who proposed an entry: a node, in one run of its process, and the proposal's number in that
/// run. A run picks `boot` at random, so a proposal from before a restart never answers a caller
/// of the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The proposing node.
    pub node: u64,
    /// Random per run of the node's process.
    pub boot: u64,
    /// Counts the run's proposals.
    pub seq: u64,
}

/// The payload of a normal entry of the metadata log (JSON: small, rare, readable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Who proposed it.
    pub proposal: ProposalId,
    /// The change.
    pub change: MetadataChange,
}

impl Command {
    /// The bytes stored in the entry.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commands serialise")
    }

    /// Reads an entry's bytes back.
    pub fn decode(bytes: &[u8]) -> Result<Command, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
