//! Kafka transactions through confluent-kafka (librdkafka): transactional producers commit and
//! abort interleaved transactions across partitions; a `read_committed` consumer sees exactly
//! the committed records, in each producer's order, a `read_uncommitted` one sees the aborted
//! ones too, and neither sees a marker. A transaction left open by kill -9 of the broker is
//! aborted after the restart (its timeout), never exposed; a zombie producer is fenced and
//! nothing it sends after that is stored. Needs python3 with confluent-kafka (scripts/test
//! installs it). Consume-transform-produce commits each input's output exactly once.

mod common;

use common::{confluent, field, kafka_call, oxbow_command, start_configured};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, GroupId, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const TOPIC: &str = "payments";
const PARTITIONS: &str = "3";

/// Open transactions are checked against their timeouts every 100 ms.
const CONFIG: &str = "[transactions]\ntimeout_check_interval_ms = 100\n";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/transactions.py");

fn transactions_script() -> Command {
    let mut command = Command::new("python3");
    command.arg(SCRIPT);
    command
}

/// The script's transactional producer writing to `topic` (of `partitions` partitions).
fn transactional_producer(kafka: &str, topic: &str, partitions: &str) -> Command {
    let mut command = transactions_script();
    command.args(["produce", "--bootstrap", kafka, "--topic", topic]);
    command.args(["--partitions", partitions]);
    command
}

fn create_topic(kafka: &str) {
    confluent(&[
        "produce",
        "--bootstrap",
        kafka,
        "--topic",
        TOPIC,
        "--partitions",
        PARTITIONS,
        "--create",
        "--count",
        "0",
    ]);
}

/// What a transactional producer run printed: value → "commit" or "abort" ("open" for the
/// transaction it left hanging).
fn outcomes(printed: &str) -> BTreeMap<String, String> {
    (printed.lines())
        .filter_map(|line| line.split_once(' '))
        .filter(|(outcome, _)| ["commit", "abort", "open"].contains(outcome))
        .map(|(outcome, value)| (value.to_string(), outcome.to_string()))
        .collect()
}

/// Every record a consumer with `isolation` reads from the beginning to the end ListOffsets
/// gives it: (partition, offset, value).
fn read(kafka: &str, isolation: &str) -> Vec<(u32, i64, String)> {
    read_topic(kafka, TOPIC, PARTITIONS, isolation)
}

/// [`read`] of any topic.
fn read_topic(
    kafka: &str,
    topic: &str,
    partitions: &str,
    isolation: &str,
) -> Vec<(u32, i64, String)> {
    let output = (transactions_script())
        .args(["consume", "--bootstrap", kafka, "--topic", topic])
        .args(["--partitions", partitions, "--isolation", isolation])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{isolation} read: {printed}{errors}"
    );
    (printed.lines())
        .filter_map(|line| line.strip_prefix("msg "))
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            (
                parts[0].parse().unwrap(),
                parts[1].parse().unwrap(),
                parts[2].to_string(),
            )
        })
        .collect()
}

fn values(read: &[(u32, i64, String)]) -> BTreeSet<String> {
    read.iter().map(|(_, _, v)| v.clone()).collect()
}

fn with_outcome(outcomes: &BTreeMap<String, String>, wanted: &[&str]) -> BTreeSet<String> {
    (outcomes.iter())
        .filter(|(_, outcome)| wanted.contains(&outcome.as_str()))
        .map(|(value, _)| value.clone())
        .collect()
}

/// Each producer's records of one partition are read in the order it sent them
/// ("<id>-<run>-t<n>-m<i>": by n, then i).
fn assert_in_producer_order(read: &[(u32, i64, String)]) {
    let mut last: BTreeMap<(u32, String), (u32, u32)> = BTreeMap::new();
    for (partition, _, value) in read {
        let mut parts = value.rsplitn(3, '-');
        let record: u32 = parts.next().unwrap()[1..].parse().unwrap();
        let transaction: u32 = parts.next().unwrap()[1..].parse().unwrap();
        let producer = parts.next().unwrap().to_string();
        let previous = last.insert((*partition, producer), (transaction, record));
        assert!(
            previous < Some((transaction, record)),
            "{value} out of order"
        );
    }
}

/// DescribeProducers on every partition of the topic: where each open transaction began, by
/// partition.
fn open_transaction_starts(kafka: &str) -> BTreeMap<i32, i64> {
    let partitions = (0..PARTITIONS.parse().unwrap()).collect();
    let topic = TopicRequest::default()
        .with_name(TopicName(TOPIC.to_string().into()))
        .with_partition_indexes(partitions);
    let request = DescribeProducersRequest::default().with_topics(vec![topic]);
    let mut stream = std::net::TcpStream::connect(kafka).unwrap();
    let response = kafka_call(&mut stream, 0, &request);
    (response.topics[0].partitions.iter())
        .flat_map(|p| {
            (p.active_producers.iter())
                .filter(|producer| producer.current_txn_start_offset >= 0)
                .map(|producer| (p.partition_index, producer.current_txn_start_offset))
        })
        .collect()
}

#[test]
fn committed_and_aborted_transactions_are_read_by_isolation_level() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, ready) = start_configured(dir.path(), CONFIG);
    let kafka = field(&ready, "kafka");
    create_topic(&kafka);
    // Three transactional producers at once, each committing about half its transactions.
    let producers: Vec<_> = (0..3)
        .map(|i| {
            transactional_producer(&kafka, TOPIC, PARTITIONS)
                .args(["--transactions", "15"])
                .args(["--id", &format!("p{i}"), "--seed", &i.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outcome = BTreeMap::new();
    for producer in producers {
        let output = producer.wait_with_output().unwrap();
        let printed = String::from_utf8(output.stdout).unwrap();
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{printed}{errors}");
        outcome.extend(outcomes(&printed));
    }
    let committed = with_outcome(&outcome, &["commit"]);
    let aborted = with_outcome(&outcome, &["abort"]);
    assert!(committed.len() > 20 && aborted.len() > 20, "{outcome:?}");

    let read_committed = read(&kafka, "read_committed");
    assert_eq!(values(&read_committed), committed);
    assert_eq!(read_committed.len(), committed.len(), "no record twice");
    assert_in_producer_order(&read_committed);
    let read_uncommitted = read(&kafka, "read_uncommitted");
    let everything: BTreeSet<String> = committed.union(&aborted).cloned().collect();
    assert_eq!(values(&read_uncommitted), everything);
    assert_in_producer_order(&read_uncommitted);
    // Markers take offsets but are never delivered: the offsets read skip them.
    let offsets: BTreeSet<(u32, i64)> = read_uncommitted.iter().map(|(p, o, _)| (*p, *o)).collect();
    let highest: i64 = offsets.iter().map(|(_, o)| *o).max().unwrap();
    assert!(
        highest as usize >= read_uncommitted.len() / 3,
        "markers hold offsets too"
    );
}

#[test]
fn a_transaction_open_at_kill_9_is_aborted_after_restart_and_a_zombie_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, ready) = start_configured(dir.path(), CONFIG);
    let kafka = field(&ready, "kafka");
    create_topic(&kafka);
    // Two committed transactions, then a third left open (its records sent and acknowledged).
    let mut hanging = transactional_producer(&kafka, TOPIC, PARTITIONS)
        .args(["--transactions", "3", "--hang", "2"])
        .args([
            "--id",
            "crash",
            "--commit-share",
            "1",
            "--transaction-timeout-ms",
            "3000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in BufReader::new(hanging.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let open = line.starts_with("open");
        printed.push_str(&line);
        printed.push('\n');
        if open {
            break;
        }
    }
    // Operators see it open: its id, its partitions, and where it began in each.
    let (ok, said) = oxbow_command(
        &[
            "transaction",
            "list",
            "--bootstrap",
            &kafka,
            "--state",
            "Ongoing",
            "--output",
            "json",
        ],
        None,
        "",
    );
    assert!(
        ok && said.contains("\"transactional_id\":\"crash\""),
        "{said}"
    );
    let (ok, said) = oxbow_command(
        &["transaction", "describe", "crash", "--bootstrap", &kafka],
        None,
        "",
    );
    assert!(ok && said.starts_with("crash (Ongoing)"), "{said}");
    let open_partitions: BTreeSet<String> = (said.lines().skip(1))
        .map(|line| line.trim().replace('\t', "-"))
        .collect();
    let open_starts = open_transaction_starts(&kafka);
    let expected: BTreeSet<String> = (open_starts.keys())
        .map(|p| format!("{TOPIC}-{p}"))
        .collect();
    assert_eq!(open_partitions, expected, "{said}");
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    hanging.kill().unwrap();
    hanging.wait().unwrap();
    let outcome = outcomes(&printed);
    let open = with_outcome(&outcome, &["open"]);
    assert!(!open.is_empty(), "{printed}");

    let (mut broker, ready) = start_configured(dir.path(), CONFIG);
    let kafka = field(&ready, "kafka");
    // Nobody asks about the id again: its timeout aborts the transaction.
    broker.wait_for("aborting a transaction past its timeout");
    let read_committed = read(&kafka, "read_committed");
    assert_eq!(values(&read_committed), with_outcome(&outcome, &["commit"]));
    let read_uncommitted = read(&kafka, "read_uncommitted");
    assert!(
        values(&read_uncommitted).is_superset(&open),
        "the open records were stored"
    );

    // A zombie: fenced by a newer instance with its id, and what it sends after is refused.
    let output = (transactions_script())
        .args([
            "zombie",
            "--bootstrap",
            &kafka,
            "--topic",
            TOPIC,
            "--id",
            "zombie",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8(output.stdout).unwrap();
    assert!(said.starts_with("fenced PRODUCER_FENCED"), "{said}");
    let read_committed = values(&read(&kafka, "read_committed"));
    assert!(read_committed.contains("zombie-fresh-m0"));
    assert!(!read_committed.iter().any(|v| v.contains("zombie-zombie")));
    let read_uncommitted = values(&read(&kafka, "read_uncommitted"));
    assert!(
        read_uncommitted.contains("zombie-zombie-m0"),
        "sent before the fencing"
    );
    assert!(
        !read_uncommitted.contains("zombie-zombie-m1"),
        "refused after it"
    );
}

/// Native subscriptions read as `read_committed` consumers do: committed records only, and
/// nothing past a transaction still open (a record written after it waits until the
/// transaction ends, here by its timeout), never an aborted one.
#[test]
fn native_subscriptions_deliver_committed_records_and_wait_for_open_transactions() {
    const LEDGER: &str = "ledger";
    let dir = tempfile::tempdir().unwrap();
    let (_broker, ready) = start_configured(dir.path(), CONFIG);
    let (kafka, native) = (field(&ready, "kafka"), field(&ready, "native"));
    confluent(&[
        "produce",
        "--bootstrap",
        &kafka,
        "--topic",
        LEDGER,
        "--partitions",
        "1",
        "--create",
        "--count",
        "0",
    ]);
    let output = transactional_producer(&kafka, LEDGER, "1")
        .args(["--transactions", "12", "--id", "steady", "--seed", "7"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let outcome = outcomes(&String::from_utf8(output.stdout).unwrap());
    let committed = with_outcome(&outcome, &["commit"]);
    assert!(
        !committed.is_empty() && outcome.len() > committed.len(),
        "{outcome:?}"
    );
    // A transaction left open: its producer is gone, its timeout (3 s) will abort it.
    let mut hanging = transactional_producer(&kafka, LEDGER, "1")
        .args(["--transactions", "1", "--hang", "0", "--id", "gone"])
        .args(["--transaction-timeout-ms", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hanging.stdout.take().unwrap()).lines();
    let first_open = lines.next().unwrap().unwrap();
    assert!(first_open.starts_with("open "), "{first_open}");
    hanging.kill().unwrap();
    hanging.wait().unwrap();
    common::runtime().block_on(async {
        let client = oxbow_client::Client::builder()
            .broker(&native)
            .connect()
            .await
            .unwrap();
        let producer = client.producer(LEDGER).build().await.unwrap();
        producer
            .send(None, b"sentinel")
            .await
            .unwrap()
            .await
            .unwrap();
        let mut consumer = client.consumer(LEDGER, "audit").build().await.unwrap();
        let mut received = BTreeSet::new();
        while !received.contains("sentinel") {
            let wait = std::time::Duration::from_secs(60);
            let message = tokio::time::timeout(wait, consumer.recv())
                .await
                .expect("the sentinel arrives once the open transaction times out")
                .unwrap();
            consumer.ack(&message).unwrap();
            received.insert(String::from_utf8(message.value.to_vec()).unwrap());
        }
        let mut expected = committed.clone();
        expected.insert("sentinel".to_string());
        assert_eq!(
            received, expected,
            "committed records and the sentinel, nothing else"
        );
    });
}

/// Consume-transform-produce: each poll's output and the group's offsets go in one
/// transaction, some aborted (their input read again). The output holds each input's
/// transformation exactly once for a read_committed reader, and the group's committed
/// offsets are at the input's end.
#[test]
fn consume_transform_produce_commits_each_input_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, ready) = start_configured(dir.path(), CONFIG);
    let kafka = field(&ready, "kafka");
    let acked = confluent(&[
        "produce",
        "--bootstrap",
        &kafka,
        "--topic",
        "input",
        "--partitions",
        "2",
        "--create",
        "--count",
        "60",
    ]);
    assert_eq!(acked.lines().count(), 60);
    confluent(&[
        "produce",
        "--bootstrap",
        &kafka,
        "--topic",
        TOPIC,
        "--partitions",
        "2",
        "--create",
        "--count",
        "0",
    ]);
    let output = (transactions_script())
        .args([
            "pipeline",
            "--bootstrap",
            &kafka,
            "--topic",
            "input",
            "--output",
            TOPIC,
        ])
        .args([
            "--transactions",
            "60",
            "--commit-share",
            "0.6",
            "--id",
            "pipe",
            "--seed",
            "3",
        ])
        .args(["--group", "transformers", "--timeout-ms", "120000"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}{errors}");
    assert!(
        printed.lines().any(|l| l.starts_with("abort ")),
        "some transactions aborted"
    );

    let read = read_topic(&kafka, TOPIC, "2", "read_committed");
    let expected: BTreeSet<String> = (0..60).map(|i| format!("out-m-{i}")).collect();
    assert_eq!(values(&read), expected);
    assert_eq!(read.len(), 60, "each input once: {read:?}");
    let committed = confluent(&[
        "committed",
        "--bootstrap",
        &kafka,
        "--topic",
        "input",
        "--partitions",
        "2",
        "--group",
        "transformers",
    ]);
    let offsets: Vec<&str> = committed.lines().collect();
    assert_eq!(offsets, ["committed 0 30", "committed 1 30"], "{committed}");

    // The pipeline's consumer has left: a member of an old generation is refused as its
    // OffsetCommit would be (KIP-447), and a commit outside any transaction by the
    // coordinator.
    let txn_commit = |member: &str, generation: i32| {
        let partition = TxnOffsetCommitRequestPartition::default()
            .with_partition_index(0)
            .with_committed_offset(5);
        let topic = TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName("input".to_string().into()))
            .with_partitions(vec![partition]);
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId("pipe".to_string().into()))
            .with_group_id(GroupId("transformers".to_string().into()))
            .with_producer_id(ProducerId(1))
            .with_producer_epoch(0)
            .with_generation_id(generation)
            .with_member_id(member.to_string().into())
            .with_topics(vec![topic]);
        let mut stream = std::net::TcpStream::connect(&kafka).unwrap();
        kafka_call(&mut stream, 3, &request).topics[0].partitions[0].error_code
    };
    const UNKNOWN_MEMBER_ID: i16 = 25;
    const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    assert_eq!(txn_commit("ghost", 5), UNKNOWN_MEMBER_ID);
    assert_eq!(txn_commit("", -1), INVALID_PRODUCER_ID_MAPPING);
}
