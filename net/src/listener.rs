//! Accepting connections, the same way for every protocol: one listener per shard on a shared
//! port (SO_REUSEPORT, so the kernel spreads connections over the shards), a node-wide limit
//! divided evenly among the shards, and one task per connection.

use crate::shard::Shard;
use glommio::net::{TcpListener, TcpStream};
use oxbow_core::config::ListenerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// What the runtime hands each shard to run a listener: its settings, and its TLS server
/// configuration, made once from the files.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// The listener's settings.
    pub config: ListenerConfig,
    /// For SSL and SASL_SSL listeners.
    pub tls: Option<Arc<crate::tls::ReloadableTls>>,
}

/// What a listener serves and how many connections it may hold.
pub struct Listening {
    /// The protocol, for logs.
    pub what: &'static str,
    /// Connections allowed on the whole node (the setting's value).
    pub connections_max: u32,
    /// The name of that setting, for the log line of a refused connection.
    pub setting: &'static str,
    /// Its clients authenticate: an address that failed too often is closed at accept
    /// (`crate::failed_logins`).
    pub authenticates: bool,
    /// Connections this shard holds open now.
    pub open: fn(&Shard) -> u64,
}

/// Pending connections a listener queues before accepting (glommio's own bind uses the same).
const ACCEPT_BACKLOG: i32 = 1024;

/// Binds `addr` on this shard (SO_REUSEPORT); returns the listener and the bound address.
/// SO_REUSEADDR too, which glommio's own bind leaves out: the connections it accepts inherit
/// it, so those a crash or a stop leaves in TIME_WAIT do not keep the next start (or
/// [`ensure_port_free`]) off the port for a minute.
pub fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    // SAFETY: the descriptor is a listening TCP socket this function owns and hands over.
    let listener = unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) };
    let bound = listener.local_addr().map_err(std::io::Error::from)?;
    Ok((listener, bound))
}

/// Serves every connection `listener` accepts with `serve` until the returned task is
/// dropped; connections past this shard's share of the limit are closed at once.
pub fn serve<F, Fut>(
    shard: Rc<Shard>,
    listener: TcpListener,
    listening: Listening,
    serve: F,
) -> glommio::Task<()>
where
    F: Fn(Rc<Shard>, TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let per_shard = listening.connections_max.div_ceil(shard.shards() as u32) as u64;
    glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) if (listening.open)(&shard) >= per_shard => {
                    tracing::warn!(peer = ?stream.peer_addr().ok(), what = listening.what,
                        limit = listening.connections_max,
                        "{} reached: closing new connection", listening.setting);
                }
                Ok(stream)
                    if listening.authenticates
                        && crate::failed_logins::throttled(&shard, stream.peer_addr().ok()) => {}
                Ok(stream) => {
                    glommio::spawn_local(serve(shard.clone(), stream)).detach();
                }
                Err(e) => {
                    tracing::warn!(what = listening.what, error = %e, "accepting a connection failed")
                }
            }
        }
    })
}

/// How long a port taken by a listener is asked again before it counts as another process's.
/// The listeners of a broker that was just killed outlive it briefly: its io_uring instances,
/// which hold them, are torn down by the kernel after the process has exited (measured here:
/// a restart right after `kill -9` and `wait` still found them listening).
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Fails when another process already listens on `addr`. Shards bind with SO_REUSEPORT, which
/// would let two brokers share a port and silently split its connections; a plain bind
/// (SO_REUSEADDR only, so TIME_WAIT leftovers do not count) is refused by any listener.
pub fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                // Between asks of the kernel, not a wait for it.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            bound => return bound.map(drop),
        }
    }
}
