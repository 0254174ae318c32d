//! Catch-up readers against the real broker: what they consume comes from the disk once,
//! through the shard's read cache, measured as the kernel counts it (`/proc/<pid>/io`), over
//! both protocols and with several readers of one partition at once.

mod common;

use common::{field, sample, Broker};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// 96 MiB of 1 KiB messages: three times the read cache, far past the tail cache.
const MESSAGES: u64 = 96 * 1024;
const TOPIC: &str = "catch-up";
/// One shard, so the budget below is the node's; the tail cache holds almost nothing.
const CONFIG: &str = "shards = 1\n\
    [log]\nflush = \"never\"\ntail_cache_bytes_max = 1048576\n\
    [read_cache]\nbytes_max = 33554432\nblock_bytes = 1048576\nread_ahead_blocks = 4\n";

fn start(dir: &Path) -> (Broker, String, String, String) {
    let config = dir.join("oxbow.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.join("data");
    let mut broker = Broker::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let ready = broker.wait_for("oxbow ready");
    let metrics = field(&ready, "metrics");
    (
        broker,
        field(&ready, "kafka"),
        field(&ready, "native"),
        metrics,
    )
}

/// Bytes the process has made the block layer read for it (reads of the page cache and of
/// the read cache do not count).
fn disk_read_bytes(broker: &Broker) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{}/io", broker.child.id())).unwrap();
    let line = io.lines().find(|l| l.starts_with("read_bytes:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn bench(protocol: &str, broker: &str, json: &Path, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args([
            "bench",
            "--protocol",
            protocol,
            "--broker",
            broker,
            "--topic",
            TOPIC,
        ])
        .args([
            "--warmup",
            "0s",
            "--duration",
            "120s",
            "--drain-timeout",
            "2s",
        ])
        .args(["--quiet", "--json", json.to_str().unwrap()])
        .args(flags)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the readers to the end; the messages each consumed.
fn consumed(readers: Vec<(Child, std::path::PathBuf)>) -> Vec<u64> {
    readers
        .into_iter()
        .map(|(mut child, json)| {
            assert!(child.wait().unwrap().success(), "oxbow bench failed");
            let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
            report["consumed"]["messages"].as_u64().unwrap()
        })
        .collect()
}

fn read_from_earliest(
    protocol: &str,
    addr: &str,
    dir: &Path,
    count: usize,
) -> Vec<(Child, std::path::PathBuf)> {
    (0..count)
        .map(|i| {
            let json = dir.join(format!("{protocol}-{i}.json"));
            (bench(protocol, addr, &json, &consume_flags()), json)
        })
        .collect()
}

fn consume_flags() -> Vec<&'static str> {
    vec!["--workload", "consume", "--from", "earliest"]
}

fn topic_bytes(dir: &Path) -> u64 {
    let partition = dir.join("data").join(TOPIC).join("0");
    std::fs::read_dir(partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn catch_up_readers_read_each_byte_from_disk_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, kafka, native, metrics) = start(dir.path());
    let messages = MESSAGES.to_string();
    let fill = dir.path().join("fill.json");
    let flags = [
        "--workload",
        "produce",
        "--keep-topic",
        "--messages",
        &messages,
    ];
    let mut producer = bench("native", &native, &fill, &flags);
    assert!(producer.wait().unwrap().success(), "produce failed");
    let stored = topic_bytes(dir.path());
    assert!(stored >= MESSAGES * 1024, "{stored} bytes stored");

    // One reader at a time, each from the start: every byte from the disk once (the old read
    // path read each byte twice). The floor shows the kernel counts this process's reads here.
    for (protocol, addr) in [("kafka", &kafka), ("native", &native)] {
        let before = disk_read_bytes(&broker);
        let got = consumed(read_from_earliest(protocol, addr, dir.path(), 1));
        let read = disk_read_bytes(&broker) - before;
        assert_eq!(got, vec![MESSAGES], "{protocol} reader");
        assert!(
            read as f64 <= 1.05 * stored as f64 && read as f64 >= 0.5 * stored as f64,
            "{protocol}: read {read} bytes from disk for {stored} bytes consumed"
        );
    }
    let held = sample(
        &common::http_get(&metrics, "/metrics"),
        "oxbow_read_cache_bytes ",
    );
    assert!(
        held > 0.0 && held <= 33_554_432.0,
        "cache holds {held} bytes"
    );

    // Four readers at once, from a cold start: they share what the first one reads. Readers
    // that drift further apart than the cache read a block twice; without sharing it would be
    // four times.
    assert!(broker.signal(libc::SIGTERM).success());
    let (broker, kafka, _, _) = start(dir.path());
    let before = disk_read_bytes(&broker);
    let got = consumed(read_from_earliest("kafka", &kafka, dir.path(), 4));
    let read = disk_read_bytes(&broker) - before;
    assert_eq!(got, vec![MESSAGES; 4]);
    assert!(
        read as f64 <= 1.5 * stored as f64,
        "4 readers: read {read} bytes from disk for {stored} bytes stored"
    );
}
