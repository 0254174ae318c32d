//! The native protocol server, one listener per shard on the same port (SO_REUSEPORT).
//!
//! A connection is two halves joined in one task: the reader decodes frames (bounded by
//! `native_frame_bytes_max` before anything is buffered) and acts on them; the writer drains
//! the connection's outbound queue, where answers and the messages that partition owners push
//! arrive. Produce requests are pipelined (at most `native_produce_in_flight_max` per
//! connection) and answered as their appends complete; everything else is answered in order.
//! The connection ends when the client closes it, when it is silent past
//! `native_session_timeout_ms` (pings count), when it stops reading for that long, or on bad
//! input (after an error frame). Its consumers are detached at once when it ends.

mod connection;
mod outbound;
mod requests;

use crate::shard::Shard;
use glommio::net::TcpListener;
use std::net::SocketAddr;
use std::rc::Rc;

/// Binds the native listener on this shard and serves it until the task is dropped.
pub fn listen(
    shard: Rc<Shard>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, glommio::Task<()>)> {
    let listener = TcpListener::bind(addr).map_err(std::io::Error::from)?;
    let bound = listener.local_addr().map_err(std::io::Error::from)?;
    let task = glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let per_shard = shard
                        .config
                        .native_connections_max
                        .div_ceil(shard.shards() as u32);
                    if crate::metrics::of(&shard).open_native_connections() >= per_shard as u64 {
                        tracing::warn!(peer = ?stream.peer_addr().ok(),
                            limit = shard.config.native_connections_max,
                            "native_connections_max reached: closing new connection");
                        continue;
                    }
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        connection::serve_connection(shard, stream).await
                    })
                    .detach();
                }
                Err(e) => tracing::warn!(error = %e, "accepting a native connection failed"),
            }
        }
    });
    Ok((bound, task))
}
