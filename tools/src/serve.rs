//! `oxbow serve`: builds the configuration, starts the node's shards (see
//! `oxbow_net::runtime`), and on SIGINT/SIGTERM stops them (every shard writes, syncs and closes
//! its partitions) and exits 0.

use crate::{systemd, ServeArgs};
use oxbow_core::BrokerConfig;
use oxbow_net::Runtime;

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
    #[error(transparent)]
    Runtime(#[from] oxbow_net::RuntimeError),
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
    if let Some(listen) = &args.kafka_listen {
        config.kafka_listen = listen.clone();
    }
    if let Some(native) = &args.native_listen {
        config.native_listen = native.clone();
    }
    if let Some(metrics) = &args.metrics_listen {
        config.metrics_listen = metrics.clone();
    }
    if let Some(advertised) = &args.advertised_kafka_addr {
        config.advertised_kafka_addr = Some(advertised.clone());
    }
    if let Some(advertised) = &args.advertised_native_addr {
        config.advertised_native_addr = Some(advertised.clone());
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let Some(listen) = &args.cluster_listen {
        config.cluster.listen = Some(listen.clone());
    }
    if let Some(member) = &args.join {
        config.cluster.join = Some(member.clone());
    }
    if let Some(voters) = &args.initial_voters {
        config.cluster.initial_voters = voters.clone();
    }
    if config.shards == 0 {
        config.shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    config.validate()?;
    Ok(config)
}

/// Runs the broker until SIGINT or SIGTERM; SIGHUP reloads the listeners' TLS certificates.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let config = build_config(&args)?;
    crate::init_logging(config.log_format);
    // A clustered node may wait long for its peers before it is ready; a signal meanwhile ends
    // the process as a crash would (everything it acknowledged is durable).
    let runtime = Runtime::start(config.clone())?;
    // Before saying "ready": a signal that arrives from then on must reach us.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(ServeError::Signals)?;
    tracing::info!(shards = runtime.shards(), partitions = runtime.partitions(),
        kafka = %runtime.kafka_addr(), native = %runtime.native_addr(), metrics = %runtime.metrics_addr(), data_dir = ?config.data_dir, "oxbow ready");
    let status = format!(
        "serving Kafka on {}, native on {}",
        runtime.kafka_addr(),
        runtime.native_addr()
    );
    systemd::ready(&status);
    let watchdog = systemd::Watchdog::start(runtime.liveness());
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            systemd::reloading();
            runtime.reload_tls();
            systemd::ready(&status);
            continue;
        }
        tracing::info!(signal, "shutting down");
        break;
    }
    systemd::stopping();
    drop(watchdog);
    runtime.stop()?;
    tracing::info!("oxbow stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use oxbow_core::BrokerConfig;

    /// The packaged `/etc/oxbow/oxbow.toml` (deploy/oxbow.toml): each "#key = value" line
    /// shows the embedded default, so uncommenting one changes nothing until it is edited.
    #[test]
    fn the_packaged_config_shows_the_embedded_defaults() {
        let packaged = include_str!("../../deploy/oxbow.toml");
        let mut shown = 0;
        let uncommented: Vec<&str> = (packaged.lines())
            .map(|line| match line.strip_prefix('#') {
                Some(setting) if setting.starts_with(|c: char| c.is_ascii_lowercase()) => {
                    shown += 1;
                    setting
                }
                _ => line,
            })
            .collect();
        assert!(shown >= 20, "only {shown} settings shown");
        let expected = BrokerConfig {
            data_dir: "/var/lib/oxbow".into(),
            ..BrokerConfig::default()
        };
        assert_eq!(BrokerConfig::from_toml(packaged).unwrap(), expected);
        assert_eq!(
            BrokerConfig::from_toml(&uncommented.join("\n")).unwrap(),
            expected
        );
    }
}
