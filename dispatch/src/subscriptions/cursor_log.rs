//! The cursors of one partition's reliable subscriptions: entries of a state log kept next to
//! the partition, in `<data>/<topic>/.subscriptions/<partition>/` (key: subscription name,
//! value: the encoded cursor). They recover like any log, stay bounded by compaction, and can
//! move with the partition's replicas. The log is opened on first use and created by the first
//! write, so partitions without reliable subscriptions have none. Cursor files of older data
//! directories (`<name>.cursor` in the same directory) are moved into it when it is opened.

use crate::cursor::CursorState;
use bytes::Bytes;
use oxbow_core::native::SubscriptionType;
use oxbow_core::{FlushPolicy, LogConfig, StateLogConfig};
use oxbow_storage::{CompactionSettings, OpenOptions, Partition, StateLog};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One partition's cursor log; see the module docs.
pub(crate) struct CursorLog {
    dir: PathBuf,
    config: StateLogConfig,
    state: RefCell<Option<Rc<StateLog>>>,
    /// Held while the log is opened, so it is opened once.
    opening: glommio::sync::Semaphore,
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
                }
            });
            cursors.push((name, cursor));
        }
        Ok(cursors)
    }

    /// Stores a subscription's cursor; durable when this returns.
    pub(crate) async fn write(&self, name: &str, cursor: &CursorState) -> Result<(), String> {
        let state = self.state().await?;
        let change = (
            Bytes::from(name.to_string()),
            Some(Bytes::from(cursor.encode())),
        );
        state.put(vec![change]).await.map_err(|e| e.to_string())?;
        state.compact_in_background_if_due();
        Ok(())
    }

    /// Forgets a deleted subscription's cursor.
    pub(crate) async fn remove(&self, name: &str) {
        let removed = match self.state().await {
            Ok(state) => {
                let change = (Bytes::from(name.to_string()), None);
                state.put(vec![change]).await.map_err(|e| e.to_string())
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
