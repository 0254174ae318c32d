//! One subscription on one partition: who gets which message, and what is still owed.
//!
//! Call order, from the shell on the partition's owner shard:
//! 1. `attach`/`detach`/`add_permits`/`ack`/`nack`/`seek` as consumers ask;
//!    `on_log_end` when the log grows;
//! 2. `next_read` → read the log from that offset → `on_read` (or `on_read_failed`);
//! 3. `poll_deliveries(now)` → send each delivery to its consumer;
//!    `poll_dead_letters()` → produce each to the dead-letter topic, then `ack` it;
//! 4. `tick(now)` when the returned deadline passes (ack timeouts, delayed redeliveries);
//! 5. `take_cursor_if_dirty()` → store the cursor (debounced by the shell).
//!
//! Reliable mode keeps every delivered message until it is acknowledged: a window of at most
//! `unacked_messages_max`, acknowledged offsets above the cursor as ranges, redelivery on nack,
//! on ack timeout and when a consumer detaches, and dead-lettering after `redeliveries_max`.
//! Non-reliable mode forgets a message once it is handed out, never falls further than the
//! read-ahead behind the log end, and counts what it drops.

use crate::cursor::CursorState;
use crate::dispatch_rate::{DispatchRate, RateGate};
use crate::ranges::RangeSet;
use crate::ring::Ring;
use oxbow_core::native::{Mode, SubscriptionType};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A consumer attachment, unique within the broker process (the shell assigns it).
pub type ConsumerId = u64;

/// What the dispatcher needs to know of a message.
pub trait Message: Clone {
    /// Offset in the partition.
    fn offset(&self) -> u64;
    /// Routing key, for Key_Shared.
    fn key(&self) -> Option<&[u8]>;
    /// Bytes it counts for against a dispatch rate limit.
    fn size_bytes(&self) -> usize;
}

/// Limits of one subscription (from [`oxbow_core::SubscriptionConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct DispatchLimits {
    /// Reliable window.
    pub unacked_messages_max: u32,
    /// Reliable ack timeout.
    pub ack_timeout: Duration,
    /// Deliveries after the first before dead-lettering.
    pub redeliveries_max: u32,
    /// Messages buffered ahead of dispatch.
    pub read_ahead_messages_max: u32,
    /// Consumers per subscription.
    pub consumers_max: u32,
}

impl From<&oxbow_core::SubscriptionConfig> for DispatchLimits {
    fn from(config: &oxbow_core::SubscriptionConfig) -> DispatchLimits {
        DispatchLimits {
            unacked_messages_max: config.unacked_messages_max,
            ack_timeout: Duration::from_millis(config.ack_timeout_ms),
            redeliveries_max: config.redeliveries_max,
            read_ahead_messages_max: config.read_ahead_messages_max,
            consumers_max: config.consumers_max,
        }
    }
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<M> {
    /// Who gets it.
    pub consumer: ConsumerId,
    /// The message.
    pub message: M,
    /// Earlier deliveries of it.
    pub redeliveries: u32,
}

/// Why a consumer cannot attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Exclusive subscription with a consumer already.
    #[error("exclusive subscription already has a consumer")]
    ExclusiveBusy,
    /// The subscription exists with another type or mode.
    #[error("subscription exists as {existing:?}/{existing_mode:?}")]
    Mismatch {
        /// Its type.
        existing: SubscriptionType,
        /// Its mode.
        existing_mode: Mode,
    },
    /// Too many consumers.
    #[error("subscription has {0} consumers, the most allowed")]
    TooMany(u32),
}

/// A batch in the log that the shell could not split into messages (its records do not
/// decode, or decompress beyond the limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// What failed, for the operator.
    pub reason: String,
}

/// Skips an operator made that the cursor keeps (newest last), so they can be audited later.
pub const SKIPPED_KEPT: usize = 64;

/// Why a skip was refused: only the batch a subscription is stopped at can be skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} is not in the batch the subscription is stopped at ({blocked:?})")]
pub struct SkipError {
    /// The offset asked for.
    pub offset: u64,
    /// The batch it is stopped at, if any.
    pub blocked: Option<(u64, u64)>,
}

/// Counters and positions, for metrics and admin listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionStats {
    /// Every offset below is acknowledged (reliable) or passed (non-reliable).
    pub cursor: u64,
    /// Log end − cursor.
    pub lag: u64,
    /// Delivered and not acknowledged, plus waiting for redelivery or dead-lettering.
    pub unacked: u64,
    /// Attached consumers.
    pub consumers: u32,
    /// Non-reliable: dropped messages.
    pub dropped: u64,
    /// Reliable: redeliveries so far.
    pub redelivered: u64,
    /// Reliable: messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Reliable: the undecodable batch (first and last offset) the subscription stopped at.
    pub blocked: Option<(u64, u64)>,
    /// Reliable: batches an operator skipped so far (the last [`SKIPPED_KEPT`] are kept).
    pub skipped: u64,
}

#[derive(Debug)]
struct Consumer {
    id: ConsumerId,
    name: String,
    priority: i32,
    permits: u64,
}

#[derive(Debug)]
struct InFlight<M> {
    consumer: ConsumerId,
    message: M,
    redeliveries: u32,
    deadline: Instant,
}

#[derive(Debug)]
struct Redelivery<M> {
    message: M,
    redeliveries: u32,
    not_before: Instant,
}

/// The state of one subscription on one partition. Owned by the partition's shard.
#[derive(Debug)]
pub struct Subscription<M> {
    kind: SubscriptionType,
    mode: Mode,
    limits: DispatchLimits,
    partition: u32,
    consumers: Vec<Consumer>,
    /// Failover: the one consumer receiving messages.
    active: Option<ConsumerId>,
    /// Key_Shared: the ring over the consumers.
    ring: Ring,
    /// Shared: where the round-robin continues.
    next_in_turn: usize,
    mark_delete: u64,
    acked: RangeSet,
    read_position: u64,
    read_in_progress: bool,
    log_end: u64,
    pending: VecDeque<M>,
    redeliver: BTreeMap<u64, Redelivery<M>>,
    in_flight: BTreeMap<u64, InFlight<M>>,
    dead_letter_queue: Vec<(M, u32)>,
    dead_lettering: BTreeMap<u64, ()>,
    cursor_dirty: bool,
    /// Reliable: the batch reading stopped at, until an operator skips it.
    blocked: Option<Undecodable>,
    /// Batches an operator skipped, newest last (at most [`SKIPPED_KEPT`]).
    skipped: Vec<(u64, u64)>,
    dropped: u64,
    redelivered: u64,
    dead_lettered: u64,
    /// The dispatch rate limit, and what is left of it now.
    rate: RateGate,
    /// Whether the limit held a message back at the last delivery.
    rate_held: bool,
}

impl<M: Message> Subscription<M> {
    /// A subscription reading from `start` (a cursor for reliable mode; the read position for
    /// non-reliable) on a log that ends at `log_end`.
    pub fn new(
        kind: SubscriptionType,
        mode: Mode,
        limits: DispatchLimits,
        partition: u32,
        start: u64,
        log_end: u64,
    ) -> Subscription<M> {
        Subscription {
            kind,
            mode,
            limits,
            partition,
            consumers: Vec::new(),
            active: None,
            ring: Ring::default(),
            next_in_turn: 0,
            mark_delete: start,
            acked: RangeSet::default(),
            read_position: start,
            read_in_progress: false,
            log_end,
            pending: VecDeque::new(),
            redeliver: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            dead_letter_queue: Vec::new(),
            dead_lettering: BTreeMap::new(),
            cursor_dirty: mode == Mode::Reliable,
            blocked: None,
            skipped: Vec::new(),
            dropped: 0,
            redelivered: 0,
            dead_lettered: 0,
            rate: RateGate::default(),
            rate_held: false,
        }
    }

    /// A reliable subscription resumed from its stored cursor.
    pub fn restore(
        state: &CursorState,
        limits: DispatchLimits,
        partition: u32,
        log_end: u64,
    ) -> Subscription<M> {
        let mut sub = Subscription::new(
            state.kind,
            Mode::Reliable,
            limits,
            partition,
            state.mark_delete,
            log_end,
        );
        for &(start, end) in &state.acked {
            sub.acked.insert(start, end);
        }
        sub.skipped = state.skipped.clone();
        sub.rate = RateGate::new(state.dispatch_rate);
        sub.cursor_dirty = false;
        sub
    }

    /// Type.
    pub fn kind(&self) -> SubscriptionType {
        self.kind
    }

    /// Mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether no consumer is attached.
    pub fn is_idle(&self) -> bool {
        self.consumers.is_empty()
    }

    /// Attaches a consumer. Its permits start at zero.
    pub fn attach(
        &mut self,
        now: Instant,
        id: ConsumerId,
        name: &str,
        priority: i32,
        kind: SubscriptionType,
        mode: Mode,
    ) -> Result<(), AttachError> {
        if kind != self.kind || mode != self.mode {
            // An idle subscription may change type (as Pulsar allows); the mode is its
            // durability and never changes.
            if mode != self.mode || !self.consumers.is_empty() {
                return Err(AttachError::Mismatch {
                    existing: self.kind,
                    existing_mode: self.mode,
                });
            }
            self.kind = kind;
            self.cursor_dirty |= mode == Mode::Reliable;
        }
        if self.kind == SubscriptionType::Exclusive && !self.consumers.is_empty() {
            return Err(AttachError::ExclusiveBusy);
        }
        if self.consumers.len() as u32 >= self.limits.consumers_max {
            return Err(AttachError::TooMany(self.limits.consumers_max));
        }
        assert!(
            self.consumers.iter().all(|c| c.id != id),
            "consumer {id} attached twice"
        );
        self.consumers.push(Consumer {
            id,
            name: name.to_string(),
            priority,
            permits: 0,
        });
        self.membership_changed(now);
        Ok(())
    }

    /// The consumer attached under `name`, if any.
    pub fn consumer_named(&self, name: &str) -> Option<ConsumerId> {
        self.consumers.iter().find(|c| c.name == name).map(|c| c.id)
    }

    /// Detaches a consumer; what it had not acknowledged is delivered again to the others.
    pub fn detach(&mut self, now: Instant, id: ConsumerId) {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.id != id);
        if self.consumers.len() == before {
            return;
        }
        self.return_unacked_of(id, now, true);
        self.membership_changed(now);
    }

    /// Grants a consumer more permits.
    pub fn add_permits(&mut self, id: ConsumerId, permits: u32) {
        if let Some(consumer) = self.consumers.iter_mut().find(|c| c.id == id) {
            consumer.permits = consumer.permits.saturating_add(permits as u64);
        }
    }

    /// The cursor, if it moved since the last call (reliable mode only).
    pub fn take_cursor_if_dirty(&mut self) -> Option<CursorState> {
        if !std::mem::take(&mut self.cursor_dirty) || self.mode != Mode::Reliable {
            return None;
        }
        Some(self.cursor())
    }

    /// Whether the cursor moved since it was last taken.
    pub fn cursor_dirty(&self) -> bool {
        self.cursor_dirty && self.mode == Mode::Reliable
    }

    /// The cursor as it stands.
    pub fn cursor(&self) -> CursorState {
        CursorState {
            kind: self.kind,
            mark_delete: self.mark_delete,
            acked: self.acked.ranges().collect(),
            skipped: self.skipped.clone(),
            dispatch_rate: self.rate.rate(),
        }
    }

    /// The dispatch rate limit.
    pub fn dispatch_rate(&self) -> DispatchRate {
        self.rate.rate()
    }

    /// Sets the dispatch rate limit (kept in the cursor of a reliable subscription).
    pub fn set_dispatch_rate(&mut self, rate: DispatchRate) {
        if rate != self.rate.rate() {
            self.rate = RateGate::new(rate);
            self.cursor_dirty = self.mode == Mode::Reliable;
        }
    }

    /// When the dispatch rate limit lets messages go again, if it held one back at the last
    /// delivery (and only then: a subscription with nothing to send has nothing to wait for).
    pub fn rate_limited_until(&self) -> Option<Instant> {
        self.rate.ready_at().filter(|_| self.rate_held)
    }

    /// Positions and counters.
    pub fn stats(&self) -> SubscriptionStats {
        let cursor = match self.mode {
            Mode::Reliable => self.mark_delete,
            Mode::NonReliable => self.pending.front().map_or(self.read_position, M::offset),
        };
        SubscriptionStats {
            cursor,
            lag: self.log_end.saturating_sub(cursor),
            unacked: (self.in_flight.len()
                + self.redeliver.len()
                + self.dead_lettering.len()
                + self.dead_letter_queue.len()) as u64,
            consumers: self.consumers.len() as u32,
            dropped: self.dropped,
            redelivered: self.redelivered,
            dead_lettered: self.dead_lettered,
            blocked: self
                .blocked
                .as_ref()
                .map(|b| (b.base_offset, b.last_offset)),
            skipped: self.skipped.len() as u64,
        }
    }

    fn membership_changed(&mut self, now: Instant) {
        match self.kind {
            SubscriptionType::Failover => {
                // Best priority first, then name; among the best, partitions are spread so
                // that several partitions do not all land on one consumer.
                let mut order: Vec<&Consumer> = self.consumers.iter().collect();
                order.sort_by(|a, b| (a.priority, &a.name, a.id).cmp(&(b.priority, &b.name, b.id)));
                let best = order.iter().take_while(|c| c.priority == order[0].priority);
                let best: Vec<ConsumerId> = best.map(|c| c.id).collect();
                let active = (!best.is_empty()).then(|| best[self.partition as usize % best.len()]);
                if let Some(previous) = self.active.filter(|&p| Some(p) != active) {
                    // The new active consumer starts where the old one left off; what the old
                    // one holds comes again, in order (not counted: nobody failed).
                    self.return_unacked_of(previous, now, false);
                }
                self.active = active;
            }
            SubscriptionType::KeyShared => {
                self.ring = Ring::build(self.consumers.iter().map(|c| (c.id, c.name.as_str())));
            }
            SubscriptionType::Exclusive | SubscriptionType::Shared => {}
        }
        if self.consumers.is_empty() && self.mode == Mode::NonReliable {
            // Nobody to deliver to: what was buffered is dropped, the next consumer starts
            // at the tail.
            self.dropped += self.pending.len() as u64;
            self.pending.clear();
            self.read_position = self.read_position.max(self.log_end);
        }
    }
}

mod acks;
mod delivery;
mod reading;

#[cfg(test)]
mod tests;
