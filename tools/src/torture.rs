//! `oxbow storage torture`: drives the storage engine through random appends, syncs, rolls,
//! retention, truncation and crashes for a set time, checking its invariants after every
//! crash (see `oxbow_storage::torture`), and prints a summary. Two kinds of crash run side by
//! side, each on its own thread:
//! - power losses on the simulated disk: seeded cases of `torture::sim`, one after another;
//! - real SIGKILLs: a writer process (this binary, `storage torture-writer`) appends to a
//!   partition on direct I/O and reports every acknowledged append; it is killed at a random
//!   moment, the partition reopened and checked against what it reported, and its segments
//!   verified frame by frame; then the next writer goes on with the same log.

use clap::{Args, ValueEnum};
use oxbow_core::FlushPolicy;
use oxbow_storage::torture::kill::{self, Event};
use oxbow_storage::torture::{sim, Acked, Model, Promise, Violation};
use oxbow_storage::{OpenOptions, Partition};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the main thread looks whether both torture threads have finished.
const FINISH_CHECK: Duration = Duration::from_millis(50);
/// A writer is killed after at most this many events ...
const KILL_AFTER_EVENTS_MAX: u64 = 3_000;
/// ... or this long, whichever comes first.
const KILL_AFTER_MAX: Duration = Duration::from_millis(500);
/// Writers get ids from `cycle * IDS_PER_WRITER` on, so no two batches share one.
const IDS_PER_WRITER: u64 = 1 << 32;
/// The directory under `--data-dir` a run works in (replaced at start, removed after a clean
/// run, kept after a violation).
const WORK_DIR: &str = "oxbow-torture";

/// Which crashes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Power losses on the simulated disk and SIGKILLs of a real writer.
    Both,
    /// Only the simulated disk.
    Sim,
    /// Only SIGKILLs.
    Kill,
}

/// `oxbow storage torture ...`
#[derive(Args, Debug)]
pub struct TortureArgs {
    /// Where the SIGKILL writer's partition lives (under oxbow-torture/; direct I/O, so not
    /// tmpfs for a real test).
    #[arg(long, default_value = "oxbow-data")]
    data_dir: PathBuf,
    /// How long to run (e.g. 30s, 10m, 1h).
    #[arg(long, default_value = "1m")]
    duration: String,
    /// First seed (simulation cases take consecutive seeds) [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Which crashes: both, sim or kill.
    #[arg(long, value_enum, default_value = "both")]
    mode: Mode,
}

/// `oxbow storage torture-writer ...`: the process the torture kills.
#[derive(Args, Debug)]
pub struct WriterArgs {
    /// The partition directory.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    epoch: i32,
    #[arg(long)]
    first_id: u64,
    #[arg(long)]
    seed: u64,
    /// always, interval or never.
    #[arg(long)]
    flush: String,
}

/// What both threads did, read by the progress lines and the summary.
#[derive(Default)]
struct Totals {
    sim_cases: AtomicU64,
    sim_acks: AtomicU64,
    sim_crashes: AtomicU64,
    sim_truncations: AtomicU64,
    sim_retentions: AtomicU64,
    sim_recoveries: AtomicU64,
    sim_batches: AtomicU64,
    kills: AtomicU64,
    kill_acks: AtomicU64,
    kill_truncations: AtomicU64,
    kill_retentions: AtomicU64,
    kill_batches: AtomicU64,
    kill_bytes: AtomicU64,
    kill_segments: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What the threads share: the totals, when to stop, and the first violation.
struct Run {
    totals: Totals,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    violation: Mutex<Option<String>>,
    /// Torture threads still working.
    running: AtomicUsize,
}

impl Run {
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn failed(&self, what: String) {
        self.violation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(what);
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn run(args: TortureArgs) -> Result<ExitCode, String> {
    let duration = humantime::parse_duration(&args.duration).map_err(|e| {
        format!(
            "--duration {:?}: {e} (examples: 30s, 10m, 1h)",
            args.duration
        )
    })?;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let work = args.data_dir.join(WORK_DIR);
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| format!("clearing {work:?}: {e}"))?;
    }
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {work:?}: {e}"))?;
    let started = Instant::now();
    let run = Arc::new(Run {
        totals: Totals::default(),
        deadline: started + duration,
        stop: Arc::new(AtomicBool::new(false)),
        violation: Mutex::new(None),
        running: AtomicUsize::new(0),
    });
    // Ctrl-C ends the run early, with its summary.
    signal_hook::flag::register(signal_hook::consts::SIGINT, run.stop.clone())
        .map_err(|e| format!("handling SIGINT: {e}"))?;
    let mode = args
        .mode
        .to_possible_value()
        .map(|v| v.get_name().to_string());
    println!(
        "oxbow storage torture: {}, mode {}, seed {seed}, writer data in {}",
        humantime::format_duration(duration),
        mode.unwrap_or_default(),
        work.display()
    );
    let mut threads = Vec::new();
    if args.mode != Mode::Kill {
        let for_sim = run.clone();
        threads.push(on_executor("torture-sim", &run, move || {
            simulate(for_sim, seed)
        })?);
    }
    if args.mode != Mode::Sim {
        let (for_kill, work) = (run.clone(), work.clone());
        threads.push(on_executor("torture-kill", &run, move || {
            kill_loop(for_kill, work, seed)
        })?);
    }
    let mut next_progress = started + PROGRESS_EVERY;
    while run.running.load(Ordering::Acquire) > 0 {
        std::thread::sleep(FINISH_CHECK);
        if Instant::now() >= next_progress {
            eprintln!(
                "{:>6.0} s  {}",
                started.elapsed().as_secs_f64(),
                progress(&run.totals, args.mode)
            );
            next_progress += PROGRESS_EVERY;
        }
    }
    let mut setup_error = None;
    for thread in threads {
        let outcome = (thread.join()).unwrap_or_else(|e| Err(format!("a torture thread: {e}")));
        if let Err(e) = outcome {
            setup_error.get_or_insert(e);
        }
    }
    print!("{}", summary(&run.totals, args.mode, started.elapsed()));
    if let Some(e) = setup_error {
        return Err(e);
    }
    let violation = run
        .violation
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match violation {
        None => {
            let _ = std::fs::remove_dir_all(&work);
            println!("no violations");
            Ok(ExitCode::SUCCESS)
        }
        Some(violation) => {
            println!("VIOLATION: {violation}");
            println!("the writer's data is kept in {}", work.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs `work` on a glommio executor of its own thread, counted in `run.running` until done.
fn on_executor<F, Fut>(
    name: &str,
    run: &Arc<Run>,
    work: F,
) -> Result<glommio::ExecutorJoinHandle<Result<(), String>>, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    run.running.fetch_add(1, Ordering::AcqRel);
    let counted = run.clone();
    glommio::LocalExecutorBuilder::default()
        .name(name)
        .spawn(move || async move {
            let outcome = work().await;
            counted.running.fetch_sub(1, Ordering::AcqRel);
            outcome
        })
        .map_err(|e| {
            run.running.fetch_sub(1, Ordering::AcqRel);
            format!("starting the {name} executor: {e}")
        })
}

/// Simulated power losses: case after case from `seed` until the run is over.
async fn simulate(run: Arc<Run>, seed: u64) -> Result<(), String> {
    let t = &run.totals;
    for case in seed.. {
        if run.over() {
            break;
        }
        match sim::run_case(case).await {
            Ok(s) => {
                add(&t.sim_cases, 1);
                add(&t.sim_acks, s.acks);
                add(&t.sim_crashes, s.crashes);
                add(&t.sim_truncations, s.truncations);
                add(&t.sim_retentions, s.retentions);
                add(&t.sim_recoveries, s.recoveries_checked);
                add(&t.sim_batches, s.batches_checked);
            }
            Err(violation) => {
                run.failed(format!(
                    "simulation case {case}: {violation} (replay: oxbow storage torture \
                     --mode sim --seed {case})"
                ));
                break;
            }
        }
    }
    Ok(())
}

/// One writer's life as its killer saw it.
struct Cycle {
    number: u64,
    flush: FlushPolicy,
    epoch: i32,
}

/// Real SIGKILLs: writer after writer on one partition, each killed and checked.
async fn kill_loop(run: Arc<Run>, work: PathBuf, seed: u64) -> Result<(), String> {
    let data = work.join("kill");
    let dir = data.join("topic").join("0");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
    oxbow_storage::prepare_shard_io(&data, "torture")
        .await
        .map_err(|e| format!("preparing direct I/O in {data:?}: {e}"))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = Model::default();
    let log = work.join("writer.log");
    for number in 1.. {
        if run.over() {
            break;
        }
        let cycle = Cycle {
            number,
            flush: [
                FlushPolicy::Always,
                FlushPolicy::Interval,
                FlushPolicy::Never,
            ][rng.usize(..3)],
            epoch: number as i32,
        };
        let outcome = match kill_one_writer(&run, &dir, &log, &cycle, &mut rng, &mut model) {
            Ok(()) => check_after_kill(&run, &dir, &cycle, &mut model).await,
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
    model: &mut Model,
) -> Result<(), String> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {log:?}: {e}"))?;
    let flush = match cycle.flush {
        FlushPolicy::Always => "always",
        FlushPolicy::Interval => "interval",
        FlushPolicy::Never => "never",
    };
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let mut child = Command::new(exe)
        .args(["storage", "torture-writer", "--dir"])
        .arg(dir)
        .args(["--epoch", &cycle.epoch.to_string()])
        .args(["--first-id", &(cycle.number * IDS_PER_WRITER).to_string()])
        .args(["--seed", &rng.u64(..).to_string(), "--flush", flush])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("starting a writer: {e}"))?;
    let lines = forward_lines(&mut child)?;
    // Some writers die before they open the log: recovery must survive that too.
    let kill_after_events = rng.u64(0..=KILL_AFTER_EVENTS_MAX);
    let kill_at = Instant::now() + KILL_AFTER_MAX.mul_f64(rng.f64());
    let mut events = 0;
    while events < kill_after_events && Instant::now() < kill_at && !run.over() {
        match lines.recv_timeout(kill_at.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                take(&line?, cycle, model, &run.totals)?;
                events += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!("the writer stopped by itself ({status})"));
            }
        }
    }
    child
        .kill()
        .map_err(|e| format!("killing the writer: {e}"))?;
    child
        .wait()
        .map_err(|e| format!("waiting for the writer: {e}"))?;
    add(&run.totals.kills, 1);
    // What it printed before it died was acknowledged too.
    for line in lines {
        take(&line?, cycle, model, &run.totals)?;
    }
    Ok(())
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

/// Takes one event into the model.
fn take(line: &str, cycle: &Cycle, model: &mut Model, totals: &Totals) -> Result<(), String> {
    match line.parse::<Event>()? {
        Event::Ack { id, base, last } => {
            add(&totals.kill_acks, 1);
            let acked = Acked {
                id,
                epoch: cycle.epoch,
                last_offset: last,
            };
            model.acked(base, acked).map_err(|v| v.to_string())
        }
        Event::Truncating { to } => {
            add(&totals.kill_truncations, 1);
            model.forget_from(to);
            Ok(())
        }
        Event::Retained { .. } => {
            add(&totals.kill_retentions, 1);
            Ok(())
        }
    }
}

/// Reopens the killed writer's partition (recovery), checks it against the model, closes it
/// and verifies every frame of every segment.
async fn check_after_kill(
    run: &Run,
    dir: &Path,
    cycle: &Cycle,
    model: &mut Model,
) -> Result<(), Violation> {
    let config = kill::config(cycle.flush);
    let partition = Partition::open(dir, config, OpenOptions::default())
        .await
        .map_err(|e| Violation(format!("recovery after the kill failed: {e}")))?;
    let checked = model.check(&partition, Promise::AckedSurvive, true).await;
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

fn progress(t: &Totals, mode: Mode) -> String {
    let sim = format!(
        "simulation {} cases, {} crashes",
        get(&t.sim_cases),
        get(&t.sim_crashes)
    );
    let kill = format!(
        "kill -9 {} writers, {} acks",
        get(&t.kills),
        get(&t.kill_acks)
    );
    match mode {
        Mode::Both => format!("{sim} | {kill}"),
        Mode::Sim => sim,
        Mode::Kill => kill,
    }
}

fn summary(t: &Totals, mode: Mode, elapsed: Duration) -> String {
    let mut text = format!("ran {:.1} s\n", elapsed.as_secs_f64());
    if mode != Mode::Kill {
        text += &format!(
            "simulated power losses: {} cases, {} acks, {} crashes, {} truncations, {} retention \
             passes, {} recoveries checked ({} batches compared)\n",
            get(&t.sim_cases),
            get(&t.sim_acks),
            get(&t.sim_crashes),
            get(&t.sim_truncations),
            get(&t.sim_retentions),
            get(&t.sim_recoveries),
            get(&t.sim_batches)
        );
    }
    if mode != Mode::Sim {
        text += &format!(
            "real SIGKILLs: {} writers killed, {} acks, {} truncations, {} retention passes; \
             after each kill every acknowledged batch was found: {} batches ({:.1} MB) and {} \
             segments checked\n",
            get(&t.kills),
            get(&t.kill_acks),
            get(&t.kill_truncations),
            get(&t.kill_retentions),
            get(&t.kill_batches),
            get(&t.kill_bytes) as f64 / 1e6,
            get(&t.kill_segments)
        );
    }
    text
}

/// The writer process: appends until killed, one line per event on stdout.
pub fn writer(args: WriterArgs) -> Result<ExitCode, String> {
    let flush = match args.flush.as_str() {
        "always" => FlushPolicy::Always,
        "interval" => FlushPolicy::Interval,
        "never" => FlushPolicy::Never,
        other => return Err(format!("--flush {other:?}: use always, interval or never")),
    };
    let data = args
        .dir
        .parent()
        .and_then(Path::parent)
        .ok_or("--dir is <data>/<topic>/<partition>")?
        .to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .name("torture-writer")
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&data, "writer")
                .await
                .map_err(|e| format!("preparing direct I/O in {data:?}: {e}"))?;
            let partition = Partition::open(&args.dir, kill::config(flush), OpenOptions::default())
                .await
                .map_err(|e| format!("opening {:?}: {e}", args.dir))?;
            let report: Rc<dyn Fn(Event) -> std::io::Result<()>> = Rc::new(|event| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{event}")?;
                out.flush()
            });
            kill::write_until_killed(
                Rc::new(partition),
                args.epoch,
                args.first_id,
                args.seed,
                report,
            )
            .await
            .map_err(|v| v.to_string())
        })
        .map_err(|e| format!("starting the writer: {e}"))?
        .join()
        .map_err(|e| format!("the writer: {e}"))??;
    Ok(ExitCode::SUCCESS)
}
