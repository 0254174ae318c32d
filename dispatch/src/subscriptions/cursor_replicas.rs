//! On a replicated partition's leader: which generation of the partition's cursors each
//! in-sync follower holds, and the cursor writes waiting for all of them to hold theirs.
//! Sans-IO; the shard feeds it followers' fetches and ISR changes, the cursor log its writes.
//!
//! A follower reports the generation it stored with each fetch; generations only grow while
//! a node leads, so "holds g" means "holds every change up to g". A write of generation `g`
//! is replicated once every in-sync follower holds `g` or later. The ISR is the data's: a
//! follower that falls behind on data leaves it, and stops holding cursor writes up with it.

use std::collections::HashMap;

/// A write's wait: answered `()` when replicated; dropped unanswered when this node stops
/// leading (the write's fate is then the new leader's copy).
pub(crate) type ReplicatedWaiter = flume::Sender<()>;

/// Who must hold a write before it counts.
#[derive(Default)]
enum Holders {
    /// Nobody else: the partition has one replica.
    #[default]
    Alone,
    /// These in-sync followers (the leader not among them).
    Followers(Vec<i32>),
    /// This node stopped leading: no write of its counts any more.
    Deposed,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct CursorReplicas {
    holders: Holders,
    /// The generation each follower last reported.
    held: HashMap<i32, u64>,
    waiters: Vec<(u64, ReplicatedWaiter)>,
}

impl CursorReplicas {
    /// This node leads with these in-sync followers (again, after an ISR change: what the
    /// remaining followers reported still counts).
    pub(crate) fn lead(&mut self, followers: Vec<i32>) {
        self.held.retain(|replica, _| followers.contains(replica));
        self.holders = Holders::Followers(followers);
        self.release();
    }

    /// This node stops leading: nothing it wrote can be confirmed any more.
    pub(crate) fn stop_leading(&mut self) {
        self.holders = Holders::Deposed;
        self.held.clear();
        self.waiters.clear();
    }

    /// A follower's fetch said it holds `generation`.
    pub(crate) fn held(&mut self, replica: i32, generation: u64) {
        let known = matches!(&self.holders, Holders::Followers(f) if f.contains(&replica));
        if known {
            self.held.insert(replica, generation);
            self.release();
        }
    }

    /// A write of `generation`: `None` if it is replicated already (or there is nobody to
    /// replicate it to), else the receiver answered once it is (disconnected if it never
    /// will be).
    pub(crate) fn wait_for(&mut self, generation: u64) -> Option<flume::Receiver<()>> {
        if self.replicated_through() >= generation {
            return None;
        }
        self.waiters.retain(|(_, waiter)| !waiter.is_disconnected());
        let (tx, rx) = flume::bounded(1);
        if !matches!(self.holders, Holders::Deposed) {
            self.waiters.push((generation, tx));
        }
        Some(rx)
    }

    /// Every generation up to this one is held by every in-sync follower.
    fn replicated_through(&self) -> u64 {
        let followers = match &self.holders {
            Holders::Alone => return u64::MAX,
            Holders::Deposed => return 0,
            Holders::Followers(followers) => followers,
        };
        (followers.iter())
            .map(|f| self.held.get(f).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX)
    }

    fn release(&mut self) {
        let through = self.replicated_through();
        self.waiters.retain(|(generation, waiter)| {
            if *generation <= through {
                let _ = waiter.send(());
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(rx: &flume::Receiver<()>) -> bool {
        rx.try_recv().is_ok()
    }

    #[test]
    fn a_write_waits_for_every_in_sync_follower() {
        let mut replicas = CursorReplicas::default();
        replicas.lead(vec![2, 3]);
        let first = replicas.wait_for(1).expect("nobody holds it yet");
        let second = replicas.wait_for(2).expect("nobody holds it yet");
        replicas.held(2, 2);
        assert!(!answered(&first), "follower 3 holds nothing");
        replicas.held(3, 1);
        assert!(answered(&first));
        assert!(!answered(&second));
        replicas.held(7, 5); // not a follower: ignored
        assert!(!answered(&second));
        replicas.held(3, 2);
        assert!(answered(&second));
        assert!(replicas.wait_for(2).is_none(), "held already");
    }

    #[test]
    fn an_isr_shrink_releases_writes_the_remaining_followers_hold() {
        let mut replicas = CursorReplicas::default();
        replicas.lead(vec![2, 3]);
        replicas.held(2, 4);
        let waiting = replicas.wait_for(4).unwrap();
        replicas.lead(vec![2]);
        assert!(answered(&waiting));
        // Back in the ISR, follower 3 counts from what it reports next.
        replicas.lead(vec![2, 3]);
        let next = replicas.wait_for(5).unwrap();
        replicas.held(2, 5);
        assert!(!answered(&next));
        replicas.held(3, 5);
        assert!(answered(&next));
    }

    #[test]
    fn without_followers_nothing_waits_and_losing_leadership_fails_the_waiters() {
        let mut replicas = CursorReplicas::default();
        assert!(
            replicas.wait_for(9).is_none(),
            "one replica: nothing to wait for"
        );
        replicas.lead(Vec::new());
        assert!(replicas.wait_for(9).is_none(), "an ISR of the leader alone");
        replicas.lead(vec![2]);
        let waiting = replicas.wait_for(1).unwrap();
        replicas.stop_leading();
        assert!(matches!(
            waiting.try_recv(),
            Err(flume::TryRecvError::Disconnected)
        ));
        let after = replicas
            .wait_for(2)
            .expect("a deposed leader's write never counts");
        assert!(matches!(
            after.try_recv(),
            Err(flume::TryRecvError::Disconnected)
        ));
    }
}
