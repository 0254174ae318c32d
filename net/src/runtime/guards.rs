//! What keeps two brokers apart: the data directory's lock, and the listening ports checked
//! before binding (the shards' SO_REUSEPORT listeners would otherwise share them silently).

use super::RuntimeError;
use oxbow_core::BrokerConfig;
use std::net::SocketAddr;

/// Fails if another process listens on one of the configured addresses.
pub(super) fn ensure_ports_free(config: &BrokerConfig) -> Result<(), RuntimeError> {
    let named = |shorthand, listeners: Vec<_>, explicit: bool, setting| {
        let setting = if explicit { setting } else { shorthand };
        (listeners.into_iter())
            .map(move |l: oxbow_core::config::ListenerConfig| (setting, l.address))
    };
    let kafka = named(
        "kafka_listen",
        config.kafka_listeners_in_effect(),
        !config.kafka_listeners.is_empty(),
        "kafka_listeners.address",
    );
    let native = named(
        "native_listen",
        config.native_listeners_in_effect(),
        !config.native_listeners.is_empty(),
        "native_listeners.address",
    );
    let metrics_setting = match config.metrics_listener {
        Some(_) => "metrics_listener.address",
        None => "metrics_listen",
    };
    let metrics = [(metrics_setting, config.metrics_listener_in_effect().address)];
    for (setting, addr) in kafka.chain(native).chain(metrics) {
        let addr: SocketAddr = addr.parse().expect("validated by BrokerConfig::validate");
        crate::listener::ensure_port_free(addr).map_err(|source| RuntimeError::PortInUse {
            setting,
            addr,
            source,
        })?;
    }
    Ok(())
}

/// Takes `<data>/.oxbow/lock` (flock, released when the process ends however it ends).
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, RuntimeError> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join(".oxbow").join("lock");
    let io = |source| RuntimeError::DataDir {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("in .oxbow")).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(RuntimeError::DataDirInUse { path });
    }
    Ok(file)
}
