//! Collection once a second (progress line, HdrHistogram interval log, totals after the
//! warm-up) and the final report: a table, JSON, the log and a percentile plot.

use super::figures::Figures;
use super::meter::{latency_histogram, Interval, Meter};
use super::plan::{flag_name, BenchArgs, Plan};
use super::{Control, Timeline};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

/// How often the meter is emptied and a progress line printed.
const TICK: Duration = Duration::from_secs(1);
/// How often the collector looks whether every worker has finished, between ticks.
const FINISH_CHECK: Duration = Duration::from_millis(20);

/// Latency distribution in milliseconds.
#[derive(Serialize, Clone)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        let ms = |us: u64| us as f64 / 1_000.0;
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            mean: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            p99_99: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        })
    }
}

/// One second of the measured run.
#[derive(Serialize, Clone)]
pub struct Second {
    /// Seconds since the end of the warm-up, at the end of this interval.
    pub at: f64,
    pub produced_per_second: f64,
    pub produced_megabytes_per_second: f64,
    pub consumed_per_second: f64,
    pub publish_p99_ms: Option<f64>,
    pub end_to_end_p99_ms: Option<f64>,
}

/// Where the run happened.
#[derive(Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub oxbow_version: &'static str,
}

impl Machine {
    fn this_one() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            oxbow_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub configuration: Plan,
    pub machine: Machine,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// What was produced and consumed in the window, and whether anyone fell behind.
    #[serde(flatten)]
    pub figures: Figures,
    /// Send (intended time under a fixed rate) to acknowledgement.
    pub publish_latency_ms: Option<Percentiles>,
    /// Send (intended time) to delivery to a consumer.
    pub end_to_end_latency_ms: Option<Percentiles>,
    pub per_second: Vec<Second>,
    /// Consumed messages without a bench stamp (not counted in latency).
    pub unstamped_messages: u64,
    #[serde(skip)]
    publish: Histogram<u64>,
    #[serde(skip)]
    end_to_end: Histogram<u64>,
    #[serde(skip)]
    hdr_log: Vec<u8>,
}

fn p99_ms(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1_000.0)
}

/// Empties the meter every second until every worker is done; returns the measured totals.
pub fn collect(
    plan: &Plan,
    timeline: &Timeline,
    meter: &Meter,
    control: &Control,
) -> Result<Report, String> {
    let mut log = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "oxbow bench {} {}: latency in microseconds",
            flag_name(&plan.protocol),
            flag_name(&plan.workload)
        ))
        .with_start_time(SystemTime::now())
        .with_max_value_divisor(1_000.0)
        .begin_log_with(&mut log, &mut serializer)
        .map_err(|e| format!("starting the histogram log: {e}"))?;
    // Only messages of the window are in the meter's histograms: adding every interval, the
    // drain after the window included, times each of them once.
    let (mut publish, mut end_to_end) = (latency_histogram(), latency_histogram());
    let mut per_second = Vec::new();
    let mut interval_start = timeline.started;
    let mut next_tick = (timeline.started + TICK).min(timeline.measure_from);
    let mut warmed_up = plan.warmup.is_zero();
    if !warmed_up && !plan.quiet {
        eprintln!("warming up ({:.1} s)", plan.warmup.as_secs_f64());
    }
    loop {
        while Instant::now() < next_tick && !control.finished() {
            std::thread::sleep(
                FINISH_CHECK.min(next_tick.saturating_duration_since(Instant::now())),
            );
        }
        let finished = control.finished();
        let now = Instant::now();
        let interval: Interval = meter.collect();
        let length = now.duration_since(interval_start);
        publish
            .add(&interval.publish_us)
            .map_err(|e| e.to_string())?;
        end_to_end
            .add(&interval.end_to_end_us)
            .map_err(|e| e.to_string())?;
        if warmed_up {
            let tag = |name| Tag::new(name).expect("a valid tag");
            let start = interval_start.duration_since(timeline.started);
            for (name, h) in [
                ("publish", &interval.publish_us),
                ("e2e", &interval.end_to_end_us),
            ] {
                if !h.is_empty() {
                    writer
                        .write_histogram(h, start, length, Some(tag(name)))
                        .map_err(|e| format!("writing the histogram log: {e:?}"))?;
                }
            }
            let seconds = length.as_secs_f64().max(1e-9);
            let second = Second {
                at: now.duration_since(timeline.measure_from).as_secs_f64(),
                produced_per_second: interval.produced.0 as f64 / seconds,
                produced_megabytes_per_second: interval.produced.1 as f64 / seconds / 1e6,
                consumed_per_second: interval.consumed.0 as f64 / seconds,
                publish_p99_ms: p99_ms(&interval.publish_us),
                end_to_end_p99_ms: p99_ms(&interval.end_to_end_us),
            };
            if !plan.quiet {
                let after_window = now > timeline.produce_until;
                eprintln!("{}", progress_line(&second, after_window));
            }
            per_second.push(second);
        } else if now >= timeline.measure_from {
            warmed_up = true;
            if !plan.quiet {
                eprintln!(
                    "warm-up done ({:.1} s), measuring",
                    plan.warmup.as_secs_f64()
                );
            }
        }
        if finished {
            break;
        }
        interval_start = now;
        next_tick = if warmed_up {
            now + TICK
        } else {
            (now + TICK).min(timeline.measure_from)
        };
    }
    drop(writer);
    if !warmed_up {
        return Err("the run ended during the warm-up: shorten --warmup or send more".into());
    }
    if control.stop.load(Ordering::Acquire) {
        // A worker failed; its error is what the caller reports.
        return Err("the run was stopped".into());
    }
    // Producers stop sending at the end of the window, or earlier after --messages.
    let sending_ended_ns = control.sending_ended_ns.load(Ordering::Acquire);
    let window_end_ns = if sending_ended_ns == 0 {
        timeline.produce_until_ns
    } else {
        sending_ended_ns.min(timeline.produce_until_ns)
    };
    let from_ns = meter
        .window()
        .map_or(timeline.measure_from_ns, |w| w.from_ns);
    let figures = Figures::of(
        plan.workload,
        from_ns,
        window_end_ns,
        meter.produced_in_window.read(),
        meter.consumed_in_window.read(),
    );
    Ok(Report {
        configuration: plan.clone(),
        machine: Machine::this_one(),
        started_at: humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_nanos(timeline.started_ns),
        )
        .to_string(),
        figures,
        publish_latency_ms: Percentiles::of(&publish),
        end_to_end_latency_ms: Percentiles::of(&end_to_end),
        per_second,
        unstamped_messages: meter.unstamped.load(Ordering::Acquire),
        publish,
        end_to_end,
        hdr_log: log,
    })
}

/// One second's line; after the window, the messages still arriving are its backlog.
fn progress_line(s: &Second, after_window: bool) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    format!(
        "{:>6.1}s  produced {:>10.0} msg/s {:>8.1} MB/s | consumed {:>10.0} msg/s | p99 publish {} e2e {}{}",
        s.at,
        s.produced_per_second,
        s.produced_megabytes_per_second,
        s.consumed_per_second,
        ms(s.publish_p99_ms),
        ms(s.end_to_end_p99_ms),
        if after_window { "  (after the window)" } else { "" }
    )
}

impl Report {
    /// The human table.
    pub fn print(&self, out: &mut impl Write) {
        let mut text = self.header();
        text += &self.table();
        let _ = out.write_all(text.as_bytes());
    }

    /// The headline figures, for a line per run of `--repeat`.
    pub fn summary_line(&self) -> String {
        let p99 = |p: &Option<Percentiles>| {
            p.as_ref()
                .map_or("-".into(), |p| format!("{:.3} ms", p.p99))
        };
        format!(
            "produced {:.0} msg/s, consumed {:.0} msg/s, p99 publish {}, end-to-end {}{}",
            self.figures.produced.messages_per_second,
            self.figures.consumed.messages_per_second,
            p99(&self.publish_latency_ms),
            p99(&self.end_to_end_latency_ms),
            match (
                self.figures.producers_fell_behind,
                self.figures.consumers_fell_behind
            ) {
                (false, false) => "",
                (true, false) => " (producers fell behind)",
                (false, true) => " (consumers fell behind)",
                (true, true) => " (producers and consumers fell behind)",
            }
        )
    }

    /// What was run, on one line.
    pub fn header(&self) -> String {
        let c = &self.configuration;
        let rate = match c.producer_rate() {
            None => "max".to_string(),
            Some(r) if c.correct_omission => format!("{:.0} msg/s", r * c.producers as f64),
            Some(r) => format!(
                "{:.0} msg/s (latency from sending, not corrected for coordinated omission)",
                r * c.producers as f64
            ),
        };
        format!(
            "oxbow bench: {} {} on {}{} ({} partitions, {} producers, {} consumers), {} B, \
             rate {rate}, acks {}, {:.0} s after {:.0} s warm-up\n",
            flag_name(&c.protocol),
            flag_name(&c.workload),
            c.broker,
            if c.tls.is_some() { " over TLS" } else { "" },
            c.partitions,
            c.producers,
            c.consumers,
            c.message_size,
            c.acks,
            c.duration.as_secs_f64(),
            c.warmup.as_secs_f64()
        )
    }

    fn table(&self) -> String {
        let mut text = format!(
            "{:<10} {:>12} {:>9} {:>12}\n",
            "", "messages", "MB/s", "msg/s"
        );
        for (name, t) in [
            ("produced", &self.figures.produced),
            ("consumed", &self.figures.consumed),
        ] {
            if t.messages > 0 {
                text += &format!(
                    "{name:<10} {:>12} {:>9.1} {:>12.0}\n",
                    t.messages, t.megabytes_per_second, t.messages_per_second
                );
            }
        }
        text += &format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (ms)\n",
            "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, p) in [
            ("publish", &self.publish_latency_ms),
            ("end-to-end", &self.end_to_end_latency_ms),
        ] {
            if let Some(p) = p {
                text += &format!(
                    "{name:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                    p.p50, p.p90, p.p99, p.p99_9, p.p99_99, p.max
                );
            }
        }
        if self.unstamped_messages > 0 {
            text += &format!(
                "{} consumed messages carried no bench stamp (no latency for them)\n",
                self.unstamped_messages
            );
        }
        if let (true, Some(after)) = (
            self.figures.producers_fell_behind,
            self.figures.answered_after_window_seconds,
        ) {
            text += &format!(
                "producers fell behind: the window's last message was answered {after:.1} s \
                 after it closed; the produced rate is over the time that took\n"
            );
        }
        if self.figures.consumers_fell_behind {
            text += &match self.figures.delivered_after_window_seconds {
                Some(after) => format!(
                    "consumers fell behind: the window's last message arrived {after:.1} s \
                     after it closed; the consumed rate and end-to-end latency describe a \
                     backlog\n"
                ),
                None => "consumers fell behind: none of the window's messages arrived\n".into(),
            };
        }
        if self.figures.undelivered_messages > 0 {
            text += &format!(
                "{} messages sent in the window were not delivered before the run ended\n",
                self.figures.undelivered_messages
            );
        }
        text
    }

    /// `--json`, `--hdr-log` and `--plot`.
    pub fn write_files(&self, args: &BenchArgs) -> Result<(), String> {
        if let Some(path) = &args.json {
            write_json(path, self)?;
        }
        if let Some(path) = &args.hdr_log {
            write_file(path, &self.hdr_log)?;
        }
        if let Some(path) = &args.plot {
            let series = [("publish", &self.publish), ("end-to-end", &self.end_to_end)];
            let svg = super::plot::percentile_svg(&self.title(), &series)?;
            write_file(path, svg.as_bytes())?;
        }
        Ok(())
    }

    fn title(&self) -> String {
        let c = &self.configuration;
        format!(
            "oxbow bench {} {}, {} B, {} partitions",
            flag_name(&c.protocol),
            flag_name(&c.workload),
            c.message_size,
            c.partitions
        )
    }
}

/// Writes one of the report's files.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes `value` as pretty JSON (`--json`).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    write_file(path, &json)
}
