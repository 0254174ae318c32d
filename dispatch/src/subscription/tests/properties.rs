//! Properties that hold whatever consumers do, over generated operations.

use super::*;
use proptest::prelude::*;

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
