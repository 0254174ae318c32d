//! The leader's view of one partition's replicas, sans-IO: how far each follower holds the log,
//! the high watermark that follows from it, and when the in-sync replica set should change.
//!
//! Every "end" here is the offset after the last record a replica holds *under the topic's
//! flush policy*: with `flush = always` a follower reports only what it has fdatasynced, so the
//! high watermark, the minimum end over the ISR, is the end of what every in-sync replica holds
//! durably. Consumers read up to it and acks=all is answered once it passes the batch.
//!
//! A follower is caught up when its fetch reaches the leader's end, or the end the leader had
//! at the follower's previous fetch (Kafka's rule: under steady load a follower is never quite
//! at the moving end, yet it keeps up). One not caught up for `replica_lag_time_max_ms` leaves
//! the ISR; one out of it rejoins when it holds everything up to the high watermark and this
//! leader's first offset. ISR changes are proposals: the metadata group commits them and the
//! leader takes the committed set with [`LeaderProgress::isr_committed`].

use std::collections::BTreeMap;

/// Settings of a partition's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// A follower not caught up for this long leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// acks=all needs at least this many in-sync replicas (Kafka's `min.insync.replicas`).
    pub min_insync_replicas: usize,
}

/// Why a request cannot be served as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    /// acks=all with fewer in-sync replicas than `min_insync_replicas` (Kafka's
    /// NOT_ENOUGH_REPLICAS).
    #[error("{isr} in-sync replicas, acks=all needs {needed}")]
    NotEnoughReplicas {
        /// In-sync replicas now.
        isr: usize,
        /// `min_insync_replicas`.
        needed: usize,
    },
    /// A fetch from a broker that holds no replica of the partition.
    #[error("broker {0} is not a follower of this partition")]
    NotAFollower(i32),
}

/// One follower as its leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// What it holds (under the flush policy), as of its last fetch.
    end: u64,
    /// When it last fetched.
    last_fetch_ms: u64,
    /// The leader's end when it last fetched.
    leader_end_at_last_fetch: u64,
    /// The last time it was caught up.
    last_caught_up_ms: u64,
}

/// How far one follower is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLag {
    /// The follower.
    pub replica: i32,
    /// Offsets the leader holds that it does not.
    pub offsets: u64,
    /// Milliseconds since it was last caught up.
    pub ms: u64,
    /// Whether it is in the ISR.
    pub in_sync: bool,
}

/// The leader's side of one partition in one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderProgress {
    leader: i32,
    epoch: i32,
    /// The first offset this leader wrote: a follower must hold it to rejoin the ISR (before
    /// that its log may still differ from the leader's).
    epoch_start: u64,
    isr: Vec<i32>,
    followers: BTreeMap<i32, Follower>,
    local_end: u64,
    high_watermark: u64,
    settings: ReplicationSettings,
}

impl LeaderProgress {
    /// A leader taking over at `epoch` with its log ending at `local_end` (held under the
    /// flush policy) and the high watermark it last knew. Followers get a full lag period to
    /// show up before they are dropped from the ISR.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        leader: i32,
        epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        local_end: u64,
        high_watermark: u64,
        now_ms: u64,
        settings: ReplicationSettings,
    ) -> LeaderProgress {
        let followers = (replicas.iter())
            .filter(|&&r| r != leader)
            .map(|&r| {
                let follower = Follower {
                    end: 0,
                    last_fetch_ms: now_ms,
                    leader_end_at_last_fetch: local_end,
                    last_caught_up_ms: now_ms,
                };
                (r, follower)
            })
            .collect();
        let mut isr: Vec<i32> = isr.to_vec();
        if !isr.contains(&leader) {
            isr.push(leader);
        }
        isr.sort_unstable();
        LeaderProgress {
            leader,
            epoch,
            epoch_start: local_end,
            isr,
            followers,
            local_end,
            high_watermark: high_watermark.min(local_end),
            settings,
        }
    }

    /// This leader's epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The in-sync replicas as committed, the leader included, ascending.
    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    /// Everything below it is held by every in-sync replica; it never goes back.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// What the leader holds under the flush policy.
    pub fn local_end(&self) -> u64 {
        self.local_end
    }

    /// Whether acks=all may append now (checked before the append, as Kafka does).
    pub fn check_acks_all(&self) -> Result<(), ProgressError> {
        if self.isr.len() < self.settings.min_insync_replicas {
            return Err(ProgressError::NotEnoughReplicas {
                isr: self.isr.len(),
                needed: self.settings.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// The leader's own log now holds up to `end` under the flush policy; answers the high
    /// watermark when it moved.
    pub fn local_appended(&mut self, end: u64) -> Option<u64> {
        self.local_end = self.local_end.max(end);
        self.advance()
    }

    /// A follower fetched from `end` (it holds everything below under the flush policy).
    /// Answers the high watermark when it moved.
    pub fn follower_fetched(
        &mut self,
        replica: i32,
        end: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, ProgressError> {
        // A follower may hold more durably than the leader has synced yet: the high watermark
        // takes the least of them.
        let leader_end = self.local_end;
        let follower =
            (self.followers.get_mut(&replica)).ok_or(ProgressError::NotAFollower(replica))?;
        if end >= leader_end {
            follower.last_caught_up_ms = now_ms;
        } else if end >= follower.leader_end_at_last_fetch {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(follower.last_fetch_ms);
        }
        follower.end = end;
        follower.last_fetch_ms = now_ms;
        follower.leader_end_at_last_fetch = leader_end;
        Ok(self.advance())
    }

    /// The ISR this leader should propose now, when it differs from the committed one:
    /// followers not caught up within the lag time leave; followers holding the high
    /// watermark and this epoch's start rejoin.
    pub fn isr_proposal(&self, now_ms: u64) -> Option<Vec<i32>> {
        let lag_max = self.settings.replica_lag_time_max_ms;
        let mut proposed = vec![self.leader];
        for (&replica, follower) in &self.followers {
            let in_sync = self.isr.contains(&replica);
            let lagging = now_ms.saturating_sub(follower.last_caught_up_ms) > lag_max;
            let keep = in_sync && !lagging;
            let rejoin = !in_sync
                && follower.end >= self.high_watermark
                && follower.end >= self.epoch_start
                && !lagging;
            if keep || rejoin {
                proposed.push(replica);
            }
        }
        proposed.sort_unstable();
        (proposed != self.isr).then_some(proposed)
    }

    /// The topic's settings changed (its `min.insync.replicas` altered).
    pub fn set_settings(&mut self, settings: ReplicationSettings) {
        self.settings = settings;
    }

    /// The partition's replicas changed within this epoch (a reassignment): a new one is
    /// tracked from nothing, with a full lag period to catch up; one that left is forgotten.
    pub fn set_replicas(&mut self, replicas: &[i32], now_ms: u64) {
        let leader = self.leader;
        self.followers.retain(|r, _| replicas.contains(r));
        for &replica in replicas.iter().filter(|&&r| r != leader) {
            self.followers.entry(replica).or_insert(Follower {
                end: 0,
                last_fetch_ms: now_ms,
                leader_end_at_last_fetch: self.local_end,
                last_caught_up_ms: now_ms,
            });
        }
    }

    /// The metadata group committed `isr` for this partition (the leader is always in it).
    /// A smaller ISR may let the high watermark move: answers it when it did.
    pub fn isr_committed(&mut self, isr: &[i32]) -> Option<u64> {
        let mut isr: Vec<i32> = (isr.iter())
            .copied()
            .filter(|r| *r == self.leader || self.followers.contains_key(r))
            .collect();
        if !isr.contains(&self.leader) {
            isr.push(self.leader);
        }
        isr.sort_unstable();
        isr.dedup();
        self.isr = isr;
        self.advance()
    }

    /// Every follower's lag, for metrics and `oxbow cluster status`.
    pub fn lags(&self, now_ms: u64) -> Vec<FollowerLag> {
        (self.followers.iter())
            .map(|(&replica, f)| FollowerLag {
                replica,
                offsets: self.local_end.saturating_sub(f.end),
                ms: now_ms.saturating_sub(f.last_caught_up_ms),
                in_sync: self.isr.contains(&replica),
            })
            .collect()
    }

    /// Recomputes the high watermark: the least end over the ISR, never lower than before.
    fn advance(&mut self) -> Option<u64> {
        let least = (self.isr.iter())
            .map(|r| match self.followers.get(r) {
                Some(follower) => follower.end,
                None => self.local_end,
            })
            .min()
            .unwrap_or(self.local_end);
        (least > self.high_watermark).then(|| {
            self.high_watermark = least;
            least
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ReplicationSettings = ReplicationSettings {
        replica_lag_time_max_ms: 1_000,
        min_insync_replicas: 2,
    };

    fn three() -> LeaderProgress {
        LeaderProgress::new(1, 5, &[1, 2, 3], &[1, 2, 3], 100, 90, 0, SETTINGS)
    }

    #[test]
    fn the_high_watermark_is_the_least_end_over_the_isr_and_never_goes_back() {
        let mut p = three();
        assert_eq!(p.high_watermark(), 90);
        assert_eq!(p.follower_fetched(2, 100, 1).unwrap(), None);
        assert_eq!(p.follower_fetched(3, 95, 1).unwrap(), Some(95));
        assert_eq!(p.local_appended(120), None);
        assert_eq!(p.follower_fetched(3, 120, 2).unwrap(), Some(100));
        // A follower restarted with less (its unsynced tail lost) does not pull it back.
        assert_eq!(p.follower_fetched(2, 98, 3).unwrap(), None);
        assert_eq!(p.high_watermark(), 100);
    }

    #[test]
    fn a_follower_behind_longer_than_the_lag_time_leaves_and_rejoins_once_caught_up() {
        let mut p = three();
        p.follower_fetched(2, 100, 10).unwrap();
        p.follower_fetched(3, 100, 10).unwrap();
        assert_eq!(p.isr_proposal(10), None);
        // Follower 3 stops fetching while 2 keeps up with a moving end.
        for t in (100..=1_200).step_by(100) {
            p.local_appended(100 + t);
            p.follower_fetched(2, 100 + t - 100, t).unwrap();
        }
        assert_eq!(p.isr_proposal(1_200), Some(vec![1, 2]));
        assert_eq!(p.isr_committed(&[1, 2]), Some(1_200));
        assert_eq!(p.check_acks_all(), Ok(()));
        // Back, but behind the high watermark: not yet.
        p.follower_fetched(3, 500, 1_300).unwrap();
        assert_eq!(p.isr_proposal(1_300), None);
        p.follower_fetched(3, 1_300, 1_400).unwrap();
        assert_eq!(p.isr_proposal(1_400), Some(vec![1, 2, 3]));
    }

    #[test]
    fn acks_all_needs_min_insync_replicas() {
        let mut p = three();
        // Alone in the ISR, the leader's own end is the high watermark.
        assert_eq!(p.isr_committed(&[1]), Some(100));
        assert_eq!(
            p.check_acks_all(),
            Err(ProgressError::NotEnoughReplicas { isr: 1, needed: 2 })
        );
    }

    #[test]
    fn only_followers_fetch() {
        let mut p = three();
        assert_eq!(
            p.follower_fetched(9, 10, 1),
            Err(ProgressError::NotAFollower(9))
        );
    }

    #[test]
    fn a_follower_must_reach_this_epochs_start_to_rejoin() {
        // A new leader at 100 whose high watermark (90) is below its epoch start; follower 3
        // is in sync but has not fetched yet, so the high watermark stays.
        let mut p = LeaderProgress::new(1, 6, &[1, 2, 3], &[1, 3], 100, 90, 0, SETTINGS);
        p.follower_fetched(2, 95, 1).unwrap();
        assert_eq!(p.high_watermark(), 90);
        assert_eq!(
            p.isr_proposal(1),
            None,
            "holds the high watermark, not the epoch start"
        );
        p.follower_fetched(2, 100, 2).unwrap();
        assert_eq!(p.isr_proposal(2), Some(vec![1, 2, 3]));
    }
}
