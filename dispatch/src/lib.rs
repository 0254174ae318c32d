//! The shard layer below every client protocol: the shards that own partitions and route
//! requests to them ([`shard`]), and the subscriptions each partition hosts
//! ([`subscriptions`]), whose rules live in a sans-IO core ([`Subscription`]).
//!
//! A [`Subscription`] is the state of one subscription on one partition: its consumers and
//! their permits, the cursor, what is delivered and not yet acknowledged, what waits for
//! redelivery. It never reads the clock, the disk or a socket: the shell on the partition's
//! owner shard (`subscriptions/driver.rs`) feeds it messages read from the log, consumer events
//! and the current time, and carries out what it hands back (deliveries, dead letters, cursor
//! writes). That keeps the rules of all eight type × mode combinations in one place, tested
//! deterministically. Nothing in this crate knows the Kafka protocol.
#![warn(missing_docs)]

pub mod cursor;
pub mod decoded;
pub mod dispatch_rate;
pub mod message;
pub mod ranges;
pub mod ring;
pub mod shard;
pub mod subscription;
pub mod subscriptions;

pub use cursor::CursorState;
pub use decoded::DecodedBatches;
pub use dispatch_rate::DispatchRate;
pub use message::{messages_of, StoredMessage};
pub use shard::{Acks, PartitionError, PartitionHost, Shard, ShardMessage};
pub use subscription::{
    AttachError, ConsumerId, Delivery, DispatchLimits, Message, SkipError, Subscription,
    SubscriptionStats, Undecodable, SKIPPED_KEPT,
};
