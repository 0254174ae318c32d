//! The controller's decisions, as pure functions of the metadata: where a new topic's replicas
//! go ([`assign_replicas`]) and which leaders change when brokers stop answering
//! ([`elections`]). The node that leads the metadata group proposes them.

mod elections;
mod placement;

pub use elections::{elections, UNCLEAN_ELECTION_CONFIG};
pub use placement::{assign_replicas, PlacementError};
