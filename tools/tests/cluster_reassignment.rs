//! Moving a partition to other brokers (`oxbow partition reassign`, Kafka's
//! AlterPartitionReassignments, KIP-455) on four `oxbow serve` processes: the new replica
//! catches up from the leader's log (within `cluster.catch_up_bytes_per_sec`), the move
//! completes once it is in sync, leadership leaves a replica that goes, and the old replica's
//! files are deleted; every acknowledged record is on the new replicas. `oxbow cluster
//! decommission` drains a node that way and removes it. Needs python3 with confluent-kafka.

mod common;

use common::cluster::{metadata, partition_view, Cluster};
use common::kafka_call;
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxbow"));
    command
        .arg("partition")
        .args(args)
        .args(["--bootstrap", bootstrap]);
    if !replicas.is_empty() {
        command.args(["--replicas", replicas]);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "oxbow partition {args:?}: {stderr}"
    );
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
