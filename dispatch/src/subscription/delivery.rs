//! Who gets which message: permits, the reliable window, and the choice of consumer per type.

use super::*;

impl<M: Message> Subscription<M> {
    /// Hands out what consumers have permits for, redeliveries first.
    pub fn poll_deliveries(&mut self, now: Instant) -> Vec<Delivery<M>> {
        let out = self.deliver(now);
        if self.mode == Mode::NonReliable {
            self.cursor_dirty = false;
            // One read can bring far more than the read-ahead (reads are bounded in bytes):
            // what nobody could take now is kept only up to it, newest first.
            let excess = self
                .pending
                .len()
                .saturating_sub(self.limits.read_ahead_messages_max as usize);
            self.pending.drain(..excess);
            self.dropped += excess as u64;
        }
        out
    }

    fn deliver(&mut self, now: Instant) -> Vec<Delivery<M>> {
        let mut out = Vec::new();
        self.rate_held = false;
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
                if !self.window_open() || self.total_permits() == 0 || !self.rate_admits(now) {
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
            if !self.window_open() || self.total_permits() == 0 || !self.rate_admits(now) {
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
        out
    }

    /// Whether the dispatch rate limit lets a message go now; remembers when it did not.
    fn rate_admits(&mut self, now: Instant) -> bool {
        let admits = self.rate.admits(now);
        self.rate_held |= !admits;
        admits
    }

    pub(super) fn total_permits(&self) -> u64 {
        match self.kind {
            SubscriptionType::Exclusive | SubscriptionType::Failover => self
                .active_consumer()
                .and_then(|id| self.consumers.iter().find(|c| c.id == id))
                .map_or(0, |c| c.permits),
            _ => self.consumers.iter().map(|c| c.permits).sum(),
        }
    }

    pub(super) fn window_open(&self) -> bool {
        self.mode == Mode::NonReliable
            || ((self.in_flight.len() + self.dead_lettering.len()) as u64)
                < self.limits.unacked_messages_max as u64
    }

    pub(super) fn active_consumer(&self) -> Option<ConsumerId> {
        match self.kind {
            SubscriptionType::Exclusive => self.consumers.first().map(|c| c.id),
            SubscriptionType::Failover => self.active,
            _ => None,
        }
    }

    /// The consumer for a message, if it has a permit.
    pub(super) fn pick(&mut self, key: Option<&[u8]>) -> Option<ConsumerId> {
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

    pub(super) fn hand_out(
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
        self.rate.charge(message.size_bytes());
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
}
