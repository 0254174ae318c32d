//! The native protocol across three `oxbow serve` processes: `oxbow-client` bootstrapped from
//! one node learns the leaders (`Metadata`), sends each batch to its partition's leader and
//! attaches a consumer on every leader; its admin calls gather every leader's partitions; a
//! broker asked for a partition another node leads answers `NotLeader`; a reliable
//! subscription resumes on a new leader from the cursor its old leader replicated.

mod common;

use common::runtime;

use bytes::BytesMut;
use common::cluster::{metadata, partition_view, Cluster};
use common::native_client::produce;
use oxbow_client::{Acks, Client, ErrorCode, Mode, SubscriptionType};
use oxbow_core::native::SubscriptionInfo;
use oxbow_core::native::{decode_frame, encode_frame, ClientFrame, ServerFrame};
use oxbow_core::BatchBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOPIC: &str = "spread";
const PARTITIONS: u32 = 6;
const MESSAGES: usize = 600;
/// Bound on a delivery that does not come (a hung consumer fails, not hangs).
const PATIENCE: Duration = Duration::from_secs(30);

/// The leader of each partition of `topic`, as node `addr` (Kafka) sees it.
fn leaders(addr: &str, topic: &str) -> Option<Vec<i32>> {
    let answer = metadata(addr);
    let described = answer
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))?;
    let mut partitions: Vec<(i32, i32)> = (described.partitions.iter())
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    partitions.sort_unstable();
    Some(partitions.into_iter().map(|(_, leader)| leader).collect())
}

/// Sends one frame on a raw connection and reads the broker's answer to it.
async fn raw_call(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut BytesMut,
    frame: &ClientFrame,
    payload: &[u8],
) -> ServerFrame {
    let mut bytes = encode_frame(frame, payload.len());
    bytes.extend_from_slice(payload);
    stream.write_all(&bytes).await.unwrap();
    loop {
        if let Some(frame) = decode_frame::<ServerFrame>(buffer, 1 << 20).unwrap() {
            return frame.control;
        }
        let read = tokio::time::timeout(PATIENCE, stream.read_buf(buffer))
            .await
            .expect("the broker answers")
            .unwrap();
        assert_ne!(read, 0, "the broker closed the connection");
    }
}

#[test]
fn the_native_client_produces_and_consumes_through_every_leader_from_one_node() {
    let cluster = Cluster::start_settled(3);
    let bootstrap = cluster.nodes[0].native.clone();
    let rt = runtime();
    let client = rt
        .block_on(Client::builder().broker(&bootstrap).connect())
        .unwrap();
    rt.block_on(client.create_topic(TOPIC, PARTITIONS)).unwrap();
    // Every node must know the topic before its partitions are asked of it.
    let leaders = cluster.settle("every node knows the topic", || {
        let views: Vec<Option<Vec<i32>>> = (cluster.running())
            .map(|n| leaders(&n.kafka, TOPIC))
            .collect();
        (views.iter().all(|v| v.is_some() && *v == views[0])).then(|| views[0].clone().unwrap())
    });
    let spread: BTreeSet<i32> = leaders.iter().copied().collect();
    assert_eq!(
        spread.len(),
        3,
        "leaders spread over the nodes: {leaders:?}"
    );

    // Keyed messages to every partition, acks=all, through one bootstrap node.
    let produced: BTreeMap<(u32, u64), String> = rt.block_on(async {
        let producer = client
            .producer(TOPIC)
            .acks(Acks::All)
            .build()
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..MESSAGES {
            let value = format!("m{i}");
            let key = format!("k{i}");
            let sent = producer
                .send(Some(key.as_bytes()), value.as_bytes())
                .await
                .unwrap();
            pending.push((value, sent));
        }
        let mut produced = BTreeMap::new();
        for (value, sent) in pending {
            let delivered = sent.await.unwrap();
            produced.insert((delivered.partition, delivered.offset.unwrap()), value);
        }
        produced
    });
    let used: BTreeSet<u32> = produced.keys().map(|(p, _)| *p).collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "keys reach every partition"
    );

    // Offsets come from each leader and are gathered by the client.
    let described = rt.block_on(client.describe_topic(TOPIC)).unwrap();
    let partitions: Vec<u32> = described.iter().map(|p| p.partition).collect();
    assert_eq!(partitions, (0..PARTITIONS).collect::<Vec<_>>());
    let total: u64 = described.iter().map(|p| p.log_end - p.log_start).sum();
    assert_eq!(total, MESSAGES as u64);

    // One exclusive reliable consumer attached through every leader reads exactly that.
    let consumed = rt.block_on(async {
        let mut consumer = client
            .consumer(TOPIC, "audit")
            .kind(SubscriptionType::Exclusive)
            .mode(Mode::Reliable)
            .build()
            .await
            .unwrap();
        let mut consumed = BTreeMap::new();
        while consumed.len() < MESSAGES {
            let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(1_000))
                .await
                .expect("every partition delivers")
                .unwrap();
            consumer.ack_all(&batch).unwrap();
            for m in batch {
                let value = String::from_utf8(m.value.to_vec()).unwrap();
                assert!(consumed.insert((m.partition, m.offset), value).is_none());
            }
        }
        consumer.close().await.unwrap();
        consumed
    });
    assert_eq!(consumed, produced);
    let subscriptions = rt.block_on(client.list_subscriptions(TOPIC)).unwrap();
    let audit: Vec<u32> = (subscriptions.iter())
        .filter(|s| s.name == "audit")
        .map(|s| s.partition)
        .collect();
    assert_eq!(audit, (0..PARTITIONS).collect::<Vec<_>>());

    // A raw produce and subscribe to node 0 for a partition another node leads: NotLeader.
    let elsewhere = leaders.iter().position(|&l| l != 0).unwrap() as u32;
    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(&bootstrap).await.unwrap();
        let mut buffer = BytesMut::new();
        let hello = ClientFrame::Connect {
            version: oxbow_core::native::PROTOCOL_VERSION,
            client_name: "raw".into(),
        };
        let connected = raw_call(&mut stream, &mut buffer, &hello, &[]).await;
        assert!(
            matches!(connected, ServerFrame::Connected { broker_id: 0, .. }),
            "{connected:?}"
        );
        let mut batch = BatchBuilder::new(0);
        batch.push(None, Some(b"misrouted".as_slice()), 0);
        let produce = ClientFrame::Produce {
            request_id: 1,
            topic: TOPIC.into(),
            partition: elsewhere,
            acks: oxbow_core::native::Acks::Leader,
        };
        let answer = raw_call(&mut stream, &mut buffer, &produce, batch.build().bytes()).await;
        assert!(
            matches!(
                answer,
                ServerFrame::Error {
                    request_id: 1,
                    code: ErrorCode::NotLeader,
                    ..
                }
            ),
            "{answer:?}"
        );
        let subscribe = ClientFrame::Subscribe {
            request_id: 2,
            consumer_id: 1,
            topic: TOPIC.into(),
            subscription: "misrouted".into(),
            kind: SubscriptionType::Shared,
            mode: Mode::Reliable,
            consumer_name: "raw".into(),
            priority: 0,
            start: oxbow_core::native::StartPosition::Earliest,
            partitions: None,
            reattaching: false,
        };
        let answer = raw_call(&mut stream, &mut buffer, &subscribe, &[]).await;
        assert!(
            matches!(
                answer,
                ServerFrame::Error {
                    request_id: 2,
                    code: ErrorCode::NotLeader,
                    ..
                }
            ),
            "{answer:?}"
        );
    });
    // Nothing misrouted was stored anywhere.
    let after = rt.block_on(client.describe_topic(TOPIC)).unwrap();
    assert_eq!(after, described);
}

/// Runs `oxbow topic create TOPIC --replication-factor REPLICAS` against native address
/// `broker`: whether it succeeded, and what it printed on stderr.
fn cli_create(broker: &str, topic: &str, replicas: u16) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["topic", "--broker", broker, "create", topic])
        .args(["--replication-factor", &replicas.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

/// Creates `topic` with one partition on three replicas (`oxbow topic create` through the
/// native address `addr`, after four are refused); once every running node sees all three in
/// sync, its leader.
fn create_replicated(cluster: &Cluster, addr: &str, topic: &str) -> i32 {
    let (created, stderr) = cli_create(addr, topic, 4);
    assert!(!created, "four replicas on three brokers are refused");
    assert!(stderr.contains("InvalidReplicationFactor"), "{stderr}");
    let (created, stderr) = cli_create(addr, topic, 3);
    assert!(created, "{stderr}");
    cluster.settle(
        "every node sees the partition's three replicas in sync",
        || {
            let views: Vec<_> = (cluster.running())
                .map(|n| partition_view(&n.kafka, topic))
                .collect();
            let first = views[0].clone()?;
            (first.2.len() == 3 && views.iter().all(|v| v.as_ref() == Some(&first)))
                .then_some(first.0)
        },
    )
}

/// Waits until subscription "resume" of `topic`, as `client` lists it, passes `check`.
fn settle_resume(
    cluster: &Cluster,
    rt: &tokio::runtime::Runtime,
    (client, topic): (&Client, &str),
    what: &str,
    check: impl Fn(&SubscriptionInfo) -> bool,
) -> SubscriptionInfo {
    cluster.settle(what, || {
        let subscriptions = rt.block_on(client.list_subscriptions(topic)).ok()?;
        let resume = subscriptions.into_iter().find(|s| s.name == "resume")?;
        check(&resume).then_some(resume)
    })
}

/// `topic` on three replicas (see `create_replicated`): its leader, the native address of the
/// next node, and a client connected there.
fn on_a_replicated_topic(
    cluster: &Cluster,
    topic: &str,
) -> (i32, String, tokio::runtime::Runtime, Client) {
    let leader = create_replicated(cluster, &cluster.nodes[0].native.clone(), topic);
    let survivor = cluster.nodes[((leader + 1) % 3) as usize].native.clone();
    let rt = runtime();
    let client = rt
        .block_on(Client::builder().broker(&survivor).connect())
        .unwrap();
    (leader, survivor, rt, client)
}

/// Attaches the exclusive reliable consumer of subscription "resume" on `topic`.
async fn resume_consumer(client: &Client, topic: &str) -> oxbow_client::Consumer {
    client
        .consumer(topic, "resume")
        .kind(SubscriptionType::Exclusive)
        .mode(Mode::Reliable)
        .build()
        .await
        .unwrap()
}

/// Receives and acknowledges until offset `last` arrives; the offsets received.
async fn consume_through(consumer: &mut oxbow_client::Consumer, last: u64) -> BTreeSet<u64> {
    let mut offsets = BTreeSet::new();
    while offsets.last() != Some(&last) {
        let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(1_000))
            .await
            .expect("the leader delivers")
            .unwrap();
        for m in &batch {
            assert_eq!(m.value.as_ref(), format!("m{}", m.offset).as_bytes());
            offsets.insert(m.offset);
        }
        consumer.ack_all(&batch).unwrap();
    }
    offsets
}

#[test]
fn a_reliable_subscription_resumes_on_a_new_leader_from_its_replicated_cursor() {
    const TOPIC: &str = "cursors";
    const SENT: u64 = 200;
    const ACKED: u64 = 120;
    let mut cluster = Cluster::start_settled(3);
    let (leader, survivor, rt, client) = on_a_replicated_topic(&cluster, TOPIC);
    let persisted = |cluster: &Cluster, client: &Client, at: u64| {
        let what = "the acknowledged position is persisted on the replicas";
        settle_resume(cluster, &rt, (client, TOPIC), what, |s| s.persisted == at);
    };
    rt.block_on(produce(&client, TOPIC, 0..SENT, |_| None));

    // A consumer acknowledges the first ACKED messages and holds the rest unacknowledged.
    let consumer = rt.block_on(async {
        let mut consumer = resume_consumer(&client, TOPIC).await;
        let mut received = 0;
        while received < SENT {
            let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(1_000))
                .await
                .expect("the leader delivers")
                .unwrap();
            received += batch.len() as u64;
            let acked: Vec<_> = batch.into_iter().filter(|m| m.offset < ACKED).collect();
            consumer.ack_all(&acked).unwrap();
        }
        consumer
    });
    // Persisted means held by every in-sync replica: then the leader may die.
    persisted(&cluster, &client, ACKED);
    cluster.node(leader).kill();
    drop(consumer);
    cluster.settle("a survivor leads the partition", || {
        let (now, _, _) = partition_view(&cluster.nodes[((leader + 1) % 3) as usize].kafka, TOPIC)?;
        (now >= 0 && now != leader).then_some(())
    });

    // The new leader resumes from the replicated cursor: exactly the unacknowledged rest.
    let client = rt
        .block_on(Client::builder().broker(&survivor).connect())
        .unwrap();
    let (redelivered, mut consumer) = rt.block_on(async {
        let mut consumer = resume_consumer(&client, TOPIC).await;
        (consume_through(&mut consumer, SENT - 1).await, consumer)
    });
    assert_eq!(redelivered, (ACKED..SENT).collect::<BTreeSet<u64>>());

    // The old leader comes back with its stale cursor, takes the new leader's copy, and as
    // the preferred replica leads again (auto leader rebalance): the consumer on the node
    // that stopped leading is told the leader moved and follows it by itself, and on the
    // old leader nothing is delivered twice.
    persisted(&cluster, &client, SENT);
    cluster.node(leader).restart();
    cluster.settle("the old leader leads again, all in sync", || {
        let (now, _, isr) = partition_view(&cluster.nodes[leader as usize].kafka, TOPIC)?;
        (now == leader && isr.len() == 3).then_some(())
    });
    let fresh = rt.block_on(async {
        produce(&client, TOPIC, SENT..SENT + 10, |_| None).await;
        consume_through(&mut consumer, SENT + 9).await
    });
    assert_eq!(fresh, (SENT..SENT + 10).collect::<BTreeSet<u64>>());
}

/// SIGTERM of the leader (controlled shutdown) first writes the cursors and waits for the
/// in-sync followers to hold them: with periodic cursor writes a minute apart, the consumer
/// resumes on the new leader exactly where its acknowledgements had reached, not at the last
/// periodic write.
#[test]
fn a_controlled_shutdown_hands_the_cursors_over_as_acknowledged() {
    const TOPIC: &str = "handover";
    const SENT: u64 = 200;
    let settings = "[subscriptions]\ncursor_persist_interval_ms = 60000";
    let mut cluster = Cluster::start_settled_with(3, settings);
    let (leader, survivor, rt, client) = on_a_replicated_topic(&cluster, TOPIC);
    rt.block_on(produce(&client, TOPIC, 0..SENT, |_| None));
    let mut consumer = rt.block_on(resume_consumer(&client, TOPIC));
    let received = rt.block_on(async {
        let mut received = Vec::new();
        while (received.len() as u64) < SENT {
            let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(1_000))
                .await
                .expect("the leader delivers")
                .unwrap();
            received.extend(batch);
        }
        received
    });
    // The first write of a moved cursor is at once; the next one a minute later.
    consumer.ack_all(&received[..60]).unwrap();
    let what = "the first write is persisted";
    settle_resume(&cluster, &rt, (&client, TOPIC), what, |s| s.persisted == 60);
    consumer.ack_all(&received[60..120]).unwrap();
    let what = "the leader took the later acknowledgements";
    let resume = settle_resume(&cluster, &rt, (&client, TOPIC), what, |s| s.cursor == 120);
    assert_eq!(resume.persisted, 60, "no periodic write since the first");

    let broker = cluster.node(leader).broker.as_mut().unwrap();
    assert!(broker.signal(libc::SIGTERM).success());
    cluster.node(leader).broker = None;
    drop(consumer);
    let client = rt
        .block_on(Client::builder().broker(&survivor).connect())
        .unwrap();
    let resumed = rt.block_on(async {
        let mut consumer = resume_consumer(&client, TOPIC).await;
        consume_through(&mut consumer, SENT - 1).await
    });
    assert_eq!(resumed, (120..SENT).collect::<BTreeSet<u64>>());
}

/// Native listeners are matched by name across the cluster, as Kafka's are: a client that came
/// in through a listener is told every broker's address on the listener of that name. Here
/// each node's first listener wants SCRAM and its second ("OPEN") nothing, so a client without
/// credentials, bootstrapped from node 0's OPEN listener, reaches node 1's partitions only
/// if it is sent to node 1's OPEN listener.
#[test]
fn clients_are_sent_to_each_broker_on_the_listener_they_came_through() {
    let listeners = "[[native_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
                     security = \"SASL_PLAINTEXT\"\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n\
                     [[native_listeners]]\nname = \"OPEN\"\naddress = \"127.0.0.1:0\"\n";
    let cluster = Cluster::start(2, listeners).settled();
    let open = common::pki::native_listener(cluster.nodes[0].broker.as_ref().unwrap(), "OPEN");
    let rt = runtime();
    let client = rt
        .block_on(Client::builder().broker(&open).connect())
        .unwrap();
    rt.block_on(client.create_topic("named", 4)).unwrap();
    cluster.settle(
        "both nodes lead partitions of the topic, and know it",
        || {
            let views: Vec<Option<Vec<i32>>> = (cluster.running())
                .map(|n| leaders(&n.kafka, "named"))
                .collect();
            let first = views[0].clone()?;
            let spread = first.contains(&0) && first.contains(&1);
            (spread && views.iter().all(|v| v.as_ref() == Some(&first))).then_some(())
        },
    );
    let keyed = |i: u64| Some(format!("key-{i}"));
    let values = rt.block_on(produce(&client, "named", 0..40, keyed));
    assert_eq!(values.len(), 40);
    let described = rt.block_on(client.describe_topic("named")).unwrap();
    let stored: u64 = described.iter().map(|p| p.log_end).sum();
    assert_eq!(stored, 40, "{described:?}");
    assert!(described.iter().all(|p| p.log_end > 0), "{described:?}");
}
