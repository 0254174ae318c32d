//! `oxbow serve`: one pinned glommio executor per shard, each owning its partitions.
//!
//! Start-up: build the configuration, discover the partitions under the data directory, start
//! the shards; each shard works around glommio's io-poll probe bug, opens (and so recovers) the
//! partitions it owns, and reports in. Shutdown on SIGINT/SIGTERM: every shard writes and syncs
//! what is queued and closes its partitions, then the process exits 0.

use crate::ServeArgs;
use glommio::{LocalExecutorBuilder, Placement};
use oxbow_core::placement::owner_shard;
use oxbow_core::BrokerConfig;
use oxbow_storage::layout::{discover_partitions, FoundPartition};
use oxbow_storage::{OpenOptions, Partition};
use std::rc::Rc;
use std::time::Duration;

/// Why the broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading config file {path:?}: {source}")]
    ConfigFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] oxbow_core::ConfigError),
    #[error("data directory {path:?}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("starting shard {shard}: {reason}")]
    Shard { shard: usize, reason: String },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The effective configuration: defaults, then the file, then flags.
pub fn build_config(args: &ServeArgs) -> Result<BrokerConfig, ServeError> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ServeError::ConfigFile {
                path: path.clone(),
                source,
            })?;
            BrokerConfig::from_toml(&text)?
        }
        None => BrokerConfig::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if config.shards == 0 {
        config.shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    config.validate()?;
    Ok(config)
}

/// What a shard reports once its partitions are open (or why it could not open them).
type ShardReport = Result<usize, String>;

pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let config = build_config(&args)?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let discovery = discover_partitions(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let partitions = discovery.partitions;
    for (path, reason) in discovery.ignored {
        tracing::warn!(?path, reason, "ignoring entry in data directory");
    }
    // Before any shard starts: a signal that arrives once we say "ready" must reach us.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(ServeError::Signals)?;
    let cpus: Vec<usize> = glommio::CpuSet::online()
        .map(|set| set.into_iter().map(|location| location.cpu).collect())
        .unwrap_or_default();

    let (report_tx, report_rx) = flume::unbounded::<(usize, ShardReport)>();
    let mut shutdown_txs = Vec::new();
    let mut handles = Vec::new();
    for shard in 0..config.shards {
        let owned: Vec<FoundPartition> = partitions
            .iter()
            .filter(|p| owner_shard(&p.topic, p.partition, config.shards) == shard)
            .cloned()
            .collect();
        let (shutdown_tx, shutdown_rx) = flume::bounded::<()>(1);
        shutdown_txs.push(shutdown_tx);
        let placement = match cpus.is_empty() {
            true => Placement::Unbound,
            false => Placement::Fixed(cpus[shard % cpus.len()]),
        };
        let report_tx = report_tx.clone();
        let config = config.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{shard}"))
            .io_memory(config.shard_io_memory_bytes)
            .spawn(move || shard_main(shard, config, owned, report_tx, shutdown_rx))
            .map_err(|e| ServeError::Shard {
                shard,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(report_tx);

    let mut opened = 0;
    let mut failure = None;
    for _ in 0..config.shards {
        match report_rx.recv() {
            Ok((_, Ok(count))) => opened += count,
            Ok((shard, Err(reason))) => {
                failure.get_or_insert(ServeError::Shard { shard, reason });
            }
            Err(_) => {
                failure.get_or_insert(ServeError::Shard {
                    shard: usize::MAX,
                    reason: "a shard exited during start-up".into(),
                });
                break;
            }
        }
    }
    if failure.is_none() {
        tracing::info!(shards = config.shards, partitions = opened, data_dir = ?data_dir,
            "oxbow ready");
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down");
        }
    }
    for tx in &shutdown_txs {
        let _ = tx.try_send(());
    }
    for handle in handles {
        if handle.join().is_err() {
            failure.get_or_insert(ServeError::Shard {
                shard: usize::MAX,
                reason: "a shard panicked".into(),
            });
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("oxbow stopped");
            Ok(())
        }
    }
}

async fn shard_main(
    shard: usize,
    config: BrokerConfig,
    owned: Vec<FoundPartition>,
    report: flume::Sender<(usize, ShardReport)>,
    shutdown: flume::Receiver<()>,
) {
    if let Err(e) = oxbow_storage::prepare_shard_io(&config.data_dir, shard).await {
        let _ = report.send((shard, Err(format!("preparing direct I/O: {e}"))));
        return;
    }
    let mut partitions = Vec::with_capacity(owned.len());
    for found in &owned {
        match Partition::open(&found.dir, config.log.clone(), OpenOptions::default()).await {
            Ok(partition) => {
                tracing::debug!(shard, topic = %found.topic, partition = found.partition,
                    log_end_offset = partition.log_end_offset(), "partition opened");
                partitions.push(Rc::new(partition));
            }
            Err(e) => {
                // Do not serve a partial set: an operator must see and fix the failure.
                for partition in &partitions {
                    partition.close().await;
                }
                let _ = report.send((
                    shard,
                    Err(format!("{}/{}: {e}", found.topic, found.partition)),
                ));
                return;
            }
        }
    }
    let _ = report.send((shard, Ok(partitions.len())));

    let retention = {
        let partitions = partitions.clone();
        let every = Duration::from_millis(config.retention_check_interval_ms);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                for partition in &partitions {
                    if let Err(e) = partition.apply_retention(oxbow_storage::now_ms()).await {
                        tracing::error!(shard, error = %e, "retention failed");
                    }
                }
            }
        })
    };
    let _ = shutdown.recv_async().await;
    drop(retention); // dropping a glommio task cancels it
    for partition in &partitions {
        partition.close().await;
    }
    tracing::info!(shard, partitions = partitions.len(), "shard stopped");
}
