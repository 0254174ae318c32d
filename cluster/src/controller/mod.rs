//! The controller's decisions, as pure functions of the metadata: where a new topic's replicas
//! go ([`assign_replicas`]) and which leaders change when brokers stop answering
//! ([`elections`]), after [`Liveness`] says who answers ([`liveness_changes`]). The node that
//! leads the metadata group proposes them, and from time to time hands leadership back to
//! preferred replicas ([`preferred_leader_elections`]).

mod elections;
mod liveness;
mod placement;
mod preferred;

pub use elections::{elections, UNCLEAN_ELECTION_CONFIG};
pub use liveness::{liveness_changes, Liveness};
pub use placement::{assign_replicas, PlacementError};
pub use preferred::{elect_preferred, elect_unclean, preferred_leader_elections, ElectionRefusal};
