//! Replication frames between a partition's leader and its followers, on the cluster transport
//! next to the metadata group's (first byte [`REPLICATION_CHANNEL`]).
//!
//! Layout, big-endian: channel u8, kind u8, topic id (16 bytes), partition u32, leader epoch
//! i32, then per kind:
//! - `EpochQuery` (1): replica i32, newest epoch the follower holds i32 (-1: none);
//! - `EpochAnswer` (2): epoch i32 and end offset u64 (epoch -1: the leader knows no epoch that
//!   old, the follower keeps nothing);
//! - `Fetch` (3): replica i32, fetch offset u64 (the follower's log end), durable end u64 (what
//!   it holds under the flush policy), the generation of this leader's subscription cursors
//!   it holds u64 (0: none);
//! - `Data` (4): offset u64, high watermark u64, log start u64, a flag u8 and (flag 1) the
//!   leader's cursors ([`CursorSnapshot`]) when the follower's generation is not the
//!   leader's, then the record batches from `offset` exactly as the leader stores them
//!   (possibly none);
//! - `Refused` (5): a [`Refusal`] code u8.
//!
//! Decoding checks every length and code: a damaged or hostile frame is an error, never a panic.

use super::cursors::CursorSnapshot;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The first byte of a replication frame.
pub const REPLICATION_CHANNEL: u8 = 3;

const HEADER_BYTES: usize = 1 + 1 + 16 + 4 + 4;
/// A fetch after the header: replica, offset, durable end, log start, cursor generation.
const FETCH_BYTES: usize = 4 + 8 + 8 + 8 + 8;

/// Which partition a frame is about, and under which leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionKey {
    /// The topic's id (ids, unlike names, are never reused by a recreated topic).
    pub topic_id: [u8; 16],
    /// Partition number.
    pub partition: u32,
    /// The epoch of the leader the follower follows; a leader of another epoch refuses.
    pub leader_epoch: i32,
}

/// Why a leader does not serve a follower's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request names an older epoch than the leader's: the follower must learn the new
    /// leader from the metadata (Kafka's FENCED_LEADER_EPOCH).
    FencedLeaderEpoch,
    /// The request names a newer epoch: this node has not learned it yet (Kafka's
    /// UNKNOWN_LEADER_EPOCH); retry.
    UnknownLeaderEpoch,
    /// This node does not lead the partition, or not yet (Kafka's NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The fetch offset is outside the leader's log (Kafka's OFFSET_OUT_OF_RANGE): below its
    /// start, the follower starts over from the log start.
    OffsetOutOfRange,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::FencedLeaderEpoch => 1,
            Refusal::UnknownLeaderEpoch => 2,
            Refusal::NotLeader => 3,
            Refusal::OffsetOutOfRange => 4,
        }
    }

    fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::FencedLeaderEpoch,
            2 => Refusal::UnknownLeaderEpoch,
            3 => Refusal::NotLeader,
            4 => Refusal::OffsetOutOfRange,
            _ => return None,
        })
    }
}

/// One replication frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaFrame {
    /// Follower → leader: where does my newest epoch end on your log?
    EpochQuery {
        /// Partition and the epoch followed.
        key: PartitionKey,
        /// The follower.
        replica: i32,
        /// The newest epoch in its log.
        latest_epoch: Option<i32>,
    },
    /// Leader → follower: the newest epoch at or below the one asked for, and where it ends.
    EpochAnswer {
        /// Partition and the leader's epoch.
        key: PartitionKey,
        /// `None`: no epoch that old.
        answer: Option<(i32, u64)>,
    },
    /// Follower → leader: records from `offset`, please; I hold `durable_end`.
    Fetch {
        /// Partition and the epoch followed.
        key: PartitionKey,
        /// The follower.
        replica: i32,
        /// Its log end.
        offset: u64,
        /// What it holds under the flush policy.
        durable_end: u64,
        /// Where its log starts (records deleted below the leader's start wait for it).
        log_start: u64,
        /// The generation of this leader's subscription cursors it holds (0: none).
        cursors: u64,
    },
    /// Leader → follower: batches from `offset`, and the high watermark.
    Data {
        /// Partition and the leader's epoch.
        key: PartitionKey,
        /// Offset of the first batch (the fetch offset).
        offset: u64,
        /// The leader's high watermark.
        high_watermark: u64,
        /// The leader's log start.
        log_start: u64,
        /// The leader's subscription cursors, when the follower holds another generation.
        cursors: Option<CursorSnapshot>,
        /// Stored batches, unchanged.
        batches: Bytes,
    },
    /// Leader → follower: the request is not served.
    Refused {
        /// Partition and the epoch the request named.
        key: PartitionKey,
        /// Why.
        refusal: Refusal,
    },
}

/// Why bytes are not a replication frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad replication frame: {0}")]
pub struct WireError(pub(super) &'static str);

impl ReplicaFrame {
    /// The partition and epoch it is about.
    pub fn key(&self) -> &PartitionKey {
        match self {
            ReplicaFrame::EpochQuery { key, .. }
            | ReplicaFrame::EpochAnswer { key, .. }
            | ReplicaFrame::Fetch { key, .. }
            | ReplicaFrame::Data { key, .. }
            | ReplicaFrame::Refused { key, .. } => key,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        let extra = match self {
            ReplicaFrame::Data {
                batches, cursors, ..
            } => 25 + batches.len() + cursors.as_ref().map_or(0, CursorSnapshot::encoded_len),
            _ => FETCH_BYTES,
        };
        let mut out = BytesMut::with_capacity(HEADER_BYTES + extra);
        let kind = match self {
            ReplicaFrame::EpochQuery { .. } => 1,
            ReplicaFrame::EpochAnswer { .. } => 2,
            ReplicaFrame::Fetch { .. } => 3,
            ReplicaFrame::Data { .. } => 4,
            ReplicaFrame::Refused { .. } => 5,
        };
        let key = self.key();
        out.put_u8(REPLICATION_CHANNEL);
        out.put_u8(kind);
        out.put_slice(&key.topic_id);
        out.put_u32(key.partition);
        out.put_i32(key.leader_epoch);
        match self {
            ReplicaFrame::EpochQuery {
                replica,
                latest_epoch,
                ..
            } => {
                out.put_i32(*replica);
                out.put_i32(latest_epoch.unwrap_or(-1));
            }
            ReplicaFrame::EpochAnswer { answer, .. } => {
                let (epoch, end) = answer.unwrap_or((-1, 0));
                out.put_i32(epoch);
                out.put_u64(end);
            }
            ReplicaFrame::Fetch {
                replica,
                offset,
                durable_end,
                log_start,
                cursors,
                ..
            } => {
                out.put_i32(*replica);
                out.put_u64(*offset);
                out.put_u64(*durable_end);
                out.put_u64(*log_start);
                out.put_u64(*cursors);
            }
            ReplicaFrame::Data {
                offset,
                high_watermark,
                log_start,
                cursors,
                batches,
                ..
            } => {
                out.put_u64(*offset);
                out.put_u64(*high_watermark);
                out.put_u64(*log_start);
                match cursors {
                    Some(snapshot) => {
                        out.put_u8(1);
                        snapshot.encode_into(&mut out);
                    }
                    None => out.put_u8(0),
                }
                out.put_slice(batches);
            }
            ReplicaFrame::Refused { refusal, .. } => out.put_u8(refusal.code()),
        }
        out.freeze()
    }

    /// The frame `frame` holds (its batches share `frame`'s memory).
    pub fn decode(frame: Bytes) -> Result<ReplicaFrame, WireError> {
        if frame.len() < HEADER_BYTES {
            return Err(WireError("shorter than its header"));
        }
        let mut buf = frame.clone();
        if buf.get_u8() != REPLICATION_CHANNEL {
            return Err(WireError("not on the replication channel"));
        }
        let kind = buf.get_u8();
        let mut topic_id = [0u8; 16];
        buf.copy_to_slice(&mut topic_id);
        let key = PartitionKey {
            topic_id,
            partition: buf.get_u32(),
            leader_epoch: buf.get_i32(),
        };
        let need = |buf: &Bytes, bytes: usize| {
            (buf.remaining() >= bytes)
                .then_some(())
                .ok_or(WireError("shorter than its kind needs"))
        };
        let frame = match kind {
            1 => {
                need(&buf, 8)?;
                let replica = buf.get_i32();
                let latest = buf.get_i32();
                ReplicaFrame::EpochQuery {
                    key,
                    replica,
                    latest_epoch: (latest >= 0).then_some(latest),
                }
            }
            2 => {
                need(&buf, 12)?;
                let epoch = buf.get_i32();
                let end = buf.get_u64();
                ReplicaFrame::EpochAnswer {
                    key,
                    answer: (epoch >= 0).then_some((epoch, end)),
                }
            }
            3 => {
                need(&buf, FETCH_BYTES)?;
                ReplicaFrame::Fetch {
                    key,
                    replica: buf.get_i32(),
                    offset: buf.get_u64(),
                    durable_end: buf.get_u64(),
                    log_start: buf.get_u64(),
                    cursors: buf.get_u64(),
                }
            }
            4 => {
                need(&buf, 25)?;
                let (offset, high_watermark, log_start) =
                    (buf.get_u64(), buf.get_u64(), buf.get_u64());
                let cursors = match buf.get_u8() {
                    0 => None,
                    1 => Some(CursorSnapshot::decode_from(&mut buf)?),
                    _ => return Err(WireError("unknown cursor flag")),
                };
                ReplicaFrame::Data {
                    key,
                    offset,
                    high_watermark,
                    log_start,
                    cursors,
                    batches: buf.split_off(0),
                }
            }
            5 => {
                need(&buf, 1)?;
                let refusal =
                    Refusal::from_code(buf.get_u8()).ok_or(WireError("unknown refusal code"))?;
                ReplicaFrame::Refused { key, refusal }
            }
            _ => return Err(WireError("unknown kind")),
        };
        if !matches!(frame, ReplicaFrame::Data { .. }) && buf.has_remaining() {
            return Err(WireError("longer than its kind"));
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> PartitionKey {
        PartitionKey {
            topic_id: [9; 16],
            partition: 7,
            leader_epoch: 3,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let frames = [
            ReplicaFrame::EpochQuery {
                key: key(),
                replica: 2,
                latest_epoch: None,
            },
            ReplicaFrame::EpochQuery {
                key: key(),
                replica: 2,
                latest_epoch: Some(1),
            },
            ReplicaFrame::EpochAnswer {
                key: key(),
                answer: Some((1, 40)),
            },
            ReplicaFrame::EpochAnswer {
                key: key(),
                answer: None,
            },
            ReplicaFrame::Fetch {
                key: key(),
                replica: 3,
                offset: 41,
                durable_end: 40,
                log_start: 7,
                cursors: 7,
            },
            ReplicaFrame::Data {
                key: key(),
                offset: 41,
                high_watermark: 39,
                log_start: 0,
                cursors: None,
                batches: Bytes::from_static(b"stored batch bytes"),
            },
            ReplicaFrame::Data {
                key: key(),
                offset: 41,
                high_watermark: 39,
                log_start: 0,
                cursors: Some(CursorSnapshot {
                    generation: 8,
                    entries: vec![
                        (
                            Bytes::from_static(b"billing"),
                            Bytes::from_static(b"cursor"),
                        ),
                        (Bytes::from_static(b"audit"), Bytes::new()),
                    ],
                }),
                batches: Bytes::from_static(b"stored batch bytes"),
            },
            ReplicaFrame::Data {
                key: key(),
                offset: 41,
                high_watermark: 39,
                log_start: 0,
                cursors: Some(CursorSnapshot {
                    generation: 9,
                    entries: Vec::new(),
                }),
                batches: Bytes::new(),
            },
            ReplicaFrame::Refused {
                key: key(),
                refusal: Refusal::FencedLeaderEpoch,
            },
        ];
        for frame in frames {
            assert_eq!(ReplicaFrame::decode(frame.encode()), Ok(frame));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = ReplicaFrame::decode(Bytes::from(bytes));
        }

        #[test]
        fn damaged_cursor_snapshots_are_refused_or_still_a_frame(
            flip in 0usize..90,
            value in any::<u8>(),
            cut in 0usize..90,
        ) {
            let frame = ReplicaFrame::Data {
                key: key(),
                offset: 1,
                high_watermark: 1,
                log_start: 0,
                cursors: Some(CursorSnapshot {
                    generation: 3,
                    entries: vec![(Bytes::from_static(b"sub"), Bytes::from_static(b"state"))],
                }),
                batches: Bytes::new(),
            };
            let mut bytes = frame.encode().to_vec();
            let at = flip % bytes.len();
            bytes[at] = value;
            let _ = ReplicaFrame::decode(Bytes::from(bytes));
            // Cut inside the snapshot: refused (a cut past it leaves a frame with fewer batches).
            let whole = frame.encode();
            let cut = 27 + cut % (whole.len() - 27);
            prop_assert!(ReplicaFrame::decode(whole.slice(..cut)).is_err());
        }

        #[test]
        fn a_damaged_frame_is_refused_or_still_a_frame(flip in 0usize..62, value in any::<u8>()) {
            let mut bytes = ReplicaFrame::Fetch {
                key: key(),
                replica: 3,
                offset: 41,
                durable_end: 40,
                log_start: 7,
                cursors: 2,
            }
            .encode()
            .to_vec();
            let at = flip % bytes.len();
            bytes[at] = value;
            let _ = ReplicaFrame::decode(Bytes::from(bytes));
        }

        #[test]
        fn truncated_frames_are_refused(cut in 0usize..61) {
            let bytes = ReplicaFrame::Fetch {
                key: key(),
                replica: 3,
                offset: 41,
                durable_end: 40,
                log_start: 7,
                cursors: 2,
            }
            .encode();
            prop_assert!(ReplicaFrame::decode(bytes.slice(..cut)).is_err());
        }
    }
}
