//! Reliable subscriptions' cursor files: one per subscription and partition, under
//! `<data>/<topic>/.subscriptions/<partition>/<name>.cursor`, replaced atomically.

use crate::cursor::CursorState;
use oxbow_core::native::SubscriptionType;
use std::path::{Path, PathBuf};

/// Where the cursors of one partition live.
pub(crate) fn cursors_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir
        .join(topic)
        .join(".subscriptions")
        .join(partition.to_string())
}

/// Every cursor stored for a partition, by subscription name. A damaged file restarts its
/// subscription at `log_start` (redelivering everything is the loss-free answer); a temporary
/// left by a crash is removed (the cursor it was replacing is intact).
pub(crate) fn load(dir: &Path, log_start: u64) -> Result<Vec<(String, CursorState)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{dir:?}: {e}")),
    };
    let mut cursors = Vec::new();
    for entry in entries {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let Some(name) = file_name.strip_suffix(".cursor") else {
            continue;
        };
        let state = std::fs::read(entry.path())
            .map_err(|e| e.to_string())
            .and_then(|bytes| CursorState::decode(&bytes).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                tracing::error!(path = ?entry.path(), error = %e,
                    "cursor unreadable: the subscription restarts from the log start");
                CursorState {
                    kind: SubscriptionType::Shared,
                    mark_delete: log_start,
                    acked: Vec::new(),
                    skipped: Vec::new(),
                }
            });
        cursors.push((name.to_string(), state));
    }
    Ok(cursors)
}

/// Replaces a cursor file atomically and durably, off the shard's thread.
pub(crate) async fn write(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            use std::io::Write;
            let dir = path.parent().expect("cursor paths have a directory");
            std::fs::create_dir_all(dir)?;
            // A name per write: two writes of one cursor may overlap (a seek and the driver).
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let serial = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temporary = path.with_extension(format!("cursor.{serial}.tmp"));
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await
}

/// Removes a deleted subscription's cursor file.
pub(crate) fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(path = ?path, error = %e, "removing cursor failed");
        }
    }
}
