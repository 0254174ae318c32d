//! `oxbow bench`: a load generator and latency recorder for Oxbow (Kafka or native protocol).
//!
//! Consumers subscribe first; then producers send for the warm-up and the measured duration,
//! either as fast as answers come back (`--rate max`, closed loop) or on a fixed schedule
//! (open loop: a pacing thread per producer releases each message at its slot, and latency
//! counts from the slot; see `meter`). A collector on the calling thread empties the meter
//! once a second: a progress line, one interval of the HdrHistogram log, and (after the
//! warm-up) the totals. Every producer and consumer has its own thread, runtime and connection,
//! as separate applications would.

mod figures;
pub(crate) mod kafka;
mod meter;
mod native;
#[cfg(feature = "nats")]
mod nats;
mod payload;
pub mod plan;
mod plot;
mod repeat;
mod report;
pub mod tls;
mod workers;

use meter::{now_ns, Meter};
use plan::{BenchArgs, Plan};
use report::Report;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    pub produce_until_ns: u64,
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
            produce_until_ns: started_ns + (plan.warmup + plan.duration).as_nanos() as u64,
        }
    }

    /// The messages the report counts (see [`meter::Window`]).
    fn window(&self, plan: &Plan) -> meter::Window {
        meter::Window {
            from_ns: self.measure_from_ns,
            until_ns: self.produce_until_ns,
            by: if plan.workload == plan::Workload::Consume {
                meter::Membership::Arrival
            } else {
                meter::Membership::SendTime
            },
        }
    }
}

/// What workers and the collector share about the run's progress.
pub struct Control {
    timeline: OnceLock<Timeline>,
    producers_running: AtomicUsize,
    consumers_running: AtomicUsize,
    /// Wall-clock time the last producer stopped sending (before its last answers came).
    sending_ended_ns: AtomicU64,
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

/// Runs the benchmark the flags describe (`--repeat` times) and prints (and writes) its report.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let plan = args.plan()?;
    let runtime = current_thread_runtime()?;
    let name = format!("oxbow-bench-{}", std::process::id());
    if args.repeat == 1 {
        let report = run_once(&runtime, plan, &name)?;
        report.print(&mut std::io::stdout().lock());
        return report.write_files(&args);
    }
    let mut runs = Vec::with_capacity(args.repeat);
    for run in 1..=args.repeat {
        let mut this = plan.clone();
        // A topic of its own per run, so no run reads or competes with another's data.
        if args.topic.is_none() {
            this.topic = format!("{}-{run}", plan.topic);
        }
        let report = run_once(&runtime, this, &format!("{name}-{run}"))?;
        if !plan.quiet {
            eprintln!("run {run}/{}: {}", args.repeat, report.summary_line());
        }
        runs.push(report);
    }
    let repeated = repeat::Repeated::of(runs);
    repeated.print(&mut std::io::stdout().lock());
    repeated.write_json(args.json.as_deref())
}

/// One run: set-up, the measured load, clean-up.
fn run_once(
    runtime: &tokio::runtime::Runtime,
    mut plan: Plan,
    subscription: &str,
) -> Result<Report, String> {
    // An existing topic (named with --topic) keeps its own partition count.
    plan.partitions = runtime.block_on(workers::setup(&plan))?;
    let outcome = measure(&plan, subscription);
    let cleanup = runtime.block_on(workers::cleanup(&plan, subscription));
    let report = outcome?;
    cleanup.map_err(|e| format!("cleaning up after the run: {e}"))?;
    Ok(report)
}

fn measure(plan: &Plan, subscription: &str) -> Result<Report, String> {
    let meter = Arc::new(Meter::new());
    let control = Arc::new(Control {
        timeline: OnceLock::new(),
        producers_running: AtomicUsize::new(plan.producers),
        consumers_running: AtomicUsize::new(plan.consumers),
        sending_ended_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    if plan.workload == plan::Workload::Consume && plan.warmup.is_zero() {
        // With no warm-up, what consumers read from the moment they subscribe counts, and the
        // run's time starts then too (the report takes the window's start).
        meter.open_window(meter::Window {
            from_ns: now_ns(),
            until_ns: u64::MAX,
            by: meter::Membership::Arrival,
        });
    }
    let mut threads = workers::start_consumers(plan, subscription, &meter, &control)?;
    let timeline = control
        .timeline
        .get_or_init(|| Timeline::starting_now(plan));
    meter.open_window(timeline.window(plan));
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
