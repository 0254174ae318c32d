//! The Kafka wire protocol server, one listener per shard on the same port (SO_REUSEPORT).
//!
//! A connection reads one length-prefixed request at a time (bounded by
//! `kafka_frame_bytes_max` before anything is allocated), decodes it with `kafka-protocol`,
//! answers it, and only then reads the next, so responses go out strictly in request order.
//! Produce with acks=0 gets no response at all. Requests for partitions owned by other shards
//! are routed through [`crate::Shard`]. Bad input closes the connection with a log line; the
//! broker keeps serving everyone else.

pub mod groups;
mod handlers;
mod versions;

use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::net::SocketAddr;
use std::rc::Rc;

pub use versions::ADVERTISED;

/// Bytes every request has before its body: api key, version, correlation id.
const REQUEST_PREFIX_BYTES: usize = 8;

/// What a connection needs besides the shard: where clients should connect.
pub struct KafkaEndpoint {
    /// Host advertised in metadata.
    pub host: String,
    /// Port advertised in metadata.
    pub port: i32,
}

/// Binds the Kafka listener on this shard and serves it until the task is dropped.
pub fn listen(
    shard: Rc<Shard>,
    addr: SocketAddr,
    advertised: Option<&str>,
) -> std::io::Result<(SocketAddr, glommio::Task<()>)> {
    let listener = TcpListener::bind(addr).map_err(std::io::Error::from)?;
    let bound = listener.local_addr().map_err(std::io::Error::from)?;
    let endpoint = match advertised.and_then(|a| a.rsplit_once(':')) {
        Some((host, port)) => KafkaEndpoint {
            host: host.to_string(),
            port: port.parse().unwrap_or(bound.port() as i32),
        },
        None => KafkaEndpoint {
            host: bound.ip().to_string(),
            port: bound.port() as i32,
        },
    };
    let endpoint = Rc::new(endpoint);
    let task = glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let (shard, endpoint) = (shard.clone(), endpoint.clone());
                    glommio::spawn_local(
                        async move { serve_connection(shard, endpoint, stream).await },
                    )
                    .detach();
                }
                Err(e) => tracing::warn!(error = %e, "accepting a Kafka connection failed"),
            }
        }
    });
    Ok((bound, task))
}

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("peer closed the connection")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("request of {0} bytes is outside 8..=kafka_frame_bytes_max")]
    FrameSize(i64),
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

async fn serve_connection(shard: Rc<Shard>, endpoint: Rc<KafkaEndpoint>, mut stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    shard.metrics.connection_opened();
    serve_requests(&shard, &endpoint, &mut stream, peer).await;
    shard.metrics.connection_closed();
}

async fn serve_requests(
    shard: &Shard,
    endpoint: &KafkaEndpoint,
    stream: &mut TcpStream,
    peer: Option<SocketAddr>,
) {
    loop {
        match serve_request(shard, endpoint, stream).await {
            Ok(()) => {}
            Err(Close::Eof) => return,
            // A client hanging up mid-response is an ordinary close.
            Err(Close::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(?peer, error = %e, "Kafka client went away");
                return;
            }
            Err(e) => {
                tracing::warn!(?peer, error = %e, "closing Kafka connection");
                return;
            }
        }
    }
}

async fn serve_request(
    shard: &Shard,
    endpoint: &KafkaEndpoint,
    stream: &mut TcpStream,
) -> Result<(), Close> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Close::Eof),
        Err(e) => return Err(Close::Io(e)),
    }
    let size = i32::from_be_bytes(size) as i64;
    if size < REQUEST_PREFIX_BYTES as i64 || size > shard.config.kafka_frame_bytes_max as i64 {
        return Err(Close::FrameSize(size));
    }
    let mut frame = vec![0u8; size as usize];
    stream.read_exact(&mut frame).await?;
    let started = std::time::Instant::now();
    let mut frame = Bytes::from(frame);
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(raw_key).map_err(|_| Close::UnknownApi(raw_key))?;
    if !versions::advertised(api).is_some_and(|range| range.contains(&version)) {
        if api == ApiKey::ApiVersions {
            // Clients probe with their newest version: answer UNSUPPORTED_VERSION in a v0 body
            // so they can retry with one we list.
            let body = handlers::api_versions(versions::UNSUPPORTED_VERSION);
            return respond(
                stream,
                correlation_id,
                0,
                ResponseKind::ApiVersions(body),
                0,
            )
            .await
            .map(drop);
        }
        return Err(Close::UnsupportedVersion { api, version });
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
    let response_header_version = match api {
        // ApiVersions responses always use header v0, whatever the request version.
        ApiKey::ApiVersions => 0,
        _ => api.response_header_version(version),
    };
    let reply = handlers::handle(shard, endpoint, api, version, &header, &mut frame)
        .await
        .map_err(|e| malformed(format!("{e:#}")))?;
    let written = match reply {
        None => 0,
        Some(body) => {
            respond(
                stream,
                correlation_id,
                response_header_version,
                body,
                version,
            )
            .await?
        }
    };
    shard
        .metrics
        .record_request(api, started.elapsed(), size as usize + 4, written);
    Ok(())
}

/// Writes one response: size, header (with the request's correlation id), body; returns the
/// bytes written.
async fn respond(
    stream: &mut TcpStream,
    correlation_id: i32,
    header_version: i16,
    body: ResponseKind,
    version: i16,
) -> Result<usize, Close> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut out, header_version)
        .map_err(std::io::Error::other)?;
    body.encode(&mut out, version)
        .map_err(std::io::Error::other)?;
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&out).await?;
    Ok(out.len())
}
