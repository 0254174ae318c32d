//! A node's link to the other nodes: the QUIC transport on its own I/O thread, authenticated
//! with the cluster's TLS files, and the addresses of the metadata group's voters.

use bytes::Bytes;
use oxbow_cluster::metadata_group::{
    encode_join, raft_id, ConfChangeSingle, ConfChangeType, ConfChangeV2, MetadataNode,
};
use oxbow_cluster::transport::{ClusterTls, Inbound, Transport, TransportLimits};
use oxbow_cluster::{BrokerMeta, MetadataChange};
use oxbow_core::BrokerConfig;
use oxbow_dispatch::shard::Shard;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Frames from peers waiting for shard 0; past it the transport stops reading (the peers'
/// streams wait), so a burst cannot grow memory without bound.
const INBOUND_FRAMES_MAX: usize = 1024;

/// Join requests waiting for shard 0; more are dropped (their nodes ask again).
const JOIN_REQUESTS_MAX: usize = 16;
/// Replication frames queued between the transport and the partitions' owners; more are
/// dropped (followers ask again).
const REPLICATION_FRAMES_QUEUED_MAX: usize = 4096;

/// How long a joining node waits for its registration before asking again.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// The transport a clustered node talks over, and the frames that arrive on it (for the
/// metadata group on shard 0).
pub struct ClusterLink {
    /// The node's end of the cluster network (shared by every shard that sends).
    pub transport: Arc<Transport>,
    /// Frames from peers.
    pub inbound: flume::Receiver<Inbound>,
    /// Join requests that arrived, for shard 0 to carry out.
    pub joins: (flume::Sender<BrokerMeta>, flume::Receiver<BrokerMeta>),
    /// Replication frames from peers, for shard 0 to hand to the partitions' owners.
    pub replication: (flume::Sender<Bytes>, flume::Receiver<Bytes>),
}

/// Where the cluster's TLS files are.
pub fn tls_dir(config: &BrokerConfig) -> PathBuf {
    (config.cluster.tls_dir.clone())
        .unwrap_or_else(|| config.data_dir.join(".oxbow").join("cluster-tls"))
}

/// The node ids the metadata group starts with: the configured voters, this node alone, or
/// none for a node that joins a running group (its log brings the membership).
pub fn initial_voters(config: &BrokerConfig) -> Vec<i32> {
    if config.cluster.join.is_some() {
        return Vec::new();
    }
    let voters = (config.cluster.voters()).expect("validated by BrokerConfig::validate");
    match voters.is_empty() {
        true => vec![config.node_id],
        false => voters.iter().map(|v| v.node_id).collect(),
    }
}

/// Starts the cluster transport when the node runs with others (`cluster.listen` is set).
pub fn start_link(config: &BrokerConfig) -> Result<Option<ClusterLink>, String> {
    let Some(listen) = &config.cluster.listen else {
        return Ok(None);
    };
    let listen: SocketAddr = listen.parse().expect("validated by BrokerConfig::validate");
    let dir = tls_dir(config);
    let tls = ClusterTls::read_or_generate(&dir).map_err(|e| format!("cluster TLS: {e}"))?;
    let settings = &config.cluster;
    let limits = TransportLimits {
        frame_bytes_max: settings.frame_bytes_max as usize,
        connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        frame_timeout: Duration::from_millis(settings.frame_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
        socket_buffer_bytes: settings.socket_buffer_bytes as usize,
    };
    let (arrived, inbound) = flume::bounded(INBOUND_FRAMES_MAX);
    let transport = Transport::start(listen, &tls, limits, arrived)
        .map_err(|e| format!("cluster.listen: {e}"))?;
    let voters = settings
        .voters()
        .expect("validated by BrokerConfig::validate");
    let join = settings
        .join_via()
        .expect("validated by BrokerConfig::validate");
    for member in voters.into_iter().chain(join) {
        if member.node_id != config.node_id {
            transport.set_peer(raft_id(member.node_id), member.addr);
        }
    }
    tracing::info!(listen = %transport.local_addr(), "cluster transport started");
    Ok(Some(ClusterLink {
        transport: Arc::new(transport),
        inbound,
        joins: flume::bounded(JOIN_REQUESTS_MAX),
        replication: flume::bounded(REPLICATION_FRAMES_QUEUED_MAX),
    }))
}

/// Keeps the transport's address book in step with the registered brokers' cluster addresses
/// (a node that joined is reached at the address it registered).
pub async fn follow_peers(node: MetadataNode, transport: Arc<Transport>, me: i32) {
    let mut metadata = node.metadata();
    loop {
        for broker in metadata.brokers.values().filter(|b| b.id != me) {
            let addr = broker.cluster_addr.as_deref().and_then(|a| a.parse().ok());
            if let Some(addr) = addr {
                transport.set_peer(raft_id(broker.id), addr);
            }
        }
        match node.applied_version(metadata.version + 1).await {
            Some(next) => metadata = next,
            None => return,
        }
    }
}

/// Carries out join requests (shard 0 of every member): registers the new broker, then adds it
/// to the group as a learner. Both are repeated harmlessly when the node asks again.
pub async fn serve_joins(shard: Rc<Shard>, joins: flume::Receiver<BrokerMeta>) {
    let Some(node) = shard.metadata_node() else {
        return;
    };
    while let Ok(broker) = joins.recv_async().await {
        let id = broker.id;
        if shard.metadata().brokers.get(&id) != Some(&broker) {
            if let Err(e) = shard
                .change_cluster(MetadataChange::RegisterBroker(broker))
                .await
            {
                tracing::warn!(broker = id, error = %e, "registering a joining broker");
                continue;
            }
        }
        if node.members().iter().any(|m| m.id == raft_id(id)) {
            continue;
        }
        let mut change = ConfChangeV2::default();
        let mut add = ConfChangeSingle::default();
        add.set_change_type(ConfChangeType::AddLearnerNode);
        add.node_id = raft_id(id);
        change.mut_changes().push(add);
        match node.propose_membership(change).await {
            Ok(()) => tracing::info!(broker = id, "joining broker added as a learner"),
            Err(e) => tracing::warn!(broker = id, error = %e, "adding a joining broker"),
        }
    }
}

/// Asks `member` to let this node join until the node's registration reaches it through the
/// group's log (which it receives only once it is a member).
pub async fn join(
    node: &MetadataNode,
    transport: &Transport,
    member: i32,
    broker: &BrokerMeta,
) -> Result<(), String> {
    loop {
        if node.metadata().brokers.get(&broker.id) == Some(broker) {
            return Ok(());
        }
        if let Err(e) = transport
            .deliver(raft_id(member), encode_join(broker))
            .await
        {
            tracing::warn!(member, error = %e, "asking to join");
        }
        let registered = async {
            let mut next = node.metadata().version + 1;
            loop {
                let Some(metadata) = node.applied_version(next).await else {
                    return Err("the metadata node stopped".to_string());
                };
                if metadata.brokers.get(&broker.id) == Some(broker) {
                    return Ok(());
                }
                next = metadata.version + 1;
            }
        };
        match glommio::timer::timeout(JOIN_RETRY, async { Ok(registered.await) }).await {
            Ok(outcome) => return outcome,
            Err(_) => tracing::info!(member, "waiting to join the cluster"),
        }
    }
}
