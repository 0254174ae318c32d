//! Deleting consumer groups (DeleteGroups, through confluent-kafka's AdminClient) and their
//! committed offsets (OffsetDelete, sent on a socket: confluent-kafka has no call for it), what
//! `kafka-consumer-groups.sh --delete` and `--delete-offsets` send: an empty group's offsets go
//! one partition at a time, then the group; a group with a member is kept (NON_EMPTY_GROUP)
//! with the offsets of the topic it subscribes to (GROUP_SUBSCRIBED_TO_TOPIC); a group that is
//! gone is not found, also after kill -9 and a restart. `oxbow group` lists, describes (with
//! lag), resets (dry run first) and deletes them. Needs python3 with confluent-kafka
//! (scripts/test installs it).

mod common;

use common::{confluent, kafka_call, start_broker, CONFLUENT_CLIENT};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetDeleteRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};

const TOPIC: &str = "audited";
/// Kafka's error codes.
const UNKNOWN_TOPIC: i16 = 3;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

#[test]
fn groups_and_their_offsets_are_deleted_as_kafka_allows() {
    let data = tempfile::tempdir().unwrap();
    let (broker, addr) = start_broker(data.path(), 2);
    let topic = ["--bootstrap", &addr, "--topic", TOPIC, "--partitions", "2"];
    confluent(&[&["produce", "--create", "--count", "20"], &topic[..]].concat());
    // A member consumes and commits everything, then leaves: the group is empty.
    let group = |name: &'static str| ["--group", name];
    let consumed = [
        &["group-consume", "--expect", "20"],
        &topic[..],
        &group("done")[..],
    ]
    .concat();
    confluent(&consumed);
    let committed =
        |name: &'static str| confluent(&[&["committed"], &topic[..], &group(name)[..]].concat());
    assert_eq!(committed("done"), "committed 0 10\ncommitted 1 10\n");
    // `oxbow group` sees it, and its lag once more is produced.
    let oxbow = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .arg("group")
            .args(args)
            .args(["--bootstrap", &addr])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap() + &stderr,
        )
    };
    let (ok, listed) = oxbow(&["list"]);
    assert!(
        ok && listed.contains("done\tEmpty\tconsumer\tclassic\n"),
        "{listed}"
    );
    confluent(&[&["produce", "--base", "20", "--count", "6"], &topic[..]].concat());
    let described = |name: &str| {
        let (ok, out) = oxbow(&["describe", name, "--output", "json"]);
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let done = described("done");
    assert_eq!(done["members"].as_array().unwrap().len(), 0, "{done}");
    let lags: Vec<(i64, i64, i64)> = (done["partitions"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["committed"].as_i64().unwrap(),
                p["log_end"].as_i64().unwrap(),
                p["lag"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lags, vec![(10, 13, 3), (10, 13, 3)], "{done}");
    // Resetting: a dry run by default, then committed with --execute, clamped to the log.
    let reset = |to: &str, execute: bool| {
        let mut args = vec!["reset-offsets", "done", "--topic", TOPIC, "--to", to];
        if execute {
            args.push("--execute");
        }
        let (ok, out) = oxbow(&args);
        assert!(ok, "{out}");
        out
    };
    assert!(reset("earliest", false).contains("audited\t1\t0\n"));
    assert_eq!(
        committed("done"),
        "committed 0 10\ncommitted 1 10\n",
        "a dry run"
    );
    reset("offset:5", true);
    assert_eq!(committed("done"), "committed 0 5\ncommitted 1 5\n");
    reset("offset:99", true);
    assert_eq!(
        committed("done"),
        "committed 0 13\ncommitted 1 13\n",
        "clamped"
    );
    reset("offset:10", true);
    assert_eq!(committed("done"), "committed 0 10\ncommitted 1 10\n");
    let delete_group = |name: &'static str| {
        let args = [
            &["group-admin", "--bootstrap", &addr, "--topic", TOPIC],
            &group(name)[..],
        ];
        confluent(&args.concat())
    };
    // OffsetDelete v0: the top-level error, then each partition's.
    let delete_offsets = |name: &str, topic: &str, partitions: &[i32]| {
        let partitions = (partitions.iter())
            .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
            .collect();
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(name.into())))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions)]);
        let answer = kafka_call(&mut TcpStream::connect(&addr).unwrap(), 0, &request);
        let per_partition: Vec<(i32, i16)> = (answer.topics.iter())
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code))
            })
            .collect();
        (answer.error_code, per_partition)
    };

    assert_eq!(delete_offsets("done", TOPIC, &[0]), (0, vec![(0, 0)]));
    assert_eq!(committed("done"), "committed 0 -1001\ncommitted 1 10\n");
    assert_eq!(
        delete_offsets("done", "nowhere", &[0]),
        (0, vec![(0, UNKNOWN_TOPIC)])
    );
    assert_eq!(delete_offsets("nobody", TOPIC, &[0]).0, GROUP_ID_NOT_FOUND);
    assert_eq!(delete_group("done"), "deleted\n");
    assert_eq!(committed("done"), "committed 0 -1001\ncommitted 1 -1001\n");
    assert_eq!(delete_group("done"), "error GROUP_ID_NOT_FOUND\n");

    // A live member: its group and its subscribed topic's offsets stay.
    let mut member = Command::new("python3")
        .arg(CONFLUENT_CLIENT)
        .args(
            [
                &["group-consume", "--expect", "1000000"],
                &topic[..],
                &group("live")[..],
            ]
            .concat(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(member.stdout.take().unwrap()).lines();
    let consumed_all = (lines.by_ref().map_while(Result::ok))
        .filter(|l| l.starts_with("msg "))
        .nth(25);
    assert!(
        consumed_all.is_some(),
        "the live member consumes everything"
    );
    let live = described("live");
    let members = live["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{live}");
    assert_eq!(
        members[0]["partitions"].as_array().unwrap().len(),
        2,
        "{live}"
    );
    let (ok, out) = oxbow(&["delete", "live"]);
    assert!(!ok && out.contains("has members"), "{out}");
    let (ok, out) = oxbow(&[
        "reset-offsets",
        "live",
        "--topic",
        TOPIC,
        "--to",
        "earliest",
    ]);
    assert!(!ok && out.contains("has members"), "{out}");
    assert_eq!(delete_group("live"), "error NON_EMPTY_GROUP\n");
    let subscribed = vec![
        (0, GROUP_SUBSCRIBED_TO_TOPIC),
        (1, GROUP_SUBSCRIBED_TO_TOPIC),
    ];
    assert_eq!(delete_offsets("live", TOPIC, &[0, 1]), (0, subscribed));
    assert_eq!(committed("live"), "committed 0 13\ncommitted 1 13\n");
    member.kill().unwrap();
    member.wait().unwrap();

    // The deletions are in the offsets log: kill -9 and a restart keep them.
    drop(broker);
    let (_broker, addr) = start_broker(data.path(), 2);
    let after = |name: &str| {
        let topic = ["--bootstrap", &addr, "--topic", TOPIC, "--partitions", "2"];
        confluent(&[&["committed", "--group", name], &topic[..]].concat())
    };
    assert_eq!(after("done"), "committed 0 -1001\ncommitted 1 -1001\n");
    assert_eq!(after("live"), "committed 0 13\ncommitted 1 13\n");
}
