//! `oxbow storage torture`: drives the storage engine through random appends, syncs, rolls,
//! retention, truncation and crashes for a set time, checking its invariants after every
//! crash (see `oxbow_storage::torture`), and prints a summary. Two kinds of crash run side by
//! side, each on its own thread:
//! - power losses on the simulated disk: seeded cases of `torture::sim`, one after another;
//! - real SIGKILLs: a writer process (this binary, `storage torture-writer`) appends to a
//!   partition on direct I/O and reports every acknowledged append; it is killed at a random
//!   moment, the partition reopened and checked against what it reported, and its segments
//!   verified frame by frame; then the next writer goes on with the same log.

mod kill;
mod writer;

pub use writer::{writer, WriterArgs};

use crate::bench::plan::flag_name;
use clap::{Args, ValueEnum};
use oxbow_storage::torture::sim;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the main thread looks whether both torture threads have finished.
const FINISH_CHECK: Duration = Duration::from_millis(50);
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

/// What both threads did, read by the progress lines and the summary.
#[derive(Default)]
pub(super) struct Totals {
    sim_cases: AtomicU64,
    sim_acks: AtomicU64,
    sim_crashes: AtomicU64,
    sim_truncations: AtomicU64,
    sim_retentions: AtomicU64,
    sim_deletions: AtomicU64,
    sim_recoveries: AtomicU64,
    sim_batches: AtomicU64,
    kills: AtomicU64,
    kill_acks: AtomicU64,
    kill_truncations: AtomicU64,
    kill_retentions: AtomicU64,
    kill_deletions: AtomicU64,
    kill_batches: AtomicU64,
    kill_bytes: AtomicU64,
    kill_segments: AtomicU64,
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What the threads share: the totals, when to stop, and the first violation.
pub(super) struct Run {
    totals: Totals,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    violation: Mutex<Option<String>>,
    /// Torture threads still working.
    running: AtomicUsize,
}

impl Run {
    pub(super) fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    pub(super) fn failed(&self, what: String) {
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
    println!(
        "oxbow storage torture: {}, mode {}, seed {seed}, writer data in {}",
        humantime::format_duration(duration),
        flag_name(&args.mode),
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
            kill::kill_loop(for_kill, work, seed)
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
    let counted = Running::new(run.clone());
    glommio::LocalExecutorBuilder::default()
        .name(name)
        .spawn(move || async move {
            // Counted out when dropped: also when the code under torture panics.
            let _counted = counted;
            work().await
        })
        .map_err(|e| format!("starting the {name} executor: {e}"))
}

/// One torture thread still working, in `Run::running` until dropped.
struct Running(Arc<Run>);

impl Running {
    fn new(run: Arc<Run>) -> Running {
        run.running.fetch_add(1, Ordering::AcqRel);
        Running(run)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
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
                add(&t.sim_deletions, s.deletions);
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
             passes, {} deletions of records, {} recoveries checked ({} batches compared)\n",
            get(&t.sim_cases),
            get(&t.sim_acks),
            get(&t.sim_crashes),
            get(&t.sim_truncations),
            get(&t.sim_retentions),
            get(&t.sim_deletions),
            get(&t.sim_recoveries),
            get(&t.sim_batches)
        );
    }
    if mode != Mode::Sim {
        text += &format!(
            "real SIGKILLs: {} writers killed, {} acks, {} truncations, {} retention passes, {} \
             deletions of records; after each kill every acknowledged batch was found: {} \
             batches ({:.1} MB) and {} segments checked\n",
            get(&t.kills),
            get(&t.kill_acks),
            get(&t.kill_truncations),
            get(&t.kill_retentions),
            get(&t.kill_deletions),
            get(&t.kill_batches),
            get(&t.kill_bytes) as f64 / 1e6,
            get(&t.kill_segments)
        );
    }
    text
}
