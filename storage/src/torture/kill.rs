//! The writer half of a real-SIGKILL torture, and the line protocol it speaks to the process
//! that kills it. The writer appends from several lanes at once in rounds, and between rounds
//! sometimes truncates, applies retention or deletes records; it reports each acknowledged
//! append on a line the moment the answer arrives, and each truncation, retention pass and
//! deletion before it starts and once it is done. The killer keeps a
//! [`Model`](super::Model) from the lines, kills the writer at a random moment, reopens the
//! partition and checks it: after a process kill every acknowledged append survives, under
//! every flush policy (direct-I/O writes are complete in the kernel before the answer).

use super::{batch, Violation};
use crate::Partition;
use oxbow_core::{FlushPolicy, LogConfig};
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

/// Lanes appending at once.
const LANES: u64 = 8;
/// Appends per lane and round, at most.
const ROUND_APPENDS_MAX: u64 = 8;
/// A truncation goes back at most this many offsets from the end.
const TRUNCATION_DEPTH_MAX: u64 = 64;

/// One line from the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Batch `id` was acknowledged at `base..=last`.
    Ack {
        /// The batch's id.
        id: u64,
        /// Its base offset.
        base: u64,
        /// Its last offset.
        last: u64,
    },
    /// A truncation to `to` starts: from there on, nothing acknowledged is promised.
    Truncating {
        /// The offset truncated to.
        to: u64,
    },
    /// The truncation is done: the log ends at `new_end`, and whatever is found from there on
    /// later must have been appended after it (batch `next_id` or later).
    Truncated {
        /// Where the log ends now.
        new_end: u64,
        /// The next batch id the writer appends.
        next_id: u64,
    },
    /// Retention starts: the log start may move.
    Retaining,
    /// Retention ran and the log now starts at `start`.
    Retained {
        /// The new log start.
        start: u64,
    },
    /// A deletion of the records below `below` starts: the start may move up to it.
    Deleting {
        /// The offset asked for.
        below: u64,
    },
    /// The deletion is answered: the log starts at `start`.
    Deleted {
        /// The new log start.
        start: u64,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Ack { id, base, last } => write!(f, "ack {id} {base} {last}"),
            Event::Truncating { to } => write!(f, "truncating {to}"),
            Event::Truncated { new_end, next_id } => write!(f, "truncated {new_end} {next_id}"),
            Event::Retaining => write!(f, "retaining"),
            Event::Retained { start } => write!(f, "retained {start}"),
            Event::Deleting { below } => write!(f, "deleting {below}"),
            Event::Deleted { start } => write!(f, "deleted {start}"),
        }
    }
}

impl FromStr for Event {
    type Err = String;

    fn from_str(line: &str) -> Result<Event, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("not a torture event: {line:?}"))
        };
        match words.first().copied() {
            Some("ack") if words.len() == 4 => Ok(Event::Ack {
                id: number(1)?,
                base: number(2)?,
                last: number(3)?,
            }),
            Some("truncating") if words.len() == 2 => Ok(Event::Truncating { to: number(1)? }),
            Some("truncated") if words.len() == 3 => Ok(Event::Truncated {
                new_end: number(1)?,
                next_id: number(2)?,
            }),
            Some("retaining") if words.len() == 1 => Ok(Event::Retaining),
            Some("retained") if words.len() == 2 => Ok(Event::Retained { start: number(1)? }),
            Some("deleting") if words.len() == 2 => Ok(Event::Deleting { below: number(1)? }),
            Some("deleted") if words.len() == 2 => Ok(Event::Deleted { start: number(1)? }),
            _ => Err(format!("not a torture event: {line:?}")),
        }
    }
}

/// The writer's log: 64 KiB segments (a roll every few rounds), retention at 1 MiB (old
/// segments deleted as it runs), and the given flush policy.
pub fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: 1024,
        flush,
        flush_interval_ms: 5,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: 64 * 1024,
        append_queue_bytes_max: 1 << 20,
        tail_cache_bytes_max: 64 * 1024,
        retention_bytes_max: Some(1 << 20),
        retention_age_max_ms: None,
        ..LogConfig::default()
    }
}

/// Appends batches `first_id..` until killed (or `report` fails: the reader is gone), under
/// leader epoch `epoch`; `seed` draws the rounds. Every event goes to `report` as it happens.
pub async fn write_until_killed(
    partition: Rc<Partition>,
    epoch: i32,
    first_id: u64,
    seed: u64,
    report: Rc<dyn Fn(Event) -> std::io::Result<()>>,
) -> Result<(), Violation> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next_id = first_id;
    partition.set_leader_epoch(epoch);
    let failed = |what: &str, e: &dyn fmt::Display| Violation(format!("{what}: {e}"));
    let tell = move |report: &dyn Fn(Event) -> std::io::Result<()>, event| {
        report(event).map_err(|e| failed("reporting", &e))
    };
    loop {
        let lanes: Vec<_> = (0..LANES)
            .map(|_| {
                let appends = rng.u64(1..=ROUND_APPENDS_MAX);
                let ids = next_id..next_id + appends;
                next_id += appends;
                let (partition, report) = (partition.clone(), report.clone());
                glommio::spawn_local(async move {
                    for id in ids {
                        let appended = partition
                            .append(batch(id))
                            .await
                            .map_err(|e| failed("an append failed", &e))?;
                        let (base, last) = (appended.base_offset, appended.last_offset);
                        tell(&*report, Event::Ack { id, base, last })?;
                    }
                    Ok::<(), Violation>(())
                })
            })
            .collect();
        for lane in lanes {
            lane.await?;
        }
        match rng.u8(..10) {
            0 => {
                let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
                let to = rng.u64(end.saturating_sub(TRUNCATION_DEPTH_MAX).max(start)..=end);
                tell(&*report, Event::Truncating { to })?;
                let new_end = partition
                    .truncate_to(to)
                    .await
                    .map_err(|e| failed("truncating", &e))?;
                tell(&*report, Event::Truncated { new_end, next_id })?;
            }
            1 => {
                tell(&*report, Event::Retaining)?;
                partition
                    .apply_retention(crate::now_ms())
                    .await
                    .map_err(|e| failed("retention", &e))?;
                let start = partition.log_start_offset();
                tell(&*report, Event::Retained { start })?;
            }
            2 => {
                let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
                let below = rng.u64(start..=end);
                tell(&*report, Event::Deleting { below })?;
                let start = partition
                    .delete_records(below)
                    .await
                    .map_err(|e| failed("deleting records", &e))?;
                tell(&*report, Event::Deleted { start })?;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written_and_other_lines_are_refused() {
        for event in [
            Event::Ack {
                id: 7,
                base: 100,
                last: 104,
            },
            Event::Truncating { to: 3 },
            Event::Truncated {
                new_end: 2,
                next_id: 9,
            },
            Event::Retaining,
            Event::Retained { start: 64 },
            Event::Deleting { below: 70 },
            Event::Deleted { start: 70 },
        ] {
            assert_eq!(event.to_string().parse::<Event>(), Ok(event));
        }
        for line in [
            "",
            "ack 1 2",
            "ack a b c",
            "truncating",
            "truncated 1",
            "retaining 3",
            "deleted",
            "hello 1",
        ] {
            assert!(line.parse::<Event>().is_err(), "{line:?}");
        }
    }
}
