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

mod authentication;
mod authorization;
mod connection;
mod consumers;
mod outbound;
mod requests;
mod subscription_admin;
mod topics;

use crate::listener::ListenerSpec;
use crate::shard::Shard;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// A native listener as its connections see it.
pub(crate) struct NativeListener {
    /// Its name: clients are told other brokers' addresses on the listener of this name.
    name: String,
    tls: Option<Arc<crate::tls::ReloadableTls>>,
    /// The mechanisms offered, when clients must authenticate.
    sasl_mechanisms: Option<Vec<String>>,
}

/// Binds a native listener on this shard and serves it until the task is dropped.
pub fn listen(
    shard: Rc<Shard>,
    addr: SocketAddr,
    spec: &ListenerSpec,
) -> std::io::Result<(SocketAddr, glommio::Task<()>)> {
    let native = Rc::new(NativeListener {
        name: spec.config.name().to_string(),
        tls: spec.tls.clone(),
        sasl_mechanisms: (spec.config.security.uses_sasl())
            .then(|| spec.config.sasl_mechanisms.clone()),
    });
    let listening = crate::listener::Listening {
        what: "native",
        connections_max: shard.config.native_connections_max,
        setting: "native_connections_max",
        authenticates: spec.config.security.authenticates(),
        open: |shard| crate::metrics::of(shard).open_native_connections(),
    };
    let (listener, bound) = crate::listener::bind(addr)?;
    let serve = move |shard, stream| connection::serve_connection(shard, native.clone(), stream);
    let task = crate::listener::serve(shard, listener, listening, serve);
    Ok((bound, task))
}
