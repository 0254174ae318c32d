//! The metadata group on the cluster transport: Raft messages as frames (a channel byte, then
//! the protobuf message), sent best effort (Raft resends what is lost), and frames that arrive
//! turned back into messages for the node.

use super::cycle::Outbox;
use super::node::MetadataNode;
use crate::metadata::BrokerMeta;
use crate::transport::{Inbound, Transport};
use bytes::{BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use std::sync::{Arc, Weak};

/// The first byte of a frame that carries a message of the metadata group (replication will
/// use other channels on the same connections).
pub const METADATA_CHANNEL: u8 = 1;

/// The first byte of a frame that asks to join the group: a new node's registration (JSON
/// [`BrokerMeta`]), sent to a member until the node finds itself registered.
pub const JOIN_CHANNEL: u8 = 2;

/// A join request as a frame.
pub fn encode_join(broker: &BrokerMeta) -> Bytes {
    let body = serde_json::to_vec(broker).expect("registrations serialise");
    let mut frame = BytesMut::with_capacity(1 + body.len());
    frame.put_u8(JOIN_CHANNEL);
    frame.put_slice(&body);
    frame.freeze()
}

/// A Raft message as a frame.
pub fn encode_message(message: &Message) -> Bytes {
    let body = message
        .write_to_bytes()
        .expect("messages serialise to memory");
    let mut frame = BytesMut::with_capacity(1 + body.len());
    frame.put_u8(METADATA_CHANNEL);
    frame.put_slice(&body);
    frame.freeze()
}

/// The Raft message a frame carries, or why it carries none.
pub fn decode_message(frame: &[u8]) -> Result<Message, String> {
    match frame.split_first() {
        Some((&METADATA_CHANNEL, body)) => {
            Message::parse_from_bytes(body).map_err(|e| format!("undecodable message: {e}"))
        }
        Some((channel, _)) => Err(format!("frame of unknown channel {channel}")),
        None => Err("empty frame".into()),
    }
}

/// Sends the node's messages over the transport.
pub struct TransportOutbox {
    transport: Arc<Transport>,
    snapshots: Vec<(u64, bool)>,
}

impl TransportOutbox {
    /// An outbox over `transport`.
    pub fn new(transport: Arc<Transport>) -> TransportOutbox {
        TransportOutbox {
            transport,
            snapshots: Vec::new(),
        }
    }
}

impl Outbox for TransportOutbox {
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let frame = encode_message(&message);
            let fits = frame.len() <= self.transport.frame_bytes_max();
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots.push((message.to, fits));
            }
            if !fits {
                tracing::error!(
                    to = message.to,
                    bytes = frame.len(),
                    limit = self.transport.frame_bytes_max(),
                    "metadata message larger than a cluster frame: not sent"
                );
                continue;
            }
            self.transport.send(message.to, frame);
        }
    }

    /// A snapshot handed to the transport counts as sent (if it is lost, the follower's next
    /// refusal makes the leader send another); one too large for a frame as failed.
    fn take_snapshot_reports(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.snapshots)
    }
}

/// Feeds the frames that arrive to the node, join requests to `joins` (dropped while it is
/// full: the joining node asks again) and replication frames to `replication`, until the
/// transport stops; other frames are logged and dropped. Holds the transport weakly: dropping
/// its owner stops it, and with it this pump.
pub async fn pump_inbound(
    inbound: flume::Receiver<Inbound>,
    node: MetadataNode,
    joins: flume::Sender<BrokerMeta>,
    replication: flume::Sender<Bytes>,
    transport: Weak<Transport>,
) {
    while let Ok(Inbound { from, frame }) = inbound.recv_async().await {
        if frame.first() == Some(&crate::replication::REPLICATION_CHANNEL) {
            // Dropped while the partitions' owners are behind: followers ask again.
            if replication.try_send(frame).is_err() {
                tracing::debug!(%from, "replication frame dropped: its owners are busy");
            }
            continue;
        }
        if let Some((&JOIN_CHANNEL, body)) = frame.split_first() {
            match serde_json::from_slice::<BrokerMeta>(body) {
                Ok(broker) => _ = joins.try_send(broker),
                Err(e) => tracing::warn!(%from, error = %e, "undecodable join request dropped"),
            }
            continue;
        }
        match decode_message(&frame) {
            Ok(message) => {
                if let Some(transport) = transport.upgrade() {
                    transport.learn_peer(message.from, from);
                }
                node.step(message)
            }
            Err(reason) => tracing::warn!(%from, reason, "cluster frame dropped"),
        }
    }
}
