//! The native protocol end to end: the real broker binary, the Rust client over real sockets,
//! every subscription type and mode, redelivery, dead letters, kill -9, the CLI, and hostile
//! input.

mod common;

use common::native_client::produce;
use common::{start_native_broker, Broker};
use oxbow_client::{
    Acks, Client, ErrorCode, Message, Mode, Receive, StartPosition, SubscriptionType, Tier,
    TieredConsumer,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Only a bound on a hung test; the tests wait for events, not for time.
const PATIENCE: Duration = Duration::from_secs(60);

async fn connect(addr: &str) -> Client {
    Client::builder().broker(addr).connect().await.unwrap()
}

fn text(message: &Message) -> String {
    String::from_utf8(message.value.to_vec()).unwrap()
}

async fn recv(consumer: &mut oxbow_client::Consumer) -> Message {
    tokio::time::timeout(PATIENCE, consumer.recv())
        .await
        .expect("no message in time")
        .unwrap()
}

/// Four consumers, each on its own thread and connection as separate applications would be,
/// share one partition: each gets a quarter of the messages, within 10%.
#[test]
fn shared_reliable_balances_four_consumers_within_ten_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let runtime = common::runtime();
    let admin = runtime.block_on(async {
        let admin = connect(&addr).await;
        admin.create_topic("work", 1).await.unwrap();
        admin
    });
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (got_tx, got) = std::sync::mpsc::channel();
    for i in 0..4 {
        let (addr, ready_tx, got_tx) = (addr.clone(), ready_tx.clone(), got_tx.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = connect(&addr).await;
                let mut consumer = client
                    .consumer("work", "pool")
                    .kind(SubscriptionType::Shared)
                    .mode(Mode::Reliable)
                    .name(format!("worker-{i}"))
                    .build()
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                loop {
                    let message = recv(&mut consumer).await;
                    consumer.ack(&message).unwrap();
                    if got_tx.send((i, text(&message))).is_err() {
                        return;
                    }
                }
            });
        });
    }
    for _ in 0..4 {
        ready.recv_timeout(PATIENCE).unwrap();
    }
    // Produced in rounds, as a work queue fills: the consumers keep up, so the split is the
    // dispatcher's, not the scheduler's (a backlog goes to whoever has permits first).
    let mut values = Vec::new();
    for round in 0..120 {
        let range = round * 100..(round + 1) * 100;
        values.extend(runtime.block_on(produce(&admin, "work", range, |_| None)));
    }
    let mut per_consumer = [0u32; 4];
    let mut seen = BTreeSet::new();
    while seen.len() < values.len() {
        let (i, value) = got.recv_timeout(PATIENCE).unwrap();
        per_consumer[i] += 1;
        seen.insert(value);
    }
    for count in per_consumer {
        assert!((2_700..=3_300).contains(&count), "{per_consumer:?}");
    }
}

#[tokio::test]
async fn key_shared_sends_each_key_to_one_consumer_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let client = connect(&addr).await;
    client.create_topic("events", 2).await.unwrap();
    let mut consumers = Vec::new();
    for i in 0..3 {
        consumers.push(
            client
                .consumer("events", "by-key")
                .kind(SubscriptionType::KeyShared)
                .name(format!("k{i}"))
                .build()
                .await
                .unwrap(),
        );
    }
    produce(&client, "events", 0..3_000, |i| {
        Some(format!("key-{}", i % 50))
    })
    .await;
    let mut owner: HashMap<bytes::Bytes, usize> = HashMap::new();
    let mut received = 0;
    let mut used = BTreeSet::new();
    while received < 3_000 {
        for (i, consumer) in consumers.iter_mut().enumerate() {
            let batch =
                match tokio::time::timeout(Duration::from_millis(50), consumer.recv_batch(500))
                    .await
                {
                    Ok(batch) => batch.unwrap(),
                    Err(_) => continue,
                };
            for message in &batch {
                let key = message.key.clone().unwrap();
                assert_eq!(
                    *owner.entry(key).or_insert(i),
                    i,
                    "a key moved between consumers"
                );
                used.insert(i);
            }
            received += batch.len();
            consumer.ack_all(&batch).unwrap();
        }
    }
    assert!(used.len() > 1, "keys should spread over consumers");
}

#[tokio::test]
async fn exclusive_refuses_a_second_consumer_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let client = connect(&addr).await;
    client.create_topic("ledger", 1).await.unwrap();
    let mut first = client
        .consumer("ledger", "audit")
        .kind(SubscriptionType::Exclusive)
        .build()
        .await
        .unwrap();
    let other = connect(&addr).await;
    let refused = other
        .consumer("ledger", "audit")
        .kind(SubscriptionType::Exclusive)
        .build()
        .await
        .err()
        .expect("a second exclusive consumer must be refused");
    assert_eq!(refused.code(), Some(ErrorCode::ConsumerBusy), "{refused}");
    let values = produce(&client, "ledger", 0..500, |_| None).await;
    let mut last = None;
    for expected in &values {
        let message = recv(&mut first).await;
        assert_eq!(&text(&message), expected);
        assert!(last < Some(message.offset));
        last = Some(message.offset);
        first.ack_cumulative(&message).unwrap();
    }
    // Shared subscriptions cannot acknowledge cumulatively.
    let mut shared = client
        .consumer("ledger", "pool")
        .kind(SubscriptionType::Shared)
        .build()
        .await
        .unwrap();
    let message = recv(&mut shared).await;
    assert!(shared.ack_cumulative(&message).is_err());
}

/// The active consumer is a separate `oxbow consume` process, killed with SIGKILL mid-stream;
/// the standby takes over at once, from the first unacknowledged message, in order.
#[tokio::test]
async fn failover_standby_takes_over_when_the_active_consumer_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let client = connect(&addr).await;
    client.create_topic("orders", 1).await.unwrap();
    let mut active = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args([
            "consume",
            "--broker",
            &addr,
            "--topic",
            "orders",
            "--subscription",
            "fo",
        ])
        .args(["--type", "failover", "--name", "primary", "--priority", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut active_out = std::io::BufReader::new(active.stdout.take().unwrap());
    // The standby attaches once the primary is surely active: wait for the subscription.
    loop {
        let subs = client.list_subscriptions("orders").await.unwrap();
        if subs.iter().any(|s| s.consumers == 1) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut standby = client
        .consumer("orders", "fo")
        .kind(SubscriptionType::Failover)
        .name("standby")
        .priority(5)
        .build()
        .await
        .unwrap();
    let mut values = produce(&client, "orders", 0..1_000, |_| None).await;
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut printed = BTreeSet::new();
        let mut line = String::new();
        while printed.len() < 300 {
            line.clear();
            active_out.read_line(&mut line).unwrap();
            printed.insert(line.trim().to_string());
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(active.id() as i32, libc::SIGKILL) };
        active.wait().unwrap();
        // Whatever it printed before dying is still in the pipe.
        for line in active_out.lines() {
            printed.insert(line.unwrap());
        }
        printed
    });
    let printed = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    // More arrives after the takeover; the standby must get it and whatever was not printed.
    values.extend(produce(&client, "orders", 1_000..2_000, |_| None).await);
    let mut seen = printed.clone();
    let mut last_offset = None;
    while seen.len() < values.len() {
        let message = recv(&mut standby).await;
        assert!(
            last_offset < Some(message.offset),
            "standby saw offsets out of order"
        );
        last_offset = Some(message.offset);
        seen.insert(text(&message));
        standby.ack(&message).unwrap();
    }
    assert_eq!(seen.len(), values.len());
}

#[tokio::test]
async fn nack_redelivers_and_too_many_failures_go_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(
        dir.path(),
        "[subscriptions]\nredeliveries_max = 2\nack_timeout_ms = 300\n",
    );
    let client = connect(&addr).await;
    client.create_topic("jobs", 1).await.unwrap();
    let mut consumer = client
        .consumer("jobs", "runner")
        .kind(SubscriptionType::Shared)
        .build()
        .await
        .unwrap();
    produce(&client, "jobs", 0..3, |_| None).await;
    // m0 always fails; m1 is acknowledged; m2 is never answered (ack timeout redelivers it).
    let mut deliveries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    loop {
        let message = recv(&mut consumer).await;
        let value = text(&message);
        deliveries
            .entry(value.clone())
            .or_default()
            .push(message.redeliveries);
        match value.as_str() {
            "m0" => consumer.nack(&message, Duration::ZERO).unwrap(),
            "m1" => consumer.ack(&message).unwrap(),
            _ if message.redeliveries >= 1 => {
                consumer.ack(&message).unwrap();
                break;
            }
            _ => {}
        }
    }
    assert_eq!(deliveries["m1"], vec![0]);
    assert_eq!(deliveries["m2"], vec![0, 1]);
    let mut dead = client
        .consumer("jobs-runner-DLQ", "inspect")
        .build()
        .await
        .unwrap();
    let letter = recv(&mut dead).await;
    assert_eq!(text(&letter), "m0");
    assert_eq!(deliveries["m0"], vec![0, 1, 2]);
}

#[tokio::test]
async fn non_reliable_stalled_consumer_drops_and_never_holds_producers_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(
        dir.path(),
        "[log]\nflush = \"never\"\n[subscriptions]\nread_ahead_messages_max = 256\n",
    );
    let client = connect(&addr).await;
    client.create_topic("ticks", 1).await.unwrap();
    // Attached, granted 10 permits, and never read from.
    let stalled = client
        .consumer("ticks", "live")
        .kind(SubscriptionType::Exclusive)
        .mode(Mode::NonReliable)
        .receiver_queue(10)
        .build()
        .await
        .unwrap();
    produce(&client, "ticks", 0..20_000, |_| None).await;
    // Every produce was acknowledged while the consumer stalled; the subscription dropped the
    // backlog and stays within its read-ahead of the log end.
    let settled = loop {
        let subs = client.list_subscriptions("ticks").await.unwrap();
        let live = subs.into_iter().find(|s| s.name == "live").unwrap();
        if live.dropped > 0 && live.lag <= 256 {
            break live;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(settled.mode, Mode::NonReliable);
    assert!(settled.dropped >= 20_000 - 10 - 2 * 256, "{settled:?}");
    drop(stalled);
}

/// kill -9 mid-stream: after a restart the subscription resumes at its persisted cursor and
/// every produced message is delivered at least once.
#[tokio::test]
async fn reliable_subscription_resumes_from_its_cursor_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[log]\nflush = \"always\"\n[subscriptions]\ncursor_persist_interval_ms = 20\n";
    let (mut broker, addr) = start_native_broker(dir.path(), config);
    let client = connect(&addr).await;
    client.create_topic("payments", 1).await.unwrap();
    let values = produce(&client, "payments", 0..3_000, |_| None).await;
    let mut consumer = client
        .consumer("payments", "settle")
        .kind(SubscriptionType::Exclusive)
        .build()
        .await
        .unwrap();
    let mut before = BTreeSet::new();
    for _ in 0..1_000 {
        let message = recv(&mut consumer).await;
        before.insert(text(&message));
        consumer.ack(&message).unwrap();
    }
    // Wait until the broker has stored some of those acks, then kill while messages flow.
    loop {
        let subs = client.list_subscriptions("payments").await.unwrap();
        if subs[0].persisted >= 500 {
            break;
        }
    }
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    drop(consumer);
    drop(client);
    let persisted = common::stored_cursors(&dir.path().join("data"), "payments", 0)["settle"];
    assert!((500..=1_000).contains(&persisted), "{persisted}");

    let mut broker = Broker::start(&[
        "--config",
        dir.path().join("oxbow.toml").to_str().unwrap(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    let addr = common::field(&broker.wait_for("oxbow ready"), "native");
    let client = connect(&addr).await;
    let subs = client.list_subscriptions("payments").await.unwrap();
    assert_eq!(subs[0].cursor, persisted, "resumes at the persisted cursor");
    let mut consumer = client
        .consumer("payments", "settle")
        .kind(SubscriptionType::Exclusive)
        .start(StartPosition::Latest) // ignored: the subscription exists
        .build()
        .await
        .unwrap();
    let first = recv(&mut consumer).await;
    assert_eq!(first.offset, persisted);
    let mut after = BTreeSet::from([text(&first)]);
    consumer.ack(&first).unwrap();
    while after.len() < values.len() - persisted as usize {
        let message = recv(&mut consumer).await;
        after.insert(text(&message));
        consumer.ack(&message).unwrap();
    }
    // Everything below the cursor was delivered before the crash; everything from it after.
    let below: BTreeSet<String> = (0..persisted).map(|i| format!("m{i}")).collect();
    assert!(below.is_subset(&before));
    let all: BTreeSet<String> = values.into_iter().collect();
    assert_eq!(&below | &after, all);
}

/// One million messages, consumed once through each tier under its own subscription.
#[tokio::test(flavor = "current_thread")]
async fn every_tier_consumes_the_same_million_messages() {
    const COUNT: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(
        dir.path(),
        "[log]\nflush = \"never\"\nsegment_bytes_max = 268435456\n",
    );
    let client = connect(&addr).await;
    client.create_topic("firehose", 2).await.unwrap();
    let producer = client
        .producer("firehose")
        .acks(Acks::Leader)
        .linger(Duration::from_millis(2))
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..COUNT {
        pending.push(producer.send(None, &i.to_le_bytes()).await.unwrap());
        if pending.len() == 50_000 {
            for outcome in pending.drain(..) {
                outcome.await.unwrap();
            }
        }
    }
    producer.flush().await.unwrap();
    for outcome in pending {
        outcome.await.unwrap();
    }
    for (subscription, tier) in [
        ("stream", Tier::Stream),
        ("buffered", Tier::Buffered(512)),
        ("dedicated", Tier::Dedicated),
    ] {
        let mut consumer = client
            .consumer("firehose", subscription)
            .kind(SubscriptionType::Exclusive)
            .receiver_queue(5_000)
            .build_tier(tier)
            .await
            .unwrap();
        let acker = consumer.acker();
        let mut seen = vec![false; COUNT as usize];
        let mut distinct = 0u64;
        while distinct < COUNT {
            let batch = tokio::time::timeout(PATIENCE, consumer.next_batch())
                .await
                .unwrap_or_else(|_| panic!("{subscription}: stuck at {distinct}"))
                .unwrap();
            for message in &batch {
                let i = u64::from_le_bytes(message.value[..].try_into().unwrap());
                if !std::mem::replace(&mut seen[i as usize], true) {
                    distinct += 1;
                }
            }
            acker.ack_all(&batch).unwrap();
        }
        assert!(seen.iter().all(|&s| s), "{subscription}");
    }
}

/// Receives through `Receive` alone, as code written for any tier would, until `count`
/// distinct values arrived; acknowledges them.
async fn drain(consumer: &mut impl Receive, count: usize) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    while values.len() < count {
        let batch = (consumer.next_batch_within(PATIENCE).await.unwrap())
            .unwrap_or_else(|| panic!("stuck at {} of {count}", values.len()));
        consumer.acker().ack_all(&batch).unwrap();
        values.extend(batch.iter().map(text));
    }
    values
}

/// Every tier behind the one `Receive` interface: nothing to take answers `None` at once
/// (`try_next_batch`) or after the timeout (`next_batch_within`), then what is produced
/// arrives; the stream tier's `try_poll` picks up a message once it is there, and the
/// dedicated tier's `poll_blocking` waits on a thread outside any runtime (this one).
#[test]
fn every_tier_polls_with_and_without_waiting_behind_one_interface() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let runtime = common::runtime();
    let client = runtime.block_on(connect(&addr));
    runtime.block_on(client.create_topic("polled", 2)).unwrap();
    let tiers = [
        ("stream", Tier::Stream),
        ("buffered", Tier::Buffered(4)),
        ("dedicated", Tier::Dedicated),
    ];
    let mut consumers = Vec::new();
    for (subscription, tier) in tiers {
        let consumer = client.consumer("polled", subscription).build_tier(tier);
        let mut consumer = runtime.block_on(consumer).unwrap();
        assert!(
            consumer.try_next_batch().unwrap().is_none(),
            "{subscription}"
        );
        let waited = consumer.next_batch_within(Duration::from_millis(50));
        assert!(
            runtime.block_on(waited).unwrap().is_none(),
            "{subscription}"
        );
        consumers.push(consumer);
    }
    let values = runtime.block_on(produce(&client, "polled", 0..10, |i| Some(format!("k{i}"))));
    let values: BTreeSet<String> = values.into_iter().collect();
    for consumer in &mut consumers {
        assert_eq!(runtime.block_on(drain(consumer, 10)), values);
    }

    // One more message: the stream tier's try_poll finds it once it has arrived, and the
    // dedicated tier's poll_blocking, which had nothing before it, waits for it.
    let Some(TieredConsumer::Dedicated(mut dedicated)) = consumers.pop() else {
        panic!("the dedicated tier is last");
    };
    let nothing_yet = dedicated.poll_blocking(Duration::from_millis(20)).unwrap();
    assert!(nothing_yet.is_none());
    runtime.block_on(produce(&client, "polled", 10..11, |_| None));
    let TieredConsumer::Stream(stream) = &mut consumers[0] else {
        panic!("the stream tier is first");
    };
    let polled = runtime.block_on(async {
        loop {
            if let Some(message) = stream.try_poll().unwrap() {
                return message;
            }
            if let Some(message) = stream.poll(Duration::from_millis(10)).await.unwrap() {
                return message;
            }
        }
    });
    assert_eq!(text(&polled), "m10");
    let batch = dedicated
        .poll_blocking(PATIENCE)
        .unwrap()
        .expect("the message");
    assert_eq!(batch.iter().map(text).collect::<Vec<_>>(), ["m10"]);
}

/// The stream and buffered tiers as the async streams they are: `stream()` yields one message
/// per item, `buffered_stream(n)` vectors of at most n; both deliver everything produced.
#[test]
fn the_stream_and_buffered_tiers_are_async_streams() {
    use futures_lite::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let runtime = common::runtime();
    runtime.block_on(async {
        let client = connect(&addr).await;
        client.create_topic("streamed", 3).await.unwrap();
        let keyed = |i: u64| Some(format!("k{i}"));
        let produced: BTreeSet<String> = produce(&client, "streamed", 0..50, keyed)
            .await
            .into_iter()
            .collect();

        let mut consumer = client.consumer("streamed", "one").build().await.unwrap();
        let mut stream = consumer.stream();
        let mut one_by_one = BTreeSet::new();
        while one_by_one.len() < produced.len() {
            let next = tokio::time::timeout(PATIENCE, stream.next()).await;
            let message = next.expect("a message in time").unwrap().unwrap();
            one_by_one.insert(text(&message));
        }
        assert_eq!(one_by_one, produced);

        let mut consumer = client.consumer("streamed", "many").build().await.unwrap();
        let mut batches = consumer.buffered_stream(7);
        let mut batched = BTreeSet::new();
        while batched.len() < produced.len() {
            let next = tokio::time::timeout(PATIENCE, batches.next()).await;
            let batch = next.expect("a batch in time").unwrap().unwrap();
            assert!(!batch.is_empty() && batch.len() <= 7, "{}", batch.len());
            batched.extend(batch.iter().map(text));
        }
        assert_eq!(batched, produced);
    });
}

fn oxbow(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input closes the pipe: not the test's concern.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cli_topics_produce_consume_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let b = ["--broker", addr.as_str()];
    let run = |args: &[&str], stdin: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&b);
        oxbow(&all, stdin)
    };
    let (ok, out, _) = run(&["topic", "create", "cli", "--partitions", "3"], "");
    assert!(ok, "{out}");
    let (ok, out, _) = run(&["topic", "list"], "");
    assert!(ok && out.contains("cli\t3 partitions"), "{out}");
    let lines: String = (0..30).map(|i| format!("line {i}\n")).collect();
    let (ok, _, err) = run(
        &["produce", "--topic", "cli", "--key", "k", "--acks", "all"],
        &lines,
    );
    assert!(ok && err.contains("produced 30 messages"), "{err}");
    let (ok, out, _) = run(&["topic", "describe", "cli"], "");
    let ends: u64 = out
        .lines()
        .skip(1)
        .take(3)
        .map(|l| l.split('\t').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(ok && ends == 30, "{out}");
    let consume = |count: &'static str| {
        [
            "consume",
            "--topic",
            "cli",
            "--subscription",
            "s",
            "--type",
            "exclusive",
            "--mode",
            "reliable",
            "--count",
            count,
        ]
    };
    let (ok, out, err) = run(&consume("20"), "");
    // One key, so one partition, so produce order.
    let expected: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    // Acknowledged after printing: the next run continues where this one stopped.
    let (ok, out, _) = run(&consume("10"), "");
    assert!(ok);
    assert_eq!(out.lines().next(), Some("line 20"));
    let (ok, out, _) = run(&["subscription", "list", "--topic", "cli"], "");
    assert!(ok && out.contains("\tExclusive\tReliable\t"), "{out}");
    let (ok, out, _) = run(
        &["subscription", "list", "--topic", "cli", "--output", "json"],
        "",
    );
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let partitions = listed.as_array().unwrap();
    assert!(
        ok && partitions.len() == 3,
        "one entry per partition: {out}"
    );
    assert!(partitions
        .iter()
        .all(|p| p["name"] == "s" && p["kind"] == "Exclusive"));
    let cursors: u64 = partitions
        .iter()
        .map(|p| p["cursor"].as_u64().unwrap())
        .sum();
    assert_eq!(cursors, 30, "the 30 acknowledged: {out}");
    let (ok, _, _) = run(
        &[
            "subscription",
            "reset",
            "--topic",
            "cli",
            "--subscription",
            "s",
            "--to",
            "earliest",
        ],
        "",
    );
    assert!(ok);
    let (_, out, _) = run(&consume("1"), "");
    assert_eq!(out.lines().next(), Some("line 0"));
    let (ok, _, _) = run(
        &[
            "subscription",
            "delete",
            "--topic",
            "cli",
            "--subscription",
            "s",
        ],
        "",
    );
    assert!(ok);
    let (_, out, _) = run(&["subscription", "list", "--topic", "cli"], "");
    assert!(!out.contains("\tExclusive\t"), "{out}");
    // Errors: one clear line, non-zero exit.
    for (args, needle) in [
        (vec!["topic", "describe", "missing"], "unknown topic"),
        (
            vec!["topic", "create", "cli", "--partitions", "1"],
            "exists",
        ),
        (
            vec![
                "consume",
                "--topic",
                "cli",
                "--subscription",
                "s",
                "--type",
                "round",
            ],
            "subscription type",
        ),
        (vec!["produce", "--topic", "missing"], "unknown topic"),
    ] {
        let (ok, _, err) = run(&args, "x\n");
        assert!(!ok, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("oxbow: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let (ok, out, _) = run(&["topic", "delete", "cli"], "");
    assert!(ok, "{out}");
    let (ok, _, err) = oxbow(&["topic", "list", "--broker", "127.0.0.1:1"], "");
    assert!(!ok && err.contains("connecting to 127.0.0.1:1"), "{err}");
}

mod hostile {
    use super::*;
    use bytes::BytesMut;
    use oxbow_core::native::{decode_frame, encode_frame, ClientFrame, ServerFrame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Reads frames until the broker closes the connection; returns them.
    async fn until_closed(stream: &mut TcpStream) -> Vec<ServerFrame> {
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        loop {
            while let Some(frame) = decode_frame::<ServerFrame>(&mut buffer, 1 << 30).unwrap() {
                frames.push(frame.control);
            }
            let read = tokio::time::timeout(PATIENCE, stream.read_buf(&mut buffer))
                .await
                .expect("the broker must close the connection");
            if matches!(read, Ok(0) | Err(_)) {
                return frames;
            }
        }
    }

    fn error_code(frames: &[ServerFrame]) -> Option<ErrorCode> {
        frames.iter().find_map(|f| match f {
            ServerFrame::Error {
                request_id: 0,
                code,
                ..
            } => Some(*code),
            _ => None,
        })
    }

    #[tokio::test]
    async fn bad_versions_sizes_and_bytes_get_an_error_frame_and_a_close() {
        let dir = tempfile::tempdir().unwrap();
        let (mut broker, addr) =
            start_native_broker(dir.path(), "native_frame_bytes_max = 65536\n");
        let hello = |version| {
            encode_frame(
                &ClientFrame::Connect {
                    version,
                    client_name: "test".into(),
                },
                0,
            )
        };
        let current = oxbow_core::native::PROTOCOL_VERSION;
        let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
            (hello(99), ErrorCode::UnsupportedVersion),
            // Version 1 carried no headers: its clients would misread every delivery.
            (hello(1), ErrorCode::UnsupportedVersion),
            (encode_frame(&ClientFrame::Ping, 0), ErrorCode::BadRequest),
            (
                [hello(current), u32::MAX.to_be_bytes().to_vec()].concat(),
                ErrorCode::TooLarge,
            ),
            (
                [hello(current), vec![0, 0, 0, 12, 0, 0, 0, 8], vec![0xff; 8]].concat(),
                ErrorCode::BadRequest,
            ),
        ];
        for (bytes, expected) in cases {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream.write_all(&bytes).await.unwrap();
            let frames = until_closed(&mut stream).await;
            assert_eq!(error_code(&frames), Some(expected), "{frames:?}");
        }
        // The broker kept serving.
        let client = connect(&addr).await;
        client.create_topic("still-up", 1).await.unwrap();
        broker.wait_for("topic created");
        assert!(!broker.seen.iter().any(|l| l.contains("panicked")));
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_its_messages_go_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, addr) = start_native_broker(dir.path(), "native_session_timeout_ms = 300\n");
        let client = connect(&addr).await;
        client.create_topic("q", 1).await.unwrap();
        produce(&client, "q", 0..1, |_| None).await;
        // A raw consumer that takes a message and then goes silent (no pings, no acks).
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        let subscribe = ClientFrame::Subscribe {
            request_id: 1,
            consumer_id: 1,
            topic: "q".into(),
            subscription: "shared".into(),
            kind: SubscriptionType::Shared,
            mode: Mode::Reliable,
            consumer_name: "silent".into(),
            priority: 0,
            start: StartPosition::Earliest,
            partitions: None,
            reattaching: false,
        };
        let flow = ClientFrame::Flow {
            consumer_id: 1,
            partition: None,
            permits: 10,
        };
        let hello = ClientFrame::Connect {
            version: oxbow_core::native::PROTOCOL_VERSION,
            client_name: "silent".into(),
        };
        for frame in [hello, subscribe, flow] {
            silent.write_all(&encode_frame(&frame, 0)).await.unwrap();
        }
        let frames = until_closed(&mut silent).await;
        assert!(frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Messages { .. })));
        // Closed for silence: the unacknowledged message goes to the next consumer.
        let mut next = client
            .consumer("q", "shared")
            .kind(SubscriptionType::Shared)
            .build()
            .await
            .unwrap();
        let message = recv(&mut next).await;
        assert_eq!((text(&message).as_str(), message.redeliveries), ("m0", 1));
        // A live client pings: it outlives several session timeouts (time passing is the
        // point here, not synchronisation).
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert!(!client.is_closed());
        client.list_topics().await.unwrap();
    }
}

/// Non-reliable subscriptions of every type, consumers keeping up: each message reaches one
/// consumer at most once, and here all of them arrive, spread as the type says.
#[tokio::test]
async fn non_reliable_types_deliver_at_most_once_spread_like_their_type() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    let client = connect(&addr).await;
    for (topic, kind) in [
        ("nr-shared", SubscriptionType::Shared),
        ("nr-key", SubscriptionType::KeyShared),
        ("nr-failover", SubscriptionType::Failover),
    ] {
        client.create_topic(topic, 1).await.unwrap();
        let mut consumers = Vec::new();
        for i in 0..3 {
            consumers.push(
                client
                    .consumer(topic, "live")
                    .kind(kind)
                    .mode(Mode::NonReliable)
                    .name(format!("c{i}"))
                    .build()
                    .await
                    .unwrap(),
            );
        }
        let values = produce(&client, topic, 0..900, |i| Some(format!("k{}", i % 30))).await;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut owner: HashMap<bytes::Bytes, usize> = HashMap::new();
        let mut per_consumer = [0usize; 3];
        while seen.len() < values.len() {
            for (i, consumer) in consumers.iter_mut().enumerate() {
                let batch = match tokio::time::timeout(
                    Duration::from_millis(20),
                    consumer.recv_batch(1_000),
                )
                .await
                {
                    Ok(batch) => batch.unwrap(),
                    Err(_) => continue,
                };
                for message in batch {
                    assert_eq!(message.redeliveries, 0);
                    let previous = seen.insert(text(&message), i);
                    assert!(previous.is_none(), "{topic}: delivered twice");
                    per_consumer[i] += 1;
                    if kind == SubscriptionType::KeyShared {
                        let key = message.key.clone().unwrap();
                        assert_eq!(*owner.entry(key).or_insert(i), i, "{topic}: key moved");
                    }
                }
            }
        }
        let active = per_consumer.iter().filter(|&&n| n > 0).count();
        match kind {
            SubscriptionType::Failover => assert_eq!(active, 1, "{topic}: {per_consumer:?}"),
            _ => assert!(active > 1, "{topic}: {per_consumer:?}"),
        }
    }
}

/// A backlog larger than the read-ahead reaches a consumer with permits to spare even when
/// nothing else happens: no acks, no new permits, no new appends.
#[tokio::test]
async fn a_backlog_beyond_the_read_ahead_flows_without_acks_or_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(
        dir.path(),
        "[subscriptions]\nread_ahead_messages_max = 500\nread_bytes_max = 4096\n",
    );
    let client = connect(&addr).await;
    client.create_topic("backlog", 1).await.unwrap();
    // Small batches, so that reads stop at the read-ahead and not at the end of a batch.
    let producer = client
        .producer("backlog")
        .batch_bytes_max(1024)
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..5_000u32 {
        pending.push(producer.send(None, &i.to_le_bytes()).await.unwrap());
    }
    producer.flush().await.unwrap();
    for outcome in pending {
        outcome.await.unwrap();
    }
    let mut consumer = client
        .consumer("backlog", "late")
        .receiver_queue(100_000)
        .build()
        .await
        .unwrap();
    let mut received = Vec::new();
    while received.len() < 5_000 {
        received.push(recv(&mut consumer).await);
    }
    consumer.ack_all(&received).unwrap();
}
