//! One partition's replication conversation, sans-IO, from both ends: the follower's state
//! machine (first find where its log leaves the leader's and cut there, then fetch; one request
//! in flight) and the leader's check of a request against its epoch and log.

use super::cursors::CursorSnapshot;
use super::divergence::truncation_point;
use super::wire::{PartitionKey, Refusal, ReplicaFrame};
use bytes::Bytes;
use oxbow_storage::LeaderEpochs;

/// What the follower's shell does with a leader's frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerAction {
    /// Cut the log to this offset (nothing when it is the log end), then go on: fetch, or
    /// ask again when the answer left the divergence point open.
    TruncateTo(u64),
    /// Append these batches at `offset` (after restarting the log there when `restart`: the
    /// leader's log starts past this follower's end, retention or deleted records removed what
    /// it lacks), take the high watermark, and move the log start up to the leader's (as far
    /// as this log reaches); then store the leader's subscription cursors, if it sent them,
    /// and report their generation as held ([`Follower::cursors_held`]).
    Append {
        /// Where the batches start.
        offset: u64,
        /// The stored bytes, as the leader has them.
        batches: Bytes,
        /// The leader's high watermark.
        high_watermark: u64,
        /// The leader's log start.
        log_start: u64,
        /// Restart the log empty at `offset` first.
        restart: bool,
        /// The leader's cursors, when this follower holds another generation of them.
        cursors: Option<CursorSnapshot>,
    },
    /// Ask again after a pause (the leader has not learned this epoch, or its leadership, yet).
    Retry,
    /// Stop fetching until the metadata names a new leader or epoch (this one is fenced).
    Stop,
    /// Nothing to do (a late or duplicated answer).
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Truncating,
    Fetching,
    Stopped,
}

/// A follower of one partition under one leader epoch. A new leader or epoch is a new
/// `Follower`.
#[derive(Debug, Clone)]
pub struct Follower {
    key: PartitionKey,
    replica: i32,
    leader: i32,
    phase: Phase,
    in_flight: bool,
    /// The generation of this leader's subscription cursors stored here (0: none).
    cursors: u64,
    /// Where this replica's log starts, as its fetches report it.
    log_start: u64,
}

impl Follower {
    /// Replica `replica` following `leader` at `key.leader_epoch`.
    pub fn new(key: PartitionKey, replica: i32, leader: i32) -> Follower {
        Follower {
            key,
            replica,
            leader,
            phase: Phase::Truncating,
            in_flight: false,
            cursors: 0,
            log_start: 0,
        }
    }

    /// The broker it fetches from.
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// The request to send now; `None` while one is in flight or after the leader refused
    /// this epoch for good.
    pub fn next_request(
        &mut self,
        latest_epoch: Option<i32>,
        log_end: u64,
        durable_end: u64,
    ) -> Option<ReplicaFrame> {
        if self.in_flight || self.phase == Phase::Stopped {
            return None;
        }
        self.in_flight = true;
        Some(match self.phase {
            Phase::Truncating => ReplicaFrame::EpochQuery {
                key: self.key,
                replica: self.replica,
                latest_epoch,
            },
            _ => ReplicaFrame::Fetch {
                key: self.key,
                replica: self.replica,
                offset: log_end,
                durable_end,
                log_start: self.log_start,
                cursors: self.cursors,
            },
        })
    }

    /// The request in flight went unanswered (timeout, lost connection): send again.
    pub fn request_lost(&mut self) {
        self.in_flight = false;
    }

    /// This replica's log starts at `start` (it moved up to the leader's): the next fetch says
    /// so, and the leader's deletion of the records below waits for that.
    pub fn log_start_held(&mut self, start: u64) {
        self.log_start = start;
    }

    /// The leader's cursors of `generation` are stored here: the next fetch says so.
    pub fn cursors_held(&mut self, generation: u64) {
        self.cursors = generation;
    }

    /// The leader's frame, with the follower's log as it is now.
    pub fn on_frame(
        &mut self,
        frame: ReplicaFrame,
        own: &LeaderEpochs,
        log_end: u64,
    ) -> FollowerAction {
        if *frame.key() != self.key {
            return FollowerAction::Ignore;
        }
        match (self.phase, frame) {
            (Phase::Truncating, ReplicaFrame::EpochAnswer { answer, .. }) => {
                self.in_flight = false;
                let cut = truncation_point(own, log_end, answer);
                if cut.complete {
                    self.phase = Phase::Fetching;
                }
                FollowerAction::TruncateTo(cut.offset)
            }
            (
                Phase::Fetching,
                ReplicaFrame::Data {
                    offset,
                    high_watermark,
                    log_start,
                    cursors,
                    batches,
                    ..
                },
            ) => {
                self.in_flight = false;
                // The leader's log starts past this log's end. Deleted records can move its
                // start inside a batch, which the leader sends whole: the batch starts at or
                // before the leader's start.
                let restart = offset > log_end && offset <= log_start;
                if offset != log_end && !restart {
                    return FollowerAction::Ignore;
                }
                FollowerAction::Append {
                    offset,
                    batches,
                    high_watermark,
                    log_start,
                    restart,
                    cursors,
                }
            }
            (_, ReplicaFrame::Refused { refusal, .. }) => {
                self.in_flight = false;
                match refusal {
                    // The leader has not learned its epoch yet (a leadership change always
                    // bumps the epoch, so "not the leader" at this epoch means "not yet").
                    Refusal::UnknownLeaderEpoch | Refusal::NotLeader => FollowerAction::Retry,
                    // Past the leader's end: the logs diverged after all; find out again.
                    Refusal::OffsetOutOfRange => {
                        self.phase = Phase::Truncating;
                        FollowerAction::Retry
                    }
                    Refusal::FencedLeaderEpoch => {
                        self.phase = Phase::Stopped;
                        FollowerAction::Stop
                    }
                }
            }
            _ => FollowerAction::Ignore,
        }
    }
}

/// The leader's check of a follower's request: `leading` is the epoch this node leads the
/// partition at (`None`: it does not). For a fetch, answers the offset to read from (the log
/// start when the follower is below it).
pub fn check_request(
    key: &PartitionKey,
    leading: Option<i32>,
    fetch_offset: Option<u64>,
    log_start: u64,
    log_end: u64,
) -> Result<u64, Refusal> {
    let Some(epoch) = leading else {
        return Err(Refusal::NotLeader);
    };
    if key.leader_epoch < epoch {
        return Err(Refusal::FencedLeaderEpoch);
    }
    if key.leader_epoch > epoch {
        return Err(Refusal::UnknownLeaderEpoch);
    }
    match fetch_offset {
        Some(offset) if offset > log_end => Err(Refusal::OffsetOutOfRange),
        Some(offset) => Ok(offset.max(log_start)),
        None => Ok(log_end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: i32) -> PartitionKey {
        PartitionKey {
            topic_id: [1; 16],
            partition: 0,
            leader_epoch: epoch,
        }
    }

    fn data(epoch: i32, offset: u64, log_start: u64) -> ReplicaFrame {
        ReplicaFrame::Data {
            key: key(epoch),
            offset,
            high_watermark: offset,
            log_start,
            cursors: None,
            batches: Bytes::from_static(b"b"),
        }
    }

    #[test]
    fn a_follower_truncates_once_then_fetches_one_request_at_a_time() {
        let mut own = LeaderEpochs::default();
        own.assign(1, 0);
        let mut f = Follower::new(key(2), 3, 1);
        let query = f.next_request(Some(1), 50, 50).unwrap();
        assert!(matches!(
            query,
            ReplicaFrame::EpochQuery {
                latest_epoch: Some(1),
                ..
            }
        ));
        assert_eq!(f.next_request(Some(1), 50, 50), None, "one in flight");
        let answer = ReplicaFrame::EpochAnswer {
            key: key(2),
            answer: Some((1, 40)),
        };
        assert_eq!(f.on_frame(answer, &own, 50), FollowerAction::TruncateTo(40));
        let fetch = f.next_request(Some(1), 40, 40).unwrap();
        assert!(matches!(fetch, ReplicaFrame::Fetch { offset: 40, .. }));
        assert_eq!(f.on_frame(data(2, 39, 0), &own, 40), FollowerAction::Ignore);
        f.next_request(Some(1), 40, 40).unwrap();
        assert!(matches!(
            f.on_frame(data(2, 40, 0), &own, 40),
            FollowerAction::Append {
                offset: 40,
                restart: false,
                ..
            }
        ));
        // A frame of another epoch is not for this follower.
        f.next_request(Some(2), 41, 41).unwrap();
        assert_eq!(f.on_frame(data(1, 41, 0), &own, 41), FollowerAction::Ignore);
    }

    #[test]
    fn a_follower_behind_the_leaders_log_start_restarts_there() {
        let own = LeaderEpochs::default();
        let mut f = Follower::new(key(0), 2, 1);
        f.next_request(None, 5, 5).unwrap();
        let answer = ReplicaFrame::EpochAnswer {
            key: key(0),
            answer: None,
        };
        assert_eq!(f.on_frame(answer, &own, 5), FollowerAction::TruncateTo(0));
        f.next_request(None, 0, 0).unwrap();
        assert!(matches!(
            f.on_frame(data(0, 100, 100), &own, 0),
            FollowerAction::Append {
                offset: 100,
                restart: true,
                ..
            }
        ));
        // The leader's start inside the batch it sends (records deleted): restart at the batch.
        f.next_request(None, 0, 0).unwrap();
        assert!(matches!(
            f.on_frame(data(0, 200, 203), &own, 0),
            FollowerAction::Append {
                offset: 200,
                log_start: 203,
                restart: true,
                ..
            }
        ));
        // A batch past the leader's start is not where this follower asked to continue.
        f.next_request(None, 0, 0).unwrap();
        assert_eq!(
            f.on_frame(data(0, 300, 203), &own, 0),
            FollowerAction::Ignore
        );
    }

    #[test]
    fn refusals_stop_retry_or_start_over() {
        let own = LeaderEpochs::default();
        let refused = |refusal| ReplicaFrame::Refused {
            key: key(4),
            refusal,
        };
        let mut f = Follower::new(key(4), 2, 1);
        f.next_request(None, 0, 0).unwrap();
        assert_eq!(
            f.on_frame(refused(Refusal::UnknownLeaderEpoch), &own, 0),
            FollowerAction::Retry
        );
        f.next_request(None, 0, 0).unwrap();
        assert_eq!(
            f.on_frame(refused(Refusal::FencedLeaderEpoch), &own, 0),
            FollowerAction::Stop
        );
        assert_eq!(
            f.next_request(None, 0, 0),
            None,
            "stopped until a new leader"
        );
    }

    #[test]
    fn the_leader_serves_only_its_own_epoch_and_log() {
        let k = key(5);
        assert_eq!(
            check_request(&k, None, Some(1), 0, 9),
            Err(Refusal::NotLeader)
        );
        assert_eq!(
            check_request(&k, Some(6), Some(1), 0, 9),
            Err(Refusal::FencedLeaderEpoch)
        );
        assert_eq!(
            check_request(&k, Some(4), Some(1), 0, 9),
            Err(Refusal::UnknownLeaderEpoch)
        );
        assert_eq!(
            check_request(&k, Some(5), Some(10), 0, 9),
            Err(Refusal::OffsetOutOfRange)
        );
        assert_eq!(check_request(&k, Some(5), Some(1), 3, 9), Ok(3));
        assert_eq!(check_request(&k, Some(5), Some(9), 3, 9), Ok(9));
    }
}
