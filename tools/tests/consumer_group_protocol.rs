//! Kafka's consumer group protocol (KIP-848, `group.protocol=consumer`): confluent-kafka
//! consumers share a topic through ConsumerGroupHeartbeat alone, with the broker assigning;
//! a member joining gets its share only after the owner released it, a member killed with
//! SIGKILL loses its partitions to the others once the broker's session timeout passes, every
//! message is consumed and committed (OffsetCommit v9 with member epochs), and AdminClient lists
//! and describes the group. Then the protocol's rules on the wire: epochs, fencing, commits
//! with stale epochs, and the line between classic and consumer groups. Needs python3 with
//! confluent-kafka (scripts/test installs it).

mod common;

use common::{confluent, fixed_port_args, kafka_call, start_broker_with_config, Broker};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);
/// The broker's session timeout and heartbeat interval for these groups.
const CONFIG: &str = "shards = 2\n\
    [consumer_groups]\n\
    session_timeout_ms = 6000\n\
    heartbeat_interval_ms = 500\n";
const SESSION: Duration = Duration::from_secs(6);
/// Kafka's promise, as for classic groups: a dead member's partitions are with the others
/// within the session timeout and a little more.
const BOUND: Duration = Duration::from_secs(9);

/// What a member printed: its assignments (partitions, then topic:partition) and the
/// messages it committed.
enum Line {
    Assigned(BTreeSet<u32>),
    Owns(BTreeSet<String>),
    Message(String),
}

struct Member {
    child: Child,
    lines: mpsc::Receiver<Line>,
    /// The messages it printed (each committed before it was printed).
    consumed: Vec<String>,
}

impl Member {
    fn start(addr: &str, topic: &str, expect: usize, delay_ms: u32) -> Member {
        Member::start_with(addr, topic, expect, delay_ms, &[])
    }

    /// A member with `extra` arguments for the client script.
    fn start_with(addr: &str, topic: &str, expect: usize, delay_ms: u32, extra: &[&str]) -> Member {
        let mut child = Command::new("python3")
            .arg(CLIENT)
            .args(["group-consume", "--bootstrap", addr, "--topic", topic])
            .args([
                "--partitions",
                "4",
                "--group",
                "kip848",
                "--protocol",
                "consumer",
            ])
            .args(["--expect", &expect.to_string(), "--timeout-ms", "120000"])
            .args(["--delay-ms", &delay_ms.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with confluent-kafka (scripts/test installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parsed = if let Some(owned) = line.strip_prefix("assigned ") {
                    let owned = (owned.split(','))
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse().unwrap())
                        .collect();
                    Line::Assigned(owned)
                } else if let Some(owned) = line.strip_prefix("owns ") {
                    let owned = owned.split(',').filter(|p| !p.is_empty());
                    Line::Owns(owned.map(str::to_string).collect())
                } else if let Some(message) = line.strip_prefix("msg ") {
                    let value = message.rsplit(' ').next().unwrap().to_string();
                    Line::Message(value)
                } else {
                    continue;
                };
                if tx.send(parsed).is_err() {
                    return;
                }
            }
        });
        Member {
            child,
            lines,
            consumed: Vec::new(),
        }
    }

    /// Waits up to `limit` for an assignment `wanted` accepts; returns it.
    fn assigned(
        &mut self,
        what: &str,
        wanted: impl Fn(&BTreeSet<u32>) -> bool,
        limit: Duration,
    ) -> BTreeSet<u32> {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(Line::Assigned(owned)) if wanted(&owned) => return owned,
                Ok(Line::Assigned(_) | Line::Owns(_)) => {}
                Ok(Line::Message(m)) => self.consumed.push(m),
                Err(_) => panic!("no assignment of {what} within {limit:?}"),
            }
        }
    }

    /// Waits up to `limit` until the member owns exactly `wanted` (topic:partition).
    fn owns(&mut self, wanted: &[&str], limit: Duration) {
        let wanted: BTreeSet<String> = wanted.iter().map(|s| s.to_string()).collect();
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(Line::Owns(owned)) if owned == wanted => return,
                Ok(Line::Message(m)) => self.consumed.push(m),
                Ok(_) => {}
                Err(_) => panic!("never owned {wanted:?} within {limit:?}"),
            }
        }
    }

    /// Waits for the member to exit on its own (it has seen every message committed), keeping
    /// what it printed.
    fn finish(&mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "member failed: {status}");
        while let Ok(line) = self.lines.recv() {
            if let Line::Message(m) = line {
                self.consumed.push(m);
            }
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        while let Ok(line) = self.lines.try_recv() {
            if let Line::Message(m) = line {
                self.consumed.push(m);
            }
        }
    }
}

/// Creates `topic` with `partitions` through confluent-kafka, producing `count` messages
/// "m-<i>" over them; every one is acknowledged.
fn create_topic(addr: &str, topic: &str, partitions: u32, count: usize) {
    let (partitions, count) = (partitions.to_string(), count.to_string());
    let produced = confluent(&[
        "produce",
        "--bootstrap",
        addr,
        "--topic",
        topic,
        "--partitions",
        &partitions,
        "--create",
        "--count",
        &count,
    ]);
    let acked = produced.lines().filter(|l| l.starts_with("ack ")).count();
    assert_eq!(acked.to_string(), count, "{produced}");
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn members_share_a_topic_take_over_from_a_killed_member_and_consume_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr, _) = start_broker_with_config(dir.path(), CONFIG);
    let topic = "kip848-orders";
    const MESSAGES: usize = 60;
    create_topic(&addr, topic, 4, MESSAGES);

    let all = BTreeSet::from([0, 1, 2, 3]);
    // Slow members (200 ms a message), so the group changes while there is work left.
    let mut first = Member::start(&addr, topic, MESSAGES, 200);
    first.assigned("all four", |owned| *owned == all, Duration::from_secs(60));
    let mut second = Member::start(&addr, topic, MESSAGES, 200);
    let two = |owned: &BTreeSet<u32>| owned.len() == 2;
    let seconds = second.assigned("two", two, Duration::from_secs(30));
    // The first gave those two up before the second printed them.
    let firsts = first.assigned("two", two, Duration::from_secs(1));
    assert!(
        firsts.is_disjoint(&seconds),
        "{firsts:?} and {seconds:?} overlap"
    );

    let described = confluent(&[
        "describe-groups",
        "--bootstrap",
        &addr,
        "--topic",
        topic,
        "--group",
        "kip848",
    ]);
    assert!(
        described.contains("listed kip848 consumer stable"),
        "{described}"
    );
    assert!(
        described.contains("group kip848 consumer stable uniform"),
        "{described}"
    );
    let members: Vec<&str> = described
        .lines()
        .filter(|l| l.starts_with("member "))
        .collect();
    assert_eq!(members.len(), 2, "{described}");
    let shares = |m: &&str| m.rsplit(' ').next().unwrap().split(',').count();
    assert!(members.iter().all(|m| shares(m) == 2), "{described}");
    // `oxbow group` shows it too, with each member's partitions.
    let oxbow = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .arg("group")
            .args(args)
            .args(["--bootstrap", &addr])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = oxbow(&["list"]);
    assert!(
        listed.contains("kip848\tStable\tconsumer\tconsumer\n"),
        "{listed}"
    );
    let json = oxbow(&["describe", "kip848", "--output", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(shown["group_type"], "consumer", "{json}");
    let owned: Vec<usize> = (shown["members"].as_array().unwrap().iter())
        .map(|m| m["partitions"].as_array().unwrap().len())
        .collect();
    assert_eq!(owned, [2, 2], "{json}");

    let killed = Instant::now();
    first.kill();
    second.assigned("all four", |owned| *owned == all, BOUND);
    let taken_over = killed.elapsed();
    assert!(
        taken_over >= SESSION - Duration::from_secs(1),
        "expired before its session ended"
    );
    second.finish();

    // Every message was committed by one member or the other before it was printed.
    let consumed: BTreeSet<&String> = first.consumed.iter().chain(&second.consumed).collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m-{i}")).collect();
    assert_eq!(consumed, expected.iter().collect(), "messages lost");
    let committed = confluent(&[
        "committed",
        "--bootstrap",
        &addr,
        "--topic",
        topic,
        "--partitions",
        "4",
        "--group",
        "kip848",
    ]);
    let total: i64 = (committed.lines())
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap().max(0))
        .sum();
    assert_eq!(total, MESSAGES as i64, "{committed}");
    eprintln!(
        "killed member's partitions taken over after {taken_over:?} (session {SESSION:?}); \
         {} + {} messages consumed",
        first.consumed.len(),
        second.consumed.len()
    );
}

/// The group lives in its offsets partition: kill -9 of the broker in a settled group, and the
/// restarted broker takes it up where it was. Neither member loses or gains a partition (had
/// the group been forgotten, both would be fenced, lose their partitions and rebalance), and
/// both go on consuming what is produced after the restart.
#[test]
fn members_keep_their_partitions_across_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oxbow.toml"), CONFIG).unwrap();
    let (mut args, [addr, _, _]) = fixed_port_args(&dir.path().join("data"));
    args.extend([
        "--config".into(),
        dir.path().join("oxbow.toml").display().to_string(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut broker = Broker::start_exactly(None, &argv);
    broker.wait_for("oxbow ready");
    let topic = "kip848-restart";
    let produce = |base: usize| {
        let base = base.to_string();
        let mut args = vec!["produce", "--bootstrap", &addr, "--topic", topic];
        args.extend(["--partitions", "4", "--count", "40", "--base", &base]);
        if base == "0" {
            args.push("--create");
        }
        let produced = confluent(&args);
        assert_eq!(
            produced.lines().filter(|l| l.starts_with("ack ")).count(),
            40
        );
    };
    produce(0);
    let mut first = Member::start(&addr, topic, 1_000_000, 0);
    first.assigned(
        "all four",
        |owned| owned.len() == 4,
        Duration::from_secs(60),
    );
    let mut second = Member::start(&addr, topic, 1_000_000, 0);
    let two = |owned: &BTreeSet<u32>| owned.len() == 2;
    let seconds = second.assigned("two", two, Duration::from_secs(30));
    let firsts = first.assigned("two", two, Duration::from_secs(5));
    assert!(firsts.is_disjoint(&seconds));

    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    let mut broker = Broker::start_exactly(None, &argv);
    broker.wait_for("oxbow ready");
    produce(40);
    // Each message produced since reaches one of them, and neither's partitions changed.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 40 && Instant::now() < deadline {
        for (member, settled) in [(&mut first, &firsts), (&mut second, &seconds)] {
            let partitions = match member.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(Line::Message(m)) => {
                    if m.strip_prefix("m-").unwrap().parse::<usize>().unwrap() >= 40 {
                        seen.insert(m);
                    }
                    continue;
                }
                Ok(Line::Assigned(owned)) => owned,
                // The same change as the "assigned" line before it, with topics.
                Ok(Line::Owns(owned)) => (owned.iter())
                    .map(|tp| tp.rsplit(':').next().unwrap().parse().unwrap())
                    .collect(),
                Err(_) => continue,
            };
            assert_eq!(&partitions, settled, "a member's partitions changed");
        }
    }
    assert_eq!(seen.len(), 40, "messages produced after the restart");
    assert!(broker.log_so_far().contains("consumer group restored"));
}

/// A member subscribed by regular expression is assigned the matching topics, whole names
/// only, and a matching topic created later too, within a few heartbeats.
#[test]
fn a_pattern_subscription_follows_topics_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr, _) = start_broker_with_config(dir.path(), CONFIG);
    let create = |topic: &str| {
        create_topic(&addr, topic, 1, 1);
    };
    create("kip848-re-a");
    create("old-kip848-re-a");
    let pattern = ["--subscribe", "^kip848-re-.*"];
    let mut member = Member::start_with(&addr, "kip848-re-a", 1_000_000, 0, &pattern);
    member.owns(&["kip848-re-a:0"], Duration::from_secs(60));
    create("kip848-re-b");
    member.owns(&["kip848-re-a:0", "kip848-re-b:0"], Duration::from_secs(30));
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn heartbeat(
    stream: &mut TcpStream,
    member: &str,
    epoch: i32,
    subscribe: Option<&str>,
    owned: Option<Vec<TopicPartitions>>,
) -> ConsumerGroupHeartbeatResponse {
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text("raw")))
        .with_member_id(text(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
        .with_subscribed_topic_names(subscribe.map(|t| vec![TopicName(text(t))]))
        .with_topic_partitions(owned);
    kafka_call(stream, 1, &request)
}

/// An assignment answered, reported back as owned.
fn owning(given: &[consumer_group_heartbeat_response::TopicPartitions]) -> Vec<TopicPartitions> {
    (given.iter())
        .map(|tp| {
            TopicPartitions::default()
                .with_topic_id(tp.topic_id)
                .with_partitions(tp.partitions.clone())
        })
        .collect()
}

fn commit(stream: &mut TcpStream, version: i16, member: &str, epoch: i32, topic: &str) -> i16 {
    commit_to(stream, "raw", version, member, epoch, topic)
}

fn commit_to(
    stream: &mut TcpStream,
    group: &str,
    version: i16,
    member: &str,
    epoch: i32,
    topic: &str,
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let response = kafka_call(stream, version, &request);
    response.topics[0].partitions[0].error_code
}

#[test]
fn epochs_fencing_commits_and_the_line_between_classic_and_consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr, _) = start_broker_with_config(dir.path(), CONFIG);
    let topic = "kip848-raw";
    create_topic(&addr, topic, 3, 3);
    let mut stream = TcpStream::connect(&addr).unwrap();
    let metadata = kafka_call(
        &mut stream,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(text(topic))))
        ])),
    );
    let topic_id = metadata.topics[0].topic_id;

    // Joining: the broker assigns every partition, naming the topic by its id.
    let joined = heartbeat(&mut stream, "m1", 0, Some(topic), Some(vec![]));
    assert_eq!(joined.error_code, 0, "{joined:?}");
    assert_eq!(joined.member_id.as_deref(), Some("m1"));
    let epoch = joined.member_epoch;
    assert!(epoch > 0);
    let assignment = joined.assignment.expect("an assignment on joining");
    let mut partitions: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
    for tp in &assignment.topic_partitions {
        partitions
            .entry(tp.topic_id)
            .or_default()
            .extend(&tp.partitions);
    }
    assert_eq!(partitions, BTreeMap::from([(topic_id, vec![0, 1, 2])]));
    let owned = owning(&assignment.topic_partitions);
    // Unchanged since: no assignment in the answer.
    let again = heartbeat(&mut stream, "m1", epoch, None, None);
    assert_eq!((again.error_code, again.assignment), (0, None));

    // Epochs: from the future is fenced; an unknown member is unknown.
    let ahead = heartbeat(&mut stream, "m1", epoch + 5, None, Some(owned.clone()));
    assert_eq!(ahead.error_code, 110, "FENCED_MEMBER_EPOCH");
    let stranger = heartbeat(&mut stream, "nobody", 3, None, None);
    assert_eq!(stranger.error_code, 25, "UNKNOWN_MEMBER_ID");

    // Commits: only with the member's epoch, and only on OffsetCommit v9+.
    assert_eq!(commit(&mut stream, 9, "m1", epoch, topic), 0);
    assert_eq!(
        commit(&mut stream, 9, "m1", epoch - 1, topic),
        113,
        "STALE_MEMBER_EPOCH"
    );
    assert_eq!(
        commit(&mut stream, 8, "m1", epoch, topic),
        35,
        "UNSUPPORTED_VERSION"
    );
    assert_eq!(
        commit(&mut stream, 9, "", -1, topic),
        25,
        "no admin commits to a live group"
    );
    // A member's commit to a group the coordinator does not know (its state was lost with a
    // restart or a coordinator move) is refused, so that it rejoins first.
    assert_eq!(commit_to(&mut stream, "gone", 9, "m9", 4, topic), 25);

    // A classic member may not join it.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(text("raw")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(text("range"))
        ]);
    let refused = kafka_call(&mut stream, 5, &join);
    assert_eq!(refused.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");

    // A second member joins: m1 must revoke before the newcomer gets anything.
    let second = heartbeat(&mut stream, "m2", 0, Some(topic), Some(vec![]));
    assert_eq!(second.error_code, 0);
    let empty = second.assignment.expect("a full answer on joining");
    assert!(empty
        .topic_partitions
        .iter()
        .all(|tp| tp.partitions.is_empty()));
    let told = heartbeat(&mut stream, "m1", epoch, None, Some(owned.clone()));
    let kept = owning(
        &told
            .assignment
            .expect("m1 is told what it keeps")
            .topic_partitions,
    );
    let kept_count: usize = kept.iter().map(|tp| tp.partitions.len()).sum();
    assert!((1..3).contains(&kept_count), "{kept:?}");
    let waiting = heartbeat(&mut stream, "m2", second.member_epoch, None, None);
    assert_eq!(waiting.assignment, None, "m1 has not released yet");
    let released = heartbeat(
        &mut stream,
        "m1",
        told.member_epoch,
        None,
        Some(kept.clone()),
    );
    assert_eq!(released.error_code, 0);
    assert!(
        released.member_epoch > epoch,
        "m1 moved on once it released"
    );
    let given = heartbeat(&mut stream, "m2", second.member_epoch, None, Some(vec![]));
    let given_count: usize = (given.assignment.expect("now m2's share").topic_partitions)
        .iter()
        .map(|tp| tp.partitions.len())
        .sum();
    assert_eq!(kept_count + given_count, 3);

    // Leaving: m1 goes, m2 gets the rest.
    let left = heartbeat(&mut stream, "m1", -1, None, None);
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let rest = heartbeat(&mut stream, "m2", given.member_epoch, None, None);
    let all: usize = (rest.assignment.expect("everything").topic_partitions)
        .iter()
        .map(|tp| tp.partitions.len())
        .sum();
    assert_eq!(all, 3);

    // A classic group with members is not a consumer group.
    let classic = join.clone().with_group_id(GroupId(text("classic")));
    let classic = kafka_call(&mut stream, 3, &classic);
    assert_eq!(classic.error_code, 0, "{classic:?}");
    let mut crossing = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text("classic")))
        .with_member_id(text("m3"))
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(text(topic))]))
        .with_topic_partitions(Some(vec![]));
    crossing.member_epoch = 0;
    let crossing = kafka_call(&mut stream, 1, &crossing);
    assert_eq!(crossing.error_code, 69, "GROUP_ID_NOT_FOUND");
    let described = kafka_call(
        &mut stream,
        1,
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(text("raw")), GroupId(text("classic"))]),
    );
    assert_eq!(described.groups[0].error_code, 0);
    assert_eq!(described.groups[0].members.len(), 1);
    assert_eq!(described.groups[1].error_code, 69);
}
