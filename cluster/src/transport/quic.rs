//! Frames between nodes over QUIC, on a per-node I/O thread (a tokio current-thread runtime,
//! as ENVIRONMENT.md measured): one connection per peer, one bidirectional stream per frame
//! (QUIC streams are cheap, and one lost or slow frame holds up no other), answered with a
//! one-byte receipt once the receiver has taken the frame.

use super::faults::FaultSwitch;
use super::tls::{ClusterTls, TlsError, CLUSTER_SERVER_NAME};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a frame did not reach its peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No address is known for the node.
    #[error("no address for node {0}")]
    UnknownPeer(u64),
    /// The fault switch cuts this node off from the peer, or dropped the frame.
    #[error("frame to node {0} dropped by the fault switch")]
    Cut(u64),
    /// Connecting failed (unreachable, or the handshake refused: not a cluster member).
    #[error("connecting to node {node} at {addr}: {reason}")]
    Connect {
        /// The peer.
        node: u64,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The stream failed before the receipt.
    #[error("sending to node {node}: {reason}")]
    Stream {
        /// The peer.
        node: u64,
        /// Why.
        reason: String,
    },
    /// The I/O thread is gone.
    #[error("the cluster transport is stopped")]
    Stopped,
}

/// Why the transport cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding or starting the I/O thread failed.
    #[error("cluster listener on {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A frame that arrived, and the address it came from.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The peer's address.
    pub from: SocketAddr,
    /// The frame.
    pub frame: Bytes,
}

/// Bounds of the transport.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    /// Largest frame accepted; a longer one resets its stream.
    pub frame_bytes_max: usize,
    /// How long connecting (with the handshake) may take.
    pub connect_timeout: Duration,
    /// How long one frame may take from opening its stream to its receipt; past it the
    /// connection is dropped (a peer that restarted on the same address answers nothing on the
    /// old one) and the next frame connects again.
    pub frame_timeout: Duration,
    /// A connection without traffic for this long is closed (Raft heartbeats keep a live one
    /// busy).
    pub idle_timeout: Duration,
    /// Kernel send and receive buffers asked for the UDP socket.
    pub socket_buffer_bytes: usize,
}

/// A peer's connection, or when and why the last attempt failed (frames fail fast until the
/// backoff has passed, so a dead peer does not gather a queue of handshakes).
type Slot = Arc<tokio::sync::Mutex<Option<Result<quinn::Connection, (Instant, String)>>>>;

/// How long after a failed connection attempt frames to that peer fail without a new one.
const CONNECT_BACKOFF: Duration = Duration::from_millis(500);

struct Shared {
    endpoint: quinn::Endpoint,
    peers: Mutex<HashMap<u64, SocketAddr>>,
    /// One slot per peer: whoever finds it empty connects while the others wait, so a dead
    /// peer costs one handshake attempt at a time, not one per frame.
    connections: Mutex<HashMap<u64, Slot>>,
    faults: FaultSwitch,
    limits: TransportLimits,
}

/// A node's end of the cluster network.
pub struct Transport {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    local_addr: SocketAddr,
    stop: Option<flume::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Transport {
    /// Binds `listen` on a new I/O thread; frames that arrive go to `inbound`.
    pub fn start(
        listen: SocketAddr,
        tls: &ClusterTls,
        limits: TransportLimits,
        inbound: flume::Sender<Inbound>,
    ) -> Result<Transport, StartError> {
        let io = |source| StartError::Io {
            addr: listen,
            source,
        };
        let mut server = tls.server_config()?;
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        transport.max_idle_timeout(Some(idle));
        transport.keep_alive_interval(Some(limits.idle_timeout / 3));
        let transport = Arc::new(transport);
        server.transport_config(transport.clone());
        let mut client = tls.client_config()?;
        client.transport_config(transport);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io)?;
        let handle = runtime.handle().clone();
        let socket = super::socket::bind_udp(listen, limits.socket_buffer_bytes).map_err(io)?;
        let mut endpoint = {
            let _inside = handle.enter();
            let runtime = Arc::new(quinn::TokioRuntime);
            let config = quinn::EndpointConfig::default();
            quinn::Endpoint::new(config, Some(server), socket, runtime).map_err(io)?
        };
        endpoint.set_default_client_config(client);
        let local_addr = endpoint.local_addr().map_err(io)?;
        let shared = Arc::new(Shared {
            endpoint,
            peers: Mutex::default(),
            connections: Mutex::default(),
            faults: FaultSwitch::default(),
            limits,
        });
        let (stop, stopped) = flume::bounded::<()>(1);
        let accepting = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-io".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(accept(accepting, inbound));
                    let _ = stopped.recv_async().await;
                });
            })
            .map_err(io)?;
        Ok(Transport {
            shared,
            runtime: handle,
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where node `node` listens.
    pub fn set_peer(&self, node: u64, addr: SocketAddr) {
        self.shared
            .peers
            .lock()
            .expect("not poisoned")
            .insert(node, addr);
    }

    /// Where node `node` listens, if it is not known yet: a node that joins knows only the
    /// member it asked, and answers the leader at the address the leader's frames came from
    /// until the metadata names it.
    pub fn learn_peer(&self, node: u64, addr: SocketAddr) {
        let mut peers = self.shared.peers.lock().expect("not poisoned");
        peers.entry(node).or_insert(addr);
    }

    /// Largest frame a peer accepts (the same limit on every node).
    pub fn frame_bytes_max(&self) -> usize {
        self.shared.limits.frame_bytes_max
    }

    /// The fault switch, for tests.
    pub fn faults(&self) -> &FaultSwitch {
        &self.shared.faults
    }

    /// Sends a frame and forgets it: a failure is logged and counted by the caller's protocol
    /// (Raft resends what is lost).
    pub fn send(&self, to: u64, frame: Bytes) {
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            if let Err(e) = deliver(&shared, to, frame).await {
                tracing::debug!(error = %e, "cluster frame not delivered");
            }
        });
    }

    /// Sends a frame and resolves once the peer has taken it (or why not). Callable from any
    /// thread or executor.
    pub async fn deliver(&self, to: u64, frame: Bytes) -> Result<(), TransportError> {
        let (done, outcome) = flume::bounded(1);
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            let _ = done.send(deliver(&shared, to, frame).await);
        });
        outcome
            .recv_async()
            .await
            .unwrap_or(Err(TransportError::Stopped))
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shared.endpoint.close(0u32.into(), b"node stopping");
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn deliver(shared: &Shared, to: u64, frame: Bytes) -> Result<(), TransportError> {
    if shared.faults.is_cut(to) || shared.faults.drops_next() {
        return Err(TransportError::Cut(to));
    }
    if let Some(delay) = shared.faults.delay() {
        tokio::time::sleep(delay).await;
    }
    let connection = connection(shared, to).await?;
    let stream_error = |e: &dyn std::fmt::Display| TransportError::Stream {
        node: to,
        reason: e.to_string(),
    };
    let sent = async {
        let (mut send, mut receive) = connection.open_bi().await.map_err(|e| stream_error(&e))?;
        send.write_all(&frame).await.map_err(|e| stream_error(&e))?;
        send.finish().map_err(|e| stream_error(&e))?;
        let receipt = receive.read_to_end(1).await.map_err(|e| stream_error(&e))?;
        match receipt.as_slice() {
            [RECEIPT] => Ok(()),
            other => Err(stream_error(&format!("receipt {other:?}"))),
        }
    };
    let outcome = match tokio::time::timeout(shared.limits.frame_timeout, sent).await {
        Ok(outcome) => outcome,
        Err(_) => {
            connection.close(0u32.into(), b"frame timed out");
            Err(stream_error(&"no receipt in time"))
        }
    };
    if outcome.is_err() {
        // The next frame connects again, unless another task already has.
        let mut current = slot(shared, to).lock_owned().await;
        let id = |c: &Option<Result<quinn::Connection, _>>| match c {
            Some(Ok(c)) => Some(c.stable_id()),
            _ => None,
        };
        if id(&current) == Some(connection.stable_id()) {
            *current = None;
        }
    }
    outcome
}

fn slot(shared: &Shared, to: u64) -> Slot {
    let mut slots = shared.connections.lock().expect("not poisoned");
    slots.entry(to).or_default().clone()
}

/// The connection to `to`, made when there is none (or the last one closed).
async fn connection(shared: &Shared, to: u64) -> Result<quinn::Connection, TransportError> {
    let mut current = slot(shared, to).lock_owned().await;
    let addr = (shared.peers.lock().expect("not poisoned").get(&to).copied())
        .ok_or(TransportError::UnknownPeer(to))?;
    let refused = |reason: String| TransportError::Connect {
        node: to,
        addr,
        reason,
    };
    match current.as_ref() {
        Some(Ok(live)) if live.close_reason().is_none() => return Ok(live.clone()),
        Some(Err((at, why))) if at.elapsed() < CONNECT_BACKOFF => return Err(refused(why.clone())),
        _ => {}
    }
    let connected = async {
        let connecting = (shared.endpoint)
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(shared.limits.connect_timeout, connecting)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    };
    let outcome = connected.await.map_err(|why| (Instant::now(), why));
    *current = Some(outcome.clone());
    outcome.map_err(|(_, why)| refused(why))
}

/// Whether `from` is the address of a node the fault switch cuts off.
fn from_cut_node(shared: &Shared, from: SocketAddr) -> bool {
    let peers = shared.peers.lock().expect("not poisoned");
    (peers.iter()).any(|(&node, &addr)| addr == from && shared.faults.is_cut(node))
}

/// The byte a receiver answers a frame with.
const RECEIPT: u8 = 1;

async fn accept(shared: Arc<Shared>, inbound: flume::Sender<Inbound>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let (shared, inbound) = (shared.clone(), inbound.clone());
        tokio::spawn(async move {
            let from = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve(connection, &shared, inbound).await,
                // A node without the cluster's certificate ends here.
                Err(e) => tracing::warn!(%from, error = %e, "cluster connection refused"),
            }
        });
    }
}

async fn serve(connection: quinn::Connection, shared: &Shared, inbound: flume::Sender<Inbound>) {
    let from = connection.remote_address();
    let limit = shared.limits.frame_bytes_max;
    while let Ok((mut send, mut receive)) = connection.accept_bi().await {
        if from_cut_node(shared, from) {
            continue;
        }
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let frame = match receive.read_to_end(limit).await {
                Ok(frame) => Bytes::from(frame),
                Err(e) => {
                    tracing::warn!(%from, error = %e, limit, "cluster frame refused");
                    return;
                }
            };
            if inbound.send_async(Inbound { from, frame }).await.is_ok() {
                let _ = send.write_all(&[RECEIPT]).await;
                let _ = send.finish();
            }
        });
    }
}
