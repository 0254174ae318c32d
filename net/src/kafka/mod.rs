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

pub mod groups;
mod handlers;
mod metadata;
mod produce;
mod versions;
mod wire;

use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, ProduceResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

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
    let (listener, bound) = crate::listener::bind(addr)?;
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
    let listening = crate::listener::Listening {
        what: "Kafka",
        connections_max: shard.config.kafka_connections_max,
        setting: "kafka_connections_max",
        open: |shard| crate::metrics::of(shard).open_connections(),
    };
    let serve = move |shard, stream| serve_connection(shard, endpoint.clone(), stream);
    let task = crate::listener::serve(shard, listener, listening, serve);
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

async fn serve_connection(shard: Rc<Shard>, endpoint: Rc<KafkaEndpoint>, mut stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let request_timeout = Duration::from_millis(shard.config.kafka_request_timeout_ms);
    let _ = stream.set_write_timeout(Some(request_timeout));
    crate::metrics::of(&shard).connection_opened();
    serve_requests(&shard, &endpoint, &mut stream, peer).await;
    crate::metrics::of(&shard).connection_closed();
    if crate::metrics::of(&shard).open_connections()
        + crate::metrics::of(&shard).open_native_connections()
        == 0
    {
        crate::alloc::release_free_memory();
    }
}

/// A Produce whose batches are queued at their partitions, waiting to be answered in turn.
struct WaitingProduce<'a> {
    version: i16,
    correlation_id: i32,
    header_version: i16,
    started: std::time::Instant,
    request_bytes: usize,
    answer: Pin<Box<dyn Future<Output = Option<ProduceResponse>> + 'a>>,
}

async fn serve_requests(
    shard: &Shard,
    endpoint: &KafkaEndpoint,
    stream: &mut TcpStream,
    peer: Option<SocketAddr>,
) {
    let mut waiting = VecDeque::new();
    loop {
        match serve_request(shard, endpoint, stream, &mut waiting).await {
            Ok(()) => {}
            Err(Close::Eof) => return,
            Err(Close::Idle) => {
                tracing::debug!(?peer, "closing idle Kafka connection");
                return;
            }
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

/// Reads one request frame: the size prefix may take up to the idle timeout to come, the rest
/// must follow within the request timeout.
async fn read_frame(shard: &Shard, stream: &mut TcpStream) -> Result<Vec<u8>, Close> {
    let mut size = [0u8; 4];
    let idle = Duration::from_millis(shard.config.kafka_idle_timeout_ms);
    let _ = stream.set_read_timeout(Some(idle));
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Close::Eof),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Close::Idle),
        Err(e) => return Err(Close::Io(e)),
    }
    // From here the whole request must arrive in time: a slow sender cannot hold the connection.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(
        shard.config.kafka_request_timeout_ms,
    )));
    let size = i32::from_be_bytes(size) as i64;
    if size < REQUEST_PREFIX_BYTES as i64 || size > shard.config.kafka_frame_bytes_max as i64 {
        return Err(Close::FrameSize(size));
    }
    let mut frame = vec![0u8; size as usize];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Answers waiting Produce requests, oldest first, until the next request starts to arrive
/// while fewer than `kafka_produce_in_flight_max` wait (or none is left).
async fn answer_ready_produces(
    shard: &Shard,
    stream: &mut TcpStream,
    waiting: &mut VecDeque<WaitingProduce<'_>>,
) -> Result<(), Close> {
    let limit = shard.config.kafka_produce_in_flight_max as usize;
    loop {
        let full = waiting.len() >= limit;
        let Some(oldest) = waiting.front_mut() else {
            return Ok(());
        };
        let response = if full {
            oldest.answer.as_mut().await
        } else {
            let idle = Duration::from_millis(shard.config.kafka_idle_timeout_ms);
            let _ = stream.set_read_timeout(Some(idle));
            let mut probe = [0u8; 1];
            let next_request = async {
                match stream.peek(&mut probe).await.map_err(std::io::Error::from) {
                    // A silent client waits for its answers: keep waiting with it.
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        std::future::pending::<()>().await
                    }
                    // Bytes, end of stream or an error: the read that follows tells which.
                    _ => {}
                }
                None
            };
            let answered = async { Some(oldest.answer.as_mut().await) };
            match futures_lite::future::or(answered, next_request).await {
                Some(response) => response,
                None => return Ok(()),
            }
        };
        let done = waiting.pop_front().expect("the oldest is there");
        answer_produce(shard, stream, done, response).await?;
    }
}

/// Answers every waiting Produce request, in order.
async fn answer_all_produces(
    shard: &Shard,
    stream: &mut TcpStream,
    waiting: &mut VecDeque<WaitingProduce<'_>>,
) -> Result<(), Close> {
    while let Some(mut done) = waiting.pop_front() {
        let response = done.answer.as_mut().await;
        answer_produce(shard, stream, done, response).await?;
    }
    Ok(())
}

async fn answer_produce(
    shard: &Shard,
    stream: &mut TcpStream,
    done: WaitingProduce<'_>,
    response: Option<ProduceResponse>,
) -> Result<(), Close> {
    let written = match response {
        None => 0,
        Some(body) => {
            respond(
                stream,
                done.correlation_id,
                done.header_version,
                ResponseKind::Produce(body),
                done.version,
            )
            .await?
        }
    };
    crate::metrics::of(shard).record_request(
        ApiKey::Produce,
        done.started.elapsed(),
        done.request_bytes,
        written,
    );
    Ok(())
}

async fn serve_request<'a>(
    shard: &'a Shard,
    endpoint: &KafkaEndpoint,
    stream: &mut TcpStream,
    waiting: &mut VecDeque<WaitingProduce<'a>>,
) -> Result<(), Close> {
    answer_ready_produces(shard, stream, waiting).await?;
    let frame = match read_frame(shard, stream).await {
        Ok(frame) => frame,
        Err(close) => {
            // A client that stopped sending may still read what it is owed.
            if matches!(close, Close::Eof | Close::Idle) {
                answer_all_produces(shard, stream, waiting).await?;
            }
            return Err(close);
        }
    };
    let request_bytes = frame.len() + 4;
    let started = std::time::Instant::now();
    let (api, version, correlation_id, header, request) = match decode_request(Bytes::from(frame))?
    {
        Decoded::Request {
            api,
            version,
            correlation_id,
            header,
            body,
        } => (api, version, correlation_id, header, body),
        Decoded::UnsupportedApiVersions { correlation_id } => {
            answer_all_produces(shard, stream, waiting).await?;
            // Clients probe with their newest version: answer UNSUPPORTED_VERSION in a v0 body
            // so they can retry with one we list.
            let body = handlers::api_versions(wire::code::UNSUPPORTED_VERSION);
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
    };
    let response_header_version = match api {
        // ApiVersions responses always use header v0, whatever the request version.
        ApiKey::ApiVersions => 0,
        _ => api.response_header_version(version),
    };
    let request = match *request {
        RequestKind::Produce(produce) => {
            let produce = produce::start_produce(shard, produce, version).await;
            waiting.push_back(WaitingProduce {
                version,
                correlation_id,
                header_version: response_header_version,
                started,
                request_bytes,
                answer: Box::pin(produce.finish()),
            });
            return Ok(());
        }
        other => other,
    };
    answer_all_produces(shard, stream, waiting).await?;
    let reply = handlers::handle(shard, endpoint, version, &header, request)
        .await
        .map_err(|reason| Close::Malformed {
            api,
            version,
            reason,
        })?;
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
    crate::metrics::of(shard).record_request(api, started.elapsed(), request_bytes, written);
    Ok(())
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
                Err(other) => prop_assert!(matches!(other, Close::UnsupportedVersion { api: ApiKey::Produce, .. }), "{other}"),
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
