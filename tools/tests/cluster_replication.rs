//! Replicated partitions over three `oxbow serve` processes: a topic with three replicas takes
//! confluent-kafka's acks=all produce through its leader, the followers copy the stored bytes,
//! and after kill -9 of the leader a follower leads with every acknowledged record, read back
//! by kcat through the survivors. Needs kcat and python3 with confluent-kafka.

mod common;

use common::cluster::{metadata, Cluster};
use common::{kafka_call, kcat};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::net::TcpStream;
use std::process::Command;

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);
const TOPIC: &str = "replicated";
const MESSAGES: usize = 300;

/// The leader and in-sync replicas of partition 0 of `TOPIC` as `addr` sees them.
fn partition_state(addr: &str) -> Option<(i32, Vec<i32>)> {
    let answer = metadata(addr);
    let topic =
        (answer.topics.iter()).find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))?;
    let p = topic.partitions.first()?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort_unstable();
    Some((p.leader_id.0, isr))
}

/// Creates `TOPIC` with one partition on three replicas through `bootstrap`; once every
/// running node knows it, its leader.
fn create_replicated(cluster: &Cluster, bootstrap: &str) -> i32 {
    let mut stream = TcpStream::connect(bootstrap).unwrap();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(TOPIC.into())))
            .with_num_partitions(1)
            .with_replication_factor(3)]);
    let created = kafka_call(&mut stream, 5, &request);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let (leader, isr) = cluster.settle("every node knows the replicated topic", || {
        let views: Vec<_> = (cluster.running())
            .map(|n| partition_state(&n.kafka))
            .collect();
        (views.iter().all(|v| v.is_some() && *v == views[0])).then(|| views[0].clone().unwrap())
    });
    assert_eq!(isr, vec![0, 1, 2]);
    leader
}

/// Produces `count` records from index `base` with confluent-kafka, acks=all; the values the
/// broker acknowledged.
fn produce(bootstrap: &str, base: usize, count: usize) -> Vec<String> {
    let (base, count) = (base.to_string(), count.to_string());
    let output = Command::new("python3")
        .arg(CLIENT)
        .args(["produce", "--bootstrap", bootstrap, "--topic", TOPIC])
        .args(["--base", &base, "--count", &count, "--acks", "all"])
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    let acked: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ack "))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        acked.len().to_string(),
        count,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    acked
}

/// Every record of `TOPIC`, read by kcat through `addr`.
fn read_all(addr: &str) -> Vec<String> {
    let (ok, out, err) = kcat(
        addr,
        &["-C", "-t", TOPIC, "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok, "{err}");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn acks_all_records_survive_kill_9_of_the_partition_leader() {
    let mut cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[0].kafka.clone();
    let leader = create_replicated(&cluster, &bootstrap);
    let acked = produce(&bootstrap, 0, MESSAGES);

    cluster.node(leader).kill();
    let survivor = (cluster.running()).next().unwrap().kafka.clone();
    let (new_leader, _) = cluster.settle("a follower leads", || {
        partition_state(&survivor).filter(|(l, _)| *l >= 0 && *l != leader)
    });
    eprintln!("partition leader {leader} killed; broker {new_leader} leads");
    assert_eq!(
        read_all(&survivor),
        acked,
        "every acknowledged record, in order, from the new leader"
    );
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let mut cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[0].kafka.clone();
    let leader = create_replicated(&cluster, &bootstrap);
    let follower = (0..3).find(|&b| b != leader).unwrap();
    let mut acked = produce(&bootstrap, 0, MESSAGES);

    // A follower dies: after replica_lag_time_max_ms (1 s here) the leader drops it from the
    // ISR, and acks=all goes on with the other two.
    cluster.node(follower).kill();
    let leader_addr = cluster.nodes[leader as usize].kafka.clone();
    cluster.settle("the dead follower leaves the ISR", || {
        partition_state(&leader_addr).filter(|(_, isr)| !isr.contains(&follower))
    });
    acked.extend(produce(&bootstrap, MESSAGES, MESSAGES));

    // Back, it catches up from the leader and is taken into the ISR again.
    cluster.node(follower).restart();
    cluster.settle("the follower rejoins the ISR", || {
        partition_state(&leader_addr).filter(|(_, isr)| *isr == [0, 1, 2])
    });
    // It holds everything: with the leader gone, it or the third replica leads, and every
    // acknowledged record is there.
    cluster.node(leader).kill();
    let survivor = cluster.nodes[follower as usize].kafka.clone();
    cluster.settle("another replica leads", || {
        partition_state(&survivor).filter(|(l, _)| *l >= 0 && *l != leader)
    });
    assert_eq!(read_all(&survivor), acked);
}
