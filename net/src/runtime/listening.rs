//! Listening and registering: every shard binds each listener (shard 0 first, so that port 0
//! resolves to one port), and the node registers the addresses clients are told.

use super::{Control, Runtime, RuntimeError};
use crate::listener::ListenerSpec;
use oxbow_core::config::ListenerConfig;
use oxbow_core::BrokerConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

impl Runtime {
    /// Binds the Kafka and native listeners on every shard and the metrics endpoint on shard 0.
    /// Shard 0 binds first so that port 0 resolves to one port; the others bind that port.
    pub(super) fn bind_listeners(&mut self, config: &BrokerConfig) -> Result<(), RuntimeError> {
        let parse = |addr: &str| -> SocketAddr {
            addr.parse().expect("validated by BrokerConfig::validate")
        };
        for listener in config.kafka_listeners_in_effect() {
            let spec = self.listener_spec(listener)?;
            let mut addr = parse(&spec.config.address);
            for shard in 0..config.shards {
                let spec = spec.clone();
                addr = self.bind(shard, |reply| Control::ListenKafka { spec, addr, reply })?;
            }
            tracing::info!(listener = %spec.config.name(), security = spec.config.security.name(),
                %addr, "Kafka listener bound");
            self.kafka_listeners
                .push((spec.config.name().to_string(), addr));
        }
        for listener in config.native_listeners_in_effect() {
            let spec = self.listener_spec(listener)?;
            let mut addr = parse(&spec.config.address);
            for shard in 0..config.shards {
                let spec = spec.clone();
                addr = self.bind(shard, |reply| Control::ListenNative { spec, addr, reply })?;
            }
            tracing::info!(listener = %spec.config.name(), security = spec.config.security.name(),
                %addr, "native listener bound");
            self.native_listeners
                .push((spec.config.name().to_string(), addr));
        }
        let spec = self.listener_spec(config.metrics_listener_in_effect())?;
        let addr = parse(&spec.config.address);
        self.metrics_addr = self.bind(0, |reply| Control::ListenMetrics { spec, addr, reply })?;
        Ok(())
    }

    /// A listener's settings with its TLS configuration made from its files (kept for SIGHUP).
    fn listener_spec(
        &mut self,
        listener: ListenerConfig,
    ) -> Result<Arc<ListenerSpec>, RuntimeError> {
        let tls = match listener.security.uses_tls() {
            false => None,
            true => Some(Arc::new(
                crate::tls::ReloadableTls::new(&listener).map_err(|source| {
                    RuntimeError::ListenerTls {
                        listener: listener.name().to_string(),
                        source,
                    }
                })?,
            )),
        };
        self.tls.extend(tls.clone());
        Ok(Arc::new(ListenerSpec {
            config: listener,
            tls,
        }))
    }

    /// Registers this broker with the addresses it listens on, by listener name (the
    /// advertised addresses when they are set).
    pub(super) fn register(&mut self, config: &BrokerConfig) -> Result<(), RuntimeError> {
        let kafka = config.kafka_listeners_in_effect();
        let kafka_listeners = advertised(&kafka, &self.kafka_listeners);
        let native = config.native_listeners_in_effect();
        let native_listeners = advertised(&native, &self.native_listeners);
        let broker = oxbow_cluster::BrokerMeta {
            id: config.node_id,
            kafka_addr: kafka_listeners[kafka[0].name()].clone(),
            kafka_listeners,
            native_addr: native_listeners[native[0].name()].clone(),
            native_listeners,
            cluster_addr: (self.transport.as_ref()).map(|t| t.local_addr().to_string()),
            rack: config.rack.clone(),
            shards: config.shards as u32,
        };
        let (reply, done) = flume::bounded(1);
        let _ = self.control[0].send(Control::Register { broker, reply });
        let reason = match done.recv() {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => reason,
            Err(_) => "shard 0 exited while registering".to_string(),
        };
        let _ = self.shut_down();
        Err(RuntimeError::Shard { shard: 0, reason })
    }

    /// Asks a shard to bind a listener and waits for the bound address; on failure stops every
    /// shard, so a node never runs half-listening.
    fn bind(
        &mut self,
        shard: usize,
        order: impl FnOnce(flume::Sender<Result<SocketAddr, String>>) -> Control,
    ) -> Result<SocketAddr, RuntimeError> {
        let (reply, bound) = flume::bounded(1);
        let _ = self.control[shard].send(order(reply));
        let reason = match bound.recv() {
            Ok(Ok(bound)) => return Ok(bound),
            Ok(Err(reason)) => reason,
            Err(_) => "the shard exited while binding".to_string(),
        };
        let _ = self.shut_down();
        Err(RuntimeError::Shard { shard, reason })
    }
}

/// Each listener's name and the address clients are told: its advertised address, else the
/// address it was bound to.
fn advertised(
    listeners: &[ListenerConfig],
    bound: &[(String, SocketAddr)],
) -> BTreeMap<String, String> {
    (listeners.iter().zip(bound))
        .map(|(listener, (name, at))| {
            let at = (listener.advertised_address.clone()).unwrap_or_else(|| at.to_string());
            (name.clone(), at)
        })
        .collect()
}
