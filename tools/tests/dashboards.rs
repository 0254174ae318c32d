//! The Grafana dashboard and the Prometheus alert rules in `deploy/` name only metrics that a
//! running cluster exports: three nodes under Kafka and native traffic, with a replicated
//! topic, a subscription and a Kafka consumer group, are scraped and every `oxbow_*` name in the two files must be
//! among what they serve. Needs kcat and confluent-kafka (scripts/test installs them).

mod common;

use common::cluster::Cluster;
use common::{http_get, kcat};
use std::collections::BTreeSet;
use std::process::Command;

const TOPIC: &str = "watched";

/// Every `oxbow_*` metric name a file mentions.
fn names_in(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("oxbow_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

fn oxbow(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "oxbow {args:?}: {printed}");
    printed
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let dashboard = names_in(&format!("{root}/grafana/oxbow.json"));
    let alerts = names_in(&format!("{root}/prometheus/alerts.yml"));
    assert!(
        dashboard.len() >= 20 && alerts.len() >= 8,
        "{dashboard:?} {alerts:?}"
    );
    // The dashboard is valid JSON with a panel per query group.
    let parsed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/grafana/oxbow.json")).unwrap(),
    )
    .unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 12);

    let cluster = Cluster::start_settled(3);
    let node = &cluster.nodes[0];
    oxbow(&[
        "topic",
        "create",
        TOPIC,
        "--partitions",
        "2",
        "--replication-factor",
        "3",
        "--broker",
        &node.native,
    ]);
    let lines: String = (0..200).map(|i| format!("message {i}\n")).collect();
    let (sent, _, err) = kcat(
        &node.kafka,
        &["-P", "-t", TOPIC, "-X", "acks=all"],
        Some(lines.as_bytes()),
    );
    assert!(sent, "kcat produce: {err}");
    let (read, out, err) = kcat(
        &node.kafka,
        &["-C", "-t", TOPIC, "-o", "beginning", "-e"],
        None,
    );
    assert!(
        read && out.split(|b| *b == b'\n').count() > 200,
        "kcat consume: {err}"
    );
    oxbow(&[
        "consume",
        "--topic",
        TOPIC,
        "--subscription",
        "watch",
        "--mode",
        "reliable",
        "--count",
        "200",
        "--broker",
        &node.native,
    ]);
    // A Kafka group commits its offsets (the coordinator exports them).
    let consumed = common::confluent(&[
        "group-consume",
        "--bootstrap",
        &node.kafka,
        "--topic",
        TOPIC,
        "--partitions",
        "2",
        "--expect",
        "200",
    ]);
    assert!(
        consumed.lines().filter(|l| l.starts_with("msg ")).count() >= 200,
        "{consumed}"
    );

    let mut exported = BTreeSet::new();
    let (mut ends, mut committed) = (0.0, 0.0);
    for node in &cluster.nodes {
        for line in http_get(&node.metrics, "/metrics").lines() {
            if line.starts_with("oxbow_") {
                let name = line.split(['{', ' ']).next().unwrap();
                exported.insert(name.to_string());
            }
            let value = || line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
            let end = format!("oxbow_partition_log_end_offset{{topic=\"{TOPIC}\"");
            let group = "oxbow_consumer_group_committed_offset{group=\"oxbow-test-group\"";
            if line.starts_with(&end) {
                ends += value();
            } else if line.starts_with(group) {
                committed += value();
            }
        }
    }
    // Each partition is exported by its leader alone, and the group read everything: no lag.
    assert_eq!((ends, committed), (200.0, 200.0));
    let missing: Vec<_> = dashboard
        .union(&alerts)
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\nexported: {exported:?}"
    );
}
