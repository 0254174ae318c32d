//! The SIGKILL half of the torture: writer after writer (`torture-writer`, this binary) on one
//! partition on direct I/O, each killed at a random moment, the partition then recovered,
//! checked against everything the writers reported acknowledged, and verified frame by frame.

use super::writer::Flush;
use super::{add, Run, Totals};
use crate::bench::plan::flag_name;
use oxbow_storage::torture::kill::{self, Event};
use oxbow_storage::torture::{Acked, Model, Promise, Violation};
use oxbow_storage::{OpenOptions, Partition};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A writer is killed after at most this many events ...
const KILL_AFTER_EVENTS_MAX: u64 = 3_000;
/// ... or this long, whichever comes first.
const KILL_AFTER_MAX: Duration = Duration::from_millis(500);
/// Writers get ids from `cycle * IDS_PER_WRITER` on, so no two batches share one.
const IDS_PER_WRITER: u64 = 1 << 32;

/// One writer's life as its killer saw it.
struct Cycle {
    number: u64,
    flush: Flush,
    epoch: i32,
}

/// Real SIGKILLs: writer after writer on one partition, each killed and checked.
pub async fn kill_loop(run: Arc<Run>, work: PathBuf, seed: u64) -> Result<(), String> {
    let data = work.join("kill");
    let dir = data.join("topic").join("0");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    oxbow_storage::prepare_shard_io(&data, "torture")
        .await
        .map_err(|e| format!("preparing direct I/O in {data:?}: {e}"))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut known = Known::default();
    let log = work.join("writer.log");
    for number in 1.. {
        if run.over() {
            break;
        }
        let cycle = Cycle {
            number,
            flush: Flush::ALL[rng.usize(..Flush::ALL.len())],
            epoch: number as i32,
        };
        let outcome = match kill_one_writer(&run, &dir, &log, &cycle, &mut rng, &mut known) {
            Ok(()) => check_after_kill(&run, &dir, &cycle, &mut known).await,
            Err(e) => Err(Violation(e)),
        };
        if let Err(violation) = outcome {
            run.failed(format!(
                "writer {number} (flush {:?}, log in {}): {violation}",
                cycle.flush,
                log.display()
            ));
            break;
        }
    }
    Ok(())
}

/// Starts a writer, reads its events into the model, kills it at a random moment and reads
/// what it wrote before dying.
fn kill_one_writer(
    run: &Run,
    dir: &Path,
    log: &Path,
    cycle: &Cycle,
    rng: &mut fastrand::Rng,
    known: &mut Known,
) -> Result<(), String> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {log:?}: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let mut writer = WriterProcess(
        Command::new(exe)
            .args(["storage", "torture-writer", "--dir"])
            .arg(dir)
            .args(["--epoch", &cycle.epoch.to_string()])
            .args(["--first-id", &(cycle.number * IDS_PER_WRITER).to_string()])
            .args([
                "--seed",
                &rng.u64(..).to_string(),
                "--flush",
                &flag_name(&cycle.flush),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            // Its own process group: a Ctrl-C meant for the torture must not kill the writer
            // behind the killer's back (that would look like a writer dying by itself).
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting a writer: {e}"))?,
    );
    let lines = forward_lines(&mut writer.0)?;
    // Some writers die before they open the log: recovery must survive that too.
    let kill_after_events = rng.u64(0..=KILL_AFTER_EVENTS_MAX);
    let kill_at = Instant::now() + KILL_AFTER_MAX.mul_f64(rng.f64());
    let mut events = 0;
    while events < kill_after_events && Instant::now() < kill_at && !run.over() {
        match lines.recv_timeout(kill_at.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                take(&line?, cycle, known, &run.totals)?;
                events += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = writer.0.wait().map_err(|e| e.to_string())?;
                return Err(format!("the writer stopped by itself ({status})"));
            }
        }
    }
    writer.kill()?;
    add(&run.totals.kills, 1);
    // What it printed before it died was acknowledged too.
    for line in lines {
        take(&line?, cycle, known, &run.totals)?;
    }
    Ok(())
}

/// A writer process, killed and reaped however its killer's work ends (an error included).
struct WriterProcess(Child);

impl WriterProcess {
    fn kill(&mut self) -> Result<(), String> {
        self.0
            .kill()
            .map_err(|e| format!("killing the writer: {e}"))?;
        self.0
            .wait()
            .map_err(|e| format!("waiting for the writer: {e}"))?;
        Ok(())
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The writer's stdout, a line at a time, from a thread of its own (so reading can time out).
fn forward_lines(child: &mut Child) -> Result<mpsc::Receiver<Result<String, String>>, String> {
    let stdout = child.stdout.take().ok_or("the writer has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("torture-writer-out".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.map_err(|e| format!("reading the writer: {e}"));
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("starting a reader thread: {e}"))?;
    Ok(rx)
}

/// What the killer knows of the log from the writers' reports and its own checks.
#[derive(Default)]
struct Known {
    model: Model,
    /// Where the log starts, as the last retention, deletion or truncation reported or the
    /// last check found it.
    start: Option<u64>,
    /// What was reported started and not done: how the start may have moved meanwhile.
    moving: Option<Moving>,
}

/// An action under way that moves the log start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moving {
    /// Retention: up to any later segment.
    Retaining,
    /// Deleting the records below `below`: up to it, no further.
    Deleting { below: u64 },
    /// A truncation: back, when it cuts the batch that holds the start.
    Truncating,
}

/// Takes one event into what is known.
fn take(line: &str, cycle: &Cycle, known: &mut Known, totals: &Totals) -> Result<(), String> {
    match line.parse::<Event>()? {
        Event::Ack { id, base, last } => {
            add(&totals.kill_acks, 1);
            let acked = Acked {
                id,
                epoch: cycle.epoch,
                last_offset: last,
            };
            known.model.acked(base, acked).map_err(|v| v.to_string())
        }
        Event::Truncating { to } => {
            add(&totals.kill_truncations, 1);
            known.model.forget_from(to);
            known.moving = Some(Moving::Truncating);
            Ok(())
        }
        Event::Truncated { new_end, next_id } => {
            known.model.truncated(new_end, next_id);
            known.start = known.start.map(|start| start.min(new_end));
            known.moving = None;
            Ok(())
        }
        Event::Retaining => {
            known.moving = Some(Moving::Retaining);
            Ok(())
        }
        Event::Retained { start } => {
            add(&totals.kill_retentions, 1);
            (known.start, known.moving) = (Some(start), None);
            Ok(())
        }
        Event::Deleting { below } => {
            known.moving = Some(Moving::Deleting { below });
            Ok(())
        }
        Event::Deleted { start } => {
            add(&totals.kill_deletions, 1);
            (known.start, known.moving) = (Some(start), None);
            Ok(())
        }
    }
}

/// After recovery the log starts where the last action left it, or, with one cut short,
/// where that action could have moved it: retention forward to any segment, a deletion
/// forward no further than asked, a truncation back (a cut through the batch holding it).
fn check_start(known: &Known, recovered: u64) -> Result<(), Violation> {
    let Some(expected) = known.start else {
        return Ok(());
    };
    let allowed = match known.moving {
        None => recovered == expected,
        Some(Moving::Retaining) => recovered >= expected,
        Some(Moving::Deleting { below }) => (expected..=expected.max(below)).contains(&recovered),
        Some(Moving::Truncating) => recovered <= expected,
    };
    match allowed {
        true => Ok(()),
        false => Err(Violation(format!(
            "the log starts at {recovered} after recovery; it started at {expected}, {}",
            match known.moving {
                None => "nothing was moving it".to_string(),
                Some(moving) => format!("then {moving:?} was cut short"),
            }
        ))),
    }
}

/// Reopens the killed writer's partition (recovery), checks it against the model, closes it
/// and verifies every frame of every segment.
async fn check_after_kill(
    run: &Run,
    dir: &Path,
    cycle: &Cycle,
    known: &mut Known,
) -> Result<(), Violation> {
    let config = kill::config(cycle.flush.policy());
    let partition = Partition::open(dir, config, OpenOptions::default())
        .await
        .map_err(|e| Violation(format!("recovery after the kill failed: {e}")))?;
    let start = partition.log_start_offset();
    let checked = match check_start(known, start) {
        Ok(()) => {
            known
                .model
                .check(&partition, Promise::AckedSurvive, true)
                .await
        }
        Err(violation) => Err(violation),
    };
    (known.start, known.moving) = (Some(start), None);
    partition.close().await;
    let checked = checked?;
    let segments = oxbow_storage::verify::verify_partition(&oxbow_storage::DmaDisk, dir)
        .await
        .map_err(|e| Violation(format!("verifying the segments: {e}")))?;
    if let Some(damaged) = segments.iter().find(|s| !s.damage.is_empty()) {
        return Err(Violation(format!(
            "segment {} is damaged after recovery: {:?}",
            damaged.base_offset, damaged.damage
        )));
    }
    let t = &run.totals;
    add(&t.kill_batches, checked.batches);
    add(&t.kill_bytes, checked.bytes);
    add(&t.kill_segments, segments.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_action_cut_short_moves_the_start_and_only_its_way() {
        let mut known = Known::default();
        assert!(check_start(&known, 7).is_ok(), "nothing known yet");
        known.start = Some(64);
        assert!(check_start(&known, 64).is_ok());
        assert!(
            check_start(&known, 128).is_err(),
            "segments lost at the head"
        );
        assert!(check_start(&known, 0).is_err(), "deleted segments back");
        known.moving = Some(Moving::Retaining);
        assert!(check_start(&known, 128).is_ok());
        assert!(check_start(&known, 0).is_err());
        known.moving = Some(Moving::Deleting { below: 100 });
        assert!(check_start(&known, 64).is_ok() && check_start(&known, 100).is_ok());
        assert!(
            check_start(&known, 101).is_err(),
            "deleted past what was asked"
        );
        assert!(check_start(&known, 63).is_err(), "deleted records back");
        known.moving = Some(Moving::Truncating);
        assert!(check_start(&known, 60).is_ok());
        assert!(check_start(&known, 65).is_err());
    }
}
