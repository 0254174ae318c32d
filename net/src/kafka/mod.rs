//! The Kafka wire protocol server, one listener per shard on the same port (SO_REUSEPORT).
//!
//! A connection reads one length-prefixed request at a time (bounded by
//! `kafka_frame_bytes_max` before anything is allocated) and decodes it with `kafka-protocol`.
//! A Produce is started (its batches queued at their partitions, in request order) and then
//! waits for its appends while the connection reads on, up to `kafka_produce_in_flight_max`
//! of them, so a client's pipelined requests share fdatasyncs instead of paying one each; any
//! other request is handled after the Produce requests before it are answered. Responses go
//! out strictly in request order. Produce with acks=0 gets no response at all. Requests for partitions owned by other shards
//! are routed through [`crate::Shard`]. Bad input closes the connection with a log line; the
//! broker keeps serving everyone else.

mod acls;
mod admin_authorization;
mod cluster_admin;
mod configs;
mod connection;
mod delete_records;
mod describe_configs;
mod elections;
mod fetch_frame;
pub mod groups;
mod handlers;
mod metadata;
mod partitions;
mod produce;
mod producers;
mod reassignments;
mod sasl;
pub mod transactions;
mod users;
mod versions;
mod wire;

use crate::listener::ListenerSpec;
use crate::shard::Shard;
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use oxbow_core::config::SecurityProtocol;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

pub use users::mechanism_number;
pub use versions::ADVERTISED;

/// Bytes every request has before its body: api key, version, correlation id.
pub(crate) const REQUEST_PREFIX_BYTES: usize = 8;

/// Where clients of a listener should connect, and the listener's name (the other brokers'
/// addresses given to them are those of their listeners of that name).
#[derive(Debug, Clone)]
pub struct KafkaEndpoint {
    /// Host advertised in metadata.
    pub host: String,
    /// Port advertised in metadata.
    pub port: i32,
    /// The listener's name.
    pub listener: String,
}

/// A listener as its connections see it.
pub(crate) struct KafkaListener {
    endpoint: KafkaEndpoint,
    security: SecurityProtocol,
    tls: Option<Arc<crate::tls::ReloadableTls>>,
    sasl_mechanisms: Vec<String>,
}

/// Binds a Kafka listener on this shard and serves it until the task is dropped.
pub fn listen(
    shard: Rc<Shard>,
    addr: SocketAddr,
    spec: &ListenerSpec,
) -> std::io::Result<(SocketAddr, glommio::Task<()>)> {
    let (tcp, bound) = crate::listener::bind(addr)?;
    let advertised = spec.config.advertised_address.as_deref();
    let (host, port) = match advertised.and_then(|a| a.rsplit_once(':')) {
        Some((host, port)) => (
            host.to_string(),
            port.parse().unwrap_or(bound.port() as i32),
        ),
        None => (bound.ip().to_string(), bound.port() as i32),
    };
    let listener = Rc::new(KafkaListener {
        endpoint: KafkaEndpoint {
            host,
            port,
            listener: spec.config.name().to_string(),
        },
        security: spec.config.security,
        tls: spec.tls.clone(),
        sasl_mechanisms: spec.config.sasl_mechanisms.clone(),
    });
    let listening = crate::listener::Listening {
        what: "Kafka",
        connections_max: shard.config.kafka_connections_max,
        setting: "kafka_connections_max",
        authenticates: spec.config.security.authenticates(),
        open: |shard| crate::metrics::of(shard).open_connections(),
    };
    let serve = move |shard, stream| connection::serve_connection(shard, listener.clone(), stream);
    let task = crate::listener::serve(shard, tcp, listening, serve);
    Ok((bound, task))
}

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Close {
    /// The client closed the connection between requests.
    #[error("peer closed the connection")]
    Eof,
    /// No request arrived within `kafka_idle_timeout_ms`.
    #[error("idle past kafka_idle_timeout_ms")]
    Idle,
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The size prefix is below a request header or above `kafka_frame_bytes_max`.
    #[error("request of {0} bytes is outside 8..=kafka_frame_bytes_max")]
    FrameSize(i64),
    /// An API key Kafka does not define.
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    /// An API or version Oxbow does not serve.
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// A request other than ApiVersions and SASL's before the client authenticated.
    #[error("{0:?} before authenticating")]
    Unauthenticated(ApiKey),
    /// The client did not authenticate within `authentication.timeout_ms`.
    #[error("not authenticated within authentication.timeout_ms")]
    AuthenticationTimeout,
    /// The client failed to authenticate (the reason was answered, and logged).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The bytes do not decode as that request.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
}

/// A request read off the wire.
pub enum Decoded {
    /// A request Oxbow serves, decoded.
    Request {
        /// Its API.
        api: ApiKey,
        /// Its API version.
        version: i16,
        /// Echoed in the response.
        correlation_id: i32,
        /// The request header.
        header: RequestHeader,
        /// The request body (boxed: request bodies are large and vary widely in size).
        body: Box<RequestKind>,
    },
    /// ApiVersions at a version Oxbow does not list: answered with UNSUPPORTED_VERSION.
    UnsupportedApiVersions {
        /// Echoed in the response.
        correlation_id: i32,
    },
}

/// Decodes one request frame (the bytes after the size prefix, at least 8). Pure: used by the
/// connection loop and property-tested on arbitrary bytes. Anything not served, not advertised
/// or not decodable is a reason to close the connection.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, Close> {
    if frame.len() < REQUEST_PREFIX_BYTES {
        return Err(Close::FrameSize(frame.len() as i64));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(raw_key).map_err(|_| Close::UnknownApi(raw_key))?;
    if !versions::advertised(api).is_some_and(|range| range.contains(&version)) {
        return match api {
            ApiKey::ApiVersions => Ok(Decoded::UnsupportedApiVersions { correlation_id }),
            _ => Err(Close::UnsupportedVersion { api, version }),
        };
    }
    if !versions::decodable(api, version) {
        // Advertised for clients' feature detection only (Produce v0-2, as Kafka 4 does).
        return Err(Close::UnsupportedVersion { api, version });
    }
    let malformed = |reason: String| Close::Malformed {
        api,
        version,
        reason,
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| malformed(format!("header: {e:#}")))?;
    let body =
        RequestKind::decode(api, &mut frame, version).map_err(|e| malformed(format!("{e:#}")))?;
    Ok(Decoded::Request {
        api,
        version,
        correlation_id,
        header,
        body: Box::new(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(4096)
    }

    /// A frame whose API and version are served, so decoding goes past the header into the body.
    fn served_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            0..ADVERTISED.len(),
            any::<i16>(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..400),
        )
            .prop_map(|(which, pick, correlation, tail)| {
                let (api, min, max) = ADVERTISED[which];
                let version = min + (pick.unsigned_abs() % (max - min + 1) as u16) as i16;
                let mut frame = Vec::with_capacity(8 + tail.len());
                frame.extend_from_slice(&(api as i16).to_be_bytes());
                frame.extend_from_slice(&version.to_be_bytes());
                frame.extend_from_slice(&correlation.to_be_bytes());
                frame.extend_from_slice(&tail);
                frame
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_decode_or_close_without_panicking(frame in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_request(Bytes::from(frame));
        }

        #[test]
        fn served_apis_with_arbitrary_bodies_decode_or_close(frame in served_frame()) {
            match decode_request(Bytes::from(frame)) {
                Ok(Decoded::Request { .. }) | Err(Close::Malformed { .. }) => {}
                Ok(Decoded::UnsupportedApiVersions { .. }) => prop_assert!(false, "version was in range"),
                Err(other) => prop_assert!(matches!(other, Close::UnsupportedVersion { api: ApiKey::Produce | ApiKey::SaslHandshake, .. }), "{other}"),
            }
        }

        #[test]
        fn absurd_array_lengths_are_refused_not_allocated(count in 1_000_000i32..=i32::MAX, which in 0..ADVERTISED.len()) {
            let (api, _, max) = ADVERTISED[which];
            let mut frame = Vec::new();
            frame.extend_from_slice(&(api as i16).to_be_bytes());
            frame.extend_from_slice(&max.to_be_bytes());
            frame.extend_from_slice(&1i32.to_be_bytes());
            frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
            frame.extend_from_slice(&count.to_be_bytes());
            frame.extend_from_slice(&count.to_be_bytes());
            // Decoding must end in an answer or a close, without the absurd allocation aborting us.
            let decoded = decode_request(Bytes::from(frame));
            let handled = matches!(decoded, Ok(Decoded::Request { .. }) | Err(Close::Malformed { .. }));
            prop_assert!(handled, "unexpected outcome for {:?}", api);
        }
    }
}
