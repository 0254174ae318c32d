//! Native clients outlive a restart of their broker. A producer's next batches open a new
//! connection (after fresh metadata) and are acknowledged at the offsets that follow, with
//! nothing lost. A consumer of each tier attaches again by itself and goes on receiving,
//! with no error reaching the application; past its reconnect timeout it ends with
//! `ReconnectFailed`.

mod common;

use common::runtime;

use common::{fixed_port_args, Broker};
use oxbow_client::{Acks, Client, ClientError, SubscriptionType, Tier};
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

/// A broker on ports fixed for its restarts, and its data.
struct Restartable {
    broker: Broker,
    args: Vec<String>,
    native: String,
    _data: tempfile::TempDir,
}

impl Restartable {
    /// Stops the broker with SIGTERM and starts it again on the same ports and data.
    fn restart(&mut self) {
        self.stop();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.broker = Broker::start_exactly(None, &args);
        self.broker.wait_for("oxbow ready");
    }

    /// Stops the broker with SIGTERM.
    fn stop(&mut self) {
        assert!(self.broker.signal(libc::SIGTERM).success());
    }
}

/// A restartable broker with `topic` of `partitions` made through a client; the client and
/// its runtime.
fn start_with_topic(
    topic: &str,
    partitions: u32,
) -> (Restartable, tokio::runtime::Runtime, Client) {
    let data = tempfile::tempdir().unwrap();
    let (args, addrs) = fixed_port_args(data.path());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut broker = Broker::start_exactly(None, &argv);
    broker.wait_for("oxbow ready");
    let rt = runtime();
    let native = addrs[1].clone();
    let client = rt
        .block_on(Client::builder().broker(&native).connect())
        .unwrap();
    rt.block_on(client.create_topic(topic, partitions)).unwrap();
    let broker = Restartable {
        broker,
        args,
        native,
        _data: data,
    };
    (broker, rt, client)
}

#[test]
fn a_producer_sends_again_after_its_broker_restarts_on_the_same_address() {
    let (mut broker, rt, client) = start_with_topic("survivor", 2);
    let producer = rt
        .block_on(client.producer("survivor").acks(Acks::All).build())
        .unwrap();
    let send = |from: usize| {
        rt.block_on(async {
            let mut pending = Vec::new();
            for i in from..from + 10 {
                let key = format!("k{}", i % 2);
                let value = format!("v{i}");
                pending.push(
                    producer
                        .send(Some(key.as_bytes()), value.as_bytes())
                        .await?,
                );
            }
            let mut delivered = Vec::new();
            for sent in pending {
                let d = sent.await?;
                delivered.push((d.partition, d.offset.unwrap()));
            }
            Ok::<_, oxbow_client::ClientError>(delivered)
        })
    };
    let before = send(0).unwrap();

    broker.restart();
    let after = send(10).expect("the producer reconnects");
    let offsets: BTreeSet<(u32, u64)> = before.iter().chain(&after).copied().collect();
    assert_eq!(offsets.len(), 20, "every message at its own offset");
    for partition in 0..2 {
        let mine: Vec<u64> = (offsets.iter())
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(mine, (0..mine.len() as u64).collect::<Vec<_>>(), "no gap");
    }

    // Everything acknowledged is there, read by a consumer on a fresh client.
    let values = rt.block_on(async {
        let client = (Client::builder().broker(&broker.native))
            .connect()
            .await
            .unwrap();
        let mut consumer = client
            .consumer("survivor", "check")
            .kind(SubscriptionType::Exclusive)
            .build()
            .await
            .unwrap();
        let mut values = BTreeSet::new();
        while values.len() < 20 {
            let batch = tokio::time::timeout(Duration::from_secs(30), consumer.recv_batch(100))
                .await
                .expect("all 20 are delivered")
                .unwrap();
            consumer.ack_all(&batch).unwrap();
            values.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8(m.value.to_vec()).unwrap()),
            );
        }
        values
    });
    let expected: BTreeSet<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
}

/// What a consumer thread reports: values received, or the error that ended it.
type Report = Result<Vec<String>, ClientError>;

/// Runs a consumer of `tier` on its own thread (its own client and runtime, as a separate
/// application), acknowledging everything; reports each batch's values and its end.
fn consume_on_thread(
    broker: String,
    subscription: String,
    tier: Tier,
    reconnect_timeout: Duration,
    reports: mpsc::Sender<(String, Report)>,
) {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let client = Client::builder().broker(&broker).connect().await.unwrap();
            let built = (client.consumer("resume", &subscription))
                .reconnect_timeout(reconnect_timeout)
                .build_tier(tier)
                .await;
            let mut consumer = match built {
                Ok(consumer) => consumer,
                Err(e) => return drop(reports.send((subscription, Err(e)))),
            };
            loop {
                let report = match consumer.next_batch().await {
                    Ok(batch) => {
                        consumer.acker().ack_all(&batch).unwrap();
                        let values = batch.iter().map(|m| m.value.to_vec());
                        Ok(values.map(|v| String::from_utf8(v).unwrap()).collect())
                    }
                    Err(e) => Err(e),
                };
                let ended = report.is_err();
                if reports.send((subscription.clone(), report)).is_err() || ended {
                    return;
                }
            }
        })
    });
}

/// Collects reports until every subscription in `seen` has received `values`; panics on an
/// error report or after `patience`.
fn receive_until(
    reports: &mpsc::Receiver<(String, Report)>,
    seen: &mut [(String, BTreeSet<String>)],
    values: &BTreeSet<String>,
    patience: Duration,
) {
    let deadline = std::time::Instant::now() + patience;
    while seen.iter().any(|(_, got)| !values.is_subset(got)) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (subscription, report) = reports
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("not everything delivered within {patience:?}"));
        let got = report.unwrap_or_else(|e| panic!("{subscription} ended: {e}"));
        let (_, set) = (seen.iter_mut()).find(|(s, _)| *s == subscription).unwrap();
        set.extend(got);
    }
}

#[test]
fn consumers_of_every_tier_attach_again_by_themselves_after_their_broker_restarts() {
    let (mut broker, rt, client) = start_with_topic("resume", 2);
    let producer = rt
        .block_on(client.producer("resume").acks(Acks::All).build())
        .unwrap();
    let produce = |range: std::ops::Range<usize>| -> BTreeSet<String> {
        rt.block_on(async {
            let mut pending = Vec::new();
            for i in range.clone() {
                let (key, value) = (format!("k{i}"), format!("v{i}"));
                pending.push(
                    producer
                        .send(Some(key.as_bytes()), value.as_bytes())
                        .await?,
                );
            }
            for sent in pending {
                sent.await?;
            }
            Ok::<_, ClientError>(())
        })
        .expect("the producer reconnects");
        range.map(|i| format!("v{i}")).collect()
    };
    let first = produce(0..20);

    let (reports_tx, reports) = mpsc::channel();
    let tiers = [
        ("stream", Tier::Stream),
        ("buffered", Tier::Buffered(8)),
        ("dedicated", Tier::Dedicated),
    ];
    let mut seen = Vec::new();
    for (name, tier) in tiers {
        let patient = Duration::from_secs(30);
        let (addr, tx) = (broker.native.clone(), reports_tx.clone());
        consume_on_thread(addr, name.to_string(), tier, patient, tx);
        seen.push((name.to_string(), BTreeSet::new()));
    }
    receive_until(&reports, &mut seen, &first, Duration::from_secs(30));

    broker.restart();
    let second = produce(20..40);
    // Every consumer goes on by itself: no error reaches it, and it gets what follows.
    receive_until(&reports, &mut seen, &second, Duration::from_secs(60));
}

#[test]
fn a_consumer_whose_broker_stays_away_ends_after_its_reconnect_timeout() {
    let (mut broker, rt, client) = start_with_topic("resume", 1);
    let (reports_tx, reports) = mpsc::channel();
    let timeout = Duration::from_secs(1);
    for (name, tier) in [("stream", Tier::Stream), ("dedicated", Tier::Dedicated)] {
        let (addr, tx) = (broker.native.clone(), reports_tx.clone());
        consume_on_thread(addr, name.to_string(), tier, timeout, tx);
    }
    // Both attached (the subscriptions exist) before the broker goes away for good.
    let listed = || {
        let names = rt.block_on(client.list_subscriptions("resume")).ok()?;
        let names: BTreeSet<String> = names.into_iter().map(|s| s.name).collect();
        (names.len() == 2).then_some(())
    };
    common::eventually("both consumers attached", Duration::from_secs(30), listed);
    broker.stop();
    for _ in 0..2 {
        let (name, report) = reports
            .recv_timeout(Duration::from_secs(30))
            .expect("the consumer ends");
        match report {
            Err(ClientError::ReconnectFailed { after, .. }) => assert_eq!(after, timeout),
            other => panic!("{name}: {other:?}"),
        }
    }
}
