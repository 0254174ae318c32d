//! Three `oxbow serve` processes on loopback forming one cluster: topics created on any node
//! appear on every node with the same ids and assignment; kcat and confluent-kafka bootstrap
//! from any node and reach the leaders on the others, consumer groups included; kill -9 of the
//! metadata group's leader elects another (the time is printed) and topic creation goes on; a
//! killed node's partitions go offline until it returns and catches up from a snapshot; a
//! group's committed offsets survive kill -9 of its coordinator; a topic grows by partitions
//! (CreatePartitions) placed and replicated over the nodes; a topic's configs are altered
//! (IncrementalAlterConfigs) and its partitions run with them at once.
//! Needs kcat and python3 with confluent-kafka (scripts/test installs both).

mod common;

use common::cluster::{brokers, metadata, Cluster};
use common::{confluent, kafka_call, kcat};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, FindCoordinatorRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

/// Kafka's LEADER_NOT_AVAILABLE.
const LEADER_NOT_AVAILABLE: i16 = 5;

/// Every topic as `addr` describes it: name → (id, per partition (leader, replicas), errors).
type Described = BTreeMap<String, (uuid::Uuid, Vec<(i32, Vec<i32>, i16)>)>;

fn described(addr: &str) -> Described {
    (metadata(addr).topics.into_iter())
        .map(|t| {
            let partitions = (t.partitions.iter())
                .map(|p| {
                    let replicas = p.replica_nodes.iter().map(|b| b.0).collect();
                    (p.leader_id.0, replicas, p.error_code)
                })
                .collect();
            (t.name.unwrap().0.to_string(), (t.topic_id, partitions))
        })
        .collect()
}

/// Creates `topic` through `addr`; the Kafka error code.
fn create_topic(addr: &str, topic: &str, partitions: i32) -> i16 {
    create_replicated_topic(addr, topic, partitions, 1)
}

/// Creates `topic` with `replicas` replicas per partition through `addr`; the error code.
fn create_replicated_topic(addr: &str, topic: &str, partitions: i32, replicas: i16) -> i16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(replicas)]);
    kafka_call(&mut stream, 5, &request).topics[0].error_code
}

/// The broker `addr` names as coordinator of `group` (error code, node id, port).
fn coordinator(addr: &str, group: &str) -> (i16, i32, i32) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let answer = kafka_call(&mut stream, 3, &request);
    (answer.error_code, answer.node_id.0, answer.port)
}

fn port(addr: &str) -> i32 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// `oxbow cluster ARGS --bootstrap addr`: whether it succeeded, and what it printed.
fn oxbow_cluster(addr: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .arg("cluster")
        .args(args)
        .args(["--bootstrap", addr])
        .output()
        .unwrap();
    let mut text = String::from_utf8(output.stdout).unwrap();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn topics_created_on_any_node_reach_every_node_and_clients_reach_leaders_through_any_node() {
    let cluster = Cluster::start_settled(3);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.kafka.clone()).collect();
    // Created through node 1, produced through node 2 with acks=all: six partitions whose
    // leaders are spread over the three nodes, so most records go to another node's leader.
    let acked = confluent(&[
        "produce",
        "--bootstrap",
        &addrs[1],
        "--topic",
        "orders",
        "--partitions",
        "6",
        "--create",
        "--count",
        "600",
        "--acks",
        "all",
    ]);
    assert_eq!(acked.lines().filter(|l| l.starts_with("ack ")).count(), 600);
    let views: Vec<Described> = cluster.settle("every node knows the topic", || {
        let views: Vec<Described> = addrs.iter().map(|a| described(a)).collect();
        views
            .iter()
            .all(|v| v.contains_key("orders"))
            .then_some(views)
    });
    let orders = &views[0]["orders"];
    let leaders: std::collections::BTreeSet<i32> = orders.1.iter().map(|p| p.0).collect();
    assert_eq!(
        leaders.len(),
        3,
        "leaders spread over the nodes: {orders:?}"
    );
    for view in &views[1..] {
        assert_eq!(
            view["orders"], *orders,
            "same id and assignment on every node"
        );
    }
    // kcat through node 0 adds ten more; a reader through node 2 gets all of them.
    let lines: String = (0..10).map(|i| format!("kcat-{i}\n")).collect();
    let (ok, _, err) = kcat(&addrs[0], &["-P", "-t", "orders"], Some(lines.as_bytes()));
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(
        &addrs[2],
        &["-C", "-t", "orders", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok, "{err}");
    let read = String::from_utf8(out).unwrap();
    assert_eq!(read.lines().count(), 610, "{err}");
    assert_eq!(read.lines().filter(|l| l.starts_with("kcat-")).count(), 10);

    // A consumer group bootstrapped from node 0, coordinated wherever its offsets partition
    // leads: every node names the same coordinator, and the group's commits land there.
    let named: Vec<(i16, i32, i32)> = addrs
        .iter()
        .map(|a| coordinator(a, "cluster-group"))
        .collect();
    assert!(
        named.iter().all(|n| *n == named[0] && n.0 == 0),
        "{named:?}"
    );
    assert_eq!(named[0].2, port(&addrs[named[0].1 as usize]));
    let consumed = confluent(&[
        "group-consume",
        "--bootstrap",
        &addrs[0],
        "--topic",
        "orders",
        "--partitions",
        "6",
        "--group",
        "cluster-group",
        "--expect",
        "610",
        "--timeout-ms",
        "60000",
    ]);
    assert_eq!(
        consumed.lines().filter(|l| l.starts_with("msg ")).count(),
        610
    );
    let committed = confluent(&[
        "committed",
        "--bootstrap",
        &addrs[1],
        "--topic",
        "orders",
        "--partitions",
        "6",
        "--group",
        "cluster-group",
    ]);
    let total: i64 = (committed.lines())
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 610, "{committed}");
}

#[test]
fn the_metadata_leader_killed_is_replaced_and_a_returning_node_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start_settled(3);
    let first = cluster.nodes[0].kafka.clone();
    assert_eq!(create_topic(&first, "before", 3), 0);
    let leader = cluster.metadata_leader();
    cluster.node(leader).kill();
    let killed_at = Instant::now();
    let successor = cluster.metadata_leader();
    eprintln!(
        "metadata leader failover: broker {leader} killed, broker {successor} leads after {} ms",
        killed_at.elapsed().as_millis()
    );
    assert_ne!(successor, leader);
    let survivor = cluster.node(successor).kafka.clone();
    // More changes than a snapshot spans (8 entries): the killed node must catch up from one.
    for i in 0..12 {
        assert_eq!(
            create_topic(&survivor, &format!("after-{i}"), 2),
            0,
            "after-{i}"
        );
    }
    // Once the controller fences the silent node, its partition goes offline and clients are
    // no longer sent to it.
    let offline = cluster.settle("the killed node fenced and its partition offline", || {
        let view = described(&survivor);
        let before = &view["before"].1;
        let fenced = !brokers(&survivor).contains(&leader);
        let offline = before.iter().find(|p| p.1 == [leader])?;
        (fenced && offline.0 == -1).then(|| offline.clone())
    });
    assert_eq!(offline.2, LEADER_NOT_AVAILABLE);
    let (ok, status) = oxbow_cluster(&survivor, &["status"]);
    assert!(ok, "{status}");
    assert!(status.contains(&format!("leader {successor},")), "{status}");
    // Topics created before the fence may have been placed on the killed node too.
    let offline_line = status
        .lines()
        .find(|l| l.starts_with("offline partitions:"));
    assert!(
        offline_line.is_some_and(|l| l.contains("before/")),
        "{status}"
    );
    let silent = format!("voter    {leader} ");
    let line = status
        .lines()
        .find(|l| l.contains(&silent))
        .unwrap_or_default();
    assert!(line.ends_with("fenced or unregistered"), "{status}");
    cluster.node(leader).restart();
    let returned = cluster.node(leader).kafka.clone();
    let caught_up = cluster.settle("the returned node has caught up and leads again", || {
        let (theirs, ours) = (described(&survivor), described(&returned));
        let led_again = ours["before"].1.iter().all(|p| p.0 >= 0);
        (theirs == ours && led_again && theirs.len() == 13).then_some(ours)
    });
    assert_eq!(
        caught_up["before"]
            .1
            .iter()
            .filter(|p| p.0 == leader)
            .count(),
        1
    );
    let log = cluster.node(leader).log();
    assert!(
        log.contains("metadata snapshot from the leader installed"),
        "{log}"
    );
    assert_eq!(brokers(&survivor), vec![0, 1, 2]);
}

#[test]
fn a_fourth_node_joins_as_a_learner_takes_partitions_and_is_removed_once_it_holds_none() {
    let mut cluster = Cluster::start_settled(3);
    let joined = cluster.join(0);
    cluster.settle("every node lists the fourth broker", || {
        (cluster.running())
            .all(|n| brokers(&n.kafka) == [0, 1, 2, 3])
            .then_some(())
    });
    let (first, newest) = (
        cluster.node(0).kafka.clone(),
        cluster.node(joined).kafka.clone(),
    );
    assert_eq!(create_topic(&newest, "joined", 4), 0);
    // Another node applies the creation a moment after the node that made it answers.
    let placed = cluster.settle("the new topic known to node 0", || {
        described(&first).remove("joined").map(|topic| topic.1)
    });
    assert_eq!(
        placed.iter().filter(|p| p.1 == [joined]).count(),
        1,
        "{placed:?}"
    );
    let lines: String = (0..40).map(|i| format!("line-{i}\n")).collect();
    let (ok, _, err) = kcat(&first, &["-P", "-t", "joined"], Some(lines.as_bytes()));
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(
        &newest,
        &["-C", "-t", "joined", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 40);

    let (ok, status) = oxbow_cluster(&first, &["status"]);
    assert!(ok, "{status}");
    assert_eq!(status.matches("  voter ").count(), 3, "{status}");
    assert!(
        status.contains(&format!("  learner  {joined} ")),
        "{status}"
    );
    let (ok, refused) = oxbow_cluster(&first, &["remove-node", &joined.to_string()]);
    assert!(
        !ok && refused.contains("still holds replicas of joined"),
        "{refused}"
    );
    let mut stream = TcpStream::connect(&first).unwrap();
    let delete = kafka_protocol::messages::DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str("joined"))])
        .with_timeout_ms(30_000);
    assert_eq!(
        kafka_call(&mut stream, 4, &delete).responses[0].error_code,
        0
    );
    let (ok, removed) = oxbow_cluster(&first, &["remove-node", &joined.to_string()]);
    assert!(ok, "{removed}");
    let (ok, status) = oxbow_cluster(&first, &["status"]);
    assert!(ok && !status.contains("learner"), "{status}");
    for node in cluster.running().filter(|n| n.id != joined) {
        assert_eq!(brokers(&node.kafka), vec![0, 1, 2], "node {}", node.id);
    }
}

/// Committed offsets survive kill -9 of the group's coordinator: `__consumer_offsets` has three
/// replicas, a commit is answered once they hold it, and the coordinator moves with the
/// leadership of the group's offsets partition. A member commits part of a replicated topic
/// (each message committed before it is printed), the coordinator's node is killed, and the
/// group's next member goes on from the commits: every message once, in order.
#[test]
fn committed_offsets_survive_kill_9_of_the_group_coordinator() {
    let mut cluster = Cluster::start_settled(3);
    let addr = cluster.nodes[0].kafka.clone();
    assert_eq!(create_replicated_topic(&addr, "ledger", 1, 3), 0);
    let produced = confluent(&[
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "ledger",
        "--count",
        "400",
        "--acks",
        "all",
    ]);
    assert_eq!(
        produced.lines().filter(|l| l.starts_with("ack ")).count(),
        400
    );
    let consume = |bootstrap: &str, expect: &str| -> Vec<String> {
        let printed = confluent(&[
            "group-consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            "ledger",
            "--group",
            "ledger-readers",
            "--expect",
            expect,
            "--timeout-ms",
            "60000",
        ]);
        (printed.lines())
            .filter_map(|l| l.strip_prefix("msg "))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    let mut consumed = consume(&addr, "150");
    assert!(consumed.len() >= 150);
    let (error, coordinator, _) = self::coordinator(&addr, "ledger-readers");
    assert_eq!(error, 0);
    cluster.node(coordinator).kill();
    let survivor = (cluster.running()).next().unwrap().kafka.clone();
    let started = Instant::now();
    consumed.extend(consume(&survivor, "400"));
    eprintln!(
        "coordinator {coordinator} killed; the group went on through another in {:?}",
        started.elapsed()
    );
    let expected: Vec<String> = (0..400).map(|i| format!("m-{i}")).collect();
    assert_eq!(consumed, expected, "every message once, in order");
}

/// SIGTERM of the metadata group's leader hands the group's leadership to another voter before
/// the node stops (no election timeout to sit out), and the survivors go on committing.
#[test]
fn sigterm_of_the_metadata_leader_hands_the_group_over_before_it_stops() {
    let mut cluster = Cluster::start_settled(3);
    let leader = cluster.metadata_leader();
    let broker = cluster.node(leader).broker.as_mut().unwrap();
    assert!(broker.signal(libc::SIGTERM).success());
    let log = broker.log_so_far();
    cluster.node(leader).broker = None;
    assert!(
        log.contains("metadata group leadership handed over"),
        "{log}"
    );
    let next = cluster.metadata_leader();
    assert_ne!(next, leader);
    let survivor = (cluster.running()).next().unwrap().kafka.clone();
    assert_eq!(create_topic(&survivor, "after-handover", 1), 0);
}

/// CreatePartitions through confluent-kafka's AdminClient: a replicated topic grows from 2 to
/// 5 partitions, each new one on three nodes and in sync everywhere; shrinking, an unknown
/// topic and a dry run are answered as Kafka does; records go to every partition and are all
/// read back.
#[test]
fn a_topic_grows_by_partitions_placed_and_replicated_over_the_nodes() {
    let cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[1].kafka.clone();
    assert_eq!(create_replicated_topic(&bootstrap, "growing", 2, 3), 0);
    let grow = |topic: &str, count: &str, dry_run: bool| {
        let mut args = vec!["admin", "--op", "add-partitions", "--bootstrap", &bootstrap];
        args.extend(["--topic", topic, "--partitions", count]);
        if dry_run {
            args.push("--validate-only");
        }
        confluent(&args).trim().to_string()
    };
    let partitions = |addr: &str| described(addr).get("growing").map(|(_, p)| p.len());
    assert_eq!(grow("growing", "1", false), "error INVALID_PARTITIONS");
    assert_eq!(grow("nowhere", "3", false), "error UNKNOWN_TOPIC_OR_PART");
    assert_eq!(grow("growing", "5", true), "added");
    assert_eq!(partitions(&bootstrap), Some(2), "a dry run changes nothing");
    assert_eq!(grow("growing", "5", false), "added");
    cluster.settle("every node sees five partitions, all in sync", || {
        cluster
            .running()
            .all(|n| {
                let topic = metadata(&n.kafka).topics.into_iter().find(|t| {
                    t.name
                        .as_ref()
                        .is_some_and(|name| name.0.as_str() == "growing")
                });
                topic.is_some_and(|t| {
                    t.partitions.len() == 5
                        && (t.partitions.iter())
                            .all(|p| p.replica_nodes.len() == 3 && p.isr_nodes.len() == 3)
                })
            })
            .then_some(())
    });
    let leaders: std::collections::BTreeSet<i32> = (described(&bootstrap)["growing"].1.iter())
        .map(|(leader, _, _)| *leader)
        .collect();
    assert!(leaders.len() > 1, "leaders spread: {leaders:?}");

    let topic = [
        "--bootstrap",
        &bootstrap,
        "--topic",
        "growing",
        "--partitions",
        "5",
    ];
    confluent(&[&["produce", "--count", "500", "--acks", "all"], &topic[..]].concat());
    let read = confluent(&[&["consume", "--expect", "500"], &topic[..]].concat());
    let per_partition = (read.lines().filter_map(|l| l.strip_prefix("msg "))).fold(
        BTreeMap::<&str, usize>::new(),
        |mut counts, l| {
            *counts.entry(l.split(' ').next().unwrap()).or_default() += 1;
            counts
        },
    );
    assert_eq!(
        per_partition.values().copied().collect::<Vec<_>>(),
        vec![100; 5]
    );
}

/// IncrementalAlterConfigs through confluent-kafka's AdminClient on three processes: a topic's
/// `max.message.bytes` lowered refuses a larger record at once (the leader's partition runs with
/// it), every node describes the new value, deleting it restores the broker's default; a bad
/// value, an unknown config and an unknown topic are refused, a dry run changes nothing.
#[test]
fn a_topics_configs_are_altered_and_its_partitions_run_with_them() {
    let cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[2].kafka.clone();
    assert_eq!(create_replicated_topic(&bootstrap, "tuned", 1, 3), 0);
    let alter = |topic: &str, configs: &[&str], dry_run: bool| {
        let mut args = vec!["admin", "--op", "alter-config", "--bootstrap", &bootstrap];
        args.extend(["--topic", topic]);
        for config in configs {
            args.extend(["--config", config]);
        }
        if dry_run {
            args.push("--validate-only");
        }
        confluent(&args).trim().to_string()
    };
    let describe = |addr: &str| {
        confluent(&[
            "admin",
            "--op",
            "describe",
            "--bootstrap",
            addr,
            "--topic",
            "tuned",
        ])
    };
    let large = format!("{}\n", "x".repeat(4_000));
    let produce_large = || {
        kcat(
            &bootstrap,
            &["-P", "-t", "tuned", "-p", "0"],
            Some(large.as_bytes()),
        )
    };

    assert_eq!(
        alter("tuned", &["retention.ms=soon"], false),
        "error INVALID_CONFIG"
    );
    assert_eq!(
        alter("tuned", &["no.such.config=1"], false),
        "error INVALID_CONFIG"
    );
    assert_eq!(
        alter("nowhere", &["retention.ms=1000"], false),
        "error UNKNOWN_TOPIC_OR_PART"
    );
    assert_eq!(alter("tuned", &["max.message.bytes=2000"], true), "altered");
    assert!(produce_large().0, "a dry run changes nothing");
    assert_eq!(
        alter(
            "tuned",
            &["max.message.bytes=2000", "retention.ms=3600000"],
            false
        ),
        "altered"
    );
    cluster.settle("every node describes the new configs", || {
        cluster
            .running()
            .all(|n| {
                let described = describe(&n.kafka);
                described.contains("config max.message.bytes 2000\n")
                    && described.contains("config retention.ms 3600000\n")
            })
            .then_some(())
    });
    let (ok, _, err) = produce_large();
    assert!(
        !ok && err.contains("too large"),
        "refused by the altered limit: {err}"
    );

    assert_eq!(alter("tuned", &["max.message.bytes"], false), "altered");
    let described = describe(&bootstrap);
    assert!(
        !described.contains("config max.message.bytes 2000\n"),
        "{described}"
    );
    assert!(
        described.contains("config retention.ms 3600000\n"),
        "kept: {described}"
    );
    let (ok, _, err) = produce_large();
    assert!(ok, "the default limit is back: {err}");
}
