//! Partition replication as sans-IO cores: the leader's view of its followers (high watermark,
//! in-sync replicas, acks=all readiness) and where a follower's log must be cut when it meets a
//! new leader. The shard that owns a partition drives them; the bytes travel over the cluster
//! transport as they are stored.

mod divergence;
mod progress;

pub use divergence::truncation_point;
pub use progress::{FollowerLag, LeaderProgress, ProgressError, ReplicationSettings};
