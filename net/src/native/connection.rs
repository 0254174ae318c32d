//! One native-protocol connection: its reader and writer, how it ends, and what it attached.

use super::authentication::Authentication;
use super::outbound::{encode_outbound, Outbound, OutboundBudget};
use super::NativeListener;
use crate::session::{within, Session};
use crate::shard::{PartitionError, Shard};
use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use oxbow_core::native::{decode_frame, ClientFrame, ErrorCode, ServerFrame, PROTOCOL_VERSION};
use oxbow_dispatch::subscriptions::Refusal;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes the writer gathers before one socket write.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// A consumer attached through this connection.
pub(super) struct Attached {
    pub(super) id: oxbow_dispatch::ConsumerId,
    pub(super) topic: Arc<str>,
    pub(super) subscription: String,
    /// The partitions it is attached on (those this broker led when it subscribed).
    pub(super) partitions: Vec<u32>,
}

/// One client connection: what it attached, where its answers go.
pub(super) struct Connection {
    pub(super) shard: Rc<Shard>,
    /// The listener it came through.
    pub(super) listener: Rc<NativeListener>,
    /// Who is connected: authentication fills in the principal.
    pub(super) session: RefCell<Session>,
    pub(super) outbound: flume::Sender<Outbound>,
    pub(super) budget: Arc<OutboundBudget>,
    pub(super) consumers: RefCell<HashMap<u64, Attached>>,
    pub(super) produces: Rc<glommio::sync::Semaphore>,
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub(super) enum Close {
    #[error("peer closed the connection")]
    Eof,
    #[error("silent past native_session_timeout_ms")]
    Silent,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{1}")]
    Refused(ErrorCode, String),
    #[error("not reading: native_outbound_bytes_max of messages queued for it")]
    Overflow,
}

/// Serves an accepted TCP connection until it ends: on a TLS listener, the handshake first,
/// within `authentication.timeout_ms`.
pub(super) async fn serve_connection(
    shard: Rc<Shard>,
    listener: Rc<NativeListener>,
    stream: TcpStream,
) {
    let session = Session::anonymous(stream.peer_addr().ok());
    let _ = stream.set_nodelay(true);
    crate::metrics::of(&shard).native_connection_opened();
    match &listener.tls {
        None => serve_stream(shard.clone(), session, listener.clone(), stream).await,
        Some(tls) => {
            let mut session = session;
            if let Some(tls) = crate::tls::accept(&shard, tls, stream, &mut session).await {
                serve_stream(shard.clone(), session, listener.clone(), tls).await
            }
        }
    }
    crate::metrics::of(&shard).native_connection_closed();
    if crate::metrics::of(&shard).open_connections()
        + crate::metrics::of(&shard).open_native_connections()
        == 0
    {
        crate::alloc::release_free_memory();
    }
}

/// Serves the native protocol on `stream` for `session` until the client leaves, falls
/// silent for `native_session_timeout_ms`, stops reading, or breaks a rule. On a listener
/// with SASL, the client must authenticate with one of its mechanisms before anything else.
async fn serve_stream<S>(
    shard: Rc<Shard>,
    session: Session,
    listener: Rc<NativeListener>,
    stream: S,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let peer = session.peer;
    let session_timeout = Duration::from_millis(shard.config.native_session_timeout_ms);
    let (reader, writer) = futures_lite::io::split(stream);
    let (outbound, queued) = flume::unbounded();
    let (overflow, overflowed) = flume::bounded(1);
    let budget = Arc::new(OutboundBudget::new(
        shard.config.native_outbound_bytes_max,
        shard.config.native_write_stall_ms,
        overflow,
    ));
    let sasl = listener.sasl_mechanisms.clone();
    let connection = Rc::new(Connection {
        shard: shard.clone(),
        listener,
        session: RefCell::new(session),
        outbound,
        budget: budget.clone(),
        consumers: RefCell::default(),
        produces: Rc::new(glommio::sync::Semaphore::new(
            shard.config.native_produce_in_flight_max as u64,
        )),
    });
    let reading = async {
        let end = read_frames(connection.clone(), reader, session_timeout, sasl).await;
        if matches!(end, Close::Refused(..)) {
            // The writer sends the queued error frame and then ends the connection.
            std::future::pending::<()>().await;
        }
        end
    };
    let writing = write_frames(writer, queued, budget, session_timeout);
    let overflowing = async {
        let _ = overflowed.recv_async().await;
        Close::Overflow
    };
    let end =
        futures_lite::future::or(futures_lite::future::or(reading, writing), overflowing).await;
    match &end {
        Close::Eof => tracing::debug!(?peer, "native client closed the connection"),
        Close::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            tracing::debug!(?peer, error = %e, "native client went away")
        }
        other => tracing::info!(?peer, reason = %other, "closing native connection"),
    }
    connection.detach_all().await;
}

/// Reads and acts on frames; a client silent past `session_timeout` (pings count) is gone.
async fn read_frames<R: AsyncRead + Unpin>(
    connection: Rc<Connection>,
    mut reader: R,
    session_timeout: Duration,
    sasl: Option<Vec<String>>,
) -> Close {
    let timeout = Duration::from_millis(connection.shard.config.authentication.timeout_ms);
    let mut authentication = sasl.map(|offered| Authentication::new(offered, timeout));
    let unauthenticated_max = connection
        .shard
        .config
        .authentication
        .unauthenticated_frame_bytes_max;
    let frame_max = connection.shard.config.native_frame_bytes_max;
    // Small until traffic needs more: an idle connection costs a few KiB, not a chunk.
    let mut buffer = BytesMut::new();
    let mut chunk = vec![0u8; 4096];
    let mut connected = false;
    loop {
        // A stranger gets little room and little time.
        let (frame_limit, read_limit) = match &authentication {
            None => (frame_max, session_timeout),
            Some(pending) => (
                frame_max.min(unauthenticated_max),
                pending.remaining().min(session_timeout),
            ),
        };
        let frame = match decode_frame::<ClientFrame>(&mut buffer, frame_limit) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                match within(read_limit, reader.read(&mut chunk)).await {
                    Ok(0) => return Close::Eof,
                    Ok(n) => {
                        buffer.extend_from_slice(&chunk[..n]);
                        if n == chunk.len() && chunk.len() < READ_CHUNK_BYTES {
                            chunk.resize(chunk.len() * 2, 0);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Close::Silent,
                    Err(e) => return Close::Io(e),
                }
                continue;
            }
            Err(e) => {
                let code = match e {
                    oxbow_core::native::FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                    _ => ErrorCode::BadRequest,
                };
                return connection.refuse_connection(code, e.to_string());
            }
        };
        if !connected {
            match frame.control {
                ClientFrame::Connect {
                    version,
                    client_name,
                } if version == PROTOCOL_VERSION => {
                    tracing::debug!(client = %client_name, peer = ?connection.session.borrow().peer,
                        "native client connected");
                    connected = true;
                    connection.send(ServerFrame::Connected {
                        version: PROTOCOL_VERSION,
                        session_timeout_ms: connection.shard.config.native_session_timeout_ms,
                        frame_bytes_max: frame_max,
                        broker_id: connection.shard.config.node_id,
                    });
                    continue;
                }
                ClientFrame::Connect { version, .. } => {
                    return connection.refuse_connection(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {version} is not supported; this broker speaks \
                             {PROTOCOL_VERSION}"
                        ),
                    );
                }
                _ => {
                    return connection.refuse_connection(
                        ErrorCode::BadRequest,
                        "the first frame must be Connect".into(),
                    );
                }
            }
        }
        if let Some(pending) = authentication.as_mut() {
            match pending.step(&connection, frame.control).await {
                Ok(true) => authentication = None,
                Ok(false) => {}
                Err((code, message)) => return connection.refuse_connection(code, message),
            }
            continue;
        }
        if let Err(Close::Refused(code, message)) = connection
            .clone()
            .handle(frame.control, frame.payload)
            .await
        {
            return connection.refuse_connection(code, message);
        }
    }
}

/// Writes what is queued for the client, in order; a client that does not take a write within
/// `session_timeout` is gone.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: W,
    queued: flume::Receiver<Outbound>,
    budget: Arc<OutboundBudget>,
    session_timeout: Duration,
) -> Close {
    let mut buffer = Vec::new();
    while let Ok(first) = queued.recv_async().await {
        let mut last_was_fatal = encode_outbound(first, &mut buffer, &budget);
        while buffer.len() < WRITE_BATCH_BYTES && !last_was_fatal {
            let Ok(next) = queued.try_recv() else { break };
            last_was_fatal = encode_outbound(next, &mut buffer, &budget);
        }
        if let Err(e) = within(session_timeout, writer.write_all(&buffer)).await {
            return Close::Io(e);
        }
        budget.wrote();
        buffer.clear();
        if buffer.capacity() > WRITE_BATCH_BYTES * 2 {
            // One large delivery must not pin its buffer for the connection's life.
            buffer = Vec::new();
        }
        if last_was_fatal {
            let _ = writer.flush().await;
            return Close::Refused(ErrorCode::BadRequest, "after an error frame".into());
        }
    }
    Close::Eof
}

fn refusal_frame(request_id: u64, (code, message): Refusal) -> ServerFrame {
    ServerFrame::Error {
        request_id,
        code,
        message,
    }
}

pub(super) fn partition_refusal(e: PartitionError) -> Refusal {
    match e {
        PartitionError::UnknownTopicOrPartition => (ErrorCode::UnknownTopic, e.to_string()),
        PartitionError::NotLeader { .. } => (ErrorCode::NotLeader, e.to_string()),
        PartitionError::NotEnoughReplicas => (ErrorCode::LimitReached, e.to_string()),
        PartitionError::BatchTooLarge => (ErrorCode::TooLarge, e.to_string()),
        PartitionError::InternalTopic => (ErrorCode::InvalidName, e.to_string()),
        PartitionError::TopicAuthorizationFailed => (ErrorCode::NotAuthorized, e.to_string()),
        PartitionError::OutOfOrderSequence => (ErrorCode::OutOfOrderSequence, e.to_string()),
        PartitionError::ProducerFenced => (ErrorCode::ProducerFenced, e.to_string()),
        other => (ErrorCode::Storage, other.to_string()),
    }
}

impl Connection {
    pub(super) fn send(&self, frame: ServerFrame) {
        let _ = self.outbound.send(Outbound::Frame(frame));
    }

    pub(super) fn answer(&self, request_id: u64, result: Result<ServerFrame, Refusal>) {
        self.send(result.unwrap_or_else(|refusal| refusal_frame(request_id, refusal)));
    }

    /// Sends a connection-level error; the writer closes the connection after it.
    pub(super) fn refuse_connection(&self, code: ErrorCode, message: String) -> Close {
        tracing::warn!(?code, %message, "refusing native connection");
        self.send(ServerFrame::Error {
            request_id: 0,
            code,
            message: message.clone(),
        });
        Close::Refused(code, message)
    }
}
