//! Replicated partitions over three `oxbow serve` processes: a topic with three replicas takes
//! confluent-kafka's acks=all produce through its leader, the followers copy the stored bytes,
//! and after kill -9 of the leader a follower leads with every acknowledged record, read back
//! by kcat through the survivors; a SIGTERM hands leadership over first; a leader cut off from
//! the majority stops acknowledging. Needs kcat and python3 with confluent-kafka.

mod common;
#[path = "common/history.rs"]
mod history;

use common::cluster::{partition_view, Cluster};
use common::{kafka_call, kcat};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest, TopicName};
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
    partition_view(addr, TOPIC).map(|(leader, _, isr)| (leader, isr))
}

/// Creates `TOPIC` with one partition on three replicas and `configs` through `bootstrap`;
/// once every running node knows it, its leader.
fn create_replicated(cluster: &Cluster, bootstrap: &str, configs: &[(&str, &str)]) -> i32 {
    let mut stream = TcpStream::connect(bootstrap).unwrap();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(TOPIC.into())))
            .with_num_partitions(1)
            .with_replication_factor(3)
            .with_configs(
                (configs.iter())
                    .map(|(name, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(name.to_string()))
                            .with_value(Some(StrBytes::from_string(value.to_string())))
                    })
                    .collect(),
            )]);
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

/// Produces one record `value` to partition 0 of `TOPIC` at `addr` with `acks` and the request
/// timeout `timeout_ms` (one request, no client retries); the partition's error code.
fn produce_one(addr: &str, acks: i16, timeout_ms: i32, value: &str) -> i16 {
    produce_batch(addr, acks, timeout_ms, &[value])
}

/// Produces `values` as one batch, as [`produce_one`] does one record.
fn produce_batch(addr: &str, acks: i16, timeout_ms: i32, values: &[&str]) -> i16 {
    let mut builder = oxbow_core::BatchBuilder::new(0);
    for value in values {
        builder.push(None, Some(value.as_bytes()), 0);
    }
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(TOPIC.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(builder.build().into_bytes()))])]);
    let answer = kafka_call(&mut TcpStream::connect(addr).unwrap(), 9, &request);
    answer.responses[0].partition_responses[0].error_code
}

/// Starts a confluent-kafka acks=all idempotent producer of `count` records from index `base`
/// to `TOPIC` through `bootstrap`: the process, its acknowledgements (offset, value) as they
/// come, and the thread that reads them.
fn spawn_producer(
    bootstrap: &str,
    base: &str,
    count: &str,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<(i64, String)>,
    std::thread::JoinHandle<()>,
) {
    let mut producer = Command::new("python3")
        .arg(CLIENT)
        .args(["produce", "--bootstrap", bootstrap, "--topic", TOPIC])
        .args([
            "--base",
            base,
            "--count",
            count,
            "--acks",
            "all",
            "--idempotent",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    let stdout = producer.stdout.take().unwrap();
    let (tx, acks) = std::sync::mpsc::channel();
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
    (producer, acks, reader)
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
    let leader = create_replicated(&cluster, &bootstrap, &[]);
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
    let leader = create_replicated(&cluster, &bootstrap, &[]);
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

/// The leader is killed at a random moment under a confluent-kafka acks=all idempotent
/// producer, cycle after cycle (`OXBOW_REPLICATION_CYCLES`, default 10;
/// `OXBOW_REPLICATION_KILL_SEED` replays the moments); the killed node comes back and rejoins
/// each time. At the end the history of acknowledgements and the log is checked offline:
/// nothing acknowledged lost, moved off its offset, duplicated or reordered; and every
/// replica's files hold the same log.
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
    create_replicated(&cluster, &bootstrap, &[]);
    // (producer, offset, value) of every acknowledgement; one idempotent producer per cycle.
    let mut acked: Vec<(usize, u64, String)> = Vec::new();
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
        let (producer, acks, reader) = spawn_producer(&bootstrap, &base, "6000");
        // Killed after a random number of acknowledgements.
        let kill_after = rng.usize(1..3_000);
        let mut seen = 0;
        while seen < kill_after {
            match acks.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok((offset, value)) => {
                    acked.push((cycle, offset as u64, value));
                    seen += 1;
                }
                Err(_) => break,
            }
        }
        cluster.node(leader).kill();
        let status = producer.wait_with_output().unwrap().status;
        reader.join().unwrap();
        acked.extend((acks.try_iter()).map(|(offset, value)| (cycle, offset as u64, value)));
        eprintln!("cycle {cycle}: leader {leader} killed after {seen} acks; producer {status}");
        cluster.node(leader).restart();
    }
    cluster.settle("all three replicas in sync at the end", || {
        let survivor = (cluster.running()).next().unwrap().kafka.clone();
        partition_state(&survivor).filter(|(l, isr)| *l >= 0 && *isr == [0, 1, 2])
    });
    let survivor = (cluster.running()).next().unwrap().kafka.clone();
    let log: Vec<(u64, String)> = (read_with_offsets(&survivor).into_iter())
        .map(|(o, v)| (o as u64, v))
        .collect();
    let path = cluster.dir.path().join("history");
    history::record(&path, &acked, &log);
    let anomalies = history::check(&path);
    if !anomalies.is_empty() {
        let kept = std::env::temp_dir().join(format!("oxbow-replication-history-{seed}"));
        std::fs::copy(&path, &kept).unwrap();
        panic!(
            "seed {seed}: {anomalies:?} (history kept in {})",
            kept.display()
        );
    }
    // Every replica's files hold the same records (all in sync, nothing produced since).
    for node in 0..3 {
        cluster.node(node).kill();
        let replica = cluster.nodes[node as usize].stored_records(TOPIC, 0);
        assert!(replica == log, "replica {node} differs (seed {seed})");
    }
    eprintln!(
        "replication kill loop: {cycles} leader kills, {} acknowledged records; history checked, no anomaly; replicas equal",
        acked.len()
    );
}

/// SIGTERM of the partition leader under a confluent-kafka acks=all idempotent producer: the
/// node hands the leadership to a follower before it stops (controlled shutdown), so the
/// producer sees no error, only a metadata refresh; every acknowledged record is at its offset
/// on the new leader; started again, the node rejoins the in-sync replicas and, being the
/// preferred replica, gets the leadership back.
#[test]
fn sigterm_of_the_leader_hands_over_leadership_and_clients_see_no_error() {
    let mut cluster = Cluster::start_settled(3);
    let leader = create_replicated(&cluster, &cluster.nodes[0].kafka.clone(), &[]);
    let bootstrap = (cluster.running()).find(|n| n.id != leader).unwrap();
    let bootstrap = bootstrap.kafka.clone();
    let (producer, acks, reader) = spawn_producer(&bootstrap, "0", "4000");
    let mut acked: Vec<(i64, String)> = Vec::new();
    while acked.len() < 1_000 {
        let ack = acks.recv_timeout(std::time::Duration::from_secs(30));
        acked.push(ack.expect("the producer acknowledges records"));
    }

    let stopping = std::time::Instant::now();
    let broker = cluster.node(leader).broker.as_mut().unwrap();
    assert!(broker.signal(libc::SIGTERM).success());
    let log = broker.log_so_far();
    cluster.node(leader).broker = None;
    eprintln!(
        "leader {leader} stopped {:?} after SIGTERM",
        stopping.elapsed()
    );
    assert!(
        log.contains("controlled shutdown: leadership handed over"),
        "{log}"
    );
    let output = producer.wait_with_output().unwrap();
    reader.join().unwrap();
    acked.extend(acks.try_iter());
    assert!(
        output.status.success(),
        "the producer saw errors: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(acked.len(), 4_000);
    // (The survivors learn the commit with the group's next message: settle, not assert.)
    cluster.settle("a follower leads, the stopped node out of the ISR", || {
        partition_state(&bootstrap)
            .filter(|(l, isr)| *l >= 0 && *l != leader && !isr.contains(&leader))
    });
    let stored: std::collections::BTreeMap<i64, String> =
        (read_with_offsets(&bootstrap).into_iter()).collect();
    for (offset, value) in &acked {
        assert_eq!(stored.get(offset), Some(value), "acknowledged {value}");
    }

    // Back and in sync, it is the partition's preferred replica (its first), and the
    // controller hands the leadership home (auto.leader.rebalance).
    cluster.node(leader).restart();
    cluster.settle(
        "the restarted preferred replica leads again, all in sync",
        || partition_state(&bootstrap).filter(|(l, isr)| *l == leader && *isr == [0, 1, 2]),
    );
    let back: Vec<(i64, String)> = read_with_offsets(&bootstrap);
    assert_eq!(back.len(), 4_000, "nothing lost or added by the moves");
}

/// DeleteRecords on a replicated partition (`oxbow partition delete-records`, which finds the
/// leader): it is answered once the followers moved their log start to the leader's (their
/// log-start checkpoints say so); a follower that lost its files catches up
/// from that start, which lies inside a batch; and after kill -9 of the leader the new leader
/// serves from there: the deleted records do not come back.
#[test]
fn deleted_records_stay_deleted_when_a_follower_takes_over() {
    const START: usize = 123;
    let mut cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[0].kafka.clone();
    let leader = create_replicated(&cluster, &bootstrap, &[]);
    // The records from 100 on are one batch, which holds START.
    let mut acked = produce(&bootstrap, 0, 100);
    let batch: Vec<String> = (100..MESSAGES).map(|i| format!("m-{i}")).collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    let leader_addr = cluster.node(leader).kafka.clone();
    assert_eq!(produce_batch(&leader_addr, -1, 30_000, &batch), 0);
    acked.extend(batch.iter().map(|v| v.to_string()));
    // Through the operator's tool, asking a node that does not lead the partition.
    let other = (cluster.running())
        .find(|n| n.id != leader)
        .unwrap()
        .kafka
        .clone();
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["partition", "delete-records", "--bootstrap", &other])
        .args([
            "--topic",
            TOPIC,
            "--partition",
            "0",
            "--before",
            &START.to_string(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8(output.stdout).unwrap();
    assert_eq!(said.trim(), format!("{TOPIC}/0 starts at {START}"));
    let starts_there = |cluster: &Cluster| {
        cluster.running().all(|node| {
            let dir = oxbow_storage::layout::partition_dir(node.data_dir(), TOPIC, 0);
            let checkpoint = std::fs::read(oxbow_storage::log_start::log_start_path(&dir));
            let start = checkpoint.map(|b| oxbow_storage::log_start::decode(&b));
            matches!(start, Ok(Ok(start)) if start == START as u64)
        })
    };
    // Answered once every in-sync follower's log starts there too.
    assert!(
        starts_there(&cluster),
        "answered before the followers moved"
    );

    // A follower without its files starts again at the batch holding the leader's start.
    let follower = (0..3).find(|&id| id != leader).unwrap();
    cluster.node(follower).kill();
    let dir = oxbow_storage::layout::partition_dir(cluster.node(follower).data_dir(), TOPIC, 0);
    std::fs::remove_dir_all(dir).unwrap();
    cluster.node(follower).restart();
    cluster.settle("the emptied follower caught up and is in sync", || {
        let in_sync = partition_state(&leader_addr).is_some_and(|(_, isr)| isr == [0, 1, 2]);
        (in_sync && starts_there(&cluster)).then_some(())
    });

    cluster.node(leader).kill();
    let survivor = (cluster.running()).next().unwrap().kafka.clone();
    cluster.settle("a follower leads", || {
        partition_state(&survivor).filter(|(l, _)| *l >= 0 && *l != leader)
    });
    let read = read_with_offsets(&survivor);
    assert_eq!(read.first().map(|(offset, _)| *offset), Some(START as i64));
    let values: Vec<String> = read.into_iter().map(|(_, value)| value).collect();
    assert_eq!(values, acked[START..]);
}

/// Every record of `TOPIC` with its offset, read by kcat through `addr`.
fn read_with_offsets(addr: &str) -> Vec<(i64, String)> {
    let args = [
        "-C",
        "-t",
        TOPIC,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%o %s\n",
    ];
    let (ok, out, err) = kcat(addr, &args, None);
    assert!(ok, "{err}");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let (o, v) = l.split_once(' ').unwrap();
            (o.parse().unwrap(), v.to_string())
        })
        .collect()
}

/// The partition leader cut off from the other two by the transport's fault switch (both ends
/// of both links): it stops acknowledging acks=all (a produce sent to it times out with
/// REQUEST_TIMED_OUT), the majority elects a new leader that takes acks=all, and once the
/// links heal the old leader learns it was replaced, drops what only it held, follows and
/// rejoins the ISR. In the end every replica's files hold the same records, every
/// acknowledged one at its offset and none of what the isolated leader took.
#[test]
fn a_leader_partitioned_from_the_majority_stops_acknowledging_and_rejoins_after_healing() {
    let mut cluster = Cluster::start_settled(3);
    let leader = create_replicated(&cluster, &cluster.nodes[0].kafka.clone(), &[]);
    let others: Vec<i32> = (0..3).filter(|&b| b != leader).collect();
    let survivor = cluster.nodes[others[0] as usize].kafka.clone();
    let mut acked = produce(&survivor, 0, MESSAGES);

    let set_links = |cluster: &Cluster, heal: bool| {
        for &other in &others {
            cluster.nodes[leader as usize].set_link(other, heal);
            cluster.nodes[other as usize].set_link(leader, heal);
        }
    };
    set_links(&cluster, false);
    let isolated = cluster.nodes[leader as usize].kafka.clone();
    let refused = produce_one(&isolated, -1, 2_000, "isolated");
    assert_eq!(refused, 7, "REQUEST_TIMED_OUT, not an ack");

    let (new_leader, _) = cluster.settle("the majority elects another leader", || {
        partition_state(&survivor).filter(|(l, _)| others.contains(l))
    });
    eprintln!("leader {leader} cut off; broker {new_leader} leads the majority");
    acked.extend(produce(&survivor, MESSAGES, MESSAGES));

    set_links(&cluster, true);
    // The majority's view (the old leader's own is stale until it hears the group again) and
    // the old leader's, the same. Once in sync it is the preferred replica again, and may
    // lead again.
    cluster.settle("the old leader follows and rejoins the ISR", || {
        let majority = partition_state(&survivor).filter(|(l, isr)| *l >= 0 && *isr == [0, 1, 2]);
        majority.filter(|view| partition_state(&isolated).as_ref() == Some(view))
    });
    let expected: Vec<(u64, String)> = (acked.iter().enumerate())
        .map(|(offset, value)| (offset as u64, value.clone()))
        .collect();
    for node in 0..3 {
        cluster.node(node).kill();
        let stored = cluster.nodes[node as usize].stored_records(TOPIC, 0);
        assert_eq!(stored, expected, "replica {node}'s files");
    }
}

/// A topic's `min.insync.replicas` of 3 on three replicas: with a follower gone and out of the
/// ISR, acks=all is refused with NOT_ENOUGH_REPLICAS while acks=1 goes on.
#[test]
fn a_topics_min_insync_replicas_refuses_acks_all_below_it() {
    let mut cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[0].kafka.clone();
    let leader = create_replicated(&cluster, &bootstrap, &[("min.insync.replicas", "3")]);
    let leader_addr = cluster.nodes[leader as usize].kafka.clone();
    assert_eq!(produce_one(&leader_addr, -1, 10_000, "all three"), 0);
    let follower = (0..3).find(|&b| b != leader).unwrap();
    cluster.node(follower).kill();
    cluster.settle("the dead follower leaves the ISR", || {
        partition_state(&leader_addr).filter(|(_, isr)| !isr.contains(&follower))
    });
    assert_eq!(produce_one(&leader_addr, -1, 10_000, "two of three"), 19);
    assert_eq!(produce_one(&leader_addr, 1, 10_000, "the leader's"), 0);
}

/// confluent-kafka's AdminClient: DescribeCluster lists the three brokers; with automatic
/// rebalancing off, a partition led away from its preferred replica (controlled shutdown,
/// restart) goes home on ElectLeaders, and asking again says ELECTION_NOT_NEEDED.
#[test]
fn admin_clients_describe_the_cluster_and_elect_preferred_leaders() {
    let mut cluster = Cluster::start_settled_with(3, "auto_leader_rebalance = false");
    let bootstrap = cluster.nodes[0].kafka.clone();
    let admin = |mode: &str, bootstrap: &str| {
        let output = Command::new("python3")
            .arg(CLIENT)
            .args([mode, "--bootstrap", bootstrap, "--topic", TOPIC])
            .output()
            .expect("python3 with confluent-kafka (scripts/test installs it)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{mode}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    let described = admin("describe-cluster", &bootstrap);
    let brokers: Vec<&str> = (described.lines())
        .filter_map(|l| l.strip_prefix("broker "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(brokers, ["0", "1", "2"], "{described}");
    assert!(described.starts_with("cluster "), "{described}");

    let preferred = create_replicated(&cluster, &bootstrap, &[]);
    let broker = cluster.node(preferred).broker.as_mut().unwrap();
    assert!(broker.signal(libc::SIGTERM).success());
    cluster.node(preferred).broker = None;
    cluster.node(preferred).restart();
    let survivor = (cluster.running()).find(|n| n.id != preferred).unwrap();
    let survivor = survivor.kafka.clone();
    let (away, _) = cluster.settle("the preferred replica back in sync, led elsewhere", || {
        partition_state(&survivor).filter(|(_, isr)| *isr == [0, 1, 2])
    });
    assert_ne!(away, preferred, "nothing moves it home by itself");
    assert_eq!(admin("elect", &survivor).trim(), "elected 0 none");
    cluster.settle("the preferred replica leads", || {
        partition_state(&survivor).filter(|(l, _)| *l == preferred)
    });
    assert_eq!(
        admin("elect", &survivor).trim(),
        "elected 0 ELECTION_NOT_NEEDED"
    );
}
