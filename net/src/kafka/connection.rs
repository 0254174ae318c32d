//! One Kafka client connection, over any byte stream: requests read one at a time through a
//! buffer, deadlines kept by timers (`kafka_idle_timeout_ms` for a request to start,
//! `kafka_request_timeout_ms` for it to arrive whole and for its response to be written),
//! Produce requests pipelined and every response written in request order.

use super::fetch_frame::encode_fetch;
use super::sasl::{Sasl, Step};
use super::wire::code;
use super::REQUEST_PREFIX_BYTES;
use super::{decode_request, handlers, produce, Close, Decoded, KafkaListener};
use crate::authorize::Gate;
use crate::session::{within, write_within, BufferedReader, Session};
use crate::shard::Shard;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, ProduceResponse, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::Encodable;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{Error, ErrorKind};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Serves an accepted TCP connection until it ends: on a TLS listener, the handshake first,
/// within `authentication.timeout_ms`.
pub(super) async fn serve_connection(
    shard: Rc<Shard>,
    listener: Rc<KafkaListener>,
    stream: TcpStream,
) {
    let session = Session::anonymous(stream.peer_addr().ok());
    let _ = stream.set_nodelay(true);
    crate::metrics::of(&shard).connection_opened();
    match &listener.tls {
        None => serve_stream(&shard, &listener, session, stream).await,
        Some(tls) => {
            let mut session = session;
            if let Some(tls) = crate::tls::accept(&shard, tls, stream, &mut session).await {
                serve_stream(&shard, &listener, session, tls).await
            }
        }
    }
    crate::metrics::of(&shard).connection_closed();
    if crate::metrics::of(&shard).open_connections()
        + crate::metrics::of(&shard).open_native_connections()
        == 0
    {
        crate::alloc::release_free_memory();
    }
}

/// Serves Kafka requests on `stream` for `session` until the client leaves or breaks a rule.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    listener: &KafkaListener,
    session: Session,
    stream: S,
) {
    let authenticate_by = (listener.security.uses_sasl())
        .then(|| Instant::now() + Duration::from_millis(shard.config.authentication.timeout_ms));
    let peer = session.peer;
    let mut connection = Connection {
        shard,
        listener,
        session,
        sasl: Sasl::new(listener.security.uses_sasl()),
        authenticate_by,
        stream: BufferedReader::new(stream),
    };
    let mut waiting = VecDeque::new();
    loop {
        match connection.serve_request(&mut waiting).await {
            Ok(()) => {}
            Err(Close::Eof) => return,
            Err(Close::Idle) => {
                tracing::debug!(?peer, "closing idle Kafka connection");
                return;
            }
            // Already logged, with the reason.
            Err(Close::AuthenticationFailed) => return,
            // A client hanging up mid-response is an ordinary close.
            Err(Close::Io(e))
                if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
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

/// A Produce whose batches are queued at their partitions, waiting to be answered in turn.
struct WaitingProduce<'a> {
    version: i16,
    correlation_id: i32,
    header_version: i16,
    started: Instant,
    request_bytes: usize,
    answer: Pin<Box<dyn Future<Output = Option<ProduceResponse>> + 'a>>,
}

struct Connection<'a, S> {
    shard: &'a Shard,
    listener: &'a KafkaListener,
    session: Session,
    sasl: Sasl,
    /// Until the client has authenticated on a SASL listener: when it must have.
    authenticate_by: Option<Instant>,
    stream: BufferedReader<S>,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.shard.config.kafka_idle_timeout_ms)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.shard.config.kafka_request_timeout_ms)
    }

    async fn serve_request(
        &mut self,
        waiting: &mut VecDeque<WaitingProduce<'a>>,
    ) -> Result<(), Close> {
        self.answer_ready_produces(waiting).await?;
        let frame = match self.read_frame().await {
            Ok(frame) => frame,
            Err(close) => {
                // A client that stopped sending may still read what it is owed.
                if matches!(close, Close::Eof | Close::Idle) {
                    self.answer_all_produces(waiting).await?;
                }
                return Err(close);
            }
        };
        let request_bytes = frame.len() + 4;
        let started = Instant::now();
        let (api, version, correlation_id, header, request) = match decode_request(frame)? {
            Decoded::Request {
                api,
                version,
                correlation_id,
                header,
                body,
            } => (api, version, correlation_id, header, body),
            Decoded::UnsupportedApiVersions { correlation_id } => {
                self.answer_all_produces(waiting).await?;
                // Clients probe with their newest version: answer UNSUPPORTED_VERSION in a v0
                // body so they can retry with one we list.
                let body = handlers::api_versions(code::UNSUPPORTED_VERSION);
                let body = ResponseKind::ApiVersions(body);
                return self.respond(correlation_id, 0, body, 0).await.map(drop);
            }
        };
        let response_header_version = match api {
            // ApiVersions responses always use header v0, whatever the request version.
            ApiKey::ApiVersions => 0,
            _ => api.response_header_version(version),
        };
        let request = match *request {
            RequestKind::SaslHandshake(request) => {
                self.answer_all_produces(waiting).await?;
                let offered = &self.listener.sasl_mechanisms;
                let (response, go_on) = self.sasl.handshake(offered, &request);
                if !go_on {
                    crate::failed_logins::record(self.shard, self.session.peer);
                    tracing::warn!(peer = ?self.session.peer,
                        listener = %self.listener.endpoint.listener,
                        mechanism = %request.mechanism.as_str(), "SASL mechanism not offered");
                }
                let body = ResponseKind::SaslHandshake(response);
                self.respond(correlation_id, response_header_version, body, version)
                    .await?;
                return match go_on {
                    true => Ok(()),
                    false => Err(Close::AuthenticationFailed),
                };
            }
            RequestKind::SaslAuthenticate(request) => {
                self.answer_all_produces(waiting).await?;
                if self.sasl.checks_password() && !crate::password_checks::turn(self.shard).await {
                    tracing::warn!(peer = ?self.session.peer,
                        listener = %self.listener.endpoint.listener, "PLAIN login throttled");
                    let body = ResponseKind::SaslAuthenticate(super::sasl::busy());
                    self.respond(correlation_id, response_header_version, body, version)
                        .await?;
                    return Err(Close::AuthenticationFailed);
                }
                let metadata = self.shard.metadata();
                let (response, step) = self.sasl.authenticate(&metadata, &request);
                let body = ResponseKind::SaslAuthenticate(response);
                let close = match step {
                    Step::Continue => false,
                    Step::Authenticated(principal) => {
                        tracing::debug!(peer = ?self.session.peer, %principal, "authenticated");
                        self.session.principal = principal;
                        self.authenticate_by = None;
                        false
                    }
                    Step::Failed(reason) => {
                        crate::failed_logins::record(self.shard, self.session.peer);
                        tracing::warn!(peer = ?self.session.peer,
                            listener = %self.listener.endpoint.listener, %reason,
                            "SASL authentication failed");
                        let delay = self.shard.config.authentication.failure_delay_ms;
                        glommio::timer::sleep(Duration::from_millis(delay)).await;
                        true
                    }
                };
                self.respond(correlation_id, response_header_version, body, version)
                    .await?;
                return match close {
                    false => Ok(()),
                    true => Err(Close::AuthenticationFailed),
                };
            }
            RequestKind::ApiVersions(request) => RequestKind::ApiVersions(request),
            _ if !self.sasl.is_open() => return Err(Close::Unauthenticated(api)),
            RequestKind::Produce(request) => {
                let gate = Gate::new(self.shard, &self.session);
                let produce = produce::start_produce(self.shard, &gate, request, version).await;
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
        self.answer_all_produces(waiting).await?;
        let reply = handlers::handle(
            self.shard,
            &self.listener.endpoint,
            &self.session,
            version,
            &header,
            request,
        )
        .await
        .map_err(|reason| Close::Malformed {
            api,
            version,
            reason,
        })?;
        let written = match reply {
            None => 0,
            Some(handlers::Reply::Encoded(body)) => {
                self.respond(correlation_id, response_header_version, body, version)
                    .await?
            }
            Some(handlers::Reply::Fetch(body, records)) => {
                let frame = encode_fetch(
                    correlation_id,
                    response_header_version,
                    body,
                    records,
                    version,
                )?;
                let limit = self.request_timeout();
                let stream = self.stream.get_mut();
                let write = async {
                    for chunk in &frame.chunks {
                        stream.write_all(chunk).await?;
                    }
                    Ok(())
                };
                within(limit, write).await?;
                frame.len
            }
        };
        crate::metrics::of(self.shard).record_request(
            api,
            started.elapsed(),
            request_bytes,
            written,
        );
        Ok(())
    }

    /// Reads one request frame: its size prefix may take up to the idle timeout to start
    /// coming, the whole request must follow within the request timeout.
    async fn read_frame(&mut self) -> Result<Bytes, Close> {
        let mut idle = Instant::now() + self.idle_timeout();
        let mut most = self.shard.config.kafka_frame_bytes_max as i64;
        if let Some(by) = self.authenticate_by {
            // A stranger gets little room and little time, however fast it sends.
            if Instant::now() >= by {
                return Err(Close::AuthenticationTimeout);
            }
            idle = idle.min(by);
            let unauthenticated = self
                .shard
                .config
                .authentication
                .unauthenticated_frame_bytes_max;
            most = most.min(unauthenticated as i64);
        }
        match self.stream.fill_to(4, idle).await {
            Ok(true) => {}
            Ok(false) if self.stream.buffered().is_empty() => return Err(Close::Eof),
            Err(e) if e.kind() == ErrorKind::TimedOut && self.authenticate_by.is_some() => {
                return Err(Close::AuthenticationTimeout)
            }
            Err(e) if e.kind() == ErrorKind::TimedOut && self.stream.buffered().is_empty() => {
                return Err(Close::Idle)
            }
            Ok(false) => return Err(Close::Io(ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err(Close::Io(e)),
        }
        let prefix = self.stream.buffered();
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as i64;
        if size < REQUEST_PREFIX_BYTES as i64 || size > most {
            return Err(Close::FrameSize(size));
        }
        // From here the whole request must arrive in time: a slow sender cannot hold the
        // connection.
        let whole = 4 + size as usize;
        let deadline = Instant::now() + self.request_timeout();
        if !self.stream.fill_to(whole, deadline).await? {
            return Err(Close::Io(ErrorKind::UnexpectedEof.into()));
        }
        let mut frame = self.stream.take(whole);
        frame.advance(4);
        Ok(frame.freeze())
    }

    /// Answers waiting Produce requests, oldest first, until the next request starts to
    /// arrive while fewer than `kafka_produce_in_flight_max` wait (or none is left).
    async fn answer_ready_produces(
        &mut self,
        waiting: &mut VecDeque<WaitingProduce<'a>>,
    ) -> Result<(), Close> {
        let limit = self.shard.config.kafka_produce_in_flight_max as usize;
        let idle = self.idle_timeout();
        loop {
            let full = waiting.len() >= limit;
            let Some(oldest) = waiting.front_mut() else {
                return Ok(());
            };
            let response = if full {
                oldest.answer.as_mut().await
            } else {
                let stream = &mut self.stream;
                let next_request = async {
                    if stream.buffered().is_empty() {
                        // A silent client waits for its answers: keep waiting with it. Bytes,
                        // the end of the stream or an error: the read that follows tells which.
                        let read = within(idle, stream.read_more(4096)).await;
                        if matches!(&read, Err(e) if e.kind() == ErrorKind::TimedOut) {
                            std::future::pending::<()>().await;
                        }
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
            self.answer_produce(done, response).await?;
        }
    }

    /// Answers every waiting Produce request, in order.
    async fn answer_all_produces(
        &mut self,
        waiting: &mut VecDeque<WaitingProduce<'a>>,
    ) -> Result<(), Close> {
        while let Some(mut done) = waiting.pop_front() {
            let response = done.answer.as_mut().await;
            self.answer_produce(done, response).await?;
        }
        Ok(())
    }

    async fn answer_produce(
        &mut self,
        done: WaitingProduce<'a>,
        response: Option<ProduceResponse>,
    ) -> Result<(), Close> {
        let written = match response {
            None => 0,
            Some(body) => {
                let body = ResponseKind::Produce(body);
                self.respond(done.correlation_id, done.header_version, body, done.version)
                    .await?
            }
        };
        let elapsed = done.started.elapsed();
        crate::metrics::of(self.shard).record_request(
            ApiKey::Produce,
            elapsed,
            done.request_bytes,
            written,
        );
        Ok(())
    }

    /// Writes one response (size, header with the request's correlation id, body) within the
    /// request timeout; returns the bytes written.
    async fn respond(
        &mut self,
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
            .map_err(Error::other)?;
        body.encode(&mut out, version).map_err(Error::other)?;
        let length = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&length.to_be_bytes());
        let limit = self.request_timeout();
        write_within(self.stream.get_mut(), &out, limit).await?;
        Ok(out.len())
    }
}
