//! ListOffsets by timestamp through confluent-kafka's `offsets_for_times`: the answer is the
//! first record at or after the time, also inside a batch of many records, across segments,
//! before and after a restart (Kafka's behaviour, not the first offset of the batch).
//! Needs python3 with confluent-kafka (scripts/test installs it).

mod common;

use common::start_broker;
use std::process::Command;

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);
const TOPIC: &str = "timed";
const RECORDS: i64 = 8_000;
/// Milliseconds between two records' timestamps.
const STEP: i64 = 10;

fn client(args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// What the broker answers for each of `times`.
fn lookup(addr: &str, times: &[i64]) -> Vec<i64> {
    let mut args = vec!["offsets-for-times", "--bootstrap", addr, "--topic", TOPIC];
    let times: Vec<String> = times.iter().map(i64::to_string).collect();
    for at in &times {
        args.extend(["--at", at]);
    }
    let out = client(&args);
    (out.lines())
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn offsets_for_times_land_on_the_first_record_at_or_after_the_time_inside_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(dir.path(), 2);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - RECORDS * STEP;
    // One partition, many records per batch (linger), segments of 64 KiB: several rolls.
    let (count, base_arg) = (RECORDS.to_string(), base.to_string());
    client(&[
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        TOPIC,
        "--create",
        "--config",
        "max.message.bytes=32768",
        "--config",
        "segment.bytes=65536",
        "--batch-bytes",
        "30000",
        "--count",
        &count,
        "--linger-ms",
        "50",
        "--timestamp-base",
        &base_arg,
        "--timestamp-step",
        &STEP.to_string(),
    ]);
    // Record i has timestamp base + i*STEP and offset i.
    let mut times = Vec::new();
    let mut expected = Vec::new();
    for i in [0, 1, 7, 333, 999, 4_567, RECORDS - 1] {
        times.extend([base + i * STEP, base + i * STEP + STEP / 2]);
        expected.extend([i, (i + 1).min(RECORDS)]);
    }
    times.push(base + RECORDS * STEP);
    expected.push(-1);
    expected = expected
        .into_iter()
        .map(|o| if o == RECORDS { -1 } else { o })
        .collect();
    assert_eq!(lookup(&addr, &times), expected);
    let segments = common::segment_count(&dir.path().join(TOPIC).join("0"));
    assert!(
        segments > 1,
        "the records span several segments ({segments})"
    );

    broker.signal(libc::SIGTERM);
    let (_broker, addr) = start_broker(dir.path(), 2);
    assert_eq!(lookup(&addr, &times), expected, "after a restart");
}
