//! `oxbow bench` against the real broker over both protocols: the figures it reports add up
//! (every message sent on the schedule is acknowledged and delivered, each one timed once),
//! its files are written and well formed, bad settings are refused before anything starts,
//! and its latency correction catches a stall that the uncorrected measure hides.

mod common;

use common::{field, Broker};
use serde_json::Value;
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::Duration;

fn start() -> (Broker, tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&["--data-dir", data.to_str().unwrap(), "--shards", "2"]);
    let ready = broker.wait_for("oxbow ready");
    let (kafka, native) = (field(&ready, "kafka"), field(&ready, "native"));
    (broker, dir, kafka, native)
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// Runs `oxbow bench` with `flags` (space-separated) and the common ones (protocol, broker,
/// no warm-up, quiet, JSON to `json`); returns the JSON report.
fn run_ok(
    protocol: &str,
    broker: &str,
    json: &Path,
    flags: &str,
    files: &[(&str, &Path)],
) -> Value {
    let mut args = vec![
        "--protocol",
        protocol,
        "--broker",
        broker,
        "--warmup",
        "0s",
        "--quiet",
    ];
    args.extend(flags.split_whitespace());
    args.extend(["--json", json.to_str().unwrap()]);
    for (flag, path) in files {
        args.extend([*flag, path.to_str().unwrap()]);
    }
    let out = bench(&args);
    assert!(
        out.status.success(),
        "oxbow bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

fn number(report: &Value, path: &[&str]) -> f64 {
    let mut at = report;
    for key in path {
        at = &at[key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {report:#}"))
}

/// A fixed schedule of a known count: all of it acknowledged, delivered and timed.
fn schedule_adds_up(protocol: &str, broker: &str, dir: &Path) {
    let json = dir.join(format!("{protocol}.json"));
    let log = dir.join(format!("{protocol}.hlog"));
    let plot = dir.join(format!("{protocol}.svg"));
    let report = run_ok(
        protocol,
        broker,
        &json,
        "--workload produce-consume --partitions 4 --producers 2 --consumers 2 \
         --message-size 200 --rate 4000 --messages 1500 --duration 30s --linger 0ms --acks all",
        &[("--hdr-log", &log), ("--plot", &plot)],
    );
    let sent = 2.0 * 1500.0;
    assert_eq!(
        number(&report, &["produced", "messages"]),
        sent,
        "{report:#}"
    );
    assert_eq!(number(&report, &["produced", "bytes"]), sent * 200.0);
    assert_eq!(
        number(&report, &["consumed", "messages"]),
        sent,
        "{report:#}"
    );
    assert_eq!(number(&report, &["publish_latency_ms", "count"]), sent);
    assert_eq!(number(&report, &["end_to_end_latency_ms", "count"]), sent);
    assert_eq!(number(&report, &["unstamped_messages"]), 0.0);
    // 1,500 messages at 2,000 msg/s each: the schedule spans 0.75 s, so the measured rate
    // cannot be above the target (an open loop never sends ahead of its slots).
    assert!(number(&report, &["produced", "messages_per_second"]) <= 4_000.0 * 1.05);
    let p = &report["end_to_end_latency_ms"];
    assert!(
        number(p, &["p50"]) <= number(p, &["p99"]) && number(p, &["p99"]) <= number(p, &["max"])
    );
    assert_eq!(report["configuration"]["protocol"], protocol);
    assert!(number(&report, &["machine", "cores"]) >= 1.0);
    assert!(!report["per_second"].as_array().unwrap().is_empty());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("Tag=publish,") && log.contains("Tag=e2e,"),
        "{log}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("percentile") && svg.contains("99.9%"));
}

#[test]
fn fixed_rate_runs_over_both_protocols_account_for_every_message() {
    let (_broker, dir, kafka, native) = start();
    schedule_adds_up("kafka", &kafka, dir.path());
    schedule_adds_up("native", &native, dir.path());
}

#[test]
fn produce_then_consume_from_earliest_reads_what_was_sent() {
    let (_broker, dir, kafka, native) = start();
    for (protocol, broker) in [("kafka", &kafka), ("native", &native)] {
        let topic = format!("bench-earliest-{protocol}");
        let produced = dir.path().join(format!("{protocol}-produce.json"));
        let flags = format!("--workload produce --topic {topic} --partitions 3 --messages 5000");
        let report = run_ok(protocol, broker, &produced, &flags, &[]);
        assert_eq!(number(&report, &["produced", "messages"]), 5000.0);
        assert!(report["end_to_end_latency_ms"].is_null());
        let consumed = dir.path().join(format!("{protocol}-consume.json"));
        let flags = format!(
            "--workload consume --topic {topic} --from earliest --consumers 2 --drain-timeout 1s"
        );
        let report = run_ok(protocol, broker, &consumed, &flags, &[]);
        assert_eq!(
            number(&report, &["consumed", "messages"]),
            5000.0,
            "{report:#}"
        );
        assert_eq!(number(&report, &["produced", "messages"]), 0.0);
    }
}

#[test]
fn bad_settings_are_refused_before_anything_starts() {
    // Port 9 on loopback: nothing listens, so only validation can answer first.
    for (args, expected) in [
        (vec!["--partitions", "0"], "--partitions must be at least 1"),
        (vec!["--rate=-5"], "--rate"),
        (vec!["--rate", "fast"], "--rate"),
        (vec!["--message-size", "8"], "--message-size"),
        (vec!["--duration", "soon"], "--duration"),
        (vec!["--producers", "0"], "--producers"),
        (vec!["--acks", "2"], "--acks"),
        (vec!["--workload", "consume"], "--topic"),
        (vec!["--correct-omission", "false"], "--correct-omission"),
        (vec!["--repeat", "0"], "--repeat"),
        (vec!["--repeat", "2", "--plot", "p.svg"], "--repeat"),
    ] {
        let mut all = vec!["--broker", "127.0.0.1:9"];
        all.extend(&args);
        let out = bench(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    }
    let out = bench(&["--broker", "127.0.0.1:9", "--protocol", "kafka"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("connecting to") && stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );
}

/// Starts `oxbow <args>` and returns it with its progress lines (standard error).
fn spawn_bench(args: &[&str]) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = BufReader::new(bench.stderr.take().unwrap()).lines();
    (bench, progress)
}

/// Stops the broker (SIGSTOP) for `length`: the stall a test measures.
fn stall(broker: &Broker, length: Duration) {
    let pid = broker.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The stall itself: how long the broker stays stopped.
    std::thread::sleep(length);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}

/// A fixed-rate produce run (5,000 msg/s for 6 s, 4 batches in flight) during which the broker
/// is stopped (SIGSTOP) for 300 ms as measuring starts; returns the report.
fn stalled_run(broker: &Broker, protocol: &str, addr: &str, correct: bool, dir: &Path) -> Value {
    let json = dir.join(format!("stall-{protocol}-{correct}.json"));
    let correct = correct.to_string();
    let args = [
        "bench",
        "--protocol",
        protocol,
        "--broker",
        addr,
        "--workload",
        "produce",
        "--rate",
        "5000",
        "--warmup",
        "1s",
        "--duration",
        "6s",
        "--linger",
        "0ms",
        "--in-flight",
        "4",
        "--message-size",
        "100",
        "--correct-omission",
        &correct,
        "--json",
        json.to_str().unwrap(),
    ];
    let (mut bench, mut progress) = spawn_bench(&args);
    let mut seen = Vec::new();
    loop {
        let line = (progress.next())
            .unwrap_or_else(|| panic!("the bench ended before measuring: {seen:#?}"))
            .unwrap();
        if line.contains("warm-up done") {
            break;
        }
        seen.push(line);
    }
    stall(broker, Duration::from_millis(300));
    progress.for_each(drop);
    assert!(
        bench.wait().unwrap().success(),
        "oxbow bench {args:?} failed"
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// The coordinated-omission correction catches a stall, over both protocols. Timed from their
/// slots in the schedule, the ~1,500 messages the stopped broker held back put the 300 ms in
/// p99.9 and max. Timed from when the client got to send them (correction off), Kafka's
/// bench client, which waits for a free in-flight slot before it sends, saw the stall only in
/// the few in flight, and p99.9 hides it: the error the correction exists to fix. The native
/// producer keeps taking messages while its slots are out (they gather in the open batch), so
/// its sends keep their slots and the stall shows either way.
#[test]
fn a_300_ms_stall_shows_in_p99_9_only_when_latency_is_corrected_for_omission() {
    let (broker, dir, kafka, native) = start();
    for (protocol, addr) in [("kafka", &kafka), ("native", &native)] {
        let corrected = stalled_run(&broker, protocol, addr, true, dir.path());
        let p = &corrected["publish_latency_ms"];
        assert!(
            number(p, &["p99_9"]) >= 250.0 && number(p, &["max"]) >= 280.0,
            "{protocol}, corrected: {p:#}"
        );
        let uncorrected = stalled_run(&broker, protocol, addr, false, dir.path());
        let p = &uncorrected["publish_latency_ms"];
        let hidden = number(p, &["p99_9"]) < 100.0;
        assert_eq!(
            hidden,
            protocol == "kafka",
            "{protocol}, uncorrected: {p:#}"
        );
        let q = &corrected["publish_latency_ms"];
        eprintln!(
            "{protocol}: p99.9 / max {:.1} / {:.1} ms corrected, {:.1} / {:.1} ms uncorrected",
            number(q, &["p99_9"]),
            number(q, &["max"]),
            number(p, &["p99_9"]),
            number(p, &["max"])
        );
        // Every slot of the 6 s window, acknowledged however late, counted once.
        assert_eq!(
            number(&corrected, &["produced", "messages"]),
            30_000.0,
            "{protocol}: {corrected:#}"
        );
    }
}

/// The window counts exactly the messages sent inside it, however late their answers and
/// deliveries come. The broker stops twice: across the end of the warm-up (so the warm-up's
/// last messages are acknowledged and delivered inside the window) and across the end of the
/// window for 2 s (so the window's last messages arrive well after it). 2,000 msg/s for 3 s is
/// 6,000 slots, each counted once; producers and consumers are reported as having fallen
/// behind, their rates over the time they took.
#[test]
fn the_window_counts_exactly_the_messages_sent_in_it_and_says_when_consumers_fell_behind() {
    let (broker, dir, kafka, native) = start();
    for (protocol, addr) in [("kafka", &kafka), ("native", &native)] {
        let json = dir.path().join(format!("window-{protocol}.json"));
        let args = [
            "bench",
            "--protocol",
            protocol,
            "--broker",
            addr,
            "--workload",
            "produce-consume",
            "--rate",
            "2000",
            "--warmup",
            "2s",
            "--duration",
            "3s",
            "--linger",
            "0ms",
            "--message-size",
            "100",
            "--json",
            json.to_str().unwrap(),
        ];
        let (mut bench, mut progress) = spawn_bench(&args);
        let first = progress.next().unwrap().unwrap();
        assert!(first.starts_with("warming up"), "{first}");
        // Times from the start of the warm-up: stopped over 1.5-2.5 s and 4.5-6.5 s.
        std::thread::sleep(Duration::from_millis(1_500));
        stall(&broker, Duration::from_secs(1));
        std::thread::sleep(Duration::from_secs(2));
        stall(&broker, Duration::from_secs(2));
        progress.for_each(drop);
        assert!(bench.wait().unwrap().success(), "oxbow bench {args:?}");
        let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        for count in [
            &["produced", "messages"][..],
            &["consumed", "messages"],
            &["publish_latency_ms", "count"],
            &["end_to_end_latency_ms", "count"],
        ] {
            assert_eq!(
                number(&report, count),
                6_000.0,
                "{protocol} {count:?}: {report:#}"
            );
        }
        // The 2 s stall held the window's last answers and deliveries: both are behind, and
        // their rates are over the time they took, not the 3 s schedule.
        for (behind, after) in [
            ("producers_fell_behind", "answered_after_window_seconds"),
            ("consumers_fell_behind", "delivered_after_window_seconds"),
        ] {
            assert_eq!(report[behind], true, "{report:#}");
            assert!(number(&report, &[after]) >= 1.4, "{report:#}");
        }
        assert!(
            number(&report, &["produced", "seconds"]) >= 4.4,
            "{report:#}"
        );
        assert_eq!(number(&report, &["undelivered_messages"]), 0.0);
    }
}

/// `--repeat 3`: three runs, each reported, and a summary whose medians are those of the runs.
#[test]
fn repeated_runs_report_every_run_and_the_median_of_each_figure() {
    let (_broker, dir, _kafka, native) = start();
    let json = dir.path().join("repeat.json");
    let out = bench(&[
        "--protocol",
        "native",
        "--broker",
        &native,
        "--workload",
        "produce-consume",
        "--rate",
        "2000",
        "--messages",
        "400",
        "--warmup",
        "0s",
        "--repeat",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("3 runs of oxbow bench: native"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for run in 1..=3 {
        assert!(
            stderr.contains(&format!("run {run}/3: produced")),
            "{stderr}"
        );
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let mut topics = Vec::new();
    let mut p99s = Vec::new();
    for run in runs {
        assert_eq!(number(run, &["produced", "messages"]), 400.0, "{run:#}");
        assert_eq!(number(run, &["consumed", "messages"]), 400.0, "{run:#}");
        topics.push(run["configuration"]["topic"].as_str().unwrap().to_string());
        p99s.push(number(run, &["end_to_end_latency_ms", "p99"]));
    }
    topics.dedup();
    assert_eq!(topics.len(), 3, "a topic per run: {topics:?}");
    p99s.sort_by(f64::total_cmp);
    let summary = report["summary"].as_array().unwrap();
    let figure = |name: &str| {
        summary
            .iter()
            .find(|s| s["figure"] == name)
            .unwrap_or_else(|| panic!("no {name} in {summary:#?}"))
    };
    let e2e = figure("end-to-end p99 ms");
    assert_eq!(number(e2e, &["median"]), p99s[1]);
    assert_eq!(
        (number(e2e, &["min"]), number(e2e, &["max"])),
        (p99s[0], p99s[2])
    );
    assert!(number(figure("produced msg/s"), &["median"]) > 0.0);
}
