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
    let isr_metric = format!("oxbow_partition_isr{{topic=\"{TOPIC}\",partition=\"0\"}} ");
    let under = "oxbow_under_replicated_partitions ";
    cluster.settle("the leader reports the partition under-replicated", || {
        let node = &cluster.nodes[leader as usize];
        (node.metric(under) == 1.0 && node.metric(&isr_metric) == 2.0).then_some(())
    });
    acked.extend(produce(&leader_addr, MESSAGES, MESSAGES));

    // Back, it catches up from the leader and is taken into the ISR again.
    cluster.node(follower).restart();
    cluster.settle("the follower rejoins the ISR", || {
        partition_state(&leader_addr).filter(|(_, isr)| *isr == [0, 1, 2])
    });
    cluster.settle("the leader reports the partition fully replicated", || {
        let node = &cluster.nodes[leader as usize];
        (node.metric(under) == 0.0 && node.metric(&isr_metric) == 3.0).then_some(())
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

/// The leader is killed at a random moment under a confluent-kafka acks=all producer, cycle
/// after cycle (`OXBOW_REPLICATION_CYCLES`, default 10; `OXBOW_REPLICATION_KILL_SEED` replays
/// the moments); the killed node comes back and rejoins each time. At the end every record the
/// producer saw acknowledged is in the log at the offset it was acknowledged with.
#[test]
fn acknowledged_records_survive_the_leader_killed_at_random_moments() {
    let cycles: usize = std::env::var("OXBOW_REPLICATION_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("OXBOW_REPLICATION_KILL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("replication kill loop: seed {seed} (OXBOW_REPLICATION_KILL_SEED replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[0].kafka.clone();
    create_replicated(&cluster, &bootstrap);
    let mut acked: Vec<(i64, String)> = Vec::new();
    for cycle in 0..cycles {
        // Every replica in sync before the next kill, so the partition never goes offline.
        let leader = cluster.settle("all three replicas in sync", || {
            let views: Vec<_> = (cluster.running())
                .map(|n| partition_state(&n.kafka))
                .collect();
            let first = views[0].clone()?;
            (views.len() == 3
                && first.0 >= 0
                && first.1 == [0, 1, 2]
                && views.iter().all(|v| *v == Some(first.clone())))
            .then_some(first.0)
        });
        let bootstrap = (cluster.running())
            .find(|n| n.id != leader)
            .unwrap()
            .kafka
            .clone();
        let base = (cycle * 1_000_000).to_string();
        let mut producer = Command::new("python3")
            .arg(CLIENT)
            .args(["produce", "--bootstrap", &bootstrap, "--topic", TOPIC])
            .args(["--base", &base, "--count", "6000", "--acks", "all"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 with confluent-kafka (scripts/test installs it)");
        let (tx, acks) = std::sync::mpsc::channel();
        let stdout = producer.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let ["ack", _, offset, value] = line.splitn(4, ' ').collect::<Vec<_>>()[..] {
                    let _ = tx.send((offset.parse::<i64>().unwrap(), value.to_string()));
                }
            }
        });
        // Killed after a random number of acknowledgements.
        let kill_after = rng.usize(1..3_000);
        let mut seen = 0;
        while seen < kill_after {
            match acks.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(ack) => {
                    acked.push(ack);
                    seen += 1;
                }
                Err(_) => break,
            }
        }
        cluster.node(leader).kill();
        let status = producer.wait().unwrap();
        reader.join().unwrap();
        acked.extend(acks.try_iter());
        eprintln!("cycle {cycle}: leader {leader} killed after {seen} acks; producer {status}");
        cluster.node(leader).restart();
    }
    cluster.settle("all three replicas in sync at the end", || {
        let survivor = (cluster.running()).next().unwrap().kafka.clone();
        partition_state(&survivor).filter(|(l, isr)| *l >= 0 && *isr == [0, 1, 2])
    });
    let survivor = (cluster.running()).next().unwrap().kafka.clone();
    let (ok, out, err) = kcat(
        &survivor,
        &[
            "-C",
            "-t",
            TOPIC,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%o %s\n",
        ],
        None,
    );
    assert!(ok, "{err}");
    let stored: std::collections::BTreeMap<i64, String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let (o, v) = l.split_once(' ').unwrap();
            (o.parse().unwrap(), v.to_string())
        })
        .collect();
    for (offset, value) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acknowledged {value} at {offset} (seed {seed})"
        );
    }
    eprintln!(
        "replication kill loop: {cycles} leader kills, {} acknowledged records all at their offsets",
        acked.len()
    );
}
