//! Moving a partition to other brokers (`oxbow partition reassign`, Kafka's
//! AlterPartitionReassignments, KIP-455) on four `oxbow serve` processes: the new replica
//! catches up from the leader's log (within `cluster.catch_up_bytes_per_sec`), the move
//! completes once it is in sync, leadership leaves a replica that goes, and the old replica's
//! files are deleted; every acknowledged record is on the new replicas. A move called off
//! (`--cancel`) goes back to the replicas it had. `oxbow cluster decommission` drains a node
//! that way and removes it; `oxbow cluster rebalance` gives a node that was away when a topic
//! was created its share. Needs python3 with confluent-kafka.

mod common;

use common::cluster::{metadata, partition_view, Cluster};
use common::{confluent, kafka_call};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::net::TcpStream;
use std::process::Command;

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);
const TOPIC: &str = "moving";

/// Partition 0 of `TOPIC` as `addr` sees it: leader, replicas (in order), sorted ISR.
fn view(addr: &str) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    partition_view(addr, TOPIC)
}

/// Creates `TOPIC` with `partitions` partitions on three replicas each through `bootstrap`.
fn create_topic(bootstrap: &str, partitions: i32) {
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(TOPIC.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(3)]);
    let created = kafka_call(&mut TcpStream::connect(bootstrap).unwrap(), 5, &create);
    assert_eq!(created.topics[0].error_code, 0);
}

/// `oxbow partition ARGS [--replicas REPLICAS] --bootstrap addr`: what it printed (it must
/// succeed).
fn oxbow(bootstrap: &str, args: &[&str], replicas: &str) -> String {
    let mut args = args.to_vec();
    if !replicas.is_empty() {
        args.extend(["--replicas", replicas]);
    }
    oxbow_command(bootstrap, "partition", &args)
}

/// `oxbow GROUP ARGS --bootstrap addr`: what it printed (it must succeed).
fn oxbow_command(bootstrap: &str, group: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .arg(group)
        .args(args)
        .args(["--bootstrap", bootstrap])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "oxbow {group} {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Produces `count` records from index `base` (values `m-<index>`) with acks=all; how many
/// were acknowledged.
fn produce(bootstrap: &str, base: usize, count: usize) -> usize {
    let (base, count) = (base.to_string(), count.to_string());
    let output = Command::new("python3")
        .arg(CLIENT)
        .args([
            "produce",
            "--bootstrap",
            bootstrap,
            "--topic",
            TOPIC,
            "--acks",
            "all",
        ])
        .args(["--base", &base, "--count", &count, "--idempotent"])
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().filter(|l| l.starts_with("ack ")).count()
}

#[test]
fn a_partition_moves_off_its_leader_to_a_new_broker_and_the_old_replica_is_deleted() {
    // The new replica catches up throttled: a budget below what it must copy, so it waits.
    let mut cluster = Cluster::start_settled_with(4, "catch_up_bytes_per_sec = 4096");
    let bootstrap = cluster.nodes[0].kafka.clone();
    create_topic(&bootstrap, 1);
    let (leader, replicas, _) = cluster.settle("every node knows the topic, all in sync", || {
        let views: Vec<_> = cluster.running().map(|n| view(&n.kafka)).collect();
        let first = views[0].clone()?;
        (first.2.len() == 3 && views.iter().all(|v| *v == Some(first.clone()))).then_some(first)
    });
    assert_eq!(produce(&bootstrap, 0, 500), 500);

    // The broker without a replica comes in first (the preferred leader), the leader goes.
    let newcomer = (0..4).find(|b| !replicas.contains(b)).unwrap();
    let mut target = vec![newcomer];
    target.extend(replicas.iter().filter(|&&r| r != leader));
    let replicas_arg: Vec<String> = target.iter().map(|b| b.to_string()).collect();
    let moving = oxbow(
        &bootstrap,
        &["reassign", "--topic", TOPIC, "--partition", "0"],
        &replicas_arg.join(","),
    );
    assert!(moving.contains("moving to"), "{moving}");
    let mut sorted = target.clone();
    sorted.sort_unstable();
    let (new_leader, _, _) = cluster.settle("the partition moved, all in sync", || {
        view(&bootstrap).filter(|(l, r, isr)| *r == target && *isr == sorted && target.contains(l))
    });
    eprintln!("moved from {replicas:?} (leader {leader}) to {target:?} (leader {new_leader})");
    let listed = oxbow(&bootstrap, &["reassignments"], "");
    assert!(listed.trim().is_empty(), "nothing in progress: {listed}");
    assert_eq!(produce(&bootstrap, 500, 500), 500);

    let old = cluster.nodes[leader as usize].data.join(TOPIC).join("0");
    cluster.settle("the old leader's replica is deleted", || {
        (!old.exists()).then_some(())
    });
    let expected: Vec<(u64, String)> = (0..1000).map(|i| (i as u64, format!("m-{i}"))).collect();
    for node in target {
        cluster.node(node).kill();
        let stored = cluster.nodes[node as usize].stored_records(TOPIC, 0);
        assert_eq!(stored, expected, "replica {node}'s files");
    }
}

/// A move whose new replica cannot catch up (1 byte per second of catch-up budget, two
/// batches to copy) is called off: the partition is back on its replicas, in their order,
/// with its leader, the new replica's files go, and producing goes on.
#[test]
fn a_cancelled_move_leaves_the_partition_where_it_was() {
    let mut cluster = Cluster::start_settled_with(4, "catch_up_bytes_per_sec = 1");
    let bootstrap = cluster.nodes[0].kafka.clone();
    create_topic(&bootstrap, 1);
    let before = cluster.settle("every node knows the topic, all in sync", || {
        let views: Vec<_> = cluster.running().map(|n| view(&n.kafka)).collect();
        let first = views[0].clone()?;
        (first.2.len() == 3 && views.iter().all(|v| *v == Some(first.clone()))).then_some(first)
    });
    assert_eq!(produce(&bootstrap, 0, 300), 300);
    assert_eq!(produce(&bootstrap, 300, 300), 300);
    let (leader, replicas, _) = before.clone();
    let newcomer = (0..4).find(|b| !replicas.contains(b)).unwrap();
    let mut target = vec![newcomer];
    target.extend(replicas.iter().filter(|&&r| r != leader));
    let target_arg: Vec<String> = target.iter().map(|b| b.to_string()).collect();
    let partition = ["--topic", TOPIC, "--partition", "0"];
    oxbow(
        &bootstrap,
        &[&["reassign"], &partition[..]].concat(),
        &target_arg.join(","),
    );
    let copy = cluster.nodes[newcomer as usize].data.join(TOPIC).join("0");
    cluster.settle("the new replica is created", || copy.exists().then_some(()));
    let listed = oxbow(&bootstrap, &["reassignments"], "");
    assert!(
        listed.contains(&format!("adding [{newcomer}] removing [{leader}]")),
        "{listed}"
    );

    let cancelled = oxbow(
        &bootstrap,
        &[&["reassign", "--cancel"], &partition[..]].concat(),
        "",
    );
    assert!(cancelled.contains("move cancelled"), "{cancelled}");
    cluster.settle("back where it was on every node", || {
        let views: Vec<_> = cluster.running().map(|n| view(&n.kafka)).collect();
        views
            .iter()
            .all(|v| *v == Some(before.clone()))
            .then_some(())
    });
    assert!(oxbow(&bootstrap, &["reassignments"], "").trim().is_empty());
    cluster.settle("the new replica's files are deleted", || {
        (!copy.exists()).then_some(())
    });
    assert_eq!(produce(&bootstrap, 600, 100), 100);
    let expected: Vec<(u64, String)> = (0..700).map(|i| (i as u64, format!("m-{i}"))).collect();
    cluster.node(leader).kill();
    assert_eq!(
        cluster.nodes[leader as usize].stored_records(TOPIC, 0),
        expected
    );
}

/// `oxbow cluster rebalance` on four processes: a topic created while node 3 was down is on
/// nodes 0-2 only; once 3 is back, rebalancing gives it its share of replicas and preferred
/// leaders, and every record produced before is read back.
#[test]
fn a_node_back_after_a_topic_was_created_gets_its_share_on_rebalance() {
    let mut cluster = Cluster::start_settled(4);
    let metadata_leader = cluster.metadata_leader();
    let away = (0..4).rev().find(|&b| b != metadata_leader).unwrap();
    let bootstrap = (cluster.nodes.iter()).find(|n| n.id != away).unwrap();
    let bootstrap = bootstrap.kafka.clone();
    let listed = |addr: &str| metadata(addr).brokers.len();
    cluster.node(away).kill();
    cluster.settle("the node away is fenced", || {
        (listed(&bootstrap) == 3).then_some(())
    });
    create_topic(&bootstrap, 6);
    let topic = [
        "--bootstrap",
        &bootstrap,
        "--topic",
        TOPIC,
        "--partitions",
        "6",
    ];
    confluent(&[&["produce", "--count", "600", "--acks", "all"], &topic[..]].concat());
    cluster.node(away).restart();
    cluster.settle("the node is back", || {
        (listed(&bootstrap) == 4).then_some(())
    });

    let planned = oxbow_command(&bootstrap, "cluster", &["rebalance", "--dry-run"]);
    assert!(planned.contains("dry run"), "{planned}");
    let rebalanced = oxbow_command(&bootstrap, "cluster", &["rebalance"]);
    assert!(rebalanced.ends_with("balanced\n"), "{rebalanced}");
    // Counted once every replica is in sync (a follower slow on this busy machine may be out
    // of the ISR for a moment, moved or not).
    let (replicas, preferred) = cluster.settle("every replica in sync", || {
        let answer = metadata(&bootstrap);
        let (mut replicas, mut preferred) = ([0usize; 4], [0usize; 4]);
        for topic in &answer.topics {
            for p in &topic.partitions {
                if p.isr_nodes.len() != p.replica_nodes.len() {
                    return None;
                }
                for (place, b) in p.replica_nodes.iter().enumerate() {
                    replicas[b.0 as usize] += 1;
                    preferred[b.0 as usize] += usize::from(place == 0);
                }
            }
        }
        Some((replicas, preferred))
    });
    let spread = |counts: [usize; 4]| counts.iter().max().unwrap() - counts.iter().min().unwrap();
    assert!(spread(replicas) <= 1, "replicas per broker {replicas:?}");
    assert!(
        spread(preferred) <= 1,
        "preferred leaders per broker {preferred:?}"
    );
    let again = oxbow_command(&bootstrap, "cluster", &["rebalance"]);
    assert!(again.contains("nothing to move"), "{again}");

    let read = confluent(&[&["consume", "--expect", "600"], &topic[..]].concat());
    assert_eq!(read.lines().filter(|l| l.starts_with("msg ")).count(), 600);
}

/// `oxbow cluster decommission N` on four processes: every replica on N moves to the others
/// (N led some of them), then N leaves the cluster; every record produced before is read back
/// through the others.
#[test]
fn a_decommissioned_node_is_drained_of_its_replicas_then_removed() {
    let cluster = Cluster::start_settled(4);
    let metadata_leader = cluster.metadata_leader();
    let drained = (0..4).find(|&b| b != metadata_leader).unwrap();
    let bootstrap = (cluster.nodes.iter()).find(|n| n.id != drained).unwrap();
    let bootstrap = bootstrap.kafka.clone();
    create_topic(&bootstrap, 4);
    let output = Command::new("python3")
        .arg(CLIENT)
        .args([
            "produce",
            "--bootstrap",
            &bootstrap,
            "--topic",
            TOPIC,
            "--partitions",
            "4",
        ])
        .args(["--count", "400", "--acks", "all"])
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let decommissioned = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args([
            "cluster",
            "decommission",
            &drained.to_string(),
            "--bootstrap",
            &bootstrap,
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&decommissioned.stdout);
    let stderr = String::from_utf8_lossy(&decommissioned.stderr);
    assert!(decommissioned.status.success(), "{printed}{stderr}");
    assert!(
        printed.contains(&format!("broker {drained} removed")),
        "{printed}"
    );

    let answer = metadata(&bootstrap);
    assert!(answer.brokers.iter().all(|b| b.node_id.0 != drained));
    let topic = (answer.topics.iter())
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
        .unwrap();
    for p in &topic.partitions {
        let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
        assert!(
            !replicas.contains(&drained) && replicas.len() == 3,
            "{replicas:?}"
        );
        assert!(p.leader_id.0 != drained && p.leader_id.0 >= 0);
    }
    let output = Command::new("python3")
        .arg(CLIENT)
        .args([
            "consume",
            "--bootstrap",
            &bootstrap,
            "--topic",
            TOPIC,
            "--partitions",
            "4",
        ])
        .args(["--expect", "400"])
        .output()
        .unwrap();
    let read = String::from_utf8_lossy(&output.stdout);
    assert_eq!(read.lines().filter(|l| l.starts_with("msg ")).count(), 400);
}
