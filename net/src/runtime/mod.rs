//! Starting and stopping a node's shards.
//!
//! [`Runtime::start`] loads the node's metadata (the topics and partitions it holds), starts one pinned
//! glommio executor per shard with the mesh of inboxes between them, and returns once every
//! shard has opened (and so recovered) the partitions it owns. [`Runtime::stop`] makes every
//! shard write, sync and close its partitions.

use crate::listener::ListenerSpec;
use crate::shard::{RemoteWork, Shard, ShardMessage};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use guards::{ensure_ports_free, lock_data_dir};
use oxbow_core::placement::owner_shard;
use oxbow_core::BrokerConfig;
use oxbow_storage::layout::FoundPartition;
use oxbow_storage::{OpenOptions, Partition};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub mod bootstrap_users;
mod cluster;
mod guards;
mod listening;
mod liveness;
mod metadata;
pub use cluster::ClusterLink;
pub use liveness::ShardLiveness;
pub use metadata::start_node as start_metadata_node;

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The data directory cannot be created or listed.
    #[error("data directory {path:?}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metadata cannot be loaded, or does not match the data directory.
    #[error("metadata of {path:?}: {reason}")]
    Metadata {
        /// The data directory.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cluster transport cannot start (its TLS files, its address).
    #[error("cluster: {0}")]
    Cluster(String),
    /// A listener's TLS certificate or key cannot be used.
    #[error("kafka listener {listener}: {source}")]
    ListenerTls {
        /// The listener's name.
        listener: String,
        /// What is wrong with its files.
        source: crate::tls::TlsSetupError,
    },
    /// Another process runs a broker on this data directory.
    #[error("data directory is in use by another process (lock {path:?} is held)")]
    DataDirInUse {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// Another process listens on a configured address (checked before binding, because the
    /// shards' SO_REUSEPORT listeners would otherwise share the port with it).
    #[error("{setting} {addr} is already in use by another process: {source}")]
    PortInUse {
        /// The setting that names the address.
        setting: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard failed to start or stopped abnormally.
    #[error("shard {shard}: {reason}")]
    Shard {
        /// Which shard (`usize::MAX` when unknown).
        shard: usize,
        /// What happened.
        reason: String,
    },
}

/// A running node: its shards and their inboxes.
pub struct Runtime {
    inboxes: Vec<flume::Sender<ShardMessage>>,
    control: Vec<flume::Sender<Control>>,
    handles: Vec<ExecutorJoinHandle<()>>,
    partitions: usize,
    /// Each Kafka listener's name and bound address, in the order configured.
    kafka_listeners: Vec<(String, SocketAddr)>,
    /// The TLS configurations of the listeners that have one.
    tls: Vec<Arc<crate::tls::ReloadableTls>>,
    /// Each native listener's name and bound address, in the order configured.
    native_listeners: Vec<(String, SocketAddr)>,
    metrics_addr: SocketAddr,
    /// The cluster transport, when the node runs with others; stopped after the shards.
    transport: Option<Arc<oxbow_cluster::transport::Transport>>,
    /// Held while the node runs: a second broker on the same data directory is refused.
    _lock: std::fs::File,
}

/// Orders from the runtime to a shard's main task.
enum Control {
    /// Bind a Kafka listener on this address and report the bound address.
    ListenKafka {
        spec: Arc<ListenerSpec>,
        addr: SocketAddr,
        reply: flume::Sender<Result<SocketAddr, String>>,
    },
    /// Bind the native-protocol listener on this address and report the bound address.
    ListenNative {
        spec: Arc<ListenerSpec>,
        addr: SocketAddr,
        reply: flume::Sender<Result<SocketAddr, String>>,
    },
    /// Serve `GET /metrics` on this address and report the bound address.
    ListenMetrics {
        spec: Arc<ListenerSpec>,
        addr: SocketAddr,
        reply: flume::Sender<Result<SocketAddr, String>>,
    },
    /// Register this broker in the metadata (and name the cluster if it has no name yet);
    /// shard 0 only.
    Register {
        broker: oxbow_cluster::BrokerMeta,
        reply: flume::Sender<Result<(), String>>,
    },
    /// Close every partition and exit.
    Stop,
}

/// What a shard reports once its partitions are open (or why it could not open them).
type ShardReport = Result<usize, String>;

impl Runtime {
    /// Starts `config.shards` shards (must be resolved, not 0) and waits until every shard has
    /// opened its partitions. On failure every shard that started is stopped again.
    pub fn start(mut config: BrokerConfig) -> Result<Runtime, RuntimeError> {
        assert!(
            config.shards > 0,
            "shard count must be resolved before start"
        );
        let data_dir = config.data_dir.clone();
        let dir_error = |source| RuntimeError::DataDir {
            path: data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
        // glommio cannot sync a directory opened by a relative path (EBADF): every shard works
        // with the absolute one.
        config.data_dir = std::fs::canonicalize(&data_dir).map_err(dir_error)?;
        let data_dir = config.data_dir.clone();
        let lock = lock_data_dir(&data_dir)?;
        ensure_ports_free(&config)?;
        let (metadata, partitions) =
            metadata::load(&config).map_err(|reason| RuntimeError::Metadata {
                path: data_dir.clone(),
                reason,
            })?;
        let metadata = Arc::new(metadata);
        let mut link = cluster::start_link(&config).map_err(RuntimeError::Cluster)?;
        let cpus: Vec<usize> = glommio::CpuSet::online()
            .map(|set| set.into_iter().map(|location| location.cpu).collect())
            .unwrap_or_default();

        let (inboxes, receivers) =
            oxbow_dispatch::shard::mesh(config.shards, config.shard_inbox_messages_max as usize);
        let (report_tx, report_rx) = flume::unbounded::<(usize, ShardReport)>();
        let mut runtime = Runtime {
            inboxes: inboxes.clone(),
            control: Vec::new(),
            handles: Vec::new(),
            partitions: 0,
            kafka_listeners: Vec::new(),
            tls: Vec::new(),
            native_listeners: Vec::new(),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: link.as_ref().map(|link| link.transport.clone()),
            _lock: lock,
        };
        for (shard, inbox) in receivers.into_iter().enumerate() {
            let owned: Vec<FoundPartition> = partitions
                .iter()
                .filter(|p| owner_shard(&p.topic, p.partition, config.shards) == shard)
                .cloned()
                .collect();
            let (control_tx, control_rx) = flume::unbounded::<Control>();
            let placement = match cpus.is_empty() || !config.pin_shards {
                true => Placement::Unbound,
                false => Placement::Fixed(cpus[shard % cpus.len()]),
            };
            let (config_for_shard, mesh) = (config.clone(), inboxes.clone());
            let metadata = metadata.clone();
            let transport = runtime.transport.clone();
            let report = report_tx.clone();
            // The metadata group runs on shard 0.
            let link = link.take();
            let started = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{shard}"))
                .io_memory(config.shard_io_memory_bytes)
                .spawn(move || {
                    // Built on its own thread: a shard holds `Rc`s and never moves.
                    let state = Shard::new(shard, config_for_shard, mesh, metadata);
                    if let Some(transport) = transport {
                        state.set_transport(transport);
                    }
                    shard_main(state, owned, inbox, report, control_rx, link)
                });
            match started {
                Ok(handle) => {
                    runtime.handles.push(handle);
                    runtime.control.push(control_tx);
                }
                Err(e) => {
                    let _ = runtime.stop();
                    return Err(RuntimeError::Shard {
                        shard,
                        reason: e.to_string(),
                    });
                }
            }
        }
        drop(report_tx);
        runtime.await_reports(config.shards, report_rx)?;
        runtime.bind_listeners(&config)?;
        runtime.register(&config)?;
        Ok(runtime)
    }

    /// Waits until every shard has opened its partitions (or one failed: then all stop).
    fn await_reports(
        &mut self,
        shards: usize,
        reports: flume::Receiver<(usize, ShardReport)>,
    ) -> Result<(), RuntimeError> {
        let mut failure = None;
        for _ in 0..shards {
            match reports.recv() {
                Ok((_, Ok(count))) => self.partitions += count,
                Ok((shard, Err(reason))) => {
                    failure.get_or_insert(RuntimeError::Shard { shard, reason });
                }
                Err(_) => {
                    failure.get_or_insert(RuntimeError::Shard {
                        shard: usize::MAX,
                        reason: "a shard exited during start-up".into(),
                    });
                    break;
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(e) => {
                let _ = self.shut_down();
                Err(e)
            }
        }
    }

    /// The address of the Prometheus endpoint.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The address the first Kafka listener is bound to on every shard.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_listeners[0].1
    }

    /// Reads every listener's certificate and key files again (SIGHUP): new connections get
    /// them, open ones keep their sessions; a listener whose files do not work keeps what it
    /// had, and says why.
    pub fn reload_tls(&self) {
        for tls in &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(listener = %tls.listener(), "TLS certificates reloaded"),
                Err(e) => tracing::error!(listener = %tls.listener(), error = %e,
                    "TLS certificates not reloaded: the listener keeps the ones it had"),
            }
        }
    }

    /// Every Kafka listener's name and bound address.
    pub fn kafka_listeners(&self) -> &[(String, SocketAddr)] {
        &self.kafka_listeners
    }

    /// The address the native-protocol listener is bound to on every shard.
    pub fn native_addr(&self) -> SocketAddr {
        self.native_listeners[0].1
    }

    /// Number of partitions opened at start.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// The inbox of a shard, to send it requests from any thread.
    pub fn inbox(&self, shard: usize) -> &flume::Sender<ShardMessage> {
        &self.inboxes[shard]
    }

    /// Asks whether every shard still answers (the systemd watchdog's probe).
    pub fn liveness(&self) -> ShardLiveness {
        ShardLiveness::new(self.inboxes.clone())
    }

    /// Stops the node: a clustered one first hands the leadership of its partitions to
    /// other replicas (controlled shutdown), then every shard writes, syncs and closes its
    /// partitions, and this waits for them.
    pub fn stop(mut self) -> Result<(), RuntimeError> {
        self.hand_over_leadership();
        self.shut_down()
    }

    fn hand_over_leadership(&self) {
        if self.transport.is_none() {
            return;
        }
        let (reply, answer) = flume::bounded(1);
        let work: RemoteWork = Box::new(move |shard| {
            Box::pin(async move {
                let _ = reply.send(shard.controlled_shutdown().await);
            })
        });
        if self.inboxes[0].send(ShardMessage::Run(work)).is_err() {
            return;
        }
        match answer.recv() {
            Ok(Ok(())) => tracing::info!("controlled shutdown: leadership handed over"),
            Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown failed; stopping anyway"),
            Err(_) => tracing::warn!("controlled shutdown: shard 0 is gone"),
        }
    }

    fn shut_down(&mut self) -> Result<(), RuntimeError> {
        for tx in self.control.drain(..) {
            let _ = tx.send(Control::Stop);
        }
        let mut result = Ok(());
        for handle in self.handles.drain(..) {
            if handle.join().is_err() {
                result = Err(RuntimeError::Shard {
                    shard: usize::MAX,
                    reason: "a shard panicked".into(),
                });
            }
        }
        // After the shards: the last frames of the metadata group have been handed over.
        self.transport = None;
        result
    }
}

async fn shard_main(
    shard: Shard,
    owned: Vec<FoundPartition>,
    inbox: flume::Receiver<ShardMessage>,
    report: flume::Sender<(usize, ShardReport)>,
    control: flume::Receiver<Control>,
    link: Option<cluster::ClusterLink>,
) {
    let id = shard.id;
    shard.set_extension(Rc::new(crate::metrics::ShardMetrics::default()));
    oxbow_storage::read::configure_shard(shard.config.read_cache);
    if let Err(e) =
        oxbow_storage::prepare_shard_io(&shard.config.data_dir, &format!("shard-{id}")).await
    {
        let _ = report.send((id, Err(format!("preparing direct I/O: {e}"))));
        return;
    }
    let transport = link.as_ref().map(|link| link.transport.clone());
    let joins = link.as_ref().map(|link| link.joins.1.clone());
    let replication = link.as_ref().map(|link| link.replication.1.clone());
    if id == 0 {
        match metadata::start_node(&shard.config, link).await {
            Ok(node) => shard.set_metadata_node(node),
            Err(e) => {
                let _ = report.send((id, Err(format!("starting the metadata group: {e}"))));
                return;
            }
        }
    }
    for found in &owned {
        let opened = match shard.topic_log_config(&found.topic) {
            Ok(config) => Partition::open(&found.dir, config, OpenOptions::default())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match opened {
            Ok(partition) => {
                tracing::debug!(shard = id, topic = %found.topic, partition = found.partition,
                    log_end_offset = partition.log_end_offset(), "partition opened");
                shard.adopt(&found.topic, found.partition, partition);
            }
            Err(e) => {
                // Do not serve a partial set: an operator must see and fix the failure.
                shard.close().await;
                let _ = report.send((id, Err(format!("{}/{}: {e}", found.topic, found.partition))));
                return;
            }
        }
    }
    let shard = Rc::new(shard);
    let coordinator = crate::kafka::groups::Coordinator::new(shard.config.node_id);
    shard.set_extension(coordinator.clone());
    shard.set_extension(Rc::new(crate::kafka::transactions::TxnLogs::default()));
    let txn_shard = shard.clone();
    let txn_check = Duration::from_millis(shard.config.transactions.timeout_check_interval_ms);
    let transactions_tick = glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(txn_check).await;
            crate::kafka::transactions::check(&txn_shard).await;
        }
    });
    let consumer_groups = shard.config.consumer_groups.clone();
    let tick_shard = shard.clone();
    let coordinator_tick = glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(crate::kafka::groups::COORDINATOR_TICK).await;
            coordinator.tick(std::time::Instant::now(), &consumer_groups);
            coordinator.store_consumer_groups(&tick_shard).await;
        }
    });
    let inbox_task = glommio::spawn_local(shard.clone().serve_inbox(inbox));
    if let Some(frames) = replication {
        glommio::spawn_local(shard.clone().route_replica_frames(frames)).detach();
    }
    // Roles of the partitions opened above (later versions reconcile as they arrive).
    shard.reconcile_roles();
    // Changes the metadata group applies without this node proposing them.
    glommio::spawn_local(shard.clone().follow_metadata()).detach();
    let look = Duration::from_millis(shard.config.metadata.tick_ms);
    let controller = glommio::spawn_local(shard.clone().run_controller(look));
    if let (Some(node), Some(transport), Some(joins)) =
        (shard.metadata_node(), transport.clone(), joins)
    {
        let me = shard.config.node_id;
        glommio::spawn_local(cluster::follow_peers(node, transport, me)).detach();
        glommio::spawn_local(cluster::serve_joins(shard.clone(), joins)).detach();
    }
    let retention = glommio::spawn_local(shard.clone().apply_retention_forever());
    let compaction = glommio::spawn_local(shard.clone().compact_forever());
    if transport.is_some() {
        glommio::spawn_local(shard.clone().maintain_isr_forever()).detach();
    }
    if id == 0 {
        if let Err(e) = crate::kafka::groups::migrate(&shard).await {
            let _ = report.send((id, Err(format!("moving old group offsets: {e}"))));
            drop((
                inbox_task,
                retention,
                compaction,
                coordinator_tick,
                transactions_tick,
                controller,
            ));
            shard.close().await;
            return;
        }
    }
    let _ = report.send((id, Ok(owned.len())));
    let mut kafka_listeners = Vec::new();
    let mut native_listeners = Vec::new();
    let mut metrics_endpoint = None;
    while let Ok(order) = control.recv_async().await {
        match order {
            Control::ListenKafka { spec, addr, reply } => {
                let bound = crate::kafka::listen(shard.clone(), addr, &spec);
                kafka_listeners.extend(answer_bind(bound, "Kafka listener", addr, &reply));
            }
            Control::ListenNative { spec, addr, reply } => {
                let bound = crate::native::listen(shard.clone(), addr, &spec);
                native_listeners.extend(answer_bind(bound, "native listener", addr, &reply));
            }
            Control::ListenMetrics { spec, addr, reply } => {
                let gatherer = shard.clone();
                let gather = move || {
                    let shard = gatherer.clone();
                    async move { crate::metrics::gather(&shard).await }
                };
                let faults = (transport.clone())
                    .filter(|_| shard.config.cluster.fault_injection)
                    .map(crate::fault_control::routes);
                let tls = spec.tls.clone();
                let bound = crate::metrics::listen(shard.clone(), addr, tls, gather, faults);
                metrics_endpoint =
                    answer_bind(bound, "metrics endpoint", addr, &reply).or(metrics_endpoint);
            }
            Control::Register { broker, reply } => {
                let mut registered = metadata::register(&shard, broker, transport.clone()).await;
                if registered.is_ok() {
                    registered = bootstrap_users::apply(&shard).await;
                }
                if registered.is_ok() {
                    for other in 0..shard.shards() {
                        shard
                            .run_on(other, |s| async move { s.enable_roles() })
                            .await;
                    }
                }
                let _ = reply.send(registered);
            }
            Control::Stop => break,
        }
    }
    // Dropping a glommio task cancels it: no new connections or requests from here on.
    drop(kafka_listeners);
    drop(native_listeners);
    drop(metrics_endpoint);
    drop(inbox_task);
    drop(retention);
    // A pass cut short leaves the segment it was cleaning as it was (see storage's compaction).
    drop(compaction);
    drop(coordinator_tick);
    drop(transactions_tick);
    drop(controller);
    // Cursors are written before the logs close: each driver stops after a last write.
    shard.close().await;
}

/// Tells the runtime where a listener was bound, or why it was not; hands back its task.
fn answer_bind(
    bound: std::io::Result<(SocketAddr, glommio::Task<()>)>,
    what: &str,
    addr: SocketAddr,
    reply: &flume::Sender<Result<SocketAddr, String>>,
) -> Option<glommio::Task<()>> {
    match bound {
        Ok((at, task)) => {
            let _ = reply.send(Ok(at));
            Some(task)
        }
        Err(e) => {
            let _ = reply.send(Err(format!("binding the {what} on {addr}: {e}")));
            None
        }
    }
}
