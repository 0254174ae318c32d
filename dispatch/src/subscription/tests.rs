use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    offset: u64,
    key: Option<Vec<u8>>,
}

impl Message for Msg {
    fn offset(&self) -> u64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn size_bytes(&self) -> usize {
        100
    }
}

fn limits() -> DispatchLimits {
    DispatchLimits {
        unacked_messages_max: 1_000,
        ack_timeout: Duration::from_secs(30),
        redeliveries_max: 3,
        read_ahead_messages_max: 256,
        consumers_max: 16,
    }
}

fn messages(range: std::ops::Range<u64>, keys: u64) -> Vec<Msg> {
    range
        .map(|offset| Msg {
            offset,
            key: (keys > 0).then(|| format!("k{}", offset % keys).into_bytes()),
        })
        .collect()
}

/// Feeds the log `[from, to)` through reads as the subscription asks.
fn feed(sub: &mut Subscription<Msg>, to: u64, keys: u64) {
    sub.on_log_end(to);
    while let Some(from) = sub.next_read() {
        let end = (from + 100).min(to);
        sub.on_read(messages(from..end, keys), end);
    }
}

fn offsets_of(deliveries: &[Delivery<Msg>], consumer: ConsumerId) -> Vec<u64> {
    deliveries
        .iter()
        .filter(|d| d.consumer == consumer)
        .map(|d| d.message.offset)
        .collect()
}

fn subscription(kind: SubscriptionType, mode: Mode) -> Subscription<Msg> {
    Subscription::new(kind, mode, limits(), 0, 0, 0)
}

#[test]
fn exclusive_refuses_a_second_consumer_and_delivers_in_order() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Exclusive, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Exclusive, Mode::Reliable)
        .unwrap();
    assert_eq!(
        sub.attach(now, 2, "b", 0, SubscriptionType::Exclusive, Mode::Reliable),
        Err(AttachError::ExclusiveBusy)
    );
    assert!(matches!(
        sub.attach(now, 2, "b", 0, SubscriptionType::Shared, Mode::Reliable),
        Err(AttachError::Mismatch { .. })
    ));
    sub.add_permits(1, 10);
    feed(&mut sub, 25, 0);
    let first = sub.poll_deliveries(now);
    assert_eq!(offsets_of(&first, 1), (0..10).collect::<Vec<_>>());
    // Permits are spent: nothing more until the consumer grants again.
    assert!(sub.poll_deliveries(now).is_empty());
    sub.add_permits(1, 100);
    assert_eq!(
        offsets_of(&sub.poll_deliveries(now), 1),
        (10..25).collect::<Vec<_>>()
    );
}

#[test]
fn shared_spreads_evenly_over_consumers_with_permits() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    for id in 1..=4 {
        sub.attach(
            now,
            id,
            &format!("c{id}"),
            0,
            SubscriptionType::Shared,
            Mode::Reliable,
        )
        .unwrap();
        sub.add_permits(id, 1_000);
    }
    feed(&mut sub, 200, 0);
    let mut all = Vec::new();
    loop {
        let batch = sub.poll_deliveries(now);
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
        feed(&mut sub, 200, 0);
    }
    for id in 1..=4 {
        assert_eq!(offsets_of(&all, id).len(), 50);
    }
    // A consumer without permits is skipped, not waited for.
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.attach(now, 2, "b", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(2, 100);
    feed(&mut sub, 30, 0);
    assert_eq!(offsets_of(&sub.poll_deliveries(now), 2).len(), 30);
}

#[test]
fn key_shared_keeps_each_key_on_one_consumer() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::KeyShared, Mode::Reliable);
    for id in 1..=3 {
        sub.attach(
            now,
            id,
            &format!("c{id}"),
            0,
            SubscriptionType::KeyShared,
            Mode::Reliable,
        )
        .unwrap();
        sub.add_permits(id, 10_000);
    }
    let mut owner = std::collections::HashMap::new();
    let mut count = 0;
    for round in 0..5 {
        feed(&mut sub, (round + 1) * 200, 20);
        for d in sub.poll_deliveries(now) {
            count += 1;
            let key = d.message.key.clone().unwrap();
            assert_eq!(*owner.entry(key).or_insert(d.consumer), d.consumer);
            sub.ack(&[d.message.offset]);
        }
    }
    assert_eq!(count, 1_000);
    assert!(
        owner
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1
    );
    // A key whose consumer has no permits waits; other keys keep flowing.
    let stalled_key = owner.iter().find(|(_, &c)| c == 1).unwrap().0.clone();
    sub.add_permits(1, 0);
    let mut sub2 = subscription(SubscriptionType::KeyShared, Mode::Reliable);
    for id in 1..=3 {
        sub2.attach(
            now,
            id,
            &format!("c{id}"),
            0,
            SubscriptionType::KeyShared,
            Mode::Reliable,
        )
        .unwrap();
        if id != 1 {
            sub2.add_permits(id, 10_000);
        }
    }
    feed(&mut sub2, 200, 20);
    let delivered = sub2.poll_deliveries(now);
    assert!(!delivered.is_empty());
    assert!(delivered
        .iter()
        .all(|d| d.message.key.as_ref() != Some(&stalled_key) && d.consumer != 1));
}

#[test]
fn failover_delivers_to_one_and_hands_over_in_order_on_detach() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Failover, Mode::Reliable);
    sub.attach(now, 1, "b", 5, SubscriptionType::Failover, Mode::Reliable)
        .unwrap();
    sub.attach(now, 2, "a", 1, SubscriptionType::Failover, Mode::Reliable)
        .unwrap();
    sub.attach(now, 3, "c", 9, SubscriptionType::Failover, Mode::Reliable)
        .unwrap();
    for id in 1..=3 {
        sub.add_permits(id, 100);
    }
    feed(&mut sub, 10, 0);
    let first = sub.poll_deliveries(now);
    // Priority 1 wins.
    assert_eq!(offsets_of(&first, 2), (0..10).collect::<Vec<_>>());
    sub.ack(&[0, 1, 2]);
    sub.detach(now, 2);
    // The next by priority takes over from the first unacknowledged message, in order.
    let second = sub.poll_deliveries(now);
    assert_eq!(offsets_of(&second, 1), (3..10).collect::<Vec<_>>());
    assert!(second.iter().all(|d| d.redeliveries == 1));
}

#[test]
fn failover_spreads_partitions_over_equal_priorities() {
    let now = Instant::now();
    let mut actives = std::collections::HashSet::new();
    for partition in 0..4 {
        let mut sub: Subscription<Msg> = Subscription::new(
            SubscriptionType::Failover,
            Mode::Reliable,
            limits(),
            partition,
            0,
            0,
        );
        sub.attach(now, 1, "x", 0, SubscriptionType::Failover, Mode::Reliable)
            .unwrap();
        sub.attach(now, 2, "y", 0, SubscriptionType::Failover, Mode::Reliable)
            .unwrap();
        sub.add_permits(1, 1);
        sub.add_permits(2, 1);
        feed(&mut sub, 1, 0);
        actives.insert(sub.poll_deliveries(now)[0].consumer);
    }
    assert_eq!(actives.len(), 2);
}

#[test]
fn acks_out_of_order_move_the_cursor_only_over_a_contiguous_prefix() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 100);
    feed(&mut sub, 10, 0);
    sub.poll_deliveries(now);
    sub.take_cursor_if_dirty();
    sub.ack(&[1, 2, 5, 7]);
    assert_eq!(sub.stats().cursor, 0);
    // Out-of-order acks change the stored cursor (its ranges) though the mark stays.
    let ranges = sub.take_cursor_if_dirty().unwrap();
    assert_eq!(
        (ranges.mark_delete, ranges.acked),
        (0, vec![(1, 3), (5, 6), (7, 8)])
    );
    sub.ack(&[7]);
    assert_eq!(
        sub.take_cursor_if_dirty(),
        None,
        "a duplicate ack changes nothing"
    );
    sub.ack(&[0]);
    let cursor = sub.take_cursor_if_dirty().unwrap();
    assert_eq!(
        (cursor.mark_delete, cursor.acked.clone()),
        (3, vec![(5, 6), (7, 8)])
    );
    // Restored from that cursor, only the unacknowledged messages come again.
    let mut again: Subscription<Msg> = Subscription::restore(&cursor, limits(), 0, 10);
    again
        .attach(now, 9, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    again.add_permits(9, 100);
    feed(&mut again, 10, 0);
    assert_eq!(
        offsets_of(&again.poll_deliveries(now), 9),
        vec![3, 4, 6, 8, 9]
    );
}

#[test]
fn the_window_bounds_unacknowledged_messages() {
    let now = Instant::now();
    let mut sub: Subscription<Msg> = Subscription::new(
        SubscriptionType::Shared,
        Mode::Reliable,
        DispatchLimits {
            unacked_messages_max: 5,
            ..limits()
        },
        0,
        0,
        0,
    );
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 100);
    feed(&mut sub, 50, 0);
    assert_eq!(sub.poll_deliveries(now).len(), 5);
    assert!(sub.poll_deliveries(now).is_empty());
    sub.ack(&[3]);
    assert_eq!(offsets_of(&sub.poll_deliveries(now), 1), vec![5]);
}

#[test]
fn nack_redelivers_after_the_delay_and_dead_letters_past_the_limit() {
    let start = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(start, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 100);
    feed(&mut sub, 1, 0);
    assert_eq!(sub.poll_deliveries(start).len(), 1);
    let mut now = start;
    for attempt in 1..=3 {
        sub.nack(now, &[0], Duration::from_secs(1));
        assert!(sub.poll_deliveries(now).is_empty(), "too early");
        let wake = sub.tick(now).unwrap();
        assert_eq!(wake, now + Duration::from_secs(1));
        now = wake;
        let again = sub.poll_deliveries(now);
        assert_eq!((again.len(), again[0].redeliveries), (1, attempt));
    }
    sub.nack(now, &[0], Duration::ZERO);
    assert!(sub.poll_deliveries(now).is_empty());
    let dead = sub.poll_dead_letters();
    assert_eq!((dead.len(), dead[0].0.offset, dead[0].1), (1, 0, 4));
    assert_eq!(sub.stats().unacked, 1);
    sub.ack(&[0]);
    assert_eq!((sub.stats().cursor, sub.stats().unacked), (1, 0));
}

#[test]
fn ack_timeout_and_detach_redeliver_to_the_others() {
    let start = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(start, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 2);
    feed(&mut sub, 4, 0);
    assert_eq!(sub.poll_deliveries(start).len(), 2);
    sub.attach(start, 2, "b", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(2, 10);
    assert_eq!(offsets_of(&sub.poll_deliveries(start), 2), vec![2, 3]);
    // Consumer 1 leaves: its two come back to consumer 2, counted as redelivered.
    sub.detach(start, 1);
    let back = sub.poll_deliveries(start);
    assert_eq!(offsets_of(&back, 2), vec![0, 1]);
    assert!(back.iter().all(|d| d.redeliveries == 1));
    // Consumer 2 never acks: after the timeout all four come again.
    let later = start + limits().ack_timeout;
    assert!(sub
        .poll_deliveries(later - Duration::from_millis(1))
        .is_empty());
    sub.tick(later);
    let again = sub.poll_deliveries(later);
    assert_eq!(offsets_of(&again, 2), vec![0, 1, 2, 3]);
    assert_eq!(
        again.iter().map(|d| d.redeliveries).collect::<Vec<_>>(),
        vec![2, 2, 1, 1]
    );
}

#[test]
fn cumulative_ack_is_for_ordered_subscriptions_only() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Exclusive, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Exclusive, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 5);
    feed(&mut sub, 20, 0);
    sub.poll_deliveries(now);
    // Acknowledging past what was delivered stops at the delivered end.
    sub.ack_cumulative(100).unwrap();
    assert_eq!(sub.stats().cursor, 5);
    let mut shared = subscription(SubscriptionType::Shared, Mode::Reliable);
    assert!(shared.ack_cumulative(1).is_err());
}

#[test]
fn non_reliable_drops_what_nobody_takes_and_stays_near_the_tail() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::NonReliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::NonReliable)
        .unwrap();
    // Nobody grants permits while 10,000 messages arrive.
    feed(&mut sub, 10_000, 0);
    let stats = sub.stats();
    assert!(stats.dropped >= 10_000 - 2 * 256, "{stats:?}");
    assert!(stats.lag <= 256, "{stats:?}");
    sub.add_permits(1, 1_000);
    let got = sub.poll_deliveries(now);
    assert!(!got.is_empty() && got.len() <= 256);
    assert!(got.iter().all(|d| d.message.offset >= 10_000 - 256));
    // Nothing is owed: acks and nacks are ignored, no cursor is written.
    sub.ack(&[got[0].message.offset]);
    assert_eq!(sub.take_cursor_if_dirty(), None);
}

#[test]
fn non_reliable_keeps_only_the_read_ahead_of_a_large_read() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Exclusive, Mode::NonReliable);
    sub.attach(
        now,
        1,
        "a",
        0,
        SubscriptionType::Exclusive,
        Mode::NonReliable,
    )
    .unwrap();
    // One read (bounded in bytes, not messages) brings 1,000 small messages at once: the log
    // grew while it was under way.
    sub.on_log_end(10);
    let from = sub.next_read().unwrap();
    sub.on_read(messages(from..1_000, 0), 1_000);
    assert!(sub.poll_deliveries(now).is_empty(), "no permits yet");
    let stats = sub.stats();
    assert_eq!((stats.dropped, stats.lag), (1_000 - 256, 256), "{stats:?}");
    sub.add_permits(1, 1_000);
    let got = offsets_of(&sub.poll_deliveries(now), 1);
    assert_eq!(got, (744..1_000).collect::<Vec<_>>());
}

#[test]
fn seek_forgets_what_was_owed() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 100);
    feed(&mut sub, 10, 0);
    sub.poll_deliveries(now);
    sub.seek(2);
    assert_eq!(sub.stats().unacked, 0);
    feed(&mut sub, 10, 0);
    assert_eq!(
        offsets_of(&sub.poll_deliveries(now), 1),
        (2..10).collect::<Vec<_>>()
    );
}

mod blocked;
mod properties;

#[test]
fn a_dispatch_rate_holds_deliveries_to_it_and_says_when_to_come_back() {
    let start = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(start, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    sub.add_permits(1, 100_000);
    sub.set_dispatch_rate(crate::DispatchRate {
        messages_per_second: 1_000,
        bytes_per_second: 0,
    });
    assert!(sub
        .take_cursor_if_dirty()
        .is_some_and(|c| c.dispatch_rate.messages_per_second == 1_000));
    let mut delivered = 0;
    let mut now = start;
    // Two seconds, the driver waking when the limit says.
    while now < start + Duration::from_secs(2) {
        feed(&mut sub, 10_000, 0);
        let out = sub.poll_deliveries(now);
        sub.ack(&out.iter().map(|d| d.message.offset).collect::<Vec<_>>());
        delivered += out.len();
        now = sub.rate_limited_until().expect("held back by the limit");
    }
    // 1,000 a second, plus the first full bucket (100).
    assert!((2_000..=2_101).contains(&delivered), "{delivered}");
    // Nothing left to send: nothing to wait for, whatever the bucket holds.
    let mut idle = subscription(SubscriptionType::Shared, Mode::Reliable);
    idle.set_dispatch_rate(crate::DispatchRate {
        messages_per_second: 1,
        bytes_per_second: 0,
    });
    idle.attach(start, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    idle.add_permits(1, 10);
    feed(&mut idle, 1, 0);
    assert_eq!(idle.poll_deliveries(start).len(), 1);
    assert_eq!(idle.poll_deliveries(start).len(), 0);
    assert_eq!(idle.rate_limited_until(), None, "idle, not held back");
    // Lifted: everything read ahead goes at once.
    sub.set_dispatch_rate(crate::DispatchRate::default());
    feed(&mut sub, 10_000, 0);
    assert!(sub.poll_deliveries(now).len() > 200);
    assert_eq!(sub.rate_limited_until(), None);
}
