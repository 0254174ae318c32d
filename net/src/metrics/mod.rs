//! Prometheus metrics: each shard counts on its own (no locks); shard 0 serves `GET /metrics`,
//! gathering a snapshot from every shard over the mesh and merging them.

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;
use oxbow_cluster::metadata_group::{broker_id, NodeStatus, ProposalStats};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

mod partitions;
mod storage;

/// Highest request latency recorded exactly (µs); slower ones are clamped to it.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Largest HTTP request head the metrics endpoint reads.
const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Quantiles reported for every latency summary.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds")
}

/// This shard's counters (installed on every shard at start, see `runtime.rs`).
pub fn of(shard: &oxbow_dispatch::Shard) -> Rc<ShardMetrics> {
    shard
        .extension::<ShardMetrics>()
        .expect("every shard gets its metrics at start")
}

/// Everything the endpoint renders: every shard's snapshot, and the metadata group's node.
pub struct Gathered {
    shards: Vec<MetricsSnapshot>,
    group: Option<(NodeStatus, ProposalStats)>,
}

/// Every shard's metrics snapshot and the metadata node's (for the endpoint on shard 0).
pub async fn gather(shard: &oxbow_dispatch::Shard) -> Gathered {
    let group = shard
        .metadata_node()
        .map(|node| (node.status(), node.proposal_stats()));
    Gathered {
        shards: gather_shards(shard).await,
        group,
    }
}

async fn gather_shards(shard: &oxbow_dispatch::Shard) -> Vec<MetricsSnapshot> {
    let mut snapshots = Vec::with_capacity(shard.shards());
    for id in 0..shard.shards() {
        let snapshot = shard
            .run_on(id, |shard| async move {
                let subscriptions = shard.subscription_infos().await;
                let mut snapshot =
                    of(&shard).snapshot(shard.owned().len(), subscriptions, shard.decoded_counts());
                snapshot.replication = shard.replication_infos();
                for host in shard.owned() {
                    let bytes = host.log.stats().log_bytes;
                    *snapshot
                        .log_bytes
                        .entry(host.topic.to_string())
                        .or_default() += bytes;
                    if host.role.borrow().serves() {
                        let end = host.log.log_end_offset();
                        (snapshot.log_ends).push((host.topic.to_string(), host.partition, end));
                    }
                }
                if let Some(coordinator) = shard.extension::<crate::kafka::groups::Coordinator>() {
                    snapshot.committed = coordinator.committed_offsets();
                }
                snapshot
            })
            .await;
        snapshots.extend(snapshot);
    }
    snapshots
}

/// One shard's counters. Owned by the shard; recording takes no lock.
#[derive(Default)]
pub struct ShardMetrics {
    requests: RefCell<BTreeMap<i16, Histogram<u64>>>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    connections_open: Cell<u64>,
    connections_total: Cell<u64>,
    native_connections_open: Cell<u64>,
    native_connections_total: Cell<u64>,
    /// Connections whose TLS handshake or SASL authentication failed.
    authentication_failures: Cell<u64>,
    /// Requests (or parts of them) the authorizer denied.
    authorization_denials: Cell<u64>,
    /// Connections closed at accept: their address failed too many authentications.
    authentication_throttled: Cell<u64>,
    /// Batches accepted from producers (both protocols), by compression codec.
    produced_batches: [Cell<u64>; 5],
}

/// A copy of one shard's metrics, sent to shard 0 for rendering.
#[derive(Clone)]
pub struct MetricsSnapshot {
    requests: BTreeMap<i16, Histogram<u64>>,
    bytes_in: u64,
    bytes_out: u64,
    connections_open: u64,
    connections_total: u64,
    partitions: u64,
    fsync_us: Histogram<u64>,
    native_connections_open: u64,
    native_connections_total: u64,
    authentication_failures: u64,
    authorization_denials: u64,
    authentication_throttled: u64,
    subscriptions: Vec<oxbow_core::native::SubscriptionInfo>,
    produced_batches: [u64; 5],
    /// Compressed batches subscriptions decoded, and reads served by an earlier decoding.
    decoded_batches: (u64, u64),
    /// The replicated partitions the shard leads.
    replication: Vec<oxbow_dispatch::shard::ReplicationInfo>,
    read_cache: oxbow_storage::read::ReadCacheStats,
    compaction: oxbow_storage::metrics::CompactionStats,
    /// Bytes of segments per topic, of the partitions this shard holds (led or followed).
    log_bytes: BTreeMap<String, u64>,
    /// Log end offset (what consumers can read) of each partition this shard leads.
    log_ends: Vec<(String, u32, u64)>,
    /// Kafka groups' committed offsets this shard's coordinator holds.
    committed: Vec<(String, String, i32, i64)>,
}

impl ShardMetrics {
    /// A Kafka request of `api` was answered in `elapsed`, `bytes_in` read, `bytes_out` written.
    pub fn record_request(
        &self,
        api: ApiKey,
        elapsed: Duration,
        bytes_in: usize,
        bytes_out: usize,
    ) {
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        let mut requests = self.requests.borrow_mut();
        let latency = requests.entry(api as i16).or_insert_with(histogram);
        latency.record(micros).expect("clamped into bounds");
        self.bytes_in.set(self.bytes_in.get() + bytes_in as u64);
        self.bytes_out.set(self.bytes_out.get() + bytes_out as u64);
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_open.set(self.connections_open.get() + 1);
        self.connections_total.set(self.connections_total.get() + 1);
    }

    /// Connections open on this shard now.
    pub fn open_connections(&self) -> u64 {
        self.connections_open.get()
    }

    /// A native connection was accepted.
    pub fn native_connection_opened(&self) {
        self.native_connections_open
            .set(self.native_connections_open.get() + 1);
        self.native_connections_total
            .set(self.native_connections_total.get() + 1);
    }

    /// Native connections open on this shard now.
    pub fn open_native_connections(&self) -> u64 {
        self.native_connections_open.get()
    }

    /// A native connection was closed.
    pub fn native_connection_closed(&self) {
        self.native_connections_open
            .set(self.native_connections_open.get().saturating_sub(1));
    }

    /// A producer's batch compressed with `codec` passed validation.
    pub fn batch_produced(&self, codec: oxbow_core::Codec) {
        let counter = &self.produced_batches[codec.attribute_bits() as usize];
        counter.set(counter.get() + 1);
    }

    /// A connection failed its TLS handshake or SASL authentication.
    pub fn authentication_failed(&self) {
        (self.authentication_failures).set(self.authentication_failures.get() + 1);
    }

    /// A connection was closed at accept for its address's failed authentications.
    pub fn authentication_throttled(&self) {
        (self.authentication_throttled).set(self.authentication_throttled.get() + 1);
    }

    /// The authorizer denied something.
    pub fn authorization_denied(&self) {
        (self.authorization_denials).set(self.authorization_denials.get() + 1);
    }

    /// A connection was closed.
    pub fn connection_closed(&self) {
        self.connections_open
            .set(self.connections_open.get().saturating_sub(1));
    }

    /// Copies the counters, with this shard's partition count, subscriptions (and their
    /// decoding counts) and fdatasync latencies.
    pub fn snapshot(
        &self,
        partitions: usize,
        subscriptions: Vec<oxbow_core::native::SubscriptionInfo>,
        decoded_batches: (u64, u64),
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.borrow().clone(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connections_open: self.connections_open.get(),
            connections_total: self.connections_total.get(),
            partitions: partitions as u64,
            fsync_us: oxbow_storage::metrics::fsync_latency_us(),
            native_connections_open: self.native_connections_open.get(),
            native_connections_total: self.native_connections_total.get(),
            authentication_failures: self.authentication_failures.get(),
            authorization_denials: self.authorization_denials.get(),
            authentication_throttled: self.authentication_throttled.get(),
            subscriptions,
            produced_batches: self.produced_batches.each_ref().map(Cell::get),
            decoded_batches,
            replication: Vec::new(),
            read_cache: oxbow_storage::read::shard_stats(),
            compaction: oxbow_storage::metrics::compaction_stats(),
            log_bytes: BTreeMap::new(),
            log_ends: Vec::new(),
            committed: Vec::new(),
        }
    }
}

/// One metric per row, without labels: (name, type, help, value).
type Total = (&'static str, &'static str, &'static str, u64);

fn write_totals(out: &mut String, rows: &[Total]) {
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

fn summary(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    for q in QUANTILES {
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(
            out,
            "{name}{{{labels}{sep}quantile=\"{q}\"}} {}",
            h.value_at_quantile(q) as f64 / 1e6
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum();
    let _ = writeln!(out, "{name}_sum{braces} {}", sum / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}

/// Renders the merged snapshots of every shard and the metadata group in Prometheus text
/// format 0.0.4.
pub fn render(gathered: &Gathered) -> String {
    let snapshots = &gathered.shards[..];
    let mut out = String::new();
    if let Some((status, proposals)) = &gathered.group {
        render_group(&mut out, status, proposals);
    }
    let total = |f: fn(&MetricsSnapshot) -> u64| snapshots.iter().map(f).sum::<u64>();
    let counters = [
        (
            "oxbow_kafka_bytes_in_total",
            "counter",
            "Bytes of Kafka requests read.",
            total(|s| s.bytes_in),
        ),
        (
            "oxbow_kafka_bytes_out_total",
            "counter",
            "Bytes of Kafka responses written.",
            total(|s| s.bytes_out),
        ),
        (
            "oxbow_kafka_connections",
            "gauge",
            "Open Kafka connections.",
            total(|s| s.connections_open),
        ),
        (
            "oxbow_kafka_connections_total",
            "counter",
            "Kafka connections accepted.",
            total(|s| s.connections_total),
        ),
        (
            "oxbow_authentication_failures_total",
            "counter",
            "Connections refused for a failed TLS handshake or SASL authentication.",
            total(|s| s.authentication_failures),
        ),
        (
            "oxbow_authentication_throttled_total",
            "counter",
            "Connections closed at accept because their address failed too many authentications.",
            total(|s| s.authentication_throttled),
        ),
        (
            "oxbow_authorization_denials_total",
            "counter",
            "Requests, or parts of them, the ACL authorizer denied (each is in the audit log).",
            total(|s| s.authorization_denials),
        ),
        (
            "oxbow_partitions",
            "gauge",
            "Partitions open on this node.",
            total(|s| s.partitions),
        ),
        (
            "oxbow_native_connections",
            "gauge",
            "Open native-protocol connections.",
            total(|s| s.native_connections_open),
        ),
        (
            "oxbow_native_connections_total",
            "counter",
            "Native-protocol connections accepted.",
            total(|s| s.native_connections_total),
        ),
        (
            "oxbow_subscription_decoded_batches_total",
            "counter",
            "Compressed batches subscriptions decompressed (once per batch while it is cached).",
            total(|s| s.decoded_batches.0),
        ),
        (
            "oxbow_subscription_decoded_batch_hits_total",
            "counter",
            "Reads of compressed batches served from an earlier decoding.",
            total(|s| s.decoded_batches.1),
        ),
    ];
    write_totals(&mut out, &counters);
    storage::render_storage(&mut out, snapshots);
    let mut requests: BTreeMap<i16, Histogram<u64>> = BTreeMap::new();
    for snapshot in snapshots {
        for (api, h) in &snapshot.requests {
            requests
                .entry(*api)
                .or_insert_with(histogram)
                .add(h)
                .expect("same bounds");
        }
    }
    let name = "oxbow_kafka_request_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Kafka request latency by API, from read to response written."
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    for (api, h) in &requests {
        let label = ApiKey::try_from(*api).map_or_else(|_| api.to_string(), |k| format!("{k:?}"));
        summary(&mut out, name, &format!("api=\"{label}\""), h);
    }
    let name = "oxbow_produced_batches_total";
    let _ = writeln!(
        out,
        "# HELP {name} Record batches accepted from producers, by compression codec.\n# TYPE {name} counter"
    );
    for codec in oxbow_core::Codec::ALL {
        let bits = codec.attribute_bits() as usize;
        let count: u64 = snapshots.iter().map(|s| s.produced_batches[bits]).sum();
        let _ = writeln!(out, "{name}{{codec=\"{codec}\"}} {count}");
    }
    partitions::render_subscriptions(&mut out, snapshots);
    partitions::render_log_bytes(&mut out, snapshots);
    partitions::render_offsets(&mut out, snapshots);
    partitions::render_replication(&mut out, snapshots);
    let mut fsync = histogram();
    for snapshot in snapshots {
        fsync.add(&snapshot.fsync_us).expect("same bounds");
    }
    let name = "oxbow_fsync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} fdatasync latency of segment files.\n# TYPE {name} summary"
    );
    summary(&mut out, name, "", &fsync);
    out
}

/// The metadata group as this node sees it.
fn render_group(out: &mut String, status: &NodeStatus, proposals: &ProposalStats) {
    // No leader is shown as Kafka's -1.
    let leader = broker_id(status.leader).map_or(-1, i64::from);
    let values: [(&str, &str, &str, i64); 6] = [
        (
            "oxbow_metadata_term",
            "gauge",
            "Raft term of the metadata group.",
            status.term as i64,
        ),
        (
            "oxbow_metadata_commit_index",
            "gauge",
            "Last committed entry of the metadata log.",
            status.commit as i64,
        ),
        (
            "oxbow_metadata_apply_lag",
            "gauge",
            "Committed entries not applied yet.",
            (status.commit - status.applied) as i64,
        ),
        (
            "oxbow_metadata_leader",
            "gauge",
            "Broker id leading the metadata group (-1: none known).",
            leader,
        ),
        (
            "oxbow_metadata_leader_changes_total",
            "counter",
            "Times the known leader changed.",
            status.leader_changes as i64,
        ),
        (
            "oxbow_metadata_applied_index",
            "gauge",
            "Last applied entry of the metadata log.",
            status.applied as i64,
        ),
    ];
    for (name, kind, help, value) in values {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let name = "oxbow_metadata_proposals_total";
    let _ = writeln!(
        out,
        "# HELP {name} Metadata changes proposed by this node, by outcome.\n# TYPE {name} counter"
    );
    for (outcome, count) in [
        ("committed", proposals.committed),
        ("refused", proposals.refused),
        ("failed", proposals.failed),
    ] {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }
    let name = "oxbow_metadata_proposal_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from proposing a metadata change to its answer.\n# TYPE {name} summary"
    );
    summary(out, name, "", &proposals.latency_us);
}

/// Other requests the metrics listener answers: given the request line, a status and body,
/// or `None` for "not found".
pub type ExtraRoutes = Rc<dyn Fn(&[u8]) -> Option<(&'static str, String)>>;

/// Binds the metrics endpoint, over TLS when `tls` is given (HTTPS); `gather` collects every
/// shard's snapshot.
pub fn listen<F, Fut>(
    shard: Rc<oxbow_dispatch::Shard>,
    addr: SocketAddr,
    tls: Option<Arc<crate::tls::ReloadableTls>>,
    gather: F,
    extra: Option<ExtraRoutes>,
) -> std::io::Result<(SocketAddr, glommio::Task<()>)>
where
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = Gathered> + 'static,
{
    let (listener, bound) = crate::listener::bind(addr)?;
    let gather = Rc::new(gather);
    let task = glommio::spawn_local(async move {
        while let Ok(stream) = listener.accept().await {
            let (shard, tls) = (shard.clone(), tls.clone());
            let (gather, extra) = (gather.clone(), extra.clone());
            glommio::spawn_local(async move {
                match tls {
                    None => answer(stream, gather, extra).await,
                    Some(tls) => {
                        let peer = stream.peer_addr().ok();
                        let mut session = crate::session::Session::anonymous(peer);
                        let accepted = crate::tls::accept(&shard, &tls, stream, &mut session);
                        if let Some(stream) = accepted.await {
                            answer(stream, gather, extra).await
                        }
                    }
                }
            })
            .detach();
        }
    });
    Ok((bound, task))
}

/// Answers one HTTP request on `stream`: `GET /metrics`, one of the `extra` routes, or 404.
async fn answer<S, F, Fut>(mut stream: S, gather: Rc<F>, extra: Option<ExtraRoutes>)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Gathered>,
{
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_REQUEST_BYTES_MAX {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let routed = extra.as_ref().and_then(|route| route(&head));
    let (status, body) = if head.starts_with(b"GET /metrics ") {
        ("200 OK", render(&gather().await))
    } else if let Some(answer) = routed {
        answer
    } else {
        ("404 Not Found", "not found: try GET /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    // Over TLS, close_notify: the scraper then knows the body is whole.
    let _ = stream.close().await;
}
