//! What a replicated partition's subscriptions do as its leadership moves: the leader's
//! cursors go to its followers (snapshots under a generation, see `cursor_log.rs`), a
//! follower stores them, and a node that stops leading lets its drivers go without writing
//! their cursors, so the next leader's copy is the one that counts.

use super::driver::{persist, stop_driver};
use super::{ConsumerEvent, SubscriptionHost};
use oxbow_cluster::replication::CursorSnapshot;
use std::future::Future;
use std::time::Duration;

impl SubscriptionHost {
    /// This node leads the partition, with these in-sync followers; `new_leadership`: it did
    /// not lead it a moment ago (followers then take a whole copy of the cursors).
    pub fn lead_cursors(&self, followers: Vec<i32>, new_leadership: bool) {
        self.cursors.lead(followers, new_leadership);
    }

    /// Another node leads the partition now (or none does): consumers are detached with
    /// `reason` (they attach again on the new leader, which resumes from the cursors
    /// replicated to it); the drivers stop without writing their cursors, and writes waiting
    /// for followers fail. Subscriptions load again from the cursor log if leadership comes
    /// back.
    pub fn leadership_moved(&self, reason: &str) {
        self.cursors.stop_leading();
        let cells = self.subs.borrow_mut().take().unwrap_or_default();
        if cells.is_empty() {
            return;
        }
        for cell in cells.values() {
            for (_, sink) in cell.sinks.borrow_mut().drain() {
                sink.send(ConsumerEvent::Closed {
                    reason: reason.to_string(),
                });
            }
            cell.deleted.set(true);
        }
        glommio::spawn_local(async move {
            for cell in cells.into_values() {
                stop_driver(&cell).await;
            }
        })
        .detach();
    }

    /// Before this node hands its leadership over (controlled shutdown): writes every cursor
    /// that moved since its last write and waits, at most
    /// `subscriptions.cursor_replication_timeout_ms`, until the in-sync followers hold them,
    /// so the next leader resumes where the consumers are instead of where the last periodic
    /// write was (`cursor_persist_interval_ms` ago). Acks between this and the handover are
    /// still redelivered: at least once.
    pub async fn replicate_cursors_now(&self) -> Result<(), String> {
        for cell in self.cells() {
            persist(&cell).await;
        }
        let timeout =
            Duration::from_millis(self.settings.subscriptions.cursor_replication_timeout_ms);
        match self.cursors.replicated(self.cursors.generation(), timeout) {
            Some(replicated) => replicated.await,
            None => Ok(()),
        }
    }

    /// A follower's fetch said it holds this generation of the cursors.
    pub fn cursors_held(&self, replica: i32, generation: u64) {
        self.cursors.held(replica, generation);
    }

    /// The generation of the cursors on this node.
    pub fn cursor_generation(&self) -> u64 {
        self.cursors.generation()
    }

    /// Resolves once the cursors change from generation `seen`.
    pub fn cursors_moved_from(&self, seen: u64) -> impl Future<Output = ()> + '_ {
        self.cursors.moved_from(seen)
    }

    /// Every cursor, for a follower that holds another generation.
    pub async fn cursor_snapshot(&self) -> Result<CursorSnapshot, String> {
        self.cursors.snapshot().await
    }

    /// Stores the leader's cursors (on a follower).
    pub async fn store_cursor_snapshot(&self, snapshot: CursorSnapshot) -> Result<(), String> {
        self.cursors.store_snapshot(snapshot).await
    }
}
