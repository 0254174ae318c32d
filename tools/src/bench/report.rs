//! Collection once a second (progress line, HdrHistogram interval log, totals after the
//! warm-up) and the final report: a table, JSON, the log and a percentile plot.

use super::meter::{latency_histogram, Interval, Meter};
use super::plan::{flag_name, BenchArgs, Plan, Workload};
use super::{Control, Timeline};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

/// How often the meter is emptied and a progress line printed.
const TICK: Duration = Duration::from_secs(1);
/// How often the collector looks whether every worker has finished, between ticks.
const FINISH_CHECK: Duration = Duration::from_millis(20);
/// Consumers whose last message of the window arrives later than this after it closed were
/// behind: what they report is how fast they worked through a backlog. Consumers keeping up
/// get it within their end-to-end latency (40 ms at 350 MB/s with 1 MB batches here); one
/// behind by 0.46 s showed a p50 of 813 ms against 37 ms to publish.
const BEHIND_AFTER: Duration = Duration::from_millis(250);

/// Messages and bytes over the measured time.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
pub struct Throughput {
    /// Messages sent inside the window (acknowledged or delivered, whenever that was); for a
    /// consume-only run, messages received inside it.
    pub messages: u64,
    pub bytes: u64,
    /// The window (from the end of the warm-up to the end of sending) or, for consumers, to
    /// the delivery of its last message if that came later.
    pub seconds: f64,
    pub messages_per_second: f64,
    pub megabytes_per_second: f64,
}

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
    pub produced: Throughput,
    pub consumed: Throughput,
    /// Send (intended time under a fixed rate) to acknowledgement.
    pub publish_latency_ms: Option<Percentiles>,
    /// Send (intended time) to delivery to a consumer.
    pub end_to_end_latency_ms: Option<Percentiles>,
    pub per_second: Vec<Second>,
    /// How long after the window closed its last message was acknowledged (acks=0: sent).
    pub answered_after_window_seconds: Option<f64>,
    /// Whether that was more than a quarter of a second: producers (or the broker) could not
    /// keep the schedule, and the produced rate is over the time they took.
    pub producers_fell_behind: bool,
    /// How long after the window closed its last message reached a consumer.
    pub delivered_after_window_seconds: Option<f64>,
    /// Whether that was more than a quarter of a second: consumers were behind, and the consumed rate and
    /// end-to-end latency describe a backlog rather than keeping up.
    pub consumers_fell_behind: bool,
    /// Messages sent in the window less deliveries (a redelivered message counts twice, so
    /// this is a lower bound of what no consumer received before the run ended).
    pub undelivered_messages: u64,
    /// Consumed messages without a bench stamp (not counted in latency).
    pub unstamped_messages: u64,
    #[serde(skip)]
    publish: Histogram<u64>,
    #[serde(skip)]
    end_to_end: Histogram<u64>,
    #[serde(skip)]
    hdr_log: Vec<u8>,
}

fn throughput(messages: u64, bytes: u64, from_ns: u64, until_ns: u64) -> Throughput {
    let seconds = until_ns.saturating_sub(from_ns) as f64 / 1e9;
    let rate = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Throughput {
        messages,
        bytes,
        seconds,
        messages_per_second: rate(messages),
        megabytes_per_second: rate(bytes) / 1e6,
    }
}

/// What the window's tallies say: counts and rates, and whether producers and consumers kept
/// up.
#[derive(Debug, PartialEq)]
struct Figures {
    produced: Throughput,
    consumed: Throughput,
    answered_after_window_seconds: Option<f64>,
    producers_fell_behind: bool,
    delivered_after_window_seconds: Option<f64>,
    consumers_fell_behind: bool,
    undelivered_messages: u64,
}

/// `produced` and `consumed` are the window's (messages, bytes, last arrival: acknowledgement
/// or delivery); the window runs from `from_ns` to `window_end_ns`, when sending ended. Rates
/// run to the window's end or its last arrival, whichever is later: a producer or consumer
/// that falls behind is measured over the time it took, not credited with the schedule.
fn figures(
    workload: Workload,
    from_ns: u64,
    window_end_ns: u64,
    produced: (u64, u64, u64),
    consumed: (u64, u64, u64),
) -> Figures {
    let (received, received_bytes, last_received_ns) = consumed;
    if workload == Workload::Consume {
        return Figures {
            produced: Throughput::default(),
            consumed: throughput(received, received_bytes, from_ns, last_received_ns),
            answered_after_window_seconds: None,
            producers_fell_behind: false,
            delivered_after_window_seconds: None,
            consumers_fell_behind: false,
            undelivered_messages: 0,
        };
    }
    let (sent, sent_bytes, last_answered_ns) = produced;
    let after_window = |last_ns: u64| last_ns.saturating_sub(window_end_ns);
    let behind = |late_ns: &u64| *late_ns > BEHIND_AFTER.as_nanos() as u64;
    let seconds = |ns: u64| ns as f64 / 1e9;
    let consumes = workload == Workload::ProduceConsume;
    let answered_after = (sent > 0).then(|| after_window(last_answered_ns));
    let delivered_after = (consumes && received > 0).then(|| after_window(last_received_ns));
    Figures {
        produced: throughput(
            sent,
            sent_bytes,
            from_ns,
            window_end_ns.max(last_answered_ns),
        ),
        consumed: throughput(
            received,
            received_bytes,
            from_ns,
            window_end_ns.max(last_received_ns),
        ),
        answered_after_window_seconds: answered_after.map(seconds),
        producers_fell_behind: answered_after.as_ref().is_some_and(behind),
        delivered_after_window_seconds: delivered_after.map(seconds),
        // Nothing delivered at all is the worst case of falling behind.
        consumers_fell_behind: consumes && sent > 0 && delivered_after.as_ref().is_none_or(behind),
        undelivered_messages: if consumes {
            sent.saturating_sub(received)
        } else {
            0
        },
    }
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
    let figures = figures(
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
        produced: figures.produced,
        consumed: figures.consumed,
        publish_latency_ms: Percentiles::of(&publish),
        end_to_end_latency_ms: Percentiles::of(&end_to_end),
        per_second,
        answered_after_window_seconds: figures.answered_after_window_seconds,
        producers_fell_behind: figures.producers_fell_behind,
        delivered_after_window_seconds: figures.delivered_after_window_seconds,
        consumers_fell_behind: figures.consumers_fell_behind,
        undelivered_messages: figures.undelivered_messages,
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
            self.produced.messages_per_second,
            self.consumed.messages_per_second,
            p99(&self.publish_latency_ms),
            p99(&self.end_to_end_latency_ms),
            match (self.producers_fell_behind, self.consumers_fell_behind) {
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
        for (name, t) in [("produced", &self.produced), ("consumed", &self.consumed)] {
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
            self.producers_fell_behind,
            self.answered_after_window_seconds,
        ) {
            text += &format!(
                "producers fell behind: the window's last message was answered {after:.1} s \
                 after it closed; the produced rate is over the time that took\n"
            );
        }
        if self.consumers_fell_behind {
            text += &match self.delivered_after_window_seconds {
                Some(after) => format!(
                    "consumers fell behind: the window's last message arrived {after:.1} s \
                     after it closed; the consumed rate and end-to-end latency describe a \
                     backlog\n"
                ),
                None => "consumers fell behind: none of the window's messages arrived\n".into(),
            };
        }
        if self.undelivered_messages > 0 {
            text += &format!(
                "{} messages sent in the window were not delivered before the run ended\n",
                self.undelivered_messages
            );
        }
        text
    }

    /// `--json`, `--hdr-log` and `--plot`.
    pub fn write_files(&self, args: &BenchArgs) -> Result<(), String> {
        let write = |path: &std::path::Path, bytes: &[u8]| {
            std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
        };
        if let Some(path) = &args.json {
            let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
            write(path, &json)?;
        }
        if let Some(path) = &args.hdr_log {
            write(path, &self.hdr_log)?;
        }
        if let Some(path) = &args.plot {
            let series = [("publish", &self.publish), ("end-to-end", &self.end_to_end)];
            let svg = super::plot::percentile_svg(&self.title(), &series)?;
            write(path, svg.as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_consumer_that_keeps_up_is_measured_over_the_window() {
        // 10 s window from t=2 s; the last message arrives 3 ms after it closes.
        let f = figures(
            Workload::ProduceConsume,
            2 * S,
            12 * S,
            (50_000, 50_000_000, 12 * S + 2_000_000),
            (50_000, 50_000_000, 12 * S + 3_000_000),
        );
        assert!((f.produced.seconds - 10.002).abs() < 1e-9);
        assert!((f.produced.messages_per_second - 4_999.0).abs() < 1.0);
        assert!(!f.producers_fell_behind);
        assert!((f.consumed.seconds - 10.003).abs() < 1e-9);
        assert_eq!(f.delivered_after_window_seconds, Some(0.003));
        assert!(!f.consumers_fell_behind);
        assert_eq!(f.undelivered_messages, 0);
    }

    #[test]
    fn a_consumer_behind_the_producers_is_reported_and_its_rate_is_over_its_own_time() {
        // The report of the issue: a 10 s window whose messages took 16.6 s to deliver.
        let f = figures(
            Workload::ProduceConsume,
            2 * S,
            12 * S,
            (41_200_000, 0, 12 * S),
            (41_000_000, 0, 18 * S + 600_000_000),
        );
        assert!(f.consumers_fell_behind);
        assert!((f.consumed.seconds - 16.6).abs() < 1e-9);
        assert!(f.consumed.messages_per_second < f.produced.messages_per_second);
        assert_eq!(f.undelivered_messages, 200_000);
    }

    #[test]
    fn a_run_that_stops_early_is_measured_to_its_last_answer_and_produce_only_has_no_consumers() {
        let f = figures(
            Workload::Produce,
            0,
            S / 2,
            (1_500, 300_000, S / 2),
            (0, 0, 0),
        );
        assert_eq!(f.produced.seconds, 0.5);
        assert_eq!(f.produced.messages_per_second, 3_000.0);
        assert_eq!(f.consumed.messages, 0);
        assert_eq!(f.delivered_after_window_seconds, None);
        assert!(!f.producers_fell_behind && !f.consumers_fell_behind);
        assert_eq!(f.undelivered_messages, 0);
    }

    #[test]
    fn producers_behind_the_schedule_are_credited_with_their_time_not_the_schedule() {
        // 1 M msg/s asked for 10 s; the broker took 50 s to answer them all.
        let f = figures(
            Workload::Produce,
            0,
            10 * S,
            (10_000_000, 0, 50 * S),
            (0, 0, 0),
        );
        assert_eq!(f.produced.messages_per_second, 200_000.0);
        assert!(f.producers_fell_behind);
        assert_eq!(f.answered_after_window_seconds, Some(40.0));
    }

    #[test]
    fn consumers_that_received_nothing_fell_behind() {
        let f = figures(Workload::ProduceConsume, 0, S, (100, 0, S), (0, 0, 0));
        assert!(f.consumers_fell_behind);
        assert_eq!(f.undelivered_messages, 100);
    }
}
