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

pub mod registry;

use crate::shard::{PartitionError, Shard};
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use oxbow_core::native::{
    decode_frame, encode_frame, validate_name, Acks, ClientFrame, ErrorCode, MessageMeta, Mode,
    PartitionInfo, ServerFrame, StartPosition, SubscriptionType, TopicInfo, PROTOCOL_VERSION,
};
use oxbow_core::record::{encode_headers, encoded_headers_len};
use oxbow_core::{BatchError, CompressionError, RecordBatch};
use registry::{Command, Refusal, Sink, StoredMessage, Target};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Payload bytes per `Messages` frame before a delivery is split into several frames.
const DELIVERY_FRAME_PAYLOAD_BYTES: usize = 1 << 20;
/// Bytes the writer gathers before one socket write.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// What a connection's writer sends: answers, and messages pushed by partition owners.
pub enum Outbound {
    /// A control frame without payload.
    Frame(ServerFrame),
    /// Messages for one of this connection's consumers.
    Messages {
        /// The client's consumer id.
        consumer_id: u64,
        /// Partition.
        partition: u32,
        /// Messages with their redelivery counts.
        messages: Vec<(StoredMessage, u32)>,
    },
    /// The broker detached a consumer.
    ConsumerClosed {
        /// The client's consumer id.
        consumer_id: u64,
        /// Why.
        reason: String,
    },
}

/// Bytes of messages queued for one connection and not yet written, with the limit. Shared
/// with the partition owners that push to the connection (any shard), hence atomic.
pub struct OutboundBudget {
    queued: AtomicU64,
    limit: u64,
    /// When the writer last finished a write (ms since `epoch`).
    last_progress_ms: AtomicU64,
    stall_ms: u64,
    epoch: std::time::Instant,
    overflow: flume::Sender<()>,
}

impl OutboundBudget {
    /// Takes `bytes` from the budget. Over the limit while the connection's writes have made
    /// no progress for the stall time, or over twice the limit at all, takes nothing, signals
    /// the connection to close and returns false. A reader that keeps up runs over the limit
    /// only briefly, by what its permits allow.
    pub fn reserve(&self, bytes: u64) -> bool {
        let queued = self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let now = self.epoch.elapsed().as_millis() as u64;
        if queued == bytes {
            // The queue was empty: the stall clock starts now, not at the last write.
            self.last_progress_ms.store(now, Ordering::Release);
        }
        if queued > self.limit && queued != bytes {
            let stalled = now.saturating_sub(self.last_progress_ms.load(Ordering::Acquire));
            // Twice the limit is a hard bound, whatever the socket is doing.
            if stalled >= self.stall_ms || queued > self.limit.saturating_mul(2) {
                self.queued.fetch_sub(bytes, Ordering::AcqRel);
                let _ = self.overflow.try_send(());
                return false;
            }
        }
        true
    }

    fn release(&self, bytes: u64) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn wrote(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_progress_ms.store(now, Ordering::Release);
    }
}

/// Key and value bytes of a delivery plus a per-message overhead (what the budget counts).
pub fn payload_bytes(messages: &[(StoredMessage, u32)]) -> u64 {
    messages
        .iter()
        .map(|(m, _)| m.data_bytes() as u64 + 32)
        .sum()
}

/// Consumer ids are unique in the process, so attachments from any shard never collide.
static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

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
                    if shard.metrics.open_native_connections() >= per_shard as u64 {
                        tracing::warn!(peer = ?stream.peer_addr().ok(),
                            limit = shard.config.native_connections_max,
                            "native_connections_max reached: closing new connection");
                        continue;
                    }
                    let shard = shard.clone();
                    glommio::spawn_local(async move { serve_connection(shard, stream).await })
                        .detach();
                }
                Err(e) => tracing::warn!(error = %e, "accepting a native connection failed"),
            }
        }
    });
    Ok((bound, task))
}

/// A consumer attached through this connection.
struct Attached {
    id: oxbow_dispatch::ConsumerId,
    topic: Arc<str>,
    subscription: String,
    partitions: u32,
}

struct Connection {
    shard: Rc<Shard>,
    outbound: flume::Sender<Outbound>,
    budget: Arc<OutboundBudget>,
    consumers: RefCell<HashMap<u64, Attached>>,
    produces: Rc<glommio::sync::Semaphore>,
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
enum Close {
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

async fn serve_connection(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let session_timeout = Duration::from_millis(shard.config.native_session_timeout_ms);
    let _ = stream.set_read_timeout(Some(session_timeout));
    let _ = stream.set_write_timeout(Some(session_timeout));
    shard.metrics.native_connection_opened();
    let (reader, writer) = futures_lite::io::split(stream);
    let (outbound, queued) = flume::unbounded();
    let (overflow, overflowed) = flume::bounded(1);
    let budget = Arc::new(OutboundBudget {
        queued: AtomicU64::new(0),
        limit: shard.config.native_outbound_bytes_max,
        last_progress_ms: AtomicU64::new(0),
        stall_ms: shard.config.native_write_stall_ms,
        epoch: std::time::Instant::now(),
        overflow,
    });
    let connection = Rc::new(Connection {
        shard: shard.clone(),
        outbound,
        budget: budget.clone(),
        consumers: RefCell::default(),
        produces: Rc::new(glommio::sync::Semaphore::new(
            shard.config.native_produce_in_flight_max as u64,
        )),
    });
    let reading = async {
        let end = read_frames(connection.clone(), reader).await;
        if matches!(end, Close::Refused(..)) {
            // The writer sends the queued error frame and then ends the connection.
            std::future::pending::<()>().await;
        }
        end
    };
    let writing = write_frames(writer, queued, budget);
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
    connection.detach_all();
    shard.metrics.native_connection_closed();
    if shard.metrics.open_connections() + shard.metrics.open_native_connections() == 0 {
        crate::alloc::release_free_memory();
    }
}

async fn read_frames(
    connection: Rc<Connection>,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
) -> Close {
    let frame_max = connection.shard.config.native_frame_bytes_max;
    // Small until traffic needs more: an idle connection costs a few KiB, not a chunk.
    let mut buffer = BytesMut::new();
    let mut chunk = vec![0u8; 4096];
    let mut connected = false;
    loop {
        let frame = match decode_frame::<ClientFrame>(&mut buffer, frame_max) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                match reader.read(&mut chunk).await {
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
                    tracing::debug!(client = %client_name, "native client connected");
                    connected = true;
                    connection.send(ServerFrame::Connected {
                        version: PROTOCOL_VERSION,
                        session_timeout_ms: connection.shard.config.native_session_timeout_ms,
                        frame_bytes_max: frame_max,
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
        if let Err(Close::Refused(code, message)) = connection
            .clone()
            .handle(frame.control, frame.payload)
            .await
        {
            return connection.refuse_connection(code, message);
        }
    }
}

async fn write_frames(
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    queued: flume::Receiver<Outbound>,
    budget: Arc<OutboundBudget>,
) -> Close {
    let mut buffer = Vec::new();
    while let Ok(first) = queued.recv_async().await {
        let mut last_was_fatal = encode_outbound(first, &mut buffer, &budget);
        while buffer.len() < WRITE_BATCH_BYTES && !last_was_fatal {
            let Ok(next) = queued.try_recv() else { break };
            last_was_fatal = encode_outbound(next, &mut buffer, &budget);
        }
        if let Err(e) = writer.write_all(&buffer).await {
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

/// Appends a frame to `out`; true for a connection-level error frame (the last one sent).
fn encode_outbound(item: Outbound, out: &mut Vec<u8>, budget: &OutboundBudget) -> bool {
    match item {
        Outbound::Frame(frame) => {
            let fatal = matches!(frame, ServerFrame::Error { request_id: 0, .. });
            out.extend_from_slice(&encode_frame(&frame, 0));
            fatal
        }
        Outbound::ConsumerClosed {
            consumer_id,
            reason,
        } => {
            let frame = ServerFrame::ConsumerClosed {
                consumer_id,
                reason,
            };
            out.extend_from_slice(&encode_frame(&frame, 0));
            false
        }
        Outbound::Messages {
            consumer_id,
            partition,
            messages,
        } => {
            // In the write buffer now, which WRITE_BATCH_BYTES bounds.
            budget.release(payload_bytes(&messages));
            let mut rest = &messages[..];
            while !rest.is_empty() {
                let mut payload = 0;
                let mut metas = Vec::new();
                for (message, redeliveries) in rest {
                    if !metas.is_empty() && payload >= DELIVERY_FRAME_PAYLOAD_BYTES {
                        break;
                    }
                    let headers_len = match message.headers.len() {
                        0 => 0,
                        _ => encoded_headers_len(&message.headers),
                    };
                    let key_len = message.key.as_ref().map_or(0, Bytes::len);
                    payload += key_len + message.value.len() + headers_len;
                    metas.push(MessageMeta {
                        offset: message.offset,
                        timestamp: message.timestamp,
                        redeliveries: *redeliveries,
                        key_len: message.key.as_ref().map_or(-1, |k| k.len() as i32),
                        value_len: message.value.len() as u32,
                        headers_len: headers_len as u32,
                    });
                }
                let (now, later) = rest.split_at(metas.len());
                let frame = ServerFrame::Messages {
                    consumer_id,
                    partition,
                    messages: metas,
                };
                out.extend_from_slice(&encode_frame(&frame, payload));
                for (message, _) in now {
                    if let Some(key) = &message.key {
                        out.extend_from_slice(key);
                    }
                    out.extend_from_slice(&message.value);
                    if !message.headers.is_empty() {
                        let mut headers = BytesMut::new();
                        encode_headers(&message.headers, &mut headers);
                        out.extend_from_slice(&headers);
                    }
                }
                rest = later;
            }
            false
        }
    }
}

fn refusal_frame(request_id: u64, (code, message): Refusal) -> ServerFrame {
    ServerFrame::Error {
        request_id,
        code,
        message,
    }
}

fn partition_refusal(e: PartitionError) -> Refusal {
    match e {
        PartitionError::UnknownTopicOrPartition => (ErrorCode::UnknownTopic, e.to_string()),
        PartitionError::BatchTooLarge => (ErrorCode::TooLarge, e.to_string()),
        other => (ErrorCode::Storage, other.to_string()),
    }
}

impl Connection {
    fn send(&self, frame: ServerFrame) {
        let _ = self.outbound.send(Outbound::Frame(frame));
    }

    fn answer(&self, request_id: u64, result: Result<ServerFrame, Refusal>) {
        self.send(result.unwrap_or_else(|refusal| refusal_frame(request_id, refusal)));
    }

    /// Sends a connection-level error; the writer closes the connection after it.
    fn refuse_connection(&self, code: ErrorCode, message: String) -> Close {
        tracing::warn!(?code, %message, "refusing native connection");
        self.send(ServerFrame::Error {
            request_id: 0,
            code,
            message: message.clone(),
        });
        Close::Refused(code, message)
    }

    async fn handle(self: Rc<Self>, frame: ClientFrame, payload: Bytes) -> Result<(), Close> {
        let limits = &self.shard.config.subscriptions;
        match frame {
            ClientFrame::Connect { .. } => {
                return Err(Close::Refused(
                    ErrorCode::BadRequest,
                    "Connect sent twice".into(),
                ))
            }
            ClientFrame::Ping => self.send(ServerFrame::Pong),
            ClientFrame::CreateTopic {
                request_id,
                name,
                partitions,
            } => {
                let result = self
                    .shard
                    .create_topic(name, partitions as i64, Vec::new())
                    .await
                    .map(|()| ServerFrame::Done { request_id })
                    .map_err(|e| {
                        let code = match e {
                            crate::shard::CreateTopicError::Exists => ErrorCode::TopicExists,
                            crate::shard::CreateTopicError::InvalidName(_) => {
                                ErrorCode::InvalidName
                            }
                            crate::shard::CreateTopicError::Storage(_) => ErrorCode::Storage,
                            _ => ErrorCode::BadRequest,
                        };
                        (code, e.to_string())
                    });
                self.answer(request_id, result);
            }
            ClientFrame::DeleteTopic { request_id, name } => {
                let result = self
                    .shard
                    .delete_topic(name)
                    .await
                    .map(|()| ServerFrame::Done { request_id })
                    .map_err(partition_refusal);
                self.answer(request_id, result);
            }
            ClientFrame::ListTopics { request_id } => {
                let topics = self
                    .shard
                    .topics()
                    .into_iter()
                    .map(|(name, partitions)| TopicInfo { name, partitions })
                    .collect();
                self.send(ServerFrame::Topics { request_id, topics });
            }
            ClientFrame::DescribeTopic { request_id, name } => {
                let result = self.describe(&name).await;
                self.answer(
                    request_id,
                    result.map(|partitions| ServerFrame::TopicDescription {
                        request_id,
                        partitions,
                    }),
                );
            }
            ClientFrame::Produce {
                request_id,
                topic,
                partition,
                acks,
            } => {
                // Bounded pipelining: past the limit the reader waits, and TCP pushes back.
                let permit = self
                    .produces
                    .acquire_static_permit(1)
                    .await
                    .expect("the semaphore is never closed");
                let connection = self.clone();
                glommio::spawn_local(async move {
                    let result = connection.produce(topic, partition, payload).await;
                    drop(permit);
                    if acks != Acks::None {
                        connection.answer(
                            request_id,
                            result.map(|base_offset| ServerFrame::Produced {
                                request_id,
                                base_offset,
                            }),
                        );
                    } else if let Err((_, reason)) = result {
                        tracing::debug!(reason, "acks=none produce failed");
                    }
                })
                .detach();
            }
            ClientFrame::Subscribe {
                request_id,
                consumer_id,
                topic,
                subscription,
                kind,
                mode,
                consumer_name,
                priority,
                start,
            } => {
                let result = self
                    .subscribe(
                        consumer_id,
                        topic,
                        subscription,
                        kind,
                        mode,
                        consumer_name,
                        priority,
                        start,
                    )
                    .await
                    .map(|partitions| ServerFrame::Subscribed {
                        request_id,
                        partitions,
                    });
                self.answer(request_id, result);
            }
            ClientFrame::Flow {
                consumer_id,
                partition,
                permits,
            } => {
                if permits > limits.permits_per_flow_max {
                    return Err(Close::Refused(
                        ErrorCode::TooLarge,
                        format!(
                            "a flow frame may grant at most {} permits (subscriptions.permits_per_flow_max)",
                            limits.permits_per_flow_max
                        ),
                    ));
                }
                let flow = |target, consumer| Command::Flow {
                    target,
                    consumer,
                    permits,
                };
                match partition {
                    Some(partition) => self.to_partition(consumer_id, partition, flow),
                    None => self.for_each_partition(consumer_id, flow),
                }
            }
            ClientFrame::Ack {
                consumer_id,
                partition,
                offsets,
            } => {
                self.check_ack_count(offsets.len())?;
                self.to_partition(consumer_id, partition, |target, _| Command::Ack {
                    target,
                    offsets,
                });
            }
            ClientFrame::AckCumulative {
                consumer_id,
                partition,
                offset,
            } => {
                self.to_partition(consumer_id, partition, |target, _| Command::AckCumulative {
                    target,
                    offset,
                });
            }
            ClientFrame::Nack {
                consumer_id,
                partition,
                offsets,
                delay_ms,
            } => {
                self.check_ack_count(offsets.len())?;
                let delay = Duration::from_millis(delay_ms.min(limits.nack_delay_max_ms));
                self.to_partition(consumer_id, partition, |target, _| Command::Nack {
                    target,
                    offsets,
                    delay,
                });
            }
            ClientFrame::Seek {
                request_id,
                consumer_id,
                position,
            } => {
                let result = match self.attached(consumer_id) {
                    Some((topic, subscription, _)) => {
                        self.reset(topic, subscription, position).await
                    }
                    None => Err(unknown_consumer(consumer_id)),
                };
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::Unsubscribe {
                request_id,
                consumer_id,
            } => {
                let result = match self.consumers.borrow_mut().remove(&consumer_id) {
                    Some(attached) => Ok(attached),
                    None => Err(unknown_consumer(consumer_id)),
                };
                let result = match result {
                    Ok(attached) => {
                        self.delete_subscription(
                            attached.topic.clone(),
                            attached.subscription.clone(),
                            Some(attached.id),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::CloseConsumer {
                request_id,
                consumer_id,
            } => {
                let attached = self.consumers.borrow_mut().remove(&consumer_id);
                let result = match attached {
                    Some(attached) => {
                        self.detach(&attached);
                        Ok(ServerFrame::Done { request_id })
                    }
                    None => Err(unknown_consumer(consumer_id)),
                };
                self.answer(request_id, result);
            }
            ClientFrame::ListSubscriptions { request_id, topic } => {
                let result = self.list_subscriptions(topic).await;
                self.answer(
                    request_id,
                    result.map(|subscriptions| ServerFrame::Subscriptions {
                        request_id,
                        subscriptions,
                    }),
                );
            }
            ClientFrame::ResetSubscription {
                request_id,
                topic,
                subscription,
                position,
            } => {
                let result = self
                    .reset(Arc::from(topic.as_str()), subscription, position)
                    .await;
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::SkipBatch {
                request_id,
                topic,
                partition,
                offset,
                subscription,
            } => {
                let result = self.skip(topic, partition, offset, subscription).await.map(
                    |(base_offset, last_offset, subscriptions)| ServerFrame::Skipped {
                        request_id,
                        base_offset,
                        last_offset,
                        subscriptions,
                    },
                );
                self.answer(request_id, result);
            }
            ClientFrame::DeleteSubscription {
                request_id,
                topic,
                subscription,
            } => {
                let result = self
                    .delete_subscription(Arc::from(topic.as_str()), subscription, None)
                    .await;
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
        }
        Ok(())
    }

    fn check_ack_count(&self, count: usize) -> Result<(), Close> {
        let max = self.shard.config.subscriptions.acks_per_frame_max;
        if count > max as usize {
            return Err(Close::Refused(
                ErrorCode::TooLarge,
                format!("at most {max} offsets per ack or nack (subscriptions.acks_per_frame_max)"),
            ));
        }
        Ok(())
    }

    async fn produce(&self, topic: String, partition: u32, payload: Bytes) -> Result<u64, Refusal> {
        let batches = RecordBatch::parse_many(payload)
            .map_err(|e| (ErrorCode::BadRequest, format!("bad record batch: {e}")))?;
        let limit = self.shard.config.batch_decompressed_bytes_max;
        for batch in &batches {
            let codec = batch.codec();
            batch.validate_records(limit).map_err(|e| {
                let code = match e {
                    BatchError::Decompression(CompressionError::TooLarge { .. }) => {
                        ErrorCode::TooLarge
                    }
                    _ => ErrorCode::BadRequest,
                };
                (code, format!("bad record batch: {e}"))
            })?;
            if let Ok(codec) = codec {
                self.shard.metrics.batch_produced(codec);
            }
        }
        if batches.is_empty() {
            return Err((
                ErrorCode::BadRequest,
                "no record batch in the payload".into(),
            ));
        }
        let partitions = self.partitions_of(&topic, true).await?;
        if partition >= partitions {
            return Err((
                ErrorCode::UnknownTopic,
                format!("topic {topic} has {partitions} partitions; {partition} does not exist"),
            ));
        }
        let topic: Arc<str> = Arc::from(topic.as_str());
        let outcome = self
            .shard
            .send_produce(topic, partition, batches)
            .recv_async()
            .await;
        match outcome {
            Ok(Ok((base_offset, _))) => Ok(base_offset),
            Ok(Err(e)) => Err(partition_refusal(e)),
            Err(_) => Err((ErrorCode::Storage, "the partition's shard is gone".into())),
        }
    }

    /// The topic's partition count; a missing topic is created when `auto_create_topics`
    /// allows it and `create` is set.
    async fn partitions_of(&self, topic: &str, create: bool) -> Result<u32, Refusal> {
        if let Some(count) = self.shard.partition_count(topic) {
            return Ok(count);
        }
        if create && self.shard.config.auto_create_topics {
            let partitions = self.shard.config.default_partitions as i64;
            match self
                .shard
                .create_topic(topic.to_string(), partitions, Vec::new())
                .await
            {
                Ok(()) | Err(crate::shard::CreateTopicError::Exists) => {}
                Err(e) => return Err((ErrorCode::InvalidName, e.to_string())),
            }
            if let Some(count) = self.shard.partition_count(topic) {
                return Ok(count);
            }
        }
        Err((ErrorCode::UnknownTopic, format!("unknown topic {topic}")))
    }

    async fn describe(&self, topic: &str) -> Result<Vec<PartitionInfo>, Refusal> {
        let partitions = self.partitions_of(topic, false).await?;
        let name: Arc<str> = Arc::from(topic);
        let mut out = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let start = self.shard.list_offset(name.clone(), partition, -2).await;
            let end = self.shard.list_offset(name.clone(), partition, -1).await;
            let (start, end) = (
                start.map_err(partition_refusal)?.0,
                end.map_err(partition_refusal)?.0,
            );
            out.push(PartitionInfo {
                partition,
                log_start: start as u64,
                log_end: end as u64,
            });
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn subscribe(
        &self,
        consumer_id: u64,
        topic: String,
        subscription: String,
        kind: SubscriptionType,
        mode: Mode,
        consumer_name: String,
        priority: i32,
        start: StartPosition,
    ) -> Result<u32, Refusal> {
        validate_name("subscription", &subscription).map_err(|e| (ErrorCode::InvalidName, e))?;
        validate_name("consumer", &consumer_name).map_err(|e| (ErrorCode::InvalidName, e))?;
        if self.consumers.borrow().contains_key(&consumer_id) {
            return Err((
                ErrorCode::BadRequest,
                format!("consumer id {consumer_id} is in use on this connection"),
            ));
        }
        let partitions = self.partitions_of(&topic, true).await?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
        let attached = Attached {
            id,
            topic: topic.clone(),
            subscription: subscription.clone(),
            partitions,
        };
        // Attach everywhere at once, then wait: one slow partition does not serialise the rest.
        let answers: Vec<_> = (0..partitions)
            .map(|partition| {
                let (reply, answer) = flume::bounded(1);
                self.shard.send_native(
                    &topic,
                    partition,
                    Command::Attach {
                        target: Target {
                            topic: topic.clone(),
                            partition,
                            subscription: subscription.clone(),
                        },
                        kind,
                        mode,
                        consumer: id,
                        name: consumer_name.clone(),
                        priority,
                        start,
                        sink: Sink {
                            consumer_id,
                            outbound: self.outbound.clone(),
                            budget: self.budget.clone(),
                        },
                        reply,
                    },
                );
                answer
            })
            .collect();
        let mut failure = None;
        for answer in answers {
            let result = answer.recv_async().await.unwrap_or_else(|_| {
                Err((ErrorCode::Storage, "the partition's shard is gone".into()))
            });
            if let Err(refusal) = result {
                failure.get_or_insert(refusal);
            }
        }
        if let Some(refusal) = failure {
            // Undo the partitions that accepted (detaching an unknown consumer is a no-op).
            self.detach(&attached);
            return Err(refusal);
        }
        self.consumers.borrow_mut().insert(consumer_id, attached);
        Ok(partitions)
    }

    fn attached(&self, consumer_id: u64) -> Option<(Arc<str>, String, u32)> {
        self.consumers
            .borrow()
            .get(&consumer_id)
            .map(|a| (a.topic.clone(), a.subscription.clone(), a.partitions))
    }

    fn for_each_partition(
        &self,
        consumer_id: u64,
        command: impl Fn(Target, oxbow_dispatch::ConsumerId) -> Command,
    ) {
        let consumers = self.consumers.borrow();
        let Some(attached) = consumers.get(&consumer_id) else {
            tracing::debug!(
                consumer_id,
                "frame for a consumer that is not attached: ignored"
            );
            return;
        };
        for partition in 0..attached.partitions {
            let target = Target {
                topic: attached.topic.clone(),
                partition,
                subscription: attached.subscription.clone(),
            };
            self.shard
                .send_native(&attached.topic, partition, command(target, attached.id));
        }
    }

    fn to_partition(
        &self,
        consumer_id: u64,
        partition: u32,
        command: impl FnOnce(Target, oxbow_dispatch::ConsumerId) -> Command,
    ) {
        let consumers = self.consumers.borrow();
        let Some(attached) = consumers
            .get(&consumer_id)
            .filter(|a| partition < a.partitions)
        else {
            tracing::debug!(
                consumer_id,
                partition,
                "ack for an unknown consumer or partition"
            );
            return;
        };
        let target = Target {
            topic: attached.topic.clone(),
            partition,
            subscription: attached.subscription.clone(),
        };
        self.shard
            .send_native(&attached.topic, partition, command(target, attached.id));
    }

    fn detach(&self, attached: &Attached) {
        for partition in 0..attached.partitions {
            let target = Target {
                topic: attached.topic.clone(),
                partition,
                subscription: attached.subscription.clone(),
            };
            self.shard.send_native(
                &attached.topic,
                partition,
                Command::Detach {
                    target,
                    consumer: attached.id,
                },
            );
        }
    }

    fn detach_all(&self) {
        for (_, attached) in self.consumers.borrow_mut().drain() {
            self.detach(&attached);
        }
    }

    /// Sends a command with a reply to every partition and gathers the answers.
    async fn ask_partitions<T>(
        &self,
        topic: &Arc<str>,
        partitions: u32,
        command: impl Fn(u32, flume::Sender<T>) -> Command,
    ) -> Vec<Option<T>> {
        let answers: Vec<_> = (0..partitions)
            .map(|partition| {
                let (reply, answer) = flume::bounded(1);
                self.shard
                    .send_native(topic, partition, command(partition, reply));
                answer
            })
            .collect();
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.recv_async().await.ok());
        }
        out
    }

    async fn reset(
        &self,
        topic: Arc<str>,
        subscription: String,
        position: StartPosition,
    ) -> Result<(), Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| Command::Seek {
                target: Target {
                    topic: topic.clone(),
                    partition,
                    subscription: subscription.clone(),
                },
                position,
                reply,
            })
            .await;
        first_failure(answers)
    }

    async fn delete_subscription(
        &self,
        topic: Arc<str>,
        subscription: String,
        by: Option<oxbow_dispatch::ConsumerId>,
    ) -> Result<(), Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| Command::Delete {
                target: Target {
                    topic: topic.clone(),
                    partition,
                    subscription: subscription.clone(),
                },
                by,
                reply,
            })
            .await;
        // Deleted somewhere is deleted: a non-reliable subscription may be gone already where
        // its consumers left.
        let any_deleted = answers.iter().any(|a| matches!(a, Some(Ok(()))));
        if any_deleted {
            return Ok(());
        }
        first_failure(answers)
    }

    async fn skip(
        &self,
        topic: String,
        partition: u32,
        offset: u64,
        subscription: Option<String>,
    ) -> Result<registry::Skipped, Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        if partition >= partitions {
            return Err((
                ErrorCode::UnknownTopic,
                format!("topic {topic} has {partitions} partitions; {partition} does not exist"),
            ));
        }
        let topic: Arc<str> = Arc::from(topic.as_str());
        let (reply, answer) = flume::bounded(1);
        let command = Command::Skip {
            topic: topic.clone(),
            partition,
            offset,
            subscription,
            reply,
        };
        self.shard.send_native(&topic, partition, command);
        answer
            .recv_async()
            .await
            .unwrap_or_else(|_| Err((ErrorCode::Storage, "the partition's shard is gone".into())))
    }

    async fn list_subscriptions(
        &self,
        topic: String,
    ) -> Result<Vec<oxbow_core::native::SubscriptionInfo>, Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| Command::List {
                topic: topic.clone(),
                partition,
                reply,
            })
            .await;
        let mut all: Vec<_> = answers.into_iter().flatten().flatten().collect();
        all.sort_by(|a, b| (&a.name, a.partition).cmp(&(&b.name, b.partition)));
        Ok(all)
    }
}

fn unknown_consumer(consumer_id: u64) -> Refusal {
    (
        ErrorCode::UnknownConsumer,
        format!("consumer {consumer_id} is not attached on this connection"),
    )
}

fn first_failure(answers: Vec<Option<Result<(), Refusal>>>) -> Result<(), Refusal> {
    for answer in answers {
        match answer {
            Some(Ok(())) => {}
            Some(Err(refusal)) => return Err(refusal),
            None => return Err((ErrorCode::Storage, "a partition's shard is gone".into())),
        }
    }
    Ok(())
}
