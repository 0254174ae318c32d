//! confluent-kafka (librdkafka 2.x, Python) against the real broker: producers with acks 0, 1
//! and all, and kill -9 of the broker under an acks=all producer with every acknowledged
//! message checked after restart. Needs python3 with confluent-kafka (scripts/test installs it).

mod common;

use common::start_broker;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);
const PARTITIONS: u32 = 4;

/// (partition, offset, value) lines a client printed with `prefix`.
fn parse(output: &str, prefix: &str) -> Vec<(u32, i64, String)> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| {
            let mut parts = l.split(' ');
            (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect()
}

fn client(args: &[&str]) -> (bool, String) {
    let output = Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("ModuleNotFoundError"), "{stderr}");
    let mut out = String::from_utf8(output.stdout).unwrap();
    if !output.status.success() {
        // The client's own error lines, so a failure says why.
        out.push_str(&stderr);
    }
    (output.status.success(), out)
}

fn read_all(addr: &str, topic: &str) -> BTreeMap<(u32, i64), String> {
    read_all_partitions(addr, topic, "4")
}

/// Asserts the messages named in `consumed` are exactly `expected`, each once.
fn assert_exactly(
    consumed: impl IntoIterator<Item = u64>,
    expected: std::ops::Range<u64>,
    what: &str,
) {
    let mut values: Vec<u64> = consumed.into_iter().collect();
    values.sort_unstable();
    assert_eq!(values, expected.collect::<Vec<_>>(), "{what}");
}

fn index_of(value: &str) -> u64 {
    value.strip_prefix("m-").unwrap().parse().unwrap()
}

/// Every partition holds its messages in produce order at offsets 0, 1, 2, ...
fn assert_in_order_per_partition(stored: &BTreeMap<(u32, i64), String>) {
    for p in 0..PARTITIONS {
        let values: Vec<u64> = stored
            .range((p, 0)..(p + 1, 0))
            .map(|(_, v)| index_of(v))
            .collect();
        let offsets: Vec<i64> = stored
            .range((p, 0)..(p + 1, 0))
            .map(|((_, o), _)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {p} offsets"
        );
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
}

#[test]
fn producers_with_acks_0_1_all_and_idempotence_deliver_every_message() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(data.path(), 2);
    for (acks, idempotent) in [("0", false), ("1", false), ("all", false), ("all", true)] {
        let topic = format!("acks-{acks}-{idempotent}");
        let mut args = vec![
            "produce",
            "--bootstrap",
            &addr,
            "--topic",
            &topic,
            "--partitions",
            "4",
        ];
        args.extend(["--create", "--count", "2000", "--acks", acks]);
        if idempotent {
            args.push("--idempotent");
        }
        let (ok, out) = client(&args);
        assert!(ok, "acks={acks} produce failed:\n{out}");
        let acked = parse(&out, "ack ");
        assert_eq!(acked.len(), 2000, "acks={acks}: delivery reports");
        let stored = read_all(&addr, &topic);
        assert_eq!(stored.len(), 2000, "acks={acks}: stored messages");
        assert_exactly(
            stored.values().map(|v| index_of(v)),
            0..2000,
            &format!("acks={acks}: each message exactly once"),
        );
        assert_in_order_per_partition(&stored);
        if acks != "0" {
            for (p, offset, value) in acked {
                assert_eq!(
                    stored.get(&(p, offset)),
                    Some(&value),
                    "acks={acks}: ack points elsewhere"
                );
            }
        }
    }
}

#[test]
fn acknowledged_messages_survive_kill_9_of_the_broker() {
    let data = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(data.path(), 2);
    let mut producer = spawn_client(&[
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "durable",
        "--partitions",
        "4",
        "--create",
        "--count",
        "1000000",
        "--acks",
        "all",
        "--timeout-ms",
        "5000",
    ]);
    let kill_after = 500 + fastrand::usize(..3000);
    let mut lines = BufReader::new(producer.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < kill_after {
        let line = lines
            .next()
            .expect("the producer stopped before the kill")
            .unwrap();
        acked.extend(parse(&line, "ack "));
    }
    broker.child.kill().unwrap(); // SIGKILL, mid-stream
    broker.child.wait().unwrap();
    let _ = producer.kill();
    let _ = producer.wait();
    // Acknowledgements printed before the kill are still in the pipe.
    acked.extend(lines.map_while(Result::ok).flat_map(|l| parse(&l, "ack ")));

    let (_broker, addr) = start_broker(data.path(), 2);
    let stored = read_all(&addr, "durable");
    for (p, offset, value) in &acked {
        assert_eq!(
            stored.get(&(*p, *offset)),
            Some(value),
            "acknowledged {value} at {p}/{offset} lost"
        );
    }
    assert_in_order_per_partition(&stored);
    println!(
        "{} acknowledged messages of {} stored survived kill -9",
        acked.len(),
        stored.len()
    );
}

fn group_member(addr: &str, group: &str, expect: usize) -> std::process::Child {
    let expect = expect.to_string();
    spawn_client(&[
        "group-consume",
        "--bootstrap",
        addr,
        "--topic",
        "grouped",
        "--partitions",
        "4",
        "--group",
        group,
        "--expect",
        &expect,
        "--delay-ms",
        "3",
        "--timeout-ms",
        "60000",
    ])
}

/// Starts the client with its output piped, for a test that reads it while it runs.
fn spawn_client(args: &[&str]) -> std::process::Child {
    Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with confluent-kafka (scripts/test installs it)")
}

#[test]
fn a_group_of_two_shares_a_topic_exactly_once_across_a_rebalance_and_resumes_from_commits() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(data.path(), 2);
    let produce = |base: &str, count: &str| {
        let (ok, out) = client(&[
            "produce",
            "--bootstrap",
            &addr,
            "--topic",
            "grouped",
            "--partitions",
            "4",
            "--base",
            base,
            "--count",
            count,
            "--acks",
            "all",
        ]);
        assert!(ok, "produce failed:\n{out}");
    };
    let (ok, _) = client(&[
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "grouped",
        "--partitions",
        "4",
        "--create",
    ]);
    assert!(ok);
    produce("0", "2000");
    // The first member takes all four partitions; once it is well under way a second member
    // joins, forcing a rebalance that splits them.
    let mut first = group_member(&addr, "g1", 2000);
    let mut first_lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let mut consumed: Vec<String> = Vec::new();
    while consumed.len() < 300 {
        consumed.push(
            first_lines
                .next()
                .expect("first member stopped early")
                .unwrap(),
        );
    }
    let second = group_member(&addr, "g1", 2000).wait_with_output().unwrap();
    consumed.extend(first_lines.map_while(Result::ok));
    first.wait().unwrap();
    let second_out = String::from_utf8(second.stdout).unwrap();
    let by_first = parse(&consumed.join("\n"), "msg ");
    let by_second = parse(&second_out, "msg ");
    assert!(
        !by_second.is_empty(),
        "the second member never got a partition: no rebalance"
    );
    assert_exactly(
        by_first
            .iter()
            .chain(&by_second)
            .map(|(_, _, v)| index_of(v)),
        0..2000,
        "every message exactly once between the two members",
    );

    // A new member of the same group starts from the committed offsets: it sees only new messages.
    produce("2000", "100");
    let third = group_member(&addr, "g1", 2100).wait_with_output().unwrap();
    let fresh = parse(&String::from_utf8(third.stdout).unwrap(), "msg ");
    assert_eq!(
        fresh.len(),
        100,
        "resumed member must read exactly the 100 new messages"
    );
    assert_exactly(
        fresh.iter().map(|(_, _, v)| index_of(v)),
        2000..2100,
        "resumed from the committed offsets",
    );
}

#[test]
fn kafka_python_default_producer_and_group_consumer() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(data.path(), 2);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/kafka_python_client.py"
    );
    let output = Command::new("python3")
        .args([script, &addr, "kp-topic", "2000"])
        .output()
        .expect("python3 with kafka-python (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("produced 2000") && stdout.contains("consumed 2000 unique 2000"),
        "{stdout}"
    );
}

#[test]
fn committed_group_offsets_survive_kill_9_of_the_broker() {
    let data = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(data.path(), 2);
    let mut args = vec![
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "grouped",
        "--partitions",
        "4",
    ];
    args.extend(["--create", "--count", "3000", "--acks", "all"]);
    let (ok, out) = client(&args);
    assert!(ok, "{out}");
    // A member prints a message only after its offset commit was acknowledged.
    let mut member = group_member(&addr, "durable-group", 3000);
    let mut lines = BufReader::new(member.stdout.take().unwrap()).lines();
    let mut committed: Vec<String> = Vec::new();
    let kill_after = 200 + fastrand::usize(..800);
    while committed.len() < kill_after {
        committed.push(lines.next().expect("member stopped early").unwrap());
    }
    broker.child.kill().unwrap(); // SIGKILL
    broker.child.wait().unwrap();
    let _ = member.kill();
    let _ = member.wait();
    committed.extend(lines.map_while(Result::ok));

    let (_broker, addr) = start_broker(data.path(), 2);
    let rest = group_member(&addr, "durable-group", 3000)
        .wait_with_output()
        .unwrap();
    let before = parse(&committed.join("\n"), "msg ");
    let after = parse(&String::from_utf8(rest.stdout).unwrap(), "msg ");
    assert_exactly(
        before.iter().chain(&after).map(|(_, _, v)| index_of(v)),
        0..3000,
        "after kill -9 the group resumes exactly at its acknowledged commits",
    );
}

#[test]
fn unknown_topics_get_unknown_topic_or_partition_when_auto_create_is_off() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr, dir) =
        common::start_broker_with_config(data.path(), "auto_create_topics = false\n");
    let listing = Command::new("kcat")
        .args(["-b", &addr, "-L", "-t", "missing"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains("Unknown topic or partition") || text.contains("0 topics"),
        "{text}"
    );
    let mut args = vec![
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "missing",
        "--partitions",
        "1",
    ];
    args.extend(["--count", "3", "--timeout-ms", "3000"]);
    let (ok, out) = client(&args);
    assert!(
        !ok && parse(&out, "ack ").is_empty(),
        "a produce to a missing topic must not be acknowledged"
    );
    assert!(!dir.join("missing").exists(), "no topic may be created");
}

#[test]
fn admin_client_describes_configs_and_deletes_topics() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(data.path(), 2);
    let produce = |count: &str, partitions: &str| {
        let mut args = vec![
            "produce",
            "--bootstrap",
            &addr,
            "--topic",
            "doomed",
            "--partitions",
            partitions,
        ];
        // Kafka clients name the cleanup policy; delete is the default.
        args.extend(["--create", "--config", "cleanup.policy=delete"]);
        args.extend(["--count", count, "--acks", "all"]);
        let (ok, out) = client(&args);
        assert!(ok, "{out}");
    };
    produce("100", "4");
    let (ok, out) = client(&[
        "admin",
        "--op",
        "describe",
        "--bootstrap",
        &addr,
        "--topic",
        "doomed",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("config segment.bytes 1073741824"), "{out}");
    assert!(out.contains("config cleanup.policy delete"), "{out}");
    let (ok, out) = client(&[
        "admin",
        "--op",
        "delete",
        "--bootstrap",
        &addr,
        "--topic",
        "doomed",
    ]);
    assert!(ok && out.contains("deleted"), "{out}");
    assert!(
        !data.path().join("doomed").exists(),
        "the topic's files must be gone"
    );
    let (ok, out) = client(&[
        "admin",
        "--op",
        "delete",
        "--bootstrap",
        &addr,
        "--topic",
        "doomed",
    ]);
    assert!(!ok, "deleting it twice must fail: {out}");
    // The name can be used again, from scratch.
    produce("10", "2");
    let stored = read_all_partitions(&addr, "doomed", "2");
    assert_eq!(stored.len(), 10);
}

fn read_all_partitions(addr: &str, topic: &str, partitions: &str) -> BTreeMap<(u32, i64), String> {
    let args = [
        "consume",
        "--bootstrap",
        addr,
        "--topic",
        topic,
        "--partitions",
        partitions,
        "--expect",
        "-1",
    ];
    let (ok, out) = client(&args);
    assert!(ok, "consume failed:\n{out}");
    parse(&out, "msg ")
        .into_iter()
        .map(|(p, o, v)| ((p, o), v))
        .collect()
}

#[test]
fn per_topic_configs_are_validated_stored_applied_and_survive_restart() {
    let data = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(data.path(), 2);
    let create = |topic: &str, configs: &[&str]| {
        let mut args = vec![
            "produce",
            "--bootstrap",
            &addr,
            "--topic",
            topic,
            "--partitions",
            "1",
            "--create",
        ];
        for config in configs {
            args.extend(["--config", config]);
        }
        client(&args)
    };
    let (ok, _) = create("bad-config", &["compression.type=zstd"]);
    assert!(!ok, "an unknown config must be refused");
    let (ok, _) = create("too-small", &["segment.bytes=1000"]);
    assert!(!ok, "an out-of-bounds config must be refused");
    let (ok, out) = create(
        "small-segments",
        &["segment.bytes=262144", "max.message.bytes=65536"],
    );
    assert!(ok, "{out}");
    let (ok, out) = client(&[
        "admin",
        "--op",
        "describe",
        "--bootstrap",
        &addr,
        "--topic",
        "small-segments",
    ]);
    assert!(ok && out.contains("config segment.bytes 262144"), "{out}");
    assert!(
        out.contains("config retention.ms 604800000"),
        "others keep the broker's value: {out}"
    );
    let segments = || common::segment_count(&data.path().join("small-segments").join("0"));
    let produce = |base: &str| {
        let mut args = vec![
            "produce",
            "--bootstrap",
            &addr,
            "--topic",
            "small-segments",
            "--partitions",
            "1",
        ];
        // Batches below the topic's max.message.bytes, however fast messages queue up.
        args.extend(["--base", base, "--count", "50000", "--acks", "all"]);
        args.extend(["--batch-bytes", "32768"]);
        let (ok, out) = client(&args);
        assert!(ok, "{out}");
    };
    produce("0");
    let before_restart = segments();
    assert!(
        before_restart >= 2,
        "256 KiB segments must roll: {before_restart} segment(s)"
    );
    assert!(broker.signal(libc::SIGTERM).success());
    let (_broker, addr) = start_broker(data.path(), 2);
    let mut args = vec![
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "small-segments",
        "--partitions",
        "1",
    ];
    args.extend(["--base", "50000", "--count", "50000", "--acks", "all"]);
    args.extend(["--batch-bytes", "32768"]);
    let (ok, out) = client(&args);
    assert!(ok, "{out}");
    assert!(
        segments() > before_restart,
        "the topic's segment size still applies after restart"
    );
}
