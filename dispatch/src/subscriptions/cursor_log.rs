//! The cursors of one partition's reliable subscriptions: entries of a state log kept next to
//! the partition, in `<data>/<topic>/.subscriptions/<partition>/` (key: subscription name,
//! value: the encoded cursor). They recover like any log, stay bounded by compaction, and can
//! move with the partition's replicas. The log is opened on first use and created by the first
//! write, so partitions without reliable subscriptions have none. Cursor files of older data
//! directories (`<name>.cursor` in the same directory) are moved into it when it is opened.
//!
//! On a replicated partition the leader's cursors reach its followers whole, as a snapshot
//! under a generation that counts every change (`oxbow_cluster::replication::CursorSnapshot`);
//! a follower stores each snapshot in its own cursor log, so a new leader resumes from the
//! cursors its predecessor had replicated. A write on the leader counts as persisted once
//! every in-sync follower holds its generation ([`CursorReplicas`]).

use super::cursor_replicas::CursorReplicas;
use crate::cursor::CursorState;
use bytes::Bytes;
use oxbow_cluster::replication::CursorSnapshot;
use oxbow_core::native::SubscriptionType;
use oxbow_core::{FlushPolicy, LogConfig, StateLogConfig};
use oxbow_storage::{CompactionSettings, OpenOptions, Partition, StateLog};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Wakers kept for fetches waiting on the generation before they are swept.
const WATCHERS_BEFORE_SWEEP: usize = 16;

/// One partition's cursor log; see the module docs.
pub(crate) struct CursorLog {
    dir: PathBuf,
    config: StateLogConfig,
    state: RefCell<Option<Rc<StateLog>>>,
    /// Held while the log is opened, so it is opened once.
    opening: glommio::sync::Semaphore,
    /// Counts the changes of the cursors while this node leads (and each new leadership), so
    /// followers can tell which state they hold; 0: never led.
    generation: Cell<u64>,
    /// Leaders' fetch answers waiting for the generation to move.
    watchers: RefCell<Vec<Waker>>,
    /// Which generation the in-sync followers hold, and writes waiting for them.
    replicas: RefCell<CursorReplicas>,
}

impl CursorLog {
    pub(crate) fn new(
        data_dir: &Path,
        topic: &str,
        partition: u32,
        config: StateLogConfig,
    ) -> CursorLog {
        CursorLog {
            dir: data_dir
                .join(topic)
                .join(".subscriptions")
                .join(partition.to_string()),
            config,
            state: RefCell::default(),
            opening: glommio::sync::Semaphore::new(1),
            generation: Cell::new(0),
            watchers: RefCell::default(),
            replicas: RefCell::default(),
        }
    }

    /// Every stored cursor, by subscription name. A cursor that does not decode restarts its
    /// subscription at `log_start` (redelivering everything is the loss-free answer).
    pub(crate) async fn load(&self, log_start: u64) -> Result<Vec<(String, CursorState)>, String> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let state = self.state().await?;
        let mut cursors = Vec::new();
        for (key, value) in state.entries() {
            let name = String::from_utf8_lossy(&key).into_owned();
            let cursor = CursorState::decode(&value).unwrap_or_else(|e| {
                tracing::error!(dir = ?self.dir, subscription = name, error = %e,
                    "cursor unreadable: the subscription restarts from the log start");
                CursorState {
                    kind: SubscriptionType::Shared,
                    mark_delete: log_start,
                    acked: Vec::new(),
                    skipped: Vec::new(),
                    dispatch_rate: Default::default(),
                }
            });
            cursors.push((name, cursor));
        }
        Ok(cursors)
    }

    /// Stores a subscription's cursor; durable here when this returns, with the generation
    /// to wait for ([`CursorLog::replicated`]) before it counts on a replicated partition.
    pub(crate) async fn write(&self, name: &str, cursor: &CursorState) -> Result<u64, String> {
        let state = self.state().await?;
        let change = (
            Bytes::from(name.to_string()),
            Some(Bytes::from(cursor.encode())),
        );
        state.put(vec![change]).await.map_err(|e| e.to_string())?;
        state.compact_in_background_if_due();
        Ok(self.changed())
    }

    /// `None` when the write of `generation` counts already (no follower to wait for), else
    /// what resolves once every in-sync follower holds it, or fails after `timeout` or when
    /// this node stops leading. Owns what it needs, so a writer need not wait.
    pub(crate) fn replicated(
        &self,
        generation: u64,
        timeout: Duration,
    ) -> Option<impl Future<Output = Result<(), String>> + 'static> {
        let waiting = self.replicas.borrow_mut().wait_for(generation)?;
        Some(async move {
            let held = async {
                (waiting.recv_async().await)
                    .map_err(|_| "leadership moved before the followers held it".to_string())
            };
            futures_lite::future::or(held, async {
                glommio::timer::sleep(timeout).await;
                Err(format!(
                    "in-sync followers did not hold it within {} ms",
                    timeout.as_millis()
                ))
            })
            .await
        })
    }

    /// This node leads the partition with these in-sync followers (again: the ISR changed).
    /// A new leadership starts a new generation, so every follower takes a whole copy.
    pub(crate) fn lead(&self, followers: Vec<i32>, new_leadership: bool) {
        self.replicas.borrow_mut().lead(followers);
        if new_leadership {
            self.changed();
        }
    }

    /// This node no longer leads the partition.
    pub(crate) fn stop_leading(&self) {
        self.replicas.borrow_mut().stop_leading();
    }

    /// A follower's fetch said it holds `generation`.
    pub(crate) fn held(&self, replica: i32, generation: u64) {
        self.replicas.borrow_mut().held(replica, generation);
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Resolves once the generation is no longer `seen`.
    pub(crate) fn moved_from(&self, seen: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.generation.get() != seen {
                return Poll::Ready(());
            }
            let mut watchers = self.watchers.borrow_mut();
            // Fetches that ended by their timeout leave wakers behind: past a few, wake them
            // all, and the waits still running register again.
            if watchers.len() >= WATCHERS_BEFORE_SWEEP {
                watchers.drain(..).for_each(Waker::wake);
            }
            watchers.push(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Every cursor, for a follower that holds another generation.
    pub(crate) async fn snapshot(&self) -> Result<CursorSnapshot, String> {
        // Read the generation first: a change admitted meanwhile is sent again next time.
        let generation = self.generation.get();
        let entries = if self.dir.exists() {
            self.state().await?.entries()
        } else {
            Vec::new()
        };
        Ok(CursorSnapshot {
            generation,
            entries,
        })
    }

    /// Makes the stored cursors those of the leader's snapshot (on a follower).
    pub(crate) async fn store_snapshot(&self, snapshot: CursorSnapshot) -> Result<(), String> {
        if snapshot.entries.is_empty() && !self.dir.exists() {
            return Ok(());
        }
        let state = self.state().await?;
        let mut stale: HashMap<Bytes, Bytes> = state.entries().into_iter().collect();
        let mut changes = Vec::new();
        for (name, value) in snapshot.entries {
            if stale.remove(&name).as_ref() != Some(&value) {
                changes.push((name, Some(value)));
            }
        }
        changes.extend(stale.into_keys().map(|name| (name, None)));
        if changes.is_empty() {
            return Ok(());
        }
        state.put(changes).await.map_err(|e| e.to_string())?;
        state.compact_in_background_if_due();
        Ok(())
    }

    /// Counts a change and wakes the fetches waiting for one; returns the new generation.
    fn changed(&self) -> u64 {
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        for waker in self.watchers.borrow_mut().drain(..) {
            waker.wake();
        }
        generation
    }

    /// Forgets a deleted subscription's cursor.
    pub(crate) async fn remove(&self, name: &str) {
        let removed = match self.state().await {
            Ok(state) => {
                let change = (Bytes::from(name.to_string()), None);
                let removed = state.put(vec![change]).await.map_err(|e| e.to_string());
                self.changed();
                removed
            }
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::error!(dir = ?self.dir, subscription = name, error = %e,
                "removing a cursor failed");
        }
    }

    /// Closes the log, if it was opened (after the drivers wrote their last cursors).
    pub(crate) async fn close(&self) {
        let state = self.state.borrow_mut().take();
        if let Some(state) = state {
            state.log().close().await;
        }
    }

    async fn state(&self) -> Result<Rc<StateLog>, String> {
        if let Some(state) = self.state.borrow().clone() {
            return Ok(state);
        }
        let _opening = self.opening.acquire_permit(1).await;
        if let Some(state) = self.state.borrow().clone() {
            return Ok(state);
        }
        let at = |e: &dyn std::fmt::Display| format!("{:?}: {e}", self.dir);
        let legacy = legacy_cursor_files(&self.dir).map_err(|e| at(&e))?;
        let config = LogConfig {
            flush: FlushPolicy::Always,
            segment_bytes_max: self.config.segment_bytes_max,
            retention_bytes_max: None,
            retention_age_max_ms: None,
            ..LogConfig::default()
        };
        let batch_bytes_max = config.batch_bytes_max as usize;
        let log = Partition::open(&self.dir, config, OpenOptions::default())
            .await
            .map_err(|e| at(&e))?;
        let settings = CompactionSettings {
            compaction_bytes_min: self.config.compaction_bytes_min,
        };
        let state = StateLog::open(Rc::new(log), settings, batch_bytes_max)
            .await
            .map_err(|e| at(&e))?;
        if !legacy.is_empty() {
            adopt(&state, &legacy).await.map_err(|e| at(&e))?;
            tracing::info!(dir = ?self.dir, cursors = legacy.len(), "cursor files moved into the cursor log");
        }
        let state = Rc::new(state);
        *self.state.borrow_mut() = Some(state.clone());
        Ok(state)
    }
}

/// A cursor file of an older data directory: its subscription, bytes and path.
type LegacyCursor = (String, Vec<u8>, PathBuf);

fn legacy_cursor_files(dir: &Path) -> std::io::Result<Vec<LegacyCursor>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(subscription) = name.as_deref().and_then(|n| n.strip_suffix(".cursor")) {
            found.push((subscription.to_string(), std::fs::read(&path)?, path));
        }
    }
    Ok(found)
}

/// Stores the cursor files' contents (unless the log holds a cursor of that name, which is
/// newer), then removes the files.
async fn adopt(state: &StateLog, legacy: &[LegacyCursor]) -> Result<(), String> {
    let changes: Vec<(Bytes, Option<Bytes>)> = legacy
        .iter()
        .filter(|(name, _, _)| state.get(name.as_bytes()).is_none())
        .map(|(name, bytes, _)| (Bytes::from(name.clone()), Some(Bytes::from(bytes.clone()))))
        .collect();
    if !changes.is_empty() {
        state.put(changes).await.map_err(|e| e.to_string())?;
    }
    for (_, _, path) in legacy {
        std::fs::remove_file(path).map_err(|e| format!("removing {path:?}: {e}"))?;
    }
    Ok(())
}
