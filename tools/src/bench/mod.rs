//! `oxbow bench`: a load generator and latency recorder for Oxbow (Kafka or native protocol).
//!
//! Consumers subscribe first; then producers send for the warm-up and the measured duration,
//! either as fast as answers come back (`--rate max`, closed loop) or on a fixed schedule
//! (open loop: a pacing thread per producer releases each message at its slot, and latency
//! counts from the slot; see `meter`). A collector on the calling thread empties the meter
//! once a second: a progress line, one interval of the HdrHistogram log, and (after the
//! warm-up) the totals. Every producer and consumer has its own thread, runtime and connection,
//! as separate applications would.

pub(crate) mod kafka;
mod meter;
mod native;
#[cfg(feature = "nats")]
mod nats;
mod payload;
pub mod plan;
mod plot;
mod report;
pub mod tls;
mod workers;

use meter::{now_ns, Meter};
use plan::{BenchArgs, Plan};
use report::Report;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// When the run's phases begin, fixed once every consumer is subscribed (so that consumers
/// starting at `latest` miss nothing).
pub struct Timeline {
    pub started: Instant,
    pub started_ns: u64,
    pub measure_from: Instant,
    pub measure_from_ns: u64,
    pub produce_until: Instant,
}

impl Timeline {
    fn starting_now(plan: &Plan) -> Timeline {
        let (started, started_ns) = (Instant::now(), now_ns());
        Timeline {
            started,
            started_ns,
            measure_from: started + plan.warmup,
            measure_from_ns: started_ns + plan.warmup.as_nanos() as u64,
            produce_until: started + plan.warmup + plan.duration,
        }
    }
}

/// What workers and the collector share about the run's progress.
pub struct Control {
    timeline: OnceLock<Timeline>,
    producers_running: AtomicUsize,
    consumers_running: AtomicUsize,
    /// Set on the first worker error: everyone stops.
    stop: AtomicBool,
}

impl Control {
    fn finished(&self) -> bool {
        self.producers_running.load(Ordering::Acquire) == 0
            && self.consumers_running.load(Ordering::Acquire) == 0
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// A producer's helper task (the one awaiting the broker's answers) ended: its error, or that
/// it failed or ended early.
pub async fn task_failure(task: &mut tokio::task::JoinHandle<Result<(), String>>) -> String {
    match task_result(task).await {
        Err(e) => e,
        Ok(()) => "the answer task stopped early".into(),
    }
}

/// Waits for a producer's helper task and returns its outcome.
pub async fn task_result(
    task: &mut tokio::task::JoinHandle<Result<(), String>>,
) -> Result<(), String> {
    match task.await {
        Ok(result) => result,
        Err(e) => Err(format!("the answer task failed: {e}")),
    }
}

pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))
}

/// Runs the benchmark the flags describe and prints (and writes) its report.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let mut plan = args.plan()?;
    let runtime = current_thread_runtime()?;
    let subscription = format!("oxbow-bench-{}", std::process::id());
    // An existing topic (named with --topic) keeps its own partition count.
    plan.partitions = runtime.block_on(workers::setup(&plan))?;
    let outcome = measure(&plan, &subscription);
    let cleanup = runtime.block_on(workers::cleanup(&plan, &subscription));
    let report = outcome?;
    cleanup.map_err(|e| format!("cleaning up after the run: {e}"))?;
    report.print(&mut std::io::stdout().lock());
    report.write_files(&args)
}

fn measure(plan: &Plan, subscription: &str) -> Result<Report, String> {
    let meter = Arc::new(Meter::new());
    let control = Arc::new(Control {
        timeline: OnceLock::new(),
        producers_running: AtomicUsize::new(plan.producers),
        consumers_running: AtomicUsize::new(plan.consumers),
        stop: AtomicBool::new(false),
    });
    let mut threads = workers::start_consumers(plan, subscription, &meter, &control)?;
    let timeline = control
        .timeline
        .get_or_init(|| Timeline::starting_now(plan));
    threads.extend(workers::start_producers(plan, &meter, &control));
    let collected = report::collect(plan, timeline, &meter, &control);
    let mut first_error = None;
    for thread in threads {
        let outcome = thread
            .join()
            .unwrap_or_else(|_| Err("a bench worker panicked".into()));
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => collected,
    }
}
