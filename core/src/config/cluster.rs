//! Settings of a node that runs with others: where it listens for them, who the first voters of
//! the metadata group are, its TLS files, and the bounds of the cluster transport.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How a node reaches the other nodes. Without `listen` the node runs alone (a one-voter
/// metadata group, no cluster transport).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// UDP address of the cluster transport (QUIC); port 0 only when running alone.
    pub listen: Option<String>,
    /// The voters a new metadata group starts with, as `node_id@host:port` of their cluster
    /// listeners (Kafka's `controller.quorum.voters`). Read when the group's log is created;
    /// afterwards the group's own configuration counts.
    pub initial_voters: Vec<String>,
    /// Instead of `initial_voters`, for a node added to a running cluster: a member to ask,
    /// as `node_id@host:port` of its cluster listener. The node joins the metadata group as a
    /// learner (it receives the log, does not vote).
    pub join: Option<String>,
    /// Directory of the cluster's TLS files (`ca.pem`, `cluster.pem`, `cluster.key`); when it
    /// holds none, a new cluster CA and certificate are generated there, to be copied to every
    /// other node. Default: `<data_dir>/.oxbow/cluster-tls`.
    pub tls_dir: Option<PathBuf>,
    /// For tests only: the metrics listener takes `POST /faults/cut/<node>` and
    /// `POST /faults/heal/<node>`, which drop every cluster frame to and from that node (the
    /// transport's fault switch; this kernel has no netem). Never on in production.
    pub fault_injection: bool,
    /// Largest frame between nodes (one Raft message, one replicated chunk).
    pub frame_bytes_max: u32,
    /// How long a connection attempt to a peer may take.
    pub connect_timeout_ms: u64,
    /// How long one frame may take to be delivered and receipted.
    pub frame_timeout_ms: u64,
    /// A connection silent this long is closed (keep-alives are sent at a third of it).
    pub idle_timeout_ms: u64,
    /// Kernel send and receive buffers of the cluster's UDP socket. QUIC drops what does not
    /// fit while the I/O thread is off the CPU and its congestion control then throttles the
    /// connection: replication at disk speed needs megabytes, not the kernel's ~200 KiB
    /// default. The kernel caps it at `net.core.rmem_max` / `wmem_max` (a warning says so).
    pub socket_buffer_bytes: u32,
    /// A broker the metadata group's leader has not heard from for this long is fenced and
    /// its partitions get other leaders (Kafka's `broker.session.timeout.ms`). 1.5 s, not
    /// Kafka's 9 s: the group's heartbeats come every 100 ms (15 missed make a dead broker),
    /// and a crashed leader's partitions are writable again in under 2 s.
    pub broker_session_timeout_ms: u64,
    /// A follower not caught up with its leader for this long leaves the in-sync replicas
    /// (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// acks=all needs at least this many in-sync replicas, else NOT_ENOUGH_REPLICAS (Kafka's
    /// `min.insync.replicas`).
    pub min_insync_replicas: u32,
    /// Hand leadership back to each partition's preferred replica (its first) once that
    /// replica is in sync again (Kafka's `auto.leader.rebalance.enable`).
    pub auto_leader_rebalance: bool,
    /// How often the controller looks for partitions away from their preferred leader
    /// (Kafka's `leader.imbalance.check.interval.seconds`, in milliseconds).
    pub leader_imbalance_check_interval_ms: u64,
    /// A broker's partitions move home only when more than this share of those it prefers
    /// are led elsewhere (Kafka's `leader.imbalance.per.broker.percentage`).
    pub leader_imbalance_per_broker_percentage: u32,
    /// How long a stopping node waits for the metadata group to move its partitions'
    /// leadership to other replicas (controlled shutdown) before it stops regardless.
    pub controlled_shutdown_timeout_ms: u64,
    /// A follower asks its leader again when no answer came within this long.
    pub replica_fetch_timeout_ms: u64,
    /// How long a leader holds a follower's fetch that has nothing to get, answering as soon
    /// as something is durable (Kafka's `replica.fetch.wait.max.ms`): caught-up followers
    /// get new batches at once instead of asking in a loop. Below the fetch timeout and
    /// `replica_lag_time_max_ms`.
    pub replica_fetch_wait_max_ms: u64,
    /// A follower's pause when its leader had nothing new for it.
    pub replica_fetch_backoff_ms: u64,
    /// Bytes per second a leader sends, per partition, to followers outside the ISR (a
    /// reassignment's new replica, a node back from a long absence), so that catching up
    /// leaves room for producers and in-sync followers (Kafka's
    /// `leader.replication.throttled.rate`). 0: no limit.
    pub catch_up_bytes_per_sec: u64,
    /// Most batch bytes a leader sends a follower in one frame (at most `frame_bytes_max`
    /// less room for the frame's header).
    pub replica_fetch_bytes_max: u32,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            listen: None,
            initial_voters: Vec::new(),
            join: None,
            tls_dir: None,
            fault_injection: false,
            frame_bytes_max: 16 << 20,
            connect_timeout_ms: 2_000,
            frame_timeout_ms: 5_000,
            idle_timeout_ms: 10_000,
            socket_buffer_bytes: 8 << 20,
            broker_session_timeout_ms: 1_500,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
            leader_imbalance_per_broker_percentage: 10,
            controlled_shutdown_timeout_ms: 10_000,
            replica_fetch_timeout_ms: 1_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 2,
            replica_fetch_bytes_max: 1 << 20,
            catch_up_bytes_per_sec: 0,
        }
    }
}

/// Upper bound of `cluster.frame_bytes_max`: one frame is held whole in memory.
pub const CLUSTER_FRAME_BYTES_LIMIT: u32 = 256 << 20;

/// A voter of the metadata group as configured: its node id and cluster address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voter {
    /// Node id (the broker id).
    pub node_id: i32,
    /// Its cluster listener.
    pub addr: SocketAddr,
}

impl ClusterConfig {
    /// Whether the node runs with others.
    pub fn is_clustered(&self) -> bool {
        self.listen.is_some()
    }

    /// The initial voters, parsed (checked by `validate`).
    pub fn voters(&self) -> Result<Vec<Voter>, ConfigError> {
        let mut voters: Vec<Voter> = Vec::with_capacity(self.initial_voters.len());
        for spec in &self.initial_voters {
            let voter = parse_member("cluster.initial_voters", spec)?;
            if voters.iter().any(|v| v.node_id == voter.node_id) {
                return Err(ConfigError::new(
                    "cluster.initial_voters",
                    format!("{spec:?}: node id given twice"),
                ));
            }
            voters.push(voter);
        }
        Ok(voters)
    }

    /// The member a joining node asks, parsed (checked by `validate`).
    pub fn join_via(&self) -> Result<Option<Voter>, ConfigError> {
        (self.join.as_deref())
            .map(|spec| parse_member("cluster.join", spec))
            .transpose()
    }

    /// Checks every bound for a node whose id is `node_id`.
    pub fn validate(&self, node_id: i32) -> Result<(), ConfigError> {
        let voters = self.voters()?;
        match &self.listen {
            None if !voters.is_empty() || self.join.is_some() => {
                return Err(ConfigError::new(
                    "cluster.listen",
                    "must be set when cluster.initial_voters or cluster.join is",
                ))
            }
            None => {}
            Some(listen) => {
                let addr: SocketAddr = listen.parse().map_err(|_| {
                    ConfigError::new("cluster.listen", format!("{listen:?} is not ip:port"))
                })?;
                let join = self.join_via()?;
                if voters.is_empty() == join.is_none() {
                    return Err(ConfigError::new(
                        "cluster.initial_voters",
                        "exactly one of cluster.initial_voters (the voters of a new group) and \
                         cluster.join (a member of a running one) must be set with cluster.listen",
                    ));
                }
                if join.is_some_and(|member| member.node_id == node_id) {
                    return Err(ConfigError::new("cluster.join", "names this node itself"));
                }
                if join.is_none() && !voters.iter().any(|v| v.node_id == node_id) {
                    return Err(ConfigError::new(
                        "cluster.initial_voters",
                        format!("must include this node (node_id {node_id})"),
                    ));
                }
                if addr.port() == 0 && (voters.len() > 1 || self.join.is_some()) {
                    return Err(ConfigError::new(
                        "cluster.listen",
                        "port 0 cannot be named to the other voters",
                    ));
                }
            }
        }
        if !(64 << 10..=CLUSTER_FRAME_BYTES_LIMIT).contains(&self.frame_bytes_max) {
            return Err(ConfigError::new(
                "cluster.frame_bytes_max",
                format!("must be 64 KiB to {CLUSTER_FRAME_BYTES_LIMIT}"),
            ));
        }
        for (field, value) in [
            ("cluster.connect_timeout_ms", self.connect_timeout_ms),
            ("cluster.frame_timeout_ms", self.frame_timeout_ms),
            ("cluster.idle_timeout_ms", self.idle_timeout_ms),
            (
                "cluster.broker_session_timeout_ms",
                self.broker_session_timeout_ms,
            ),
            (
                "cluster.replica_lag_time_max_ms",
                self.replica_lag_time_max_ms,
            ),
            (
                "cluster.controlled_shutdown_timeout_ms",
                self.controlled_shutdown_timeout_ms,
            ),
            (
                "cluster.leader_imbalance_check_interval_ms",
                self.leader_imbalance_check_interval_ms,
            ),
        ] {
            if !(10..=3_600_000).contains(&value) {
                return Err(ConfigError::new(field, "must be 10 ms to 1 hour"));
            }
        }
        if !(64 << 10..=1 << 30).contains(&self.socket_buffer_bytes) {
            return Err(ConfigError::new(
                "cluster.socket_buffer_bytes",
                "must be 64 KiB to 1 GiB",
            ));
        }
        if self.replica_fetch_wait_max_ms >= self.replica_fetch_timeout_ms
            || self.replica_fetch_wait_max_ms >= self.replica_lag_time_max_ms
        {
            return Err(ConfigError::new(
                "cluster.replica_fetch_wait_max_ms",
                "must be below cluster.replica_fetch_timeout_ms and replica_lag_time_max_ms",
            ));
        }
        if self.leader_imbalance_per_broker_percentage > 100 {
            return Err(ConfigError::new(
                "cluster.leader_imbalance_per_broker_percentage",
                "must be 0 to 100",
            ));
        }
        if self.replica_fetch_backoff_ms > 60_000 {
            return Err(ConfigError::new(
                "cluster.replica_fetch_backoff_ms",
                "must be at most 1 minute",
            ));
        }
        // Room for the frame's own header (a few dozen bytes) below the frame limit.
        let header_room = 1 << 10;
        if self.replica_fetch_bytes_max < 64 << 10
            || self.replica_fetch_bytes_max > self.frame_bytes_max.saturating_sub(header_room)
        {
            return Err(ConfigError::new(
                "cluster.replica_fetch_bytes_max",
                "must be 64 KiB to cluster.frame_bytes_max less 1 KiB",
            ));
        }
        if self.min_insync_replicas < 1 {
            return Err(ConfigError::new(
                "cluster.min_insync_replicas",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `node_id@ip:port`, the way `field` names a member.
fn parse_member(field: &'static str, spec: &str) -> Result<Voter, ConfigError> {
    let bad =
        |why: &str| ConfigError::new(field, format!("{spec:?}: {why} (expected node_id@ip:port)"));
    let (id, addr) = spec.split_once('@').ok_or_else(|| bad("no '@'"))?;
    let node_id: i32 = id.parse().map_err(|_| bad("node id is not a number"))?;
    if node_id < 0 {
        return Err(bad("node id is negative"));
    }
    let addr: SocketAddr = addr.parse().map_err(|_| bad("not an ip:port address"))?;
    Ok(Voter { node_id, addr })
}
