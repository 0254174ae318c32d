//! Compacted topics through confluent-kafka: a keyed topic with many updates and tombstones
//! compacts while producers write, readers from offset 0 get the newest value of every key at
//! the offset it was acknowledged with, a kill -9 while the cleaner runs loses none of them,
//! and records without a key are refused (INVALID_RECORD). Needs python3 with confluent-kafka
//! (scripts/test installs it).

mod common;

use common::start_configured;
use common::Broker;
use common::{confluent, field, http_get, kafka_produce_request, kafka_produce_response};
use oxbow_core::BatchBuilder;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;

const TOPIC: &str = "latest";
const KEYS: usize = 40;

/// A cleaner that looks every 50 ms, slowed to 1 MiB/s so that a kill lands inside a pass;
/// the topic compacts once 1% of it is dirty.
const CONFIG: &str = "[compaction]\ncheck_interval_ms = 50\nio_bytes_per_sec = 1048576\n";

/// Produces messages `base..base + count` (keys k-<i mod KEYS>, every 9th a tombstone) and
/// returns the acknowledged ones: offset → value ("tomb-<key>" for a tombstone).
fn produce(addr: &str, base: usize, count: usize, create: bool) -> BTreeMap<i64, String> {
    let (base, count, keys) = (base.to_string(), count.to_string(), KEYS.to_string());
    let mut args = vec![
        "produce",
        "--bootstrap",
        addr,
        "--topic",
        TOPIC,
        "--base",
        &base,
        "--count",
        &count,
        "--keys",
        &keys,
        "--tombstone-every",
        "9",
        "--batch-bytes",
        "4000",
    ];
    if create {
        args.extend(["--create", "--config", "cleanup.policy=compact"]);
        args.extend(["--config", "segment.bytes=65536"]);
        args.extend(["--config", "max.message.bytes=32768"]);
        args.extend(["--config", "min.cleanable.dirty.ratio=0.01"]);
    }
    let out = confluent(&args);
    (out.lines())
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            (parts[2].parse().unwrap(), parts[3].to_string())
        })
        .collect()
}

/// The key of an acknowledged value.
fn key_of(value: &str) -> String {
    match value.strip_prefix("tomb-") {
        Some(key) => key.to_string(),
        None => format!("k-{}", value[2..].parse::<usize>().unwrap() % KEYS),
    }
}

/// Everything a reader from offset 0 gets: offset → value ("tomb-<key>" for a tombstone).
fn read_all(addr: &str) -> BTreeMap<i64, String> {
    let out = confluent(&[
        "consume",
        "--bootstrap",
        addr,
        "--topic",
        TOPIC,
        "--expect",
        "-1",
        "--json",
    ]);
    (out.lines())
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = json["key"].as_str().unwrap();
            let value = match json["value"].as_str() {
                Some(value) => value.to_string(),
                None => format!("tomb-{key}"),
            };
            assert_eq!(key_of(&value), key, "{line}");
            (json["offset"].as_i64().unwrap(), value)
        })
        .collect()
}

/// What the reader got is what was acknowledged, each at its offset, and holds the newest
/// record of every key.
fn check(read: &BTreeMap<i64, String>, acked: &BTreeMap<i64, String>) {
    for (offset, value) in read {
        assert_eq!(acked.get(offset), Some(value), "offset {offset}");
    }
    let mut newest = BTreeMap::new();
    for (offset, value) in acked {
        newest.insert(key_of(value), (*offset, value));
    }
    for (key, (offset, value)) in newest {
        assert_eq!(
            read.get(&offset),
            Some(value),
            "the newest record of {key} (offset {offset}) is gone"
        );
    }
}

fn wait_for_compaction(broker: &mut Broker) -> u64 {
    let line = broker.wait_for("records_removed=");
    field(&line, "records_removed").parse().unwrap()
}

#[test]
fn a_compacted_topic_keeps_the_newest_value_of_every_key_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, ready) = start_configured(dir.path(), CONFIG);
    let addr = field(&ready, "kafka");
    let mut acked = produce(&addr, 0, 6_000, true);
    assert!(wait_for_compaction(&mut broker) > 0);
    // Updates and a reader from offset 0 go on together while the cleaner runs: the reader
    // gets acknowledged records only, each at its offset.
    let (more, read) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_all(&addr));
        (produce(&addr, 6_000, 6_000, false), reader.join().unwrap())
    });
    acked.extend(more);
    for (offset, value) in &read {
        assert_eq!(acked.get(offset), Some(value), "offset {offset}");
    }
    check(&read_all(&addr), &acked);
    assert!(wait_for_compaction(&mut broker) > 0);

    // More updates, and the broker is killed as a pass over them begins (paced, it runs for a
    // while). Lines of earlier passes are taken in first, so the kill waits for a new one.
    broker.log_so_far();
    acked.extend(produce(&addr, 12_000, 6_000, false));
    broker.wait_for("compacting");
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    drop(broker);

    let (mut broker, ready) = start_configured(dir.path(), CONFIG);
    let addr = field(&ready, "kafka");
    let read = read_all(&addr);
    check(&read, &acked);
    assert!(
        read.len() * 4 < acked.len(),
        "{} of {} records left: the log did not compact",
        read.len(),
        acked.len()
    );
    // Records without a key are refused, each named (KIP-467), and nothing of them is stored.
    let mut batch = BatchBuilder::new(0);
    for key in [Some(&b"k-1"[..]), None, Some(b"k-2"), None] {
        batch.push(key, Some(b"v"), 0);
    }
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(&kafka_produce_request(1, TOPIC, batch.build()))
        .unwrap();
    let (_, refused) = kafka_produce_response(&mut stream);
    assert_eq!(refused.error_code, 87, "INVALID_RECORD: {refused:?}");
    let indexes: Vec<i32> = refused
        .record_errors
        .iter()
        .map(|e| e.batch_index)
        .collect();
    assert_eq!(indexes, [1, 3]);
    let why = refused.record_errors[0].batch_index_error_message.as_ref();
    assert!(why.unwrap().contains("without key"), "{refused:?}");
    let keyless = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/confluent_client.py"
        ))
        .args([
            "produce",
            "--bootstrap",
            &addr,
            "--topic",
            TOPIC,
            "--count",
            "3",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&keyless.stderr);
    assert!(!keyless.status.success(), "keyless records were accepted");
    assert!(stderr.contains("INVALID_RECORD"), "{stderr}");
    check(&read_all(&addr), &acked);
    // More updates are cleaned like the others, and the metrics count the passes.
    acked.extend(produce(&addr, 18_000, 3_000, false));
    let removed = wait_for_compaction(&mut broker);
    check(&read_all(&addr), &acked);
    let metrics = http_get(&field(&ready, "metrics"), "/metrics");
    let counter = |name: &str| -> u64 {
        let line = (metrics.lines())
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(counter("oxbow_compaction_passes_total") >= 1);
    assert!(counter("oxbow_compaction_removed_records_total") >= removed);
    assert!(counter("oxbow_compaction_removed_bytes_total") > 0);
    assert_eq!(counter("oxbow_compaction_failures_total"), 0);
    broker.signal(libc::SIGTERM);
}
