//! Native clients outlive a restart of their broker. A producer's next batches open a new
//! connection (after fresh metadata) and are acknowledged at the offsets that follow, with
//! nothing lost; the batches it had in flight when the broker was killed go again and are
//! stored once. A consumer of each tier attaches again by itself and goes on receiving,
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

    /// Kills the broker with SIGKILL and starts it again on the same ports and data.
    fn crash_and_restart(&mut self) {
        self.broker.child.kill().unwrap();
        self.broker.child.wait().unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.broker = Broker::start_exactly(None, &args);
        self.broker.wait_for("oxbow ready");
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
            // Attached: an empty first report says so.
            if reports
                .send((subscription.clone(), Ok(Vec::new())))
                .is_err()
            {
                return;
            }
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
    let (mut broker, _rt, _client) = start_with_topic("resume", 1);
    let (reports_tx, reports) = mpsc::channel();
    let timeout = Duration::from_secs(1);
    for (name, tier) in [("stream", Tier::Stream), ("dedicated", Tier::Dedicated)] {
        let (addr, tx) = (broker.native.clone(), reports_tx.clone());
        consume_on_thread(addr, name.to_string(), tier, timeout, tx);
    }
    // Both built before the broker goes away for good (a subscription the broker lists may
    // still be attaching: its consumer would end with the connection's error instead).
    for _ in 0..2 {
        let (name, report) = reports.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(report.unwrap(), Vec::<String>::new(), "{name} attached");
    }
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

/// Values `v{i}` sent in rounds of [`ROUND`], each round's answers awaited before the next,
/// until `stop` is set; reports each finished round, then every value sent, with the first
/// error of a send if one failed.
const ROUND: usize = 100;

fn produce_on_thread(
    broker: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rounds: mpsc::Sender<usize>,
) -> std::thread::JoinHandle<Result<Vec<String>, ClientError>> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let client = Client::builder().broker(&broker).connect().await?;
            let producer = client.producer("resume").acks(Acks::All).build().await?;
            let mut sent = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut pending = Vec::new();
                for i in sent.len()..sent.len() + ROUND {
                    let value = format!("v{i}");
                    pending.push(producer.send(None, value.as_bytes()).await?);
                    sent.push(value);
                }
                for answer in pending {
                    answer.await?;
                }
                let _ = rounds.send(sent.len() / ROUND);
            }
            Ok(sent)
        })
    })
}

#[test]
fn a_broker_killed_under_a_running_producer_and_consumer_loses_and_duplicates_nothing() {
    let (mut broker, rt, _client) = start_with_topic("resume", 2);
    let (reports_tx, reports) = mpsc::channel();
    let patient = Duration::from_secs(60);
    consume_on_thread(
        broker.native.clone(),
        "steady".into(),
        Tier::Stream,
        patient,
        reports_tx,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (rounds_tx, rounds) = mpsc::channel();
    let producer = produce_on_thread(broker.native.clone(), stop.clone(), rounds_tx);

    // Killed while the producer has batches unanswered and the consumer unacknowledged ones.
    let mut seen = vec![("steady".to_string(), BTreeSet::new())];
    let early: BTreeSet<String> = (0..1_000).map(|i| format!("v{i}")).collect();
    receive_until(&reports, &mut seen, &early, Duration::from_secs(60));
    broker.crash_and_restart();
    // Rounds finished after the restart: the producer carried on by itself.
    let at_restart = rounds.try_iter().last().unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rounds.recv_timeout(left) {
            Ok(round) if round >= at_restart + 5 => break,
            Ok(_) => {}
            // The producer ended (its error is reported below) or is stuck.
            Err(_) => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = producer
        .join()
        .unwrap()
        .expect("every send is acknowledged");

    // The consumer went on by itself and got every value acknowledged to the producer.
    let all: BTreeSet<String> = sent.iter().cloned().collect();
    receive_until(&reports, &mut seen, &all, Duration::from_secs(60));

    // The log holds each value once: the batches sent again were not appended again.
    let stored = rt.block_on(async {
        let client = (Client::builder().broker(&broker.native))
            .connect()
            .await
            .unwrap();
        let mut consumer = client
            .consumer("resume", "audit")
            .kind(SubscriptionType::Exclusive)
            .build()
            .await
            .unwrap();
        let mut stored = Vec::new();
        while stored.len() < sent.len() {
            let batch = tokio::time::timeout(Duration::from_secs(30), consumer.recv_batch(1_000))
                .await
                .expect("everything sent is stored")
                .unwrap();
            consumer.ack_all(&batch).unwrap();
            stored.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8(m.value.to_vec()).unwrap()),
            );
        }
        let partitions = client.describe_topic("resume").await.unwrap();
        let log_ends: u64 = partitions.iter().map(|p| p.log_end - p.log_start).sum();
        (stored, log_ends)
    });
    let (stored, log_ends) = stored;
    assert_eq!(
        log_ends,
        sent.len() as u64,
        "as many messages stored as sent"
    );
    let distinct: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "a value stored twice");
    assert_eq!(stored.len(), sent.len());
}

/// What the broker answers a raw request.
async fn ask(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut bytes::BytesMut,
    frame: &oxbow_core::native::ClientFrame,
    payload: &[u8],
) -> oxbow_core::native::ServerFrame {
    use oxbow_core::native::{decode_frame, encode_frame, ServerFrame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = [encode_frame(frame, payload.len()), payload.to_vec()].concat();
    stream.write_all(&bytes).await.unwrap();
    loop {
        if let Some(frame) = decode_frame::<ServerFrame>(buffer, 1 << 30).unwrap() {
            return frame.control;
        }
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_buf(buffer));
        assert!(read.await.expect("an answer").unwrap() > 0, "closed");
    }
}

#[test]
fn a_batch_sent_again_is_answered_with_its_first_offsets_and_a_gap_is_out_of_order() {
    use oxbow_client::ErrorCode;
    use oxbow_core::native::{ClientFrame, ServerFrame, PROTOCOL_VERSION};
    let (broker, rt, client) = start_with_topic("again", 1);
    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(&broker.native)
            .await
            .unwrap();
        let mut buffer = bytes::BytesMut::new();
        let hello = ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            client_name: "raw".into(),
        };
        ask(&mut stream, &mut buffer, &hello, &[]).await;
        let init = ClientFrame::InitProducer { request_id: 1 };
        let ServerFrame::ProducerId {
            producer_id, epoch, ..
        } = ask(&mut stream, &mut buffer, &init, &[]).await
        else {
            panic!("no producer id");
        };
        assert!(producer_id >= 0, "a producer id, not the null id");
        let batch = |sequence: i32| {
            let mut builder =
                oxbow_core::BatchBuilder::new(0).producer(producer_id, epoch, sequence);
            builder.push(None, Some(format!("s{sequence}").as_bytes()), 0);
            builder.push(None, Some(b"second"), 0);
            builder.build()
        };
        let produce = |request_id| ClientFrame::Produce {
            request_id,
            topic: "again".into(),
            partition: 0,
            acks: Acks::All,
        };
        let first = batch(0);
        let mut offsets = Vec::new();
        for request_id in [2, 3] {
            match ask(
                &mut stream,
                &mut buffer,
                &produce(request_id),
                first.bytes(),
            )
            .await
            {
                ServerFrame::Produced { base_offset, .. } => offsets.push(base_offset),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(offsets, [0, 0], "the second is the first's retry");
        // Sequence 3 skips 2: refused, and nothing appended.
        match ask(&mut stream, &mut buffer, &produce(4), batch(3).bytes()).await {
            ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::OutOfOrderSequence),
            other => panic!("{other:?}"),
        }
        match ask(&mut stream, &mut buffer, &produce(5), batch(2).bytes()).await {
            ServerFrame::Produced { base_offset, .. } => assert_eq!(base_offset, 2),
            other => panic!("{other:?}"),
        }
        let partitions = client.describe_topic("again").await.unwrap();
        assert_eq!(partitions[0].log_end, 4);
    });
}

#[test]
fn a_batch_given_up_does_not_stop_an_idempotent_producer() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[log]\nbatch_bytes_max = 65536\n";
    let (_broker, addr) = common::start_native_broker(dir.path(), config);
    runtime().block_on(async {
        let client = Client::builder().broker(&addr).connect().await.unwrap();
        client.create_topic("gap", 1).await.unwrap();
        let producer = (client.producer("gap").linger(Duration::ZERO))
            .delivery_timeout(Duration::from_secs(20))
            .build()
            .await
            .unwrap();
        let first = producer.send(None, b"before").await.unwrap().await.unwrap();
        // Refused for good: its sequences never reach the partition.
        let refused = producer.send(None, &[7; 100_000]).await.unwrap().await;
        let code = refused
            .expect_err("larger than the broker's batches")
            .code();
        assert_eq!(code, Some(oxbow_client::ErrorCode::TooLarge));
        // The gap it leaves is not the producer's end: the next batch goes under a new
        // producer id, long before its delivery timeout.
        let after = tokio::time::timeout(Duration::from_secs(10), async {
            producer.send(None, b"after").await.unwrap().await
        });
        let after = after.await.expect("answered at once").unwrap();
        assert_eq!(after.offset, Some(first.offset.unwrap() + 1));
    });
}
