//! One subscription on one partition: who gets which message, and what is still owed.
//!
//! Call order, from the shell on the partition's owner shard:
//! 1. `attach`/`detach`/`add_permits`/`ack`/`nack`/`seek` as consumers ask;
//!    `on_log_end` when the log grows;
//! 2. `next_read` → read the log from that offset → `on_read` (or `on_read_failed`);
//! 3. `poll_deliveries(now)` → send each delivery to its consumer;
//!    `poll_dead_letters()` → produce each to the dead-letter topic, then `ack` it;
//! 4. `tick(now)` when the returned deadline passes (ack timeouts, delayed redeliveries);
//! 5. `take_cursor_if_dirty()` → write the cursor file (debounced by the shell).
//!
//! Reliable mode keeps every delivered message until it is acknowledged: a window of at most
//! `unacked_messages_max`, acknowledged offsets above the cursor as ranges, redelivery on nack,
//! on ack timeout and when a consumer detaches, and dead-lettering after `redeliveries_max`.
//! Non-reliable mode forgets a message once it is handed out, never falls further than the
//! read-ahead behind the log end, and counts what it drops.

use crate::cursor::CursorState;
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
    dropped: u64,
    redelivered: u64,
    dead_lettered: u64,
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
            dropped: 0,
            redelivered: 0,
            dead_lettered: 0,
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

    /// Records that the log now ends at `log_end`.
    pub fn on_log_end(&mut self, log_end: u64) {
        self.log_end = self.log_end.max(log_end);
    }

    /// Records that the log now starts at `log_start` (retention removed older segments):
    /// messages below it can no longer be delivered.
    pub fn on_log_start(&mut self, log_start: u64) {
        if self.mark_delete < log_start {
            self.mark_delete = log_start;
            self.acked.remove_below(log_start);
            self.pending.retain(|m| m.offset() >= log_start);
            self.redeliver = self.redeliver.split_off(&log_start);
            self.in_flight = self.in_flight.split_off(&log_start);
            self.cursor_dirty = self.mode == Mode::Reliable;
        }
        self.read_position = self.read_position.max(log_start);
        self.log_end = self.log_end.max(log_start);
    }

    /// Where to read the log next, if a read is due. The shell answers with `on_read` or
    /// `on_read_failed` before the next call returns anything.
    pub fn next_read(&mut self) -> Option<u64> {
        if self.read_in_progress || self.consumers.is_empty() {
            return None;
        }
        let read_ahead = self.limits.read_ahead_messages_max as u64;
        if self.mode == Mode::NonReliable {
            // At most once from the tail: never further behind than the read-ahead, and what
            // nobody takes in time makes room for what is new.
            if self.log_end.saturating_sub(self.read_position) > read_ahead {
                let skip_to = self.log_end - read_ahead;
                self.dropped += skip_to - self.read_position;
                self.read_position = skip_to;
            }
            if self.pending.len() as u64 >= read_ahead && self.read_position < self.log_end {
                self.dropped += self.pending.len() as u64;
                self.pending.clear();
            }
        }
        if self.read_position >= self.log_end || self.pending.len() as u64 >= read_ahead {
            return None;
        }
        self.read_in_progress = true;
        Some(self.read_position)
    }

    /// Takes the messages of a read that covered offsets up to `read_end` (exclusive).
    /// Offsets in that span without a message (unreadable or compressed batches the shell
    /// skipped) count as passed.
    pub fn on_read(&mut self, messages: Vec<M>, read_end: u64) {
        assert!(self.read_in_progress, "on_read without next_read");
        self.read_in_progress = false;
        let from = self.read_position;
        let mut expected = from;
        for message in messages {
            let offset = message.offset();
            if offset < from || offset >= read_end {
                continue;
            }
            if offset > expected && self.mode == Mode::Reliable {
                self.acked.insert(expected, offset);
            }
            expected = offset + 1;
            if offset < self.mark_delete || self.acked.contains(offset) {
                continue;
            }
            self.pending.push_back(message);
        }
        if read_end > expected && self.mode == Mode::Reliable {
            self.acked.insert(expected, read_end);
        }
        self.read_position = self.read_position.max(read_end);
        self.log_end = self.log_end.max(read_end);
        self.advance_mark_delete();
    }

    /// A read failed; the next `next_read` tries again.
    pub fn on_read_failed(&mut self) {
        self.read_in_progress = false;
    }

    /// Hands out what consumers have permits for, redeliveries first.
    pub fn poll_deliveries(&mut self, now: Instant) -> Vec<Delivery<M>> {
        let mut out = Vec::new();
        if self.total_permits() == 0 {
            return out;
        }
        if self.mode == Mode::Reliable {
            let ready: Vec<u64> = self
                .redeliver
                .iter()
                .filter(|(_, r)| r.not_before <= now)
                .map(|(&offset, _)| offset)
                .collect();
            for offset in ready {
                if !self.window_open() || self.total_permits() == 0 {
                    break;
                }
                let key = self.redeliver[&offset].message.key().map(<[u8]>::to_vec);
                let Some(target) = self.pick(key.as_deref()) else {
                    if self.kind == SubscriptionType::KeyShared {
                        continue;
                    }
                    break;
                };
                let r = self.redeliver.remove(&offset).expect("listed just now");
                self.redelivered += 1;
                out.push(self.hand_out(now, target, r.message, r.redeliveries));
            }
        }
        let mut kept = VecDeque::new();
        while let Some(message) = self.pending.pop_front() {
            if !self.window_open() || self.total_permits() == 0 {
                kept.push_back(message);
                break;
            }
            match self.pick(message.key()) {
                Some(target) => out.push(self.hand_out(now, target, message, 0)),
                None if self.kind == SubscriptionType::KeyShared => kept.push_back(message),
                None => {
                    kept.push_back(message);
                    break;
                }
            }
        }
        kept.append(&mut self.pending);
        self.pending = kept;
        if self.mode == Mode::NonReliable {
            self.cursor_dirty = false;
        }
        out
    }

    /// Messages past `redeliveries_max`, with their delivery count: the shell produces each
    /// to the dead-letter topic and then acknowledges it here.
    pub fn poll_dead_letters(&mut self) -> Vec<(M, u32)> {
        std::mem::take(&mut self.dead_letter_queue)
    }

    /// Acknowledges messages. Offsets that are not delivered-and-unacknowledged are ignored
    /// (a late ack after a seek, or a duplicate).
    pub fn ack(&mut self, offsets: &[u64]) {
        if self.mode != Mode::Reliable {
            return;
        }
        for &offset in offsets {
            let tracked = self.in_flight.remove(&offset).is_some()
                | self.redeliver.remove(&offset).is_some()
                | self.dead_lettering.remove(&offset).is_some();
            if tracked {
                self.acked.insert(offset, offset + 1);
                // Ranges above the cursor are part of it: a restart must not redeliver them.
                self.cursor_dirty = true;
            }
        }
        self.advance_mark_delete();
    }

    /// Acknowledges everything delivered up to and including `offset`. Only for exclusive and
    /// failover subscriptions, whose deliveries are in offset order.
    pub fn ack_cumulative(&mut self, offset: u64) -> Result<(), &'static str> {
        if !matches!(
            self.kind,
            SubscriptionType::Exclusive | SubscriptionType::Failover
        ) {
            return Err("cumulative acknowledgement needs an exclusive or failover subscription");
        }
        if self.mode != Mode::Reliable {
            return Ok(());
        }
        // Never past what was delivered: the first message still waiting bounds it.
        let limit = (offset.saturating_add(1))
            .min(self.pending.front().map_or(u64::MAX, M::offset))
            .min(self.read_position);
        if limit <= self.mark_delete {
            return Ok(());
        }
        self.in_flight = self.in_flight.split_off(&limit);
        self.redeliver = self.redeliver.split_off(&limit);
        self.dead_lettering = self.dead_lettering.split_off(&limit);
        self.acked.insert(self.mark_delete, limit);
        self.advance_mark_delete();
        Ok(())
    }

    /// Asks for messages to be delivered again, not before `now + delay`.
    pub fn nack(&mut self, now: Instant, offsets: &[u64], delay: Duration) {
        for &offset in offsets {
            if let Some(flight) = self.in_flight.remove(&offset) {
                self.schedule_redelivery(flight.message, flight.redeliveries + 1, now + delay);
            }
        }
    }

    /// Moves the cursor to `offset` (clamped by the shell to the log); everything owed is
    /// forgotten and reading starts again there.
    pub fn seek(&mut self, offset: u64) {
        self.mark_delete = offset;
        self.read_position = offset;
        self.acked.clear();
        self.pending.clear();
        self.redeliver.clear();
        self.in_flight.clear();
        self.dead_letter_queue.clear();
        self.dead_lettering.clear();
        // A read under way would bring messages from before the seek.
        self.read_in_progress = false;
        self.cursor_dirty = self.mode == Mode::Reliable;
    }

    /// Redelivers messages whose ack timeout passed and returns when to call again.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        if self.mode == Mode::Reliable {
            let expired: Vec<u64> = self
                .in_flight
                .iter()
                .filter(|(_, f)| f.deadline <= now)
                .map(|(&offset, _)| offset)
                .collect();
            for offset in expired {
                let flight = self.in_flight.remove(&offset).expect("listed just now");
                self.schedule_redelivery(flight.message, flight.redeliveries + 1, now);
            }
        }
        let next_timeout = self.in_flight.values().map(|f| f.deadline).min();
        let next_redelivery = self
            .redeliver
            .values()
            .map(|r| r.not_before)
            .filter(|&t| t > now)
            .min();
        match (next_timeout, next_redelivery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
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
        }
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
        }
    }

    fn total_permits(&self) -> u64 {
        match self.kind {
            SubscriptionType::Exclusive | SubscriptionType::Failover => self
                .active_consumer()
                .and_then(|id| self.consumers.iter().find(|c| c.id == id))
                .map_or(0, |c| c.permits),
            _ => self.consumers.iter().map(|c| c.permits).sum(),
        }
    }

    fn window_open(&self) -> bool {
        self.mode == Mode::NonReliable
            || ((self.in_flight.len() + self.dead_lettering.len()) as u64)
                < self.limits.unacked_messages_max as u64
    }

    fn active_consumer(&self) -> Option<ConsumerId> {
        match self.kind {
            SubscriptionType::Exclusive => self.consumers.first().map(|c| c.id),
            SubscriptionType::Failover => self.active,
            _ => None,
        }
    }

    /// The consumer for a message, if it has a permit.
    fn pick(&mut self, key: Option<&[u8]>) -> Option<ConsumerId> {
        let with_permit = |subscription: &Self, id: ConsumerId| {
            subscription
                .consumers
                .iter()
                .any(|c| c.id == id && c.permits > 0)
                .then_some(id)
        };
        match (self.kind, key) {
            (SubscriptionType::Exclusive | SubscriptionType::Failover, _) => {
                let id = self.active_consumer()?;
                with_permit(self, id)
            }
            (SubscriptionType::KeyShared, Some(key)) => {
                let id = self.ring.owner(key)?;
                with_permit(self, id)
            }
            // Shared, and Key_Shared messages without a key: round-robin over permits.
            _ => {
                let count = self.consumers.len();
                for step in 0..count {
                    let at = (self.next_in_turn + step) % count;
                    if self.consumers[at].permits > 0 {
                        self.next_in_turn = (at + 1) % count;
                        return Some(self.consumers[at].id);
                    }
                }
                None
            }
        }
    }

    fn hand_out(
        &mut self,
        now: Instant,
        consumer: ConsumerId,
        message: M,
        redeliveries: u32,
    ) -> Delivery<M> {
        let slot = self
            .consumers
            .iter_mut()
            .find(|c| c.id == consumer)
            .expect("picked consumers are attached");
        assert!(
            slot.permits > 0,
            "consumer {consumer} picked without permits"
        );
        slot.permits -= 1;
        if self.mode == Mode::Reliable {
            let previous = self.in_flight.insert(
                message.offset(),
                InFlight {
                    consumer,
                    message: message.clone(),
                    redeliveries,
                    deadline: now + self.limits.ack_timeout,
                },
            );
            assert!(
                previous.is_none(),
                "offset {} delivered twice at once",
                message.offset()
            );
        }
        Delivery {
            consumer,
            message,
            redeliveries,
        }
    }

    fn schedule_redelivery(&mut self, message: M, redeliveries: u32, not_before: Instant) {
        if redeliveries > self.limits.redeliveries_max {
            self.dead_lettering.insert(message.offset(), ());
            self.dead_lettered += 1;
            self.dead_letter_queue.push((message, redeliveries));
            return;
        }
        self.redeliver.insert(
            message.offset(),
            Redelivery {
                message,
                redeliveries,
                not_before,
            },
        );
    }

    /// Moves what `id` holds back to the redelivery queue.
    fn return_unacked_of(&mut self, id: ConsumerId, now: Instant, count_it: bool) {
        let held: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == id)
            .map(|(&offset, _)| offset)
            .collect();
        for offset in held {
            let flight = self.in_flight.remove(&offset).expect("listed just now");
            let redeliveries = flight.redeliveries + u32::from(count_it);
            self.schedule_redelivery(flight.message, redeliveries, now);
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

    fn advance_mark_delete(&mut self) {
        let before = self.mark_delete;
        while let Some(end) = self.acked.take_starting_at(self.mark_delete) {
            self.mark_delete = end;
        }
        if self.mark_delete != before && self.mode == Mode::Reliable {
            self.cursor_dirty = true;
        }
    }
}

#[cfg(test)]
mod tests;
