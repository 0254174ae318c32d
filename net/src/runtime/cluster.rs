//! A node's link to the other nodes: the QUIC transport on its own I/O thread, authenticated
//! with the cluster's TLS files, and the addresses of the metadata group's voters.

use oxbow_cluster::metadata_group::raft_id;
use oxbow_cluster::transport::{ClusterTls, Inbound, Transport, TransportLimits};
use oxbow_core::BrokerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Frames from peers waiting for shard 0; past it the transport stops reading (the peers'
/// streams wait), so a burst cannot grow memory without bound.
const INBOUND_FRAMES_MAX: usize = 1024;

/// The transport a clustered node talks over, and the frames that arrive on it (for the
/// metadata group on shard 0).
pub struct ClusterLink {
    /// The node's end of the cluster network (shared by every shard that sends).
    pub transport: Arc<Transport>,
    /// Frames from peers.
    pub inbound: flume::Receiver<Inbound>,
}

/// Where the cluster's TLS files are.
pub fn tls_dir(config: &BrokerConfig) -> PathBuf {
    (config.cluster.tls_dir.clone())
        .unwrap_or_else(|| config.data_dir.join(".oxbow").join("cluster-tls"))
}

/// The node ids the metadata group starts with: the configured voters, or this node alone.
pub fn initial_voters(config: &BrokerConfig) -> Vec<i32> {
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
    };
    let (arrived, inbound) = flume::bounded(INBOUND_FRAMES_MAX);
    let transport = Transport::start(listen, &tls, limits, arrived)
        .map_err(|e| format!("cluster.listen: {e}"))?;
    for voter in settings
        .voters()
        .expect("validated by BrokerConfig::validate")
    {
        if voter.node_id != config.node_id {
            transport.set_peer(raft_id(voter.node_id), voter.addr);
        }
    }
    tracing::info!(listen = %transport.local_addr(), "cluster transport started");
    Ok(Some(ClusterLink {
        transport: Arc::new(transport),
        inbound,
    }))
}
