//! Where recovery takes the transaction state from: the newest intact snapshot whose offset
//! the log still holds, with the batches after it replayed.

use super::snapshot::{decode, encode, snapshot_path, write};
use super::state::TxnState;
use crate::io::{Disk, SegmentFile};
use crate::layout::{classify, PartitionFile};
use crate::segment::{scan_frames, FRAME_BYTES_LIMIT, SCAN_CHUNK_BYTES};
use oxbow_core::RecordBatch;
use std::io;
use std::ops::{ControlFlow, Range};
use std::path::Path;

/// The state to start from and the first offset whose batches must be recorded on top.
pub(crate) struct TxnStart {
    pub(crate) state: TxnState,
    pub(crate) replay_from: u64,
    /// No snapshot existed: the partition is new, or older than transactions. One at the
    /// active segment's base must be written before anything is appended.
    pub(crate) write_snapshot: bool,
}

/// Chooses among the snapshots found (`offsets`), for a log whose segments start at
/// `first_base` and whose active segment starts at `active_base`. Snapshots the log cannot
/// replay from (past the active base: their roll did not survive a crash or a truncation
/// removed it; before the first segment: retention removed what follows them) are removed.
pub(crate) fn choose_start(
    disk: &dyn Disk,
    dir: &Path,
    mut offsets: Vec<u64>,
    first_base: u64,
    active_base: u64,
) -> TxnStart {
    if offsets.is_empty() {
        return TxnStart {
            state: TxnState::default(),
            replay_from: active_base,
            write_snapshot: true,
        };
    }
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    let mut chosen = None;
    for offset in offsets {
        let path = snapshot_path(dir, offset);
        if !(first_base..=active_base).contains(&offset) {
            if let Err(e) = disk.remove(&path) {
                tracing::warn!(file = ?path, error = %e, "removing a stale transaction snapshot");
            }
        } else if chosen.is_none() {
            match read(disk, &path, offset) {
                Ok(state) => chosen = Some((offset, state)),
                Err(error) => tracing::warn!(file = ?path, error = %error,
                    "transaction snapshot is unusable; trying an older one"),
            }
        }
    }
    match chosen {
        Some((replay_from, state)) => TxnStart {
            state,
            replay_from,
            write_snapshot: false,
        },
        None => {
            tracing::warn!(dir = ?dir,
                "no usable transaction snapshot; rebuilding transaction state from the whole log");
            TxnStart {
                state: TxnState::default(),
                replay_from: first_base,
                write_snapshot: false,
            }
        }
    }
}

fn read(disk: &dyn Disk, path: &Path, offset: u64) -> Result<TxnState, String> {
    let bytes = (disk.read_small(path).map_err(|e| e.to_string())?).ok_or("vanished")?;
    match decode(&bytes).map_err(|e| e.to_string())? {
        (at, state) if at == offset => Ok(state),
        (at, _) => Err(format!("holds the state at {at}, not at its name's offset")),
    }
}

/// Records the batches of a segment's first `log_bytes` whose base offset is in `offsets`.
pub(crate) async fn replay(
    file: &SegmentFile,
    log_bytes: u64,
    offsets: Range<u64>,
    txns: &mut TxnState,
) -> io::Result<()> {
    scan_frames(
        file,
        0,
        log_bytes,
        None,
        FRAME_BYTES_LIMIT,
        SCAN_CHUNK_BYTES,
        |header, _, payload| {
            if offsets.contains(&header.base_offset) {
                if let Ok(batch) = RecordBatch::from_trusted(payload) {
                    txns.record(&batch);
                }
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    Ok(())
}

/// The transaction state of a log cut at `end`, from the newest snapshot it still holds and the
/// batches after it: for a truncation below what memory can undo (see
/// [`TxnState::truncate`]). `segments` are what is left, as (file, base offset, bytes). When it
/// had to start before the active segment, a snapshot at the active base is written, so a crash
/// from here finds one (the cut removed the newer ones).
pub(crate) async fn rebuild(
    disk: &dyn Disk,
    dir: &Path,
    segments: &[(SegmentFile, u64, u64)],
    end: u64,
    durable: bool,
) -> io::Result<TxnState> {
    let snapshots = (disk.list(dir)?.iter())
        .filter_map(|name| match classify(name) {
            PartitionFile::TxnSnapshot(offset) => Some(offset),
            _ => None,
        })
        .collect();
    let first_base = segments.first().map_or(0, |s| s.1);
    let active_base = segments.last().map_or(0, |s| s.1);
    let start = choose_start(disk, dir, snapshots, first_base, active_base);
    // Without any snapshot nothing says what is open before the active segment: read it all.
    let replay_from = match start.write_snapshot {
        true => first_base,
        false => start.replay_from,
    };
    let mut txns = start.state;
    let (sealed, active) = segments.split_at(segments.len().saturating_sub(1));
    for (i, (file, base, log_bytes)) in sealed.iter().enumerate() {
        let next_base = segments[i + 1].1;
        if next_base > replay_from {
            replay(
                file,
                *log_bytes,
                replay_from.max(*base)..active_base,
                &mut txns,
            )
            .await?;
        }
    }
    if replay_from < active_base {
        let bytes = encode(&txns, active_base);
        write(disk, dir, active_base, &bytes, durable).await?;
    }
    if let Some((file, base, log_bytes)) = active.first() {
        replay(file, *log_bytes, replay_from.max(*base)..end, &mut txns).await?;
    }
    Ok(txns)
}
