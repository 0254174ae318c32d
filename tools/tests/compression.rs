//! Compressed batches through both protocols, with the real broker, real Kafka clients
//! (confluent-kafka, kcat) and the Rust client: every codec from Kafka producers to every native
//! subscription type and back, a corrupted compressed batch on disk that stops reliable
//! subscriptions until an operator skips it, and decompression bombs refused at produce.

mod common;

use common::{confluent, field, http_get, kcat, sample, Broker};
use oxbow_client::{
    Acks, Client, ClientError, Codec, ErrorCode, Message, Mode, StartPosition, SubscriptionType,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Only a bound on a hung test; the tests wait for events, not for time.
const PATIENCE: Duration = Duration::from_secs(60);
const CODECS: [Codec; 4] = [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
const TYPES: [SubscriptionType; 4] = [
    SubscriptionType::Exclusive,
    SubscriptionType::Shared,
    SubscriptionType::Failover,
    SubscriptionType::KeyShared,
];

/// A running broker with its three addresses and its data directory.
struct Node {
    broker: Broker,
    kafka: String,
    native: String,
    metrics: String,
    data: PathBuf,
}

fn start(dir: &Path, toml: &str) -> Node {
    let (broker, ready) = common::start_configured(dir, toml);
    let data = dir.join("data");
    Node {
        kafka: field(&ready, "kafka"),
        native: field(&ready, "native"),
        metrics: field(&ready, "metrics"),
        broker,
        data,
    }
}

/// A record as a test expects to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    key: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn seen(message: &Message) -> (String, Expected) {
    let headers = message
        .headers
        .iter()
        .map(|(k, v)| (utf8(k), v.as_deref().map(utf8)))
        .collect();
    let record = Expected {
        key: message.key.as_deref().map(utf8),
        headers,
    };
    (utf8(&message.value), record)
}

/// What the confluent client's `--keyed` producer sends as message `i`.
fn confluent_record(i: u64) -> (String, Expected) {
    let headers = vec![
        ("n".to_string(), Some(format!("h-{i}"))),
        ("empty".to_string(), Some(String::new())),
        ("null".to_string(), None),
    ];
    let key = Some(format!("k-{i}"));
    (format!("m-{i}"), Expected { key, headers })
}

/// Reads a reliable subscription of `kind` from the earliest offset until `expected` has
/// arrived, acknowledging everything, and checks every record's key and headers.
async fn consume_all(
    client: &Client,
    topic: &str,
    kind: SubscriptionType,
    expected: &BTreeMap<String, Expected>,
) {
    let name = format!("{kind:?}").to_lowercase();
    let mut consumer = client
        .consumer(topic, &name)
        .kind(kind)
        .mode(Mode::Reliable)
        .start(StartPosition::Earliest)
        .build()
        .await
        .unwrap();
    let mut got = BTreeMap::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    while got.len() < expected.len() {
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{topic}/{name}: {} of {}", got.len(), expected.len()))
            .unwrap();
        if matches!(
            kind,
            SubscriptionType::Exclusive | SubscriptionType::Failover
        ) {
            let previous = last_offset.insert(message.partition, message.offset);
            assert!(
                previous.is_none_or(|p| p < message.offset),
                "{topic}/{name} order"
            );
        }
        consumer.ack(&message).unwrap();
        let (value, record) = seen(&message);
        assert_eq!(
            expected.get(&value),
            Some(&record),
            "{topic}/{name}: {value}"
        );
        assert!(
            got.insert(value, message.offset).is_none(),
            "{topic}/{name}"
        );
    }
    consumer.close().await.unwrap();
}

fn metric(node: &Node, prefix: &str) -> f64 {
    sample(&http_get(&node.metrics, "/metrics"), prefix)
}

#[tokio::test]
async fn kafka_producers_compressed_batches_reach_every_native_subscription_type() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "shards = 2\n");
    let client = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    for codec in CODECS {
        let topic = format!("from-kafka-{codec}");
        let acks = confluent(&[
            "produce",
            "--bootstrap",
            &node.kafka,
            "--topic",
            &topic,
            "--create",
            "--partitions",
            "2",
            "--count",
            "200",
            "--keyed",
            "--linger-ms",
            "20",
            "--compression",
            codec.name(),
        ]);
        assert_eq!(acks.lines().filter(|l| l.starts_with("ack ")).count(), 200);
        let mut expected: BTreeMap<String, Expected> = (0..200).map(confluent_record).collect();
        let lines: String = (0..50).map(|i| format!("kk-{i}:kv-{i}\n")).collect();
        let (ok, _, err) = kcat(
            &node.kafka,
            &[
                "-P",
                "-t",
                &topic,
                "-z",
                codec.name(),
                "-K:",
                "-H",
                "src=kcat",
            ],
            Some(lines.as_bytes()),
        );
        assert!(ok, "kcat -z {codec}: {err}");
        for i in 0..50 {
            let headers = vec![("src".to_string(), Some("kcat".to_string()))];
            let record = Expected {
                key: Some(format!("kk-{i}")),
                headers,
            };
            expected.insert(format!("kv-{i}"), record);
        }
        for kind in TYPES {
            consume_all(&client, &topic, kind, &expected).await;
        }
        let produced = metric(
            &node,
            &format!("oxbow_produced_batches_total{{codec=\"{codec}\""),
        );
        assert!(produced >= 2.0, "{codec}: the clients compressed nothing");
    }
    // Each compressed batch was decompressed once, for the first of its four subscriptions.
    let compressed: f64 = CODECS
        .iter()
        .map(|c| {
            metric(
                &node,
                &format!("oxbow_produced_batches_total{{codec=\"{c}\""),
            )
        })
        .sum();
    assert_eq!(
        metric(&node, "oxbow_subscription_decoded_batches_total"),
        compressed
    );
    let hits = metric(&node, "oxbow_subscription_decoded_batch_hits_total");
    eprintln!("{compressed} compressed batches, decoded once each; {hits} reads from the cache");
    assert!(hits >= 3.0 * compressed);
}

#[tokio::test]
async fn native_compressed_batches_are_read_by_kafka_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "shards = 2\n");
    let client = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    for codec in CODECS {
        let topic = format!("from-native-{codec}");
        client.create_topic(&topic, 2).await.unwrap();
        let producer = client
            .producer(&topic)
            .acks(Acks::All)
            .linger(Duration::from_millis(5))
            .compression(codec, None)
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..300u64 {
            let (value, record) = confluent_record(i);
            let header = record.headers[0].1.clone().unwrap();
            let headers = [
                ("n", Some(header.as_bytes())),
                ("empty", Some(&b""[..])),
                ("null", None),
            ];
            let key = record.key.unwrap();
            let sent = producer
                .send_with_headers(Some(key.as_bytes()), value.as_bytes(), &headers)
                .await
                .unwrap();
            pending.push(sent);
        }
        producer.flush().await.unwrap();
        for sent in pending {
            assert!(sent.await.unwrap().offset.is_some());
        }
        let out = confluent(&[
            "consume",
            "--bootstrap",
            &node.kafka,
            "--topic",
            &topic,
            "--partitions",
            "2",
            "--expect",
            "300",
            "--json",
        ]);
        let mut got = BTreeMap::new();
        for line in out.lines() {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            let value = json["value"].as_str().unwrap().to_string();
            let headers = json["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().into(),
                        h[1].as_str().map(String::from),
                    )
                })
                .collect();
            let key = json["key"].as_str().map(String::from);
            got.insert(value, Expected { key, headers });
        }
        let expected: BTreeMap<String, Expected> = (0..300).map(confluent_record).collect();
        assert_eq!(got, expected, "{codec}: confluent-kafka read back");
        let (ok, out, err) = kcat(
            &node.kafka,
            &["-C", "-t", &topic, "-e", "-q", "-f", "%k=%s\n"],
            None,
        );
        assert!(ok, "{err}");
        let mut lines: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        let mut want: Vec<String> = (0..300).map(|i| format!("k-{i}=m-{i}")).collect();
        want.sort();
        assert_eq!(lines, want, "{codec}: kcat read back");
        let produced = metric(
            &node,
            &format!("oxbow_produced_batches_total{{codec=\"{codec}\""),
        );
        assert!(produced >= 2.0, "{codec}: the producer compressed nothing");
    }
    // The CLI: compressed produce with headers, consume printing them.
    let oxbow = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .args(args)
            .args(["--broker", &node.native])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "oxbow {args:?}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    client.create_topic("cli", 1).await.unwrap();
    let zstd_batches = "oxbow_produced_batches_total{codec=\"zstd\"";
    let before = metric(&node, zstd_batches);
    let produce = [
        "produce",
        "--topic",
        "cli",
        "--compression",
        "zstd",
        "--compression-level",
        "9",
    ];
    let headers = ["--header", "src=cli", "--header", "flag"];
    oxbow(&[&produce[..], &headers[..]].concat(), "one\ntwo\n");
    let printed = oxbow(
        &[
            "consume",
            "--topic",
            "cli",
            "--subscription",
            "s",
            "--count",
            "2",
            "--print-headers",
        ],
        "",
    );
    assert_eq!(printed, "src=cli,flag\tone\nsrc=cli,flag\ttwo\n");
    assert_eq!(
        metric(&node, zstd_batches),
        before + 1.0,
        "one compressed batch"
    );
}

/// The frames of a segment file: (position, length, base offset) of each.
fn frames(segment: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 32 <= segment.len() && &segment[at..at + 4] == b"OXBF" {
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(segment[at + 12..at + 20].try_into().unwrap());
        out.push((at, len, base));
        at += len;
    }
    out
}

/// Damages the compressed records of the batch at `base` in a stopped broker's segment and
/// makes both checksums (the producer's CRC-32C and the frame's CRC-32) agree again, as a
/// buggy producer or a silent disk error followed by a faulty rewrite could: only decoding
/// the records can tell.
fn corrupt_compressed_batch(segment: &Path, base: u64) {
    let mut bytes = std::fs::read(segment).unwrap();
    let (at, len, _) = frames(&bytes)
        .into_iter()
        .find(|&(_, _, b)| b == base)
        .expect("the batch is in the segment");
    let batch = at + 32;
    assert_eq!(bytes[batch + 22] & 0x7, 4, "the batch is zstd");
    // The zstd frame's magic number: no decoder can take it for a zstd frame any more.
    bytes[batch + 61..batch + 65].copy_from_slice(b"JUNK");
    let crc = crc32c::crc32c(&bytes[batch + 21..at + len]);
    bytes[batch + 17..batch + 21].copy_from_slice(&crc.to_be_bytes());
    let crc = crc32fast::hash(&bytes[at + 12..at + len]);
    bytes[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(segment, bytes).unwrap();
}

/// Sends `count` messages `"m{i}"` from `first` as one batch compressed with `codec`.
async fn one_batch(client: &Client, topic: &str, codec: Codec, first: u64, count: u64) {
    let producer = client
        .producer(topic)
        .linger(Duration::from_secs(60))
        .compression(codec, None)
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in first..first + count {
        pending.push(
            producer
                .send(None, format!("m{i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    for (i, sent) in (first..).zip(pending) {
        assert_eq!(sent.await.unwrap().offset, Some(i));
    }
}

/// Receives (acknowledging) until `n` messages arrived and, if `until_blocked`, the partition
/// was reported blocked; returns the offsets and the report.
async fn take(
    consumer: &mut oxbow_client::Consumer,
    n: usize,
    until_blocked: bool,
) -> (Vec<u64>, Option<ClientError>) {
    let mut offsets = Vec::new();
    let mut blocked = None;
    while offsets.len() < n || (until_blocked && blocked.is_none()) {
        match tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("stuck after {offsets:?}"))
        {
            Ok(message) => {
                consumer.ack(&message).unwrap();
                offsets.push(message.offset);
            }
            Err(e @ ClientError::DeliveryBlocked { .. }) => blocked = Some(e),
            Err(e) => panic!("{e}"),
        }
    }
    (offsets, blocked)
}

#[tokio::test]
async fn a_corrupt_compressed_batch_stops_reliable_subscriptions_until_an_operator_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "shards = 1\n[subscriptions]\ncursor_persist_interval_ms = 10\n";
    let mut node = start(dir.path(), toml);
    let client = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    client.create_topic("fragile", 1).await.unwrap();
    one_batch(&client, "fragile", Codec::None, 0, 10).await;
    one_batch(&client, "fragile", Codec::Zstd, 10, 10).await;
    one_batch(&client, "fragile", Codec::None, 20, 10).await;
    drop(client);
    assert!(node.broker.signal(libc::SIGTERM).success());
    corrupt_compressed_batch(&node.data.join("fragile/0/00000000000000000000.log"), 10);

    let mut node = start(dir.path(), toml);
    let client = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    let subscribe = |name: &'static str, kind, mode| {
        client
            .consumer("fragile", name)
            .kind(kind)
            .mode(mode)
            .start(StartPosition::Earliest)
            .build()
    };
    let mut exclusive = subscribe("exclusive", SubscriptionType::Exclusive, Mode::Reliable)
        .await
        .unwrap();
    let mut shared = subscribe("shared", SubscriptionType::Shared, Mode::Reliable)
        .await
        .unwrap();
    let mut at_most_once = subscribe("nr", SubscriptionType::Shared, Mode::NonReliable)
        .await
        .unwrap();
    for consumer in [&mut exclusive, &mut shared] {
        let (offsets, blocked) = take(consumer, 10, true).await;
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        match blocked {
            Some(ClientError::DeliveryBlocked {
                partition: 0,
                base_offset: 10,
                last_offset: 19,
                reason,
            }) => assert!(reason.contains("zstd"), "{reason}"),
            other => panic!("expected a blocked partition, got {other:?}"),
        }
    }
    // A non-reliable subscription drops the batch and goes on.
    let (offsets, blocked) = take(&mut at_most_once, 20, false).await;
    assert!(blocked.is_none());
    assert_eq!(offsets, (0..10).chain(20..30).collect::<Vec<_>>());
    // The log grows; the reliable cursors stay in front of the batch and nothing passes it.
    let appended = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    one_batch(&appended, "fragile", Codec::Lz4, 30, 10).await;
    let listed = client.list_subscriptions("fragile").await.unwrap();
    for name in ["exclusive", "shared"] {
        let info = listed.iter().find(|s| s.name == name).unwrap();
        assert_eq!((info.cursor, info.blocked), (10, Some((10, 19))), "{name}");
    }
    let nr = listed.iter().find(|s| s.name == "nr").unwrap();
    assert_eq!(nr.dropped, 10);
    let blocked_metric =
        "oxbow_subscription_blocked{topic=\"fragile\",partition=\"0\",subscription=\"exclusive\"";
    assert_eq!(metric(&node, blocked_metric), 1.0);
    // Still stopped after a restart: the cursor on disk never passed the batch.
    drop((exclusive, shared, at_most_once, client, appended));
    assert!(node.broker.signal(libc::SIGTERM).success());
    let node = start(dir.path(), toml);
    let client = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    let mut exclusive = subscribe_again(&client, "exclusive", SubscriptionType::Exclusive).await;
    let mut shared = subscribe_again(&client, "shared", SubscriptionType::Shared).await;
    for consumer in [&mut exclusive, &mut shared] {
        let (offsets, blocked) = take(consumer, 0, true).await;
        assert!(offsets.is_empty() && blocked.is_some(), "{offsets:?}");
    }

    // Only the batch a subscription is stopped at can be skipped.
    let skip = |offset: &str| {
        Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .args([
                "subscription",
                "skip",
                "--topic",
                "fragile",
                "--partition",
                "0",
            ])
            .args(["--offset", offset, "--broker", &node.native])
            .output()
            .unwrap()
    };
    let refused = skip("25");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not in the batch"));
    let skipped = skip("15");
    let said = String::from_utf8_lossy(&skipped.stdout).into_owned();
    assert!(
        skipped.status.success(),
        "{}",
        String::from_utf8_lossy(&skipped.stderr)
    );
    assert!(
        said.contains("skipped offsets 10..=19") && said.contains("exclusive"),
        "{said}"
    );
    assert!(said.contains("shared"), "{said}");
    for consumer in [&mut exclusive, &mut shared] {
        let (offsets, blocked) = take(consumer, 20, false).await;
        assert!(blocked.is_none());
        assert_eq!(offsets, (20..40).collect::<Vec<_>>());
    }
    let listed = client.list_subscriptions("fragile").await.unwrap();
    let info = listed.iter().find(|s| s.name == "exclusive").unwrap();
    assert_eq!((info.blocked, &info.skipped[..]), (None, &[(10, 19)][..]));
}

async fn subscribe_again(
    client: &Client,
    name: &str,
    kind: SubscriptionType,
) -> oxbow_client::Consumer {
    client
        .consumer("fragile", name)
        .kind(kind)
        .mode(Mode::Reliable)
        .build()
        .await
        .unwrap()
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn decompression_bombs_are_refused_at_produce_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "batch_decompressed_bytes_max = 2097152\n");
    let client = Client::builder()
        .broker(&node.native)
        .connect()
        .await
        .unwrap();
    client.create_topic("bombs", 1).await.unwrap();
    let pid = node.broker.child.id();
    let before = peak_rss_bytes(pid);
    // 64 MiB of zeros in at most a few MiB, per codec and per protocol.
    let zeros = vec![0u8; 64 << 20];
    for codec in CODECS {
        let producer = client
            .producer("bombs")
            .compression(codec, None)
            .unwrap()
            .build()
            .await
            .unwrap();
        let refused = producer
            .send(None, &zeros)
            .await
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some(ErrorCode::TooLarge),
            "{codec}: {refused}"
        );
        assert!(
            refused.to_string().contains("batch_decompressed_bytes_max"),
            "{refused}"
        );

        let mut bomb = oxbow_core::BatchBuilder::new(0).compression(codec, None);
        bomb.push(None, Some(&zeros), 0);
        let mut stream = std::net::TcpStream::connect(&node.kafka).unwrap();
        use std::io::Write;
        stream
            .write_all(&common::kafka_produce_request(1, "bombs", bomb.build()))
            .unwrap();
        let (_, partition) = common::kafka_produce_response(&mut stream);
        assert_eq!(partition.error_code, 10, "{codec}: MESSAGE_TOO_LARGE");
        let message = partition
            .error_message
            .map(|m| m.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("batch_decompressed_bytes_max"),
            "{message}"
        );
    }
    let grown = peak_rss_bytes(pid).saturating_sub(before);
    eprintln!("8 bombs of 64 MiB refused; the broker's peak RSS grew by {grown} bytes");
    assert!(
        grown < 64 << 20,
        "the broker's peak memory grew by {grown} bytes"
    );
    // Nothing was stored, and ordinary batches still go through.
    one_batch(&client, "bombs", Codec::Lz4, 0, 5).await;
    let partitions = client.describe_topic("bombs").await.unwrap();
    assert_eq!((partitions[0].log_start, partitions[0].log_end), (0, 5));
}
