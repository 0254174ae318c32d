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

mod authorization;
mod connection;
mod consumers;
mod outbound;
mod requests;
mod subscription_admin;
mod topics;

pub use connection::serve_stream;

use crate::shard::Shard;
use std::net::SocketAddr;
use std::rc::Rc;

/// Binds the native listener on this shard and serves it until the task is dropped.
pub fn listen(
    shard: Rc<Shard>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, glommio::Task<()>)> {
    let listening = crate::listener::Listening {
        what: "native",
        connections_max: shard.config.native_connections_max,
        setting: "native_connections_max",
        open: |shard| crate::metrics::of(shard).open_native_connections(),
    };
    let (listener, bound) = crate::listener::bind(addr)?;
    let task = crate::listener::serve(shard, listener, listening, connection::serve_connection);
    Ok((bound, task))
}
