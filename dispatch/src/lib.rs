//! Subscriptions and their dispatchers, as sans-IO state machines.
//!
//! A [`Subscription`] is the state of one subscription on one partition: its consumers and
//! their permits, the cursor, what is delivered and not yet acknowledged, what waits for
//! redelivery. It never reads the clock, the disk or a socket: the shell on the partition's
//! owner shard feeds it messages read from the log, consumer events and the current time, and
//! carries out what it hands back (deliveries, dead letters, cursor writes). That keeps the
//! rules of all eight type × mode combinations in one place, tested deterministically.
#![warn(missing_docs)]

pub mod cursor;
pub mod decoded;
pub mod message;
pub mod ranges;
pub mod ring;
pub mod subscription;

pub use cursor::CursorState;
pub use decoded::DecodedBatches;
pub use message::{messages_of, StoredMessage};
pub use subscription::{
    AttachError, ConsumerId, Delivery, DispatchLimits, Message, SkipError, Subscription,
    SubscriptionStats, Undecodable, SKIPPED_KEPT,
};
