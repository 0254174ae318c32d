//! What is owed after delivery: acknowledgements, negative acks, timeouts, redelivery,
//! dead letters, and the cursor that moves over what is done.

use super::*;

impl<M: Message> Subscription<M> {
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

    /// Whether `offset` is acknowledged: below the cursor, or in a range acknowledged above it.
    pub fn is_acknowledged(&self, offset: u64) -> bool {
        offset < self.mark_delete || self.acked.contains(offset)
    }

    /// Asks for messages to be delivered again, not before `now + delay`.
    pub fn nack(&mut self, now: Instant, offsets: &[u64], delay: Duration) {
        for &offset in offsets {
            if let Some(flight) = self.in_flight.remove(&offset) {
                self.schedule_redelivery(flight.message, flight.redeliveries + 1, now + delay);
            }
        }
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

    pub(super) fn schedule_redelivery(
        &mut self,
        message: M,
        redeliveries: u32,
        not_before: Instant,
    ) {
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
    pub(super) fn return_unacked_of(&mut self, id: ConsumerId, now: Instant, count_it: bool) {
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

    pub(super) fn advance_mark_delete(&mut self) {
        let before = self.mark_delete;
        while let Some(end) = self.acked.take_starting_at(self.mark_delete) {
            self.mark_delete = end;
        }
        if self.mark_delete != before && self.mode == Mode::Reliable {
            self.cursor_dirty = true;
        }
    }
}
