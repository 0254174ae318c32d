//! Three nodes of the metadata group, each on its own glommio thread with its log on disk,
//! talking over the QUIC transport on loopback, with real timers: changes proposed on any node
//! commit and reach every node; the leader's loss elects another and changes keep committing;
//! a node restarted after missing more changes than the leader keeps in its log catches up
//! from a snapshot; a node cut off from the others commits nothing until the cut heals.

use oxbow_cluster::metadata_group::{
    open_node, pump_inbound, raft_id, MetadataNode, NodeStatus, ProposeError, TransportOutbox,
};
use oxbow_cluster::transport::{ClusterTls, Transport, TransportLimits};
use oxbow_cluster::{Metadata, MetadataChange, TopicId, TopicMeta};
use oxbow_core::MetadataGroupConfig;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BROKERS: [i32; 3] = [0, 1, 2];

fn group_config() -> MetadataGroupConfig {
    MetadataGroupConfig {
        tick_ms: 20,
        election_ticks: 10,
        heartbeat_ticks: 2,
        // Small, so that a node down for a few changes needs a snapshot to catch up.
        snapshot_entries: 4,
        proposal_timeout_ms: 3_000,
        ..MetadataGroupConfig::default()
    }
}

enum Order {
    Propose(
        MetadataChange,
        flume::Sender<Result<Arc<Metadata>, ProposeError>>,
    ),
    Applied(u64, flume::Sender<Option<Arc<Metadata>>>),
    Status(flume::Sender<NodeStatus>),
    SetPeer(i32, SocketAddr),
    Cut(i32),
    Heal(i32),
}

/// A node running on its own thread, driven by orders.
struct Node {
    broker: i32,
    addr: SocketAddr,
    orders: flume::Sender<Order>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(broker: i32, data: PathBuf, tls: ClusterTls, peers: HashMap<i32, SocketAddr>) -> Node {
        let (orders, inbox) = flume::unbounded();
        let (started, addr) = flume::bounded(1);
        let thread = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::default()
                .spawn(move || run(broker, data, tls, peers, inbox, started))
                .expect("executor")
                .join()
                .expect("node thread");
        });
        let addr = addr.recv().expect("node started");
        Node {
            broker,
            addr,
            orders,
            thread: Some(thread),
        }
    }

    fn ask<T>(&self, order: impl FnOnce(flume::Sender<T>) -> Order) -> T {
        let (reply, answer) = flume::bounded(1);
        self.orders.send(order(reply)).expect("node running");
        answer.recv().expect("node answers")
    }

    fn tell(&self, order: Order) {
        self.orders.send(order).expect("node running");
    }

    /// Proposes, and proposes again while the group changes leader under the proposal (the
    /// caller's retry: a change of leader answers instead of losing the proposal silently).
    fn propose(&self, change: MetadataChange) -> Result<Arc<Metadata>, ProposeError> {
        for _ in 0..10 {
            match self.ask(|reply| Order::Propose(change.clone(), reply)) {
                Err(ProposeError::LeaderChanged) => continue,
                outcome => return outcome,
            }
        }
        panic!("the group changed leader ten times under one proposal")
    }

    fn applied(&self, version: u64) -> Arc<Metadata> {
        self.ask(|reply| Order::Applied(version, reply))
            .expect("the node applies")
    }

    fn status(&self) -> NodeStatus {
        self.ask(Order::Status)
    }

    /// Kills the node: its thread ends, its transport closes, its disk keeps what it synced.
    fn stop(mut self) {
        drop(std::mem::replace(&mut self.orders, flume::unbounded().0));
        if let Some(thread) = self.thread.take() {
            thread.join().expect("node thread");
        }
    }
}

async fn run(
    broker: i32,
    data: PathBuf,
    tls: ClusterTls,
    peers: HashMap<i32, SocketAddr>,
    orders: flume::Receiver<Order>,
    started: flume::Sender<SocketAddr>,
) {
    oxbow_storage::prepare_shard_io(&data, "node")
        .await
        .unwrap();
    let (inbound, arrived) = flume::unbounded();
    let limits = TransportLimits {
        frame_bytes_max: 16 << 20,
        connect_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        socket_buffer_bytes: 1 << 20,
    };
    let listen = "127.0.0.1:0".parse().unwrap();
    let transport = Arc::new(Transport::start(listen, &tls, limits, inbound).unwrap());
    for (&peer, &addr) in &peers {
        transport.set_peer(raft_id(peer), addr);
    }
    let config = group_config();
    let disk = Rc::new(oxbow_storage::DmaDisk);
    let dir = data.join("metadata");
    let opened = open_node(&dir, disk, broker, &BROKERS, &config, None)
        .await
        .unwrap();
    let (core, log) = (opened.core, opened.disk);
    let outbox = Box::new(TransportOutbox::new(transport.clone()));
    let tick = Duration::from_millis(config.tick_ms);
    let timeout = Duration::from_millis(config.proposal_timeout_ms);
    let node = MetadataNode::spawn(core, log, outbox, tick, timeout).unwrap();
    let (joins, _) = flume::bounded(1);
    let (replication, _) = flume::bounded(1);
    glommio::spawn_local(pump_inbound(
        arrived,
        node.clone(),
        joins,
        replication,
        Arc::downgrade(&transport),
    ))
    .detach();
    started.send(transport.local_addr()).unwrap();
    while let Ok(order) = orders.recv_async().await {
        match order {
            Order::Propose(change, reply) => {
                let node = node.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(node.propose(change).await);
                })
                .detach();
            }
            Order::Applied(version, reply) => {
                let node = node.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(node.applied_version(version).await);
                })
                .detach();
            }
            Order::Status(reply) => {
                let _ = reply.send(node.status());
            }
            Order::SetPeer(peer, addr) => transport.set_peer(raft_id(peer), addr),
            Order::Cut(peer) => transport.faults().cut(raft_id(peer)),
            Order::Heal(peer) => transport.faults().heal(raft_id(peer)),
        }
    }
    node.close().await;
}

fn topic(name: &str, id: u8) -> MetadataChange {
    MetadataChange::CreateTopic(TopicMeta::on_one_broker(
        name.to_string(),
        TopicId([id; 16]),
        1,
        0,
        BTreeMap::new(),
    ))
}

fn start_all(dirs: &[PathBuf], tls: &ClusterTls) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (&broker, dir) in BROKERS.iter().zip(dirs) {
        let peers = nodes.iter().map(|n| (n.broker, n.addr)).collect();
        let node = Node::start(broker, dir.clone(), tls.clone(), peers);
        for earlier in &nodes {
            earlier.tell(Order::SetPeer(broker, node.addr));
        }
        nodes.push(node);
    }
    nodes
}

fn leader_of(nodes: &[Node]) -> i32 {
    let status = nodes[0].status();
    assert_ne!(status.leader, 0, "a leader is known after a commit");
    status.leader as i32 - 1
}

fn dirs(root: &Path) -> Vec<PathBuf> {
    BROKERS
        .iter()
        .map(|b| {
            let dir = root.join(format!("node-{b}"));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        })
        .collect()
}

#[test]
fn three_nodes_agree_fail_over_catch_up_and_a_cut_node_commits_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dirs = dirs(root.path());
    let tls = ClusterTls::generate().unwrap();
    let mut nodes = start_all(&dirs, &tls);

    // Changes proposed on any node commit, and every node applies the same metadata.
    for (i, node) in nodes.iter().enumerate() {
        let committed = node.propose(topic(&format!("t{i}"), i as u8 + 1)).unwrap();
        for other in &nodes {
            assert_eq!(other.applied(committed.version), committed);
        }
    }

    // The leader dies: another is elected and changes keep committing.
    let leader = leader_of(&nodes);
    let position = nodes.iter().position(|n| n.broker == leader).unwrap();
    nodes.remove(position).stop();
    let lost = Instant::now();
    let mut last = nodes[0].propose(topic("after-failover", 10)).unwrap();
    eprintln!(
        "leader {leader} killed: a change committed again after {:?}",
        lost.elapsed()
    );
    assert_ne!(leader_of(&nodes), leader);
    // More changes than the leader keeps in its log: the dead node will need a snapshot.
    for i in 0..10 {
        last = nodes[1]
            .propose(topic(&format!("while-down-{i}"), 20 + i))
            .unwrap();
    }
    assert_eq!(nodes[0].applied(last.version), last);

    // It comes back (its address changed) and catches up.
    let peers = nodes.iter().map(|n| (n.broker, n.addr)).collect();
    let back = Node::start(leader, dirs[position].clone(), tls.clone(), peers);
    for node in &nodes {
        node.tell(Order::SetPeer(leader, back.addr));
    }
    assert_eq!(back.applied(last.version), last);
    nodes.push(back);

    // One node cut off from the other two: it commits nothing, they go on.
    let cut = nodes[0].broker;
    for node in &nodes[1..] {
        node.tell(Order::Cut(cut));
        nodes[0].tell(Order::Cut(node.broker));
    }
    let alone = nodes[0].propose(topic("minority", 40));
    assert_eq!(alone, Err(ProposeError::TimedOut(Duration::from_secs(3))));
    let majority = nodes[1].propose(topic("majority", 41)).unwrap();
    assert!(majority.topic("minority").is_none());
    for node in &nodes[1..] {
        node.tell(Order::Heal(cut));
        nodes[0].tell(Order::Heal(node.broker));
    }
    let healed = nodes[0].applied(majority.version);
    assert_eq!(healed, majority);
    for node in nodes {
        node.stop();
    }
}
