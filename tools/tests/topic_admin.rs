//! Growing a topic and changing its configs over the native protocol (`oxbow topic
//! add-partitions`, `oxbow topic alter-config`): the new partitions take records at once, a
//! lowered `max.message.bytes` refuses a larger record at once and removing it restores the
//! default; shrinking and bad configs are refused with the native protocol's errors; `list` and
//! `describe` print JSON for scripts. Needs kcat (scripts/test installs it).

mod common;

use common::{field, kcat, Broker};
use std::process::Command;

/// `oxbow topic --broker ADDR ARGS`: whether it succeeded, and what it printed (both streams).
fn topic(native: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["topic", "--broker", native])
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), printed)
}

#[test]
fn a_topic_grows_and_its_configs_change_over_the_native_protocol() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&["--data-dir", data.path().to_str().unwrap()]);
    let ready = broker.wait_for("oxbow ready");
    let (native, kafka) = (field(&ready, "native"), field(&ready, "kafka"));
    let ok = |args: &[&str]| {
        let (ok, printed) = topic(&native, args);
        assert!(ok, "{args:?}: {printed}");
        printed
    };
    let refused = |args: &[&str], why: &str| {
        let (ok, printed) = topic(&native, args);
        assert!(!ok && printed.contains(why), "{args:?}: {printed}");
    };
    ok(&["create", "grown", "--partitions", "1"]);
    ok(&["add-partitions", "grown", "--partitions", "3"]);
    assert!(ok(&["list"]).contains("grown\t3 partitions"));
    refused(
        &["add-partitions", "grown", "--partitions", "2"],
        "InvalidPartitions",
    );
    refused(
        &["add-partitions", "nowhere", "--partitions", "2"],
        "UnknownTopic",
    );

    let large = format!("{}\n", "x".repeat(4_000));
    let produce_large = || {
        kcat(
            &kafka,
            &["-P", "-t", "grown", "-p", "2"],
            Some(large.as_bytes()),
        )
    };
    ok(&["alter-config", "grown", "--set", "max.message.bytes=2000"]);
    let (sent, _, err) = produce_large();
    assert!(
        !sent && err.contains("too large"),
        "refused by the new limit: {err}"
    );
    refused(
        &["alter-config", "grown", "--set", "retention.ms=soon"],
        "InvalidConfig",
    );
    refused(
        &["alter-config", "grown", "--set", "no.such.config=1"],
        "InvalidConfig",
    );
    ok(&["alter-config", "grown", "--delete", "max.message.bytes"]);
    let (sent, _, err) = produce_large();
    assert!(sent, "the default limit is back: {err}");
    let described = ok(&["describe", "grown"]);
    assert!(
        described.contains("2\t0\t1\n"),
        "the new partition holds it: {described}"
    );

    // The same, for scripts.
    let json = |args: &[&str]| -> serde_json::Value {
        let printed = ok(&[args, &["--output", "json"]].concat());
        serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{args:?}: {e}: {printed}"))
    };
    let listed = json(&["list"]);
    let grown = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "grown");
    assert_eq!(grown.unwrap()["partitions"], 3, "{listed}");
    let described = json(&["describe", "grown"]);
    assert_eq!(described["topic"], "grown");
    let ends: Vec<u64> = (described["partitions"].as_array().unwrap().iter())
        .map(|p| p["log_end"].as_u64().unwrap())
        .collect();
    assert_eq!(ends, vec![0, 0, 1], "{described}");
    assert_eq!(described["subscriptions"], serde_json::json!([]));
}
