//! The consumer library as an application uses it: messages typed through serde on every
//! tier, with a message that does not deserialize handed to the application (to nack or
//! acknowledge) instead of a panic or a silent skip; one subscription over several topics,
//! named or matched by a pattern that picks up topics created later.

mod common;

use common::{runtime, start_native_broker};
use oxbow_client::{Client, ClientError, Json, Receive, SubscriptionType, Tier, Utf8};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Bound on any one wait; the tests wait on messages, not on time.
const PATIENCE: Duration = Duration::from_secs(30);

/// A client of the broker at `addr`.
async fn connect(addr: &str) -> Client {
    Client::builder().broker(addr).connect().await.unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

#[test]
fn every_tier_delivers_typed_messages_and_hands_over_one_that_does_not_deserialize() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    runtime().block_on(async {
        let client = connect(&addr).await;
        client.create_topic("orders", 2).await.unwrap();
        let orders = client.producer("orders").build().await.unwrap();
        let orders = orders.typed(Utf8, Json::<Order>::new());
        let mut sent = BTreeMap::new();
        for id in 0..20 {
            let order = Order {
                id,
                item: format!("item {id}"),
            };
            let customer = format!("customer-{}", id % 3);
            let pending = orders.send(Some(customer.as_str()), &order).await.unwrap();
            pending.await.unwrap();
            sent.insert(id, (customer, order));
        }
        // A message from an application that does not write JSON.
        let raw = client.producer("orders").build().await.unwrap();
        raw.send(Some(b"customer-0"), b"{not json").await.unwrap();
        raw.flush().await.unwrap();

        let tiers = [
            ("stream", Tier::Stream),
            ("buffered", Tier::Buffered(4)),
            ("dedicated", Tier::Dedicated),
        ];
        for (name, tier) in tiers {
            let consumer = client
                .consumer("orders", name)
                .build_tier(tier)
                .await
                .unwrap();
            let mut consumer = consumer.typed(Utf8, Json::<Order>::new());
            let acker = consumer.acker();
            let mut received = BTreeMap::new();
            let mut undecodable = Vec::new();
            while received.len() < sent.len() || undecodable.len() < 2 {
                let next = tokio::time::timeout(PATIENCE, consumer.recv()).await;
                match next.unwrap_or_else(|_| panic!("{name}: not everything delivered")) {
                    Ok(message) => {
                        acker.ack(&message).unwrap();
                        let key = message.key.clone().expect("keyed");
                        received.insert(message.value.id, (key, message.value));
                    }
                    Err(ClientError::Undeserializable { reason, message }) => {
                        assert!(reason.starts_with("value: "), "{reason}");
                        assert_eq!(&message.value[..], b"{not json");
                        // Nacked the first time: it comes again, counted.
                        match message.redeliveries {
                            0 => acker.nack(&message, Duration::ZERO).unwrap(),
                            _ => acker.ack(&message).unwrap(),
                        }
                        undecodable.push(message.redeliveries);
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            assert_eq!(received, sent, "{name}");
            assert_eq!(undecodable, [0, 1], "{name}");
        }
    });
}

/// Sends `{topic}-{i}` for `i` in `range` to `topic`; returns the values.
async fn fill(client: &Client, topic: &str, range: std::ops::Range<u32>) -> BTreeSet<String> {
    let producer = client.producer(topic).build().await.unwrap();
    let mut values = BTreeSet::new();
    for i in range {
        let value = format!("{topic}-{i}");
        producer.send(None, value.as_bytes()).await.unwrap();
        values.insert(value);
    }
    producer.flush().await.unwrap();
    values
}

/// Receives (and acknowledges) until `expected` is all in; fails on anything else.
async fn receive_all(consumer: &mut oxbow_client::MultiTopicConsumer, expected: &BTreeSet<String>) {
    let mut got = BTreeSet::new();
    while !expected.is_subset(&got) {
        let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch())
            .await
            .unwrap_or_else(|_| panic!("missing {:?}", expected.difference(&got)))
            .unwrap();
        consumer.acker().ack_all(&batch).unwrap();
        for message in batch {
            let value = String::from_utf8(message.value.to_vec()).unwrap();
            assert!(
                value.starts_with(&*message.topic),
                "{value} from {}",
                message.topic
            );
            assert!(expected.contains(&value), "unexpected {value}");
            got.insert(value);
        }
    }
}

#[test]
fn one_subscription_reads_several_topics_and_a_pattern_picks_up_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    runtime().block_on(async {
        let client = connect(&addr).await;
        for (topic, partitions) in [("eu-orders", 1), ("us-orders", 2), ("audit", 1)] {
            client.create_topic(topic, partitions).await.unwrap();
        }
        let eu = fill(&client, "eu-orders", 0..5).await;
        let us = fill(&client, "us-orders", 0..5).await;
        fill(&client, "audit", 0..5).await;
        let orders: BTreeSet<String> = eu.union(&us).cloned().collect();

        let mut named = client
            .consumer_of_topics(&["eu-orders", "us-orders"], "billing")
            .build_multi()
            .await
            .unwrap();
        receive_all(&mut named, &orders).await;

        let mut matched = client
            .consumer_of_pattern(".*-orders", "fraud")
            .unwrap()
            .pattern_refresh(Duration::from_millis(100))
            .build_multi()
            .await
            .unwrap();
        let mut topics = matched.topics();
        topics.sort();
        assert_eq!(topics, ["eu-orders", "us-orders"], "audit does not match");
        receive_all(&mut matched, &orders).await;
        // A topic created later that matches is read too, while the consumer waits.
        client.create_topic("ap-orders", 1).await.unwrap();
        let ap = fill(&client, "ap-orders", 0..5).await;
        receive_all(&mut matched, &ap).await;
        assert!(matched.topics().contains(&"ap-orders".to_string()));
        // One subscription name on each topic.
        for topic in ["eu-orders", "us-orders", "ap-orders"] {
            let names: BTreeSet<String> = (client.list_subscriptions(topic).await.unwrap())
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert!(names.contains("fraud"), "{topic}: {names:?}");
        }
        assert!(client.consumer_of_pattern("(", "bad").is_err());
    });
}

/// The offsets `subscription` delivers first on `topic`'s partition 0 (up to `count`).
async fn first_offsets(
    client: &Client,
    topic: &str,
    subscription: &str,
    kind: SubscriptionType,
) -> Vec<u64> {
    let mut consumer = client
        .consumer(topic, subscription)
        .kind(kind)
        .build()
        .await
        .unwrap();
    let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(5))
        .await
        .expect("messages are delivered")
        .unwrap();
    batch.iter().map(|m| m.offset).collect()
}

#[test]
fn a_resolved_commit_survives_kill_9_and_plain_acks_may_not() {
    let dir = tempfile::tempdir().unwrap();
    // Acks are stored a minute later at best: only a commit makes them durable before that.
    let config = "[subscriptions]\ncursor_persist_interval_ms = 60000\n";
    let (mut broker, addr) = start_native_broker(dir.path(), config);
    runtime().block_on(async {
        let client = connect(&addr).await;
        client.create_topic("ledger", 1).await.unwrap();
        fill(&client, "ledger", 0..20).await;
        let subscriptions = [
            ("cumulative", SubscriptionType::Exclusive),
            ("individual", SubscriptionType::Shared),
            ("acked", SubscriptionType::Exclusive),
        ];
        for (name, kind) in subscriptions {
            let mut consumer = client
                .consumer("ledger", name)
                .kind(kind)
                .build()
                .await
                .unwrap();
            let mut first_ten = Vec::new();
            while first_ten.len() < 10 {
                let batch =
                    tokio::time::timeout(PATIENCE, consumer.recv_batch(10 - first_ten.len()))
                        .await
                        .expect("delivered")
                        .unwrap();
                first_ten.extend(batch);
            }
            match name {
                "cumulative" => consumer.commit_cumulative(&first_ten[9]).await.unwrap(),
                "individual" => consumer.acker().commit_all(&first_ten).await.unwrap(),
                _ => consumer.ack_all(&first_ten).unwrap(),
            }
            if name != "acked" {
                let expected: std::collections::HashMap<u32, u64> = [(0, 10)].into();
                assert_eq!(consumer.committed_positions(), expected);
            }
            // Held open: the consumers die with the broker.
            std::mem::forget(consumer);
        }
    });
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();

    let (_broker, addr) = start_native_broker(dir.path(), config);
    runtime().block_on(async {
        let client = connect(&addr).await;
        let kinds = [SubscriptionType::Exclusive, SubscriptionType::Shared];
        for (name, kind) in [("cumulative", kinds[0]), ("individual", kinds[1])] {
            let offsets = first_offsets(&client, "ledger", name, kind).await;
            assert_eq!(
                offsets.first(),
                Some(&10),
                "{name}: nothing committed comes again"
            );
        }
        // What was only acknowledged was not stored yet: it comes again (at least once).
        let offsets = first_offsets(&client, "ledger", "acked", kinds[0]).await;
        assert_eq!(offsets.first(), Some(&0));
    });
}

#[test]
fn a_commit_of_a_message_not_held_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    runtime().block_on(async {
        let client = connect(&addr).await;
        client.create_topic("ledger", 1).await.unwrap();
        fill(&client, "ledger", 0..3).await;
        let mut consumer = client.consumer("ledger", "s").build().await.unwrap();
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .unwrap()
            .unwrap();
        // Not delivered yet: offset 7 does not exist.
        let mut ahead = message.clone();
        ahead.offset = 7;
        let refused = consumer.commit(&ahead).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(oxbow_client::ErrorCode::CommitFailed),
            "{refused}"
        );
        consumer.commit(&message).await.unwrap();
        // Committing again what is committed is no error.
        consumer.commit(&message).await.unwrap();
    });
}

/// When each of `count` messages arrived at `consumer`, acknowledging them.
async fn arrivals(consumer: &mut oxbow_client::Consumer, count: usize) -> Vec<std::time::Instant> {
    let mut at = Vec::with_capacity(count);
    while at.len() < count {
        let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(count - at.len()))
            .await
            .expect("delivered")
            .unwrap();
        consumer.ack_all(&batch).unwrap();
        at.extend(batch.iter().map(|_| std::time::Instant::now()));
    }
    at
}

#[test]
fn a_limited_subscription_delivers_at_its_rate_while_another_is_not_slowed() {
    const LIMIT: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_native_broker(dir.path(), "");
    runtime().block_on(async {
        let client = connect(&addr).await;
        client.create_topic("paced", 1).await.unwrap();
        fill(&client, "paced", 0..6_000).await;
        let mut limited = client.consumer("paced", "limited").build().await.unwrap();
        client
            .set_dispatch_rate("paced", "limited", LIMIT, 0)
            .await
            .unwrap();
        let mut free = client.consumer("paced", "free").build().await.unwrap();
        let (limited_at, free_at) =
            tokio::join!(arrivals(&mut limited, 3_500), arrivals(&mut free, 6_000));
        // Past what was on its way before the limit (up to its receiver queue), two seconds'
        // worth of messages at the limit.
        let seconds = (limited_at[3_499] - limited_at[1_499]).as_secs_f64();
        let rate = 2_000.0 / seconds;
        assert!(
            (0.9..=1.1).contains(&(rate / LIMIT as f64)),
            "{rate:.0} msg/s against {LIMIT}"
        );
        // The other subscription on the same partition had everything before the limited one
        // had half of it.
        assert!(
            free_at[5_999] < limited_at[3_499],
            "the free subscription was slowed"
        );
        let listed = client.list_subscriptions("paced").await.unwrap();
        let limit_of = |name: &str| {
            let s = listed.iter().find(|s| s.name == name).unwrap();
            (s.rate_messages_per_second, s.rate_bytes_per_second)
        };
        assert_eq!(
            (limit_of("limited"), limit_of("free")),
            ((LIMIT, 0), (0, 0))
        );
    });
    // Kept with the subscription: after a restart, and set from the command line.
    assert!(broker.signal(libc::SIGTERM).success());
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let listed = |name: &str| {
        runtime().block_on(async {
            let client = connect(&addr).await;
            let listed = client.list_subscriptions("paced").await.unwrap();
            let s = listed.into_iter().find(|s| s.name == name).unwrap();
            (s.rate_messages_per_second, s.rate_bytes_per_second)
        })
    };
    assert_eq!(listed("limited"), (LIMIT, 0));
    let set = std::process::Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args([
            "subscription",
            "set-rate",
            "--topic",
            "paced",
            "--subscription",
            "free",
        ])
        .args(["--bytes-per-second", "65536", "--broker", &addr])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(listed("free"), (0, 65_536));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args([
            "subscription",
            "set-rate",
            "--topic",
            "paced",
            "--subscription",
            "nobody",
        ])
        .args(["--messages-per-second", "5", "--broker", &addr])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
}
