//! What a connection's writer sends, and the budget that cuts off clients that stop reading.

use bytes::{Bytes, BytesMut};
use oxbow_core::native::{encode_frame, MessageMeta, ServerFrame};
use oxbow_core::record::{encode_headers, encoded_headers_len};
use oxbow_dispatch::subscriptions::{payload_bytes, ConsumerEvent, ConsumerSink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Payload bytes per `Messages` frame before a delivery is split into several frames.
const DELIVERY_FRAME_PAYLOAD_BYTES: usize = 1 << 20;

/// What a connection's writer sends: answers, and what partition owners push to consumers.
/// What a connection's writer sends: answers, and messages pushed by partition owners.
pub enum Outbound {
    /// A control frame without payload.
    Frame(ServerFrame),
    /// Something a subscription tells one of this connection's consumers.
    Consumer {
        /// The client's id for the consumer.
        consumer_id: u64,
        /// What happened.
        event: ConsumerEvent,
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
    /// A budget of `limit` bytes that signals `overflow` when a client stops reading for
    /// `stall_ms`.
    pub(super) fn new(limit: u64, stall_ms: u64, overflow: flume::Sender<()>) -> OutboundBudget {
        OutboundBudget {
            queued: AtomicU64::new(0),
            limit,
            last_progress_ms: AtomicU64::new(0),
            stall_ms,
            epoch: std::time::Instant::now(),
            overflow,
        }
    }
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

    pub(super) fn release(&self, bytes: u64) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub(super) fn wrote(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_progress_ms.store(now, Ordering::Release);
    }
}

/// Where a consumer attached through a connection gets its messages: that connection's
/// outbound queue, within its budget.
pub(super) struct ConnectionSink {
    pub(super) consumer_id: u64,
    pub(super) outbound: flume::Sender<Outbound>,
    pub(super) budget: Arc<OutboundBudget>,
}

impl ConsumerSink for ConnectionSink {
    fn reserve(&self, bytes: u64) -> bool {
        self.budget.reserve(bytes)
    }

    fn send(&self, event: ConsumerEvent) {
        let _ = self.outbound.send(Outbound::Consumer {
            consumer_id: self.consumer_id,
            event,
        });
    }
}

/// Appends a frame to `out`; true for a connection-level error frame (the last one sent).
pub(super) fn encode_outbound(item: Outbound, out: &mut Vec<u8>, budget: &OutboundBudget) -> bool {
    match item {
        Outbound::Frame(frame) => {
            let fatal = matches!(frame, ServerFrame::Error { request_id: 0, .. });
            out.extend_from_slice(&encode_frame(&frame, 0));
            fatal
        }
        Outbound::Consumer {
            consumer_id,
            event: ConsumerEvent::Closed { reason },
        } => {
            let frame = ServerFrame::ConsumerClosed {
                consumer_id,
                reason,
            };
            out.extend_from_slice(&encode_frame(&frame, 0));
            false
        }
        Outbound::Consumer {
            consumer_id,
            event:
                ConsumerEvent::Blocked {
                    partition,
                    base_offset,
                    last_offset,
                    reason,
                },
        } => {
            let frame = ServerFrame::DeliveryBlocked {
                consumer_id,
                partition,
                base_offset,
                last_offset,
                reason,
            };
            out.extend_from_slice(&encode_frame(&frame, 0));
            false
        }
        Outbound::Consumer {
            consumer_id,
            event:
                ConsumerEvent::Messages {
                    partition,
                    messages,
                },
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
