//! Partition replication as sans-IO cores: the leader's view of its followers (high watermark,
//! in-sync replicas, acks=all readiness), the follower's conversation with its leader (find
//! where its log diverges, cut there, fetch), and the frames they exchange on the cluster
//! transport, which carry the record batches as they are stored. The shard that owns a
//! partition drives them.

mod cursors;
mod divergence;
mod follower;
mod progress;
mod throttle;
mod wire;

pub use cursors::CursorSnapshot;
pub use divergence::{truncation_point, Truncation};
pub use follower::{check_request, Follower, FollowerAction};
pub use progress::{FollowerLag, LeaderProgress, ProgressError, ReplicationSettings};
pub use throttle::CatchUpThrottle;
pub use wire::{PartitionKey, Refusal, ReplicaFrame, WireError, REPLICATION_CHANNEL};
