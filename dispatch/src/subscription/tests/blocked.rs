//! A batch that cannot be decoded: it stops a reliable subscription until skipped.

use super::*;

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
