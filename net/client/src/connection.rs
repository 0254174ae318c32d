//! One connection to a broker: a reader task that routes answers and pushed messages, a writer
//! task that sends what every handle queues, and a pinger that keeps the session alive. The
//! tasks start once the connection is ready: TCP, TLS when configured, the version handshake
//! and SASL when configured (`handshake.rs`).

use crate::auth::SaslCredentials;
use crate::error::ClientError;
use crate::handshake;
use crate::message::Message;
use crate::tls::TlsConnector;
use bytes::{Bytes, BytesMut};
use oxbow_core::native::{
    decode_frame, encode_frame, ClientFrame, MessageMeta, ServerFrame, LEADER_MOVED,
};
use oxbow_core::record::decode_headers;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Largest frame the client accepts from a broker (a delivery of large messages).
pub const FRAME_BYTES_MAX: u32 = 512 << 20;
/// Bytes the writer gathers before one socket write.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// What the reader hands a consumer.
pub(crate) enum ConsumerEvent {
    /// Messages from one partition.
    Messages(Vec<Message>),
    /// Delivery on a partition stopped in front of an undecodable batch (not the end).
    Blocked(ClientError),
    /// The broker detached the consumer: the end.
    Closed(ClientError),
    /// The connection to one of the consumer's leaders ended: the consumer attaches again,
    /// if it reconnects (`ConsumerBuilder::reconnect_timeout`), or ends.
    Lost {
        /// The attachment the connection carried.
        consumer_id: u64,
        error: ClientError,
    },
}

type Waiter = oneshot::Sender<Result<ServerFrame, ClientError>>;
/// A consumer's topic and where its events go.
type ConsumerRoute = (Arc<str>, mpsc::UnboundedSender<ConsumerEvent>);

/// State shared by every handle of one connection. Handles send with it from any thread.
pub(crate) struct Shared {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    consumers: Mutex<HashMap<u64, ConsumerRoute>>,
    /// Shared by every connection of a client, so consumer ids are unique across them.
    ids: Arc<AtomicU64>,
    closed: AtomicBool,
    pub(crate) request_timeout: Duration,
    /// The broker at the other end.
    pub(crate) broker_id: i32,
}

impl Shared {
    /// A fresh id for requests and consumers.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a frame; fails once the connection is closed.
    pub(crate) fn send(&self, frame: &ClientFrame, payload: &[u8]) -> Result<(), ClientError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let mut bytes = encode_frame(frame, payload.len());
        bytes.extend_from_slice(payload);
        self.outgoing.send(bytes).map_err(|_| ClientError::Closed)
    }

    /// Sends a request and waits for its answer (an `Error` answer becomes `Err`).
    pub(crate) async fn request(
        &self,
        request_id: u64,
        frame: &ClientFrame,
        payload: &[u8],
    ) -> Result<ServerFrame, ClientError> {
        let answer = self.register(request_id);
        self.send(frame, payload)?;
        self.wait(request_id, answer).await
    }

    /// Registers interest in the answer to `request_id`, before the request is sent.
    pub(crate) fn register(
        &self,
        request_id: u64,
    ) -> oneshot::Receiver<Result<ServerFrame, ClientError>> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("not poisoned")
            .insert(request_id, tx);
        rx
    }

    /// Drops interest in an answer that will not come (the request was never sent).
    pub(crate) fn forget_waiter(&self, request_id: u64) {
        self.waiters
            .lock()
            .expect("not poisoned")
            .remove(&request_id);
    }

    /// Waits for a registered answer, up to the request timeout.
    pub(crate) async fn wait(
        &self,
        request_id: u64,
        answer: oneshot::Receiver<Result<ServerFrame, ClientError>>,
    ) -> Result<ServerFrame, ClientError> {
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.forget_waiter(request_id);
                Err(ClientError::Timeout(self.request_timeout))
            }
        }
    }

    /// Routes a consumer's deliveries on this connection to `events` (a consumer attached
    /// through several brokers has one channel for all of them).
    pub(crate) fn add_consumer(
        &self,
        consumer_id: u64,
        topic: Arc<str>,
        events: mpsc::UnboundedSender<ConsumerEvent>,
    ) {
        self.consumers
            .lock()
            .expect("not poisoned")
            .insert(consumer_id, (topic, events));
    }

    pub(crate) fn remove_consumer(&self, consumer_id: u64) {
        self.consumers
            .lock()
            .expect("not poisoned")
            .remove(&consumer_id);
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn fail_everything(&self, error: &ClientError) {
        self.closed.store(true, Ordering::Release);
        for (_, waiter) in self.waiters.lock().expect("not poisoned").drain() {
            let _ = waiter.send(Err(error.clone()));
        }
        for (consumer_id, (_, consumer)) in self.consumers.lock().expect("not poisoned").drain() {
            let error = error.clone();
            let _ = consumer.send(ConsumerEvent::Lost { consumer_id, error });
        }
    }

    fn route(&self, frame: ServerFrame, payload: Bytes) -> Result<(), ClientError> {
        let request_id = match &frame {
            ServerFrame::Pong | ServerFrame::Connected { .. } => return Ok(()),
            ServerFrame::Error {
                request_id: 0,
                code,
                message,
            } => return Err(ClientError::refusal(*code, message.clone())),
            ServerFrame::Messages {
                consumer_id,
                partition,
                messages,
            } => {
                let consumers = self.consumers.lock().expect("not poisoned");
                if let Some((topic, consumer)) = consumers.get(consumer_id) {
                    let messages =
                        split_payload(topic, *consumer_id, *partition, messages, payload)?;
                    let _ = consumer.send(ConsumerEvent::Messages(messages));
                }
                return Ok(());
            }
            ServerFrame::DeliveryBlocked {
                consumer_id,
                partition,
                base_offset,
                last_offset,
                reason,
            } => {
                let consumers = self.consumers.lock().expect("not poisoned");
                if let Some((_, consumer)) = consumers.get(consumer_id) {
                    let _ = consumer.send(ConsumerEvent::Blocked(ClientError::DeliveryBlocked {
                        partition: *partition,
                        base_offset: *base_offset,
                        last_offset: *last_offset,
                        reason: reason.clone(),
                    }));
                }
                return Ok(());
            }
            ServerFrame::ConsumerClosed {
                consumer_id,
                reason,
            } => {
                let consumer = self
                    .consumers
                    .lock()
                    .expect("not poisoned")
                    .remove(consumer_id);
                if let Some((_, consumer)) = consumer {
                    let error = ClientError::ConsumerClosed(reason.clone());
                    // A new leader is not the end: the consumer attaches again there.
                    let event = match reason.starts_with(LEADER_MOVED) {
                        true => ConsumerEvent::Lost {
                            consumer_id: *consumer_id,
                            error,
                        },
                        false => ConsumerEvent::Closed(error),
                    };
                    let _ = consumer.send(event);
                }
                return Ok(());
            }
            ServerFrame::Error { request_id, .. }
            | ServerFrame::Done { request_id }
            | ServerFrame::Produced { request_id, .. }
            | ServerFrame::Topics { request_id, .. }
            | ServerFrame::Metadata { request_id, .. }
            | ServerFrame::TopicDescription { request_id, .. }
            | ServerFrame::Subscribed { request_id, .. }
            | ServerFrame::Skipped { request_id, .. }
            | ServerFrame::ProducerId { request_id, .. }
            | ServerFrame::Subscriptions { request_id, .. }
            | ServerFrame::AuthenticationStep { request_id, .. } => *request_id,
        };
        let waiter = self
            .waiters
            .lock()
            .expect("not poisoned")
            .remove(&request_id);
        if let Some(waiter) = waiter {
            let answer = match frame {
                ServerFrame::Error { code, message, .. } => {
                    Err(ClientError::refusal(code, message))
                }
                other => Ok(other),
            };
            let _ = waiter.send(answer);
        }
        Ok(())
    }
}

/// Cuts a delivery's payload into messages (no copies: each is a slice of the frame).
fn split_payload(
    topic: &Arc<str>,
    consumer_id: u64,
    partition: u32,
    metas: &[MessageMeta],
    payload: Bytes,
) -> Result<Vec<Message>, ClientError> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(metas.len());
    let mut take = |len: usize| -> Result<Bytes, ClientError> {
        let end = at
            .checked_add(len)
            .filter(|&end| end <= payload.len())
            .ok_or_else(|| ClientError::Protocol("message lengths exceed the payload".into()))?;
        let slice = payload.slice(at..end);
        at = end;
        Ok(slice)
    };
    for meta in metas {
        let key = match meta.key_len {
            -1 => None,
            len if len >= 0 => Some(take(len as usize)?),
            _ => return Err(ClientError::Protocol("negative key length".into())),
        };
        let value = take(meta.value_len as usize)?;
        let headers = decode_headers(take(meta.headers_len as usize)?)
            .map_err(|e| ClientError::Protocol(format!("message headers: {e}")))?;
        out.push(Message {
            topic: topic.clone(),
            partition,
            offset: meta.offset,
            timestamp: meta.timestamp,
            redeliveries: meta.redeliveries,
            key,
            value,
            headers,
            consumer_id,
        });
    }
    if at != payload.len() {
        return Err(ClientError::Protocol(
            "payload longer than its messages".into(),
        ));
    }
    Ok(out)
}

/// How a client's connections secure themselves; built once per client and shared by every
/// connection it opens.
#[derive(Clone, Default)]
pub(crate) struct Security {
    /// TLS over the TCP connection, when a CA is configured.
    pub(crate) tls: Option<TlsConnector>,
    /// SASL authentication after the version handshake, when a mechanism is configured.
    pub(crate) sasl: Option<SaslCredentials>,
}

/// Connects (over TLS when configured), negotiates the version, authenticates when configured,
/// and starts the connection's tasks on the current runtime. Each step is bounded by
/// `request_timeout`.
pub(crate) async fn connect(
    addr: &str,
    client_name: &str,
    request_timeout: Duration,
    security: &Security,
    ids: Arc<AtomicU64>,
) -> Result<Arc<Shared>, ClientError> {
    let stream = tokio::time::timeout(request_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout(request_timeout))?
        .map_err(|e| ClientError::Io(Arc::new(e)))?;
    stream
        .set_nodelay(true)
        .map_err(|e| ClientError::Io(Arc::new(e)))?;
    let start = Start {
        client_name,
        request_timeout,
        sasl: security.sasl.as_ref(),
        ids,
    };
    match &security.tls {
        None => {
            let (reader, writer) = stream.into_split();
            start.run(reader, writer).await
        }
        Some(tls) => {
            let stream = tls.handshake(addr, stream, request_timeout).await?;
            let (reader, writer) = tokio::io::split(stream);
            start.run(reader, writer).await
        }
    }
}

/// What the handshake of one connection needs, whatever the stream under it.
struct Start<'a> {
    client_name: &'a str,
    request_timeout: Duration,
    sasl: Option<&'a SaslCredentials>,
    ids: Arc<AtomicU64>,
}

impl Start<'_> {
    async fn run<R, W>(self, mut reader: R, mut writer: W) -> Result<Arc<Shared>, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = self.request_timeout;
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        let hello = handshake::hello(
            &mut reader,
            &mut writer,
            &mut buffer,
            self.client_name,
            timeout,
        )
        .await?;
        if let Some(credentials) = self.sasl {
            handshake::authenticate(
                &mut reader,
                &mut writer,
                &mut buffer,
                credentials,
                &self.ids,
                timeout,
            )
            .await?;
        }
        let (outgoing, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            outgoing,
            waiters: Mutex::default(),
            consumers: Mutex::default(),
            ids: self.ids,
            closed: AtomicBool::new(false),
            request_timeout: timeout,
            broker_id: hello.broker_id,
        });
        tokio::spawn(write_loop(writer, queued));
        tokio::spawn(read_loop(reader, buffer, Arc::downgrade(&shared)));
        tokio::spawn(ping_loop(
            Arc::downgrade(&shared),
            hello.session_timeout / 3,
        ));
        Ok(shared)
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut buffer = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(first) = queued.recv().await {
        buffer.extend_from_slice(&first);
        while buffer.len() < WRITE_BATCH_BYTES {
            match queued.try_recv() {
                Ok(next) => buffer.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        // The flush matters with TLS: rustls may keep the last records of a write otherwise.
        if writer.write_all(&buffer).await.is_err() || writer.flush().await.is_err() {
            return;
        }
        buffer.clear();
    }
    // Every handle is gone: closing the write side tells the broker we are done.
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    mut buffer: BytesMut,
    weak: std::sync::Weak<Shared>,
) {
    // Only a weak reference while reading: the connection closes when every handle is gone.
    let error = loop {
        match decode_frame::<ServerFrame>(&mut buffer, FRAME_BYTES_MAX) {
            Ok(Some(frame)) => {
                let Some(shared) = weak.upgrade() else { return };
                if let Err(e) = shared.route(frame.control, frame.payload) {
                    break e;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break ClientError::Protocol(e.to_string()),
        }
        match reader.read_buf(&mut buffer).await {
            Ok(0) => break ClientError::Closed,
            Ok(_) => {}
            Err(e) => break ClientError::Io(Arc::new(e)),
        }
    };
    if let Some(shared) = weak.upgrade() {
        tracing::debug!(error = %error, "native connection ended");
        shared.fail_everything(&error);
    }
}

async fn ping_loop(weak: std::sync::Weak<Shared>, every: Duration) {
    let every = every.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = weak.upgrade() else { return };
        if shared.send(&ClientFrame::Ping, &[]).is_err() {
            return;
        }
    }
}
