//! Accepting connections, the same way for every protocol: one listener per shard on a shared
//! port (SO_REUSEPORT, so the kernel spreads connections over the shards), a node-wide limit
//! divided evenly among the shards, and one task per connection.

use crate::shard::Shard;
use glommio::net::{TcpListener, TcpStream};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

/// What a listener serves and how many connections it may hold.
pub struct Listening {
    /// The protocol, for logs.
    pub what: &'static str,
    /// Connections allowed on the whole node (the setting's value).
    pub connections_max: u32,
    /// The name of that setting, for the log line of a refused connection.
    pub setting: &'static str,
    /// Connections this shard holds open now.
    pub open: fn(&Shard) -> u64,
}

/// Binds `addr` on this shard (SO_REUSEPORT); returns the listener and the bound address.
pub fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).map_err(std::io::Error::from)?;
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

/// Fails when another process already listens on `addr`. Shards bind with SO_REUSEPORT, which
/// would let two brokers share a port and silently split its connections; a plain bind
/// (SO_REUSEADDR only, so TIME_WAIT leftovers do not count) is refused by any listener.
pub fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr).map(drop)
}
