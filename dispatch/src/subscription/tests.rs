use super::*;
use proptest::prelude::*;

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

/// Feeds `[0, to)` where `bad` (a batch's first and last offset) cannot be decoded, the way
/// the shell does: what precedes the batch is read, then the batch is reported.
fn feed_with_undecodable(sub: &mut Subscription<Msg>, to: u64, bad: (u64, u64)) {
    sub.on_log_end(to);
    while let Some(from) = sub.next_read() {
        if (bad.0..=bad.1).contains(&from) || from < bad.0 && from + 100 > bad.0 {
            sub.on_read(messages(from..bad.0.max(from), 0), bad.0.max(from));
            sub.on_undecodable(Undecodable {
                base_offset: bad.0,
                last_offset: bad.1,
                reason: "zstd data is corrupt".into(),
            });
        } else {
            let end = (from + 100).min(to);
            sub.on_read(messages(from..end, 0), end);
        }
    }
}

#[test]
fn an_undecodable_batch_stops_a_reliable_subscription_until_it_is_skipped() {
    let now = Instant::now();
    for kind in [
        SubscriptionType::Exclusive,
        SubscriptionType::Shared,
        SubscriptionType::Failover,
        SubscriptionType::KeyShared,
    ] {
        let mut sub = subscription(kind, Mode::Reliable);
        sub.attach(now, 1, "a", 0, kind, Mode::Reliable).unwrap();
        sub.add_permits(1, 1_000);
        feed_with_undecodable(&mut sub, 300, (150, 159));
        let got = sub.poll_deliveries(now);
        assert_eq!(
            offsets_of(&got, 1),
            (0..150).collect::<Vec<_>>(),
            "{kind:?}"
        );
        let offsets: Vec<u64> = got.iter().map(|d| d.message.offset).collect();
        sub.ack(&offsets);
        // Everything before the batch is acknowledged, yet the cursor stays in front of it and
        // nothing after it is read, however long the log grows.
        feed_with_undecodable(&mut sub, 400, (150, 159));
        assert!(sub.poll_deliveries(now).is_empty());
        assert_eq!(sub.stats().cursor, 150);
        assert_eq!(sub.stats().blocked, Some((150, 159)));
        assert_eq!(sub.blocked().unwrap().reason, "zstd data is corrupt");
        // Only the batch it is stopped at can be skipped.
        assert_eq!(
            sub.skip(160),
            Err(SkipError {
                offset: 160,
                blocked: Some((150, 159))
            })
        );
        assert_eq!(sub.skip(155), Ok((150, 159)));
        assert_eq!(sub.stats().cursor, 160);
        let cursor = sub.take_cursor_if_dirty().unwrap();
        assert_eq!(
            (cursor.mark_delete, &cursor.skipped[..]),
            (160, &[(150, 159)][..])
        );
        feed(&mut sub, 400, 0);
        let after = offsets_of(&sub.poll_deliveries(now), 1);
        assert_eq!(after, (160..400).collect::<Vec<_>>(), "{kind:?}");
        assert_eq!(sub.skip(155).unwrap_err().blocked, None);
    }
}

#[test]
fn skips_survive_a_restart_and_a_non_reliable_subscription_counts_the_batch_as_dropped() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Shared, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::Reliable)
        .unwrap();
    feed_with_undecodable(&mut sub, 10, (0, 4));
    sub.skip(0).unwrap();
    let restored: Subscription<Msg> = Subscription::restore(&sub.cursor(), limits(), 0, 10);
    assert_eq!(restored.cursor().skipped, [(0, 4)]);
    assert_eq!(restored.stats().skipped, 1);

    let mut sub = subscription(SubscriptionType::Shared, Mode::NonReliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Shared, Mode::NonReliable)
        .unwrap();
    sub.add_permits(1, 1_000);
    feed_with_undecodable(&mut sub, 100, (40, 49));
    let got = offsets_of(&sub.poll_deliveries(now), 1);
    let expected: Vec<u64> = (0..40).chain(50..100).collect();
    assert_eq!(got, expected);
    assert_eq!((sub.stats().dropped, sub.stats().blocked), (10, None));
}

#[test]
fn seek_and_retention_release_a_stopped_subscription() {
    let now = Instant::now();
    let mut sub = subscription(SubscriptionType::Exclusive, Mode::Reliable);
    sub.attach(now, 1, "a", 0, SubscriptionType::Exclusive, Mode::Reliable)
        .unwrap();
    feed_with_undecodable(&mut sub, 50, (20, 29));
    sub.on_log_start(30);
    assert_eq!(sub.stats().blocked, None);
    feed_with_undecodable(&mut sub, 100, (60, 69));
    assert!(sub.blocked().is_some());
    sub.seek(70);
    assert_eq!((sub.stats().blocked, sub.stats().cursor), (None, 70));
}

#[derive(Debug, Clone)]
enum Op {
    Attach(u8),
    Detach(u8),
    Permits(u8, u8),
    Produce(u8),
    AckSome(u8),
    NackSome(u8),
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Attach),
        (0u8..4).prop_map(Op::Detach),
        (0u8..4, 1u8..50).prop_map(|(c, n)| Op::Permits(c, n)),
        (1u8..40).prop_map(Op::Produce),
        any::<u8>().prop_map(Op::AckSome),
        any::<u8>().prop_map(Op::NackSome),
        (1u8..60).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever consumers do, once one of them drains the subscription and acknowledges
    /// everything, every message was delivered at least once and the cursor reaches the end.
    #[test]
    fn reliable_delivers_every_message_at_least_once(
        kind in prop_oneof![
            Just(SubscriptionType::Shared),
            Just(SubscriptionType::Failover),
            Just(SubscriptionType::KeyShared),
        ],
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut now = Instant::now();
        let mut limits = limits();
        limits.unacked_messages_max = 20;
        limits.redeliveries_max = 1_000;
        limits.ack_timeout = Duration::from_secs(10);
        let mut sub: Subscription<Msg> =
            Subscription::new(kind, Mode::Reliable, limits, 0, 0, 0);
        let mut attached = std::collections::BTreeSet::new();
        let mut held: Vec<u64> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut end = 0u64;
        let mut pump = |sub: &mut Subscription<Msg>, now, end, held: &mut Vec<u64>| {
            feed(sub, end, 7);
            for d in sub.poll_deliveries(now) {
                seen.insert(d.message.offset);
                held.push(d.message.offset);
            }
        };
        for op in ops {
            match op {
                Op::Attach(c) if attached.insert(c) => {
                    sub.attach(now, c as u64, &format!("c{c}"), 0, kind, Mode::Reliable).unwrap();
                }
                Op::Detach(c) if attached.remove(&c) => sub.detach(now, c as u64),
                Op::Permits(c, n) => sub.add_permits(c as u64, n as u32),
                Op::Produce(n) => end += n as u64,
                Op::AckSome(pick) if !held.is_empty() => {
                    let offset = held.swap_remove(pick as usize % held.len());
                    sub.ack(&[offset]);
                }
                Op::NackSome(pick) if !held.is_empty() => {
                    let offset = held.swap_remove(pick as usize % held.len());
                    sub.nack(now, &[offset], Duration::from_secs(1));
                }
                Op::Advance(secs) => {
                    now += Duration::from_secs(secs as u64);
                    sub.tick(now);
                }
                _ => {}
            }
            pump(&mut sub, now, end, &mut held);
        }
        // Drain: one consumer with plenty of permits acknowledges everything it gets.
        for c in std::mem::take(&mut attached) {
            sub.detach(now, c as u64);
        }
        sub.attach(now, 99, "drain", 0, kind, Mode::Reliable).unwrap();
        for _ in 0..10_000 {
            if sub.stats().cursor == end {
                break;
            }
            sub.add_permits(99, 50);
            feed(&mut sub, end, 7);
            now += Duration::from_secs(2);
            sub.tick(now);
            for d in sub.poll_deliveries(now) {
                seen.insert(d.message.offset);
                sub.ack(&[d.message.offset]);
            }
        }
        prop_assert_eq!(sub.stats().cursor, end);
        prop_assert_eq!(seen.len() as u64, end);
    }
}
