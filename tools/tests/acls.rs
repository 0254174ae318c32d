//! Kafka ACLs, driven by unmodified clients: a principal without Write gets
//! TOPIC_AUTHORIZATION_FAILED and nothing is appended; without Read on a group it cannot join;
//! prefixed ACLs match; a DENY beats an ALLOW; ACLs survive a restart; every denial is counted
//! and audited. The operator's tools (`oxbow acl`, `oxbow user`) use a loopback PLAINTEXT
//! listener whose anonymous principal is a super user, as a Kafka operator's localhost
//! listener often is; clients authenticate with SCRAM on a SASL_PLAINTEXT listener.

mod common;

use common::pki::kafka_listener as listener;
use common::{field, http_get, kcat, sample, Broker, CONFLUENT_CLIENT};
use std::path::Path;
use std::process::Command;

/// The broker and its ready line.
fn start(dir: &Path, super_users: &str) -> (Broker, String) {
    let toml = format!(
        "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SASL_PLAINTEXT\"\n\
         [authorizer]\nenabled = true\nsuper_users = [{super_users}]\n\
         [authentication]\nfailure_delay_ms = 10\n"
    );
    common::start_configured(dir, &toml)
}

/// `oxbow ARGS` with `input` on standard input.
fn oxbow(args: &[&str], input: &str) -> (bool, String) {
    common::oxbow_command(args, None, input)
}

fn acl(internal: &str, args: &[&str]) {
    let (ok, said) = oxbow(&[&["acl", "--broker", internal][..], args].concat(), "");
    assert!(ok, "oxbow acl {args:?}: {said}");
}

/// confluent_client.py as `user` over SASL/SCRAM; returns success and all it printed.
fn as_user(user: &str, args: &[&str]) -> (bool, String) {
    let settings = [
        "security.protocol=sasl_plaintext".to_string(),
        "sasl.mechanism=SCRAM-SHA-512".to_string(),
        format!("sasl.username={user}"),
        format!("sasl.password={user}-pw"),
    ];
    let mut command = Command::new("python3");
    command.arg(CONFLUENT_CLIENT).args(args);
    for setting in &settings {
        command.args(["--client-config", setting]);
    }
    let output = command.output().unwrap();
    let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// Messages in `topic`, read by kcat through the operator's listener.
fn stored(internal: &str, topic: &str) -> usize {
    let args = ["-C", "-t", topic, "-o", "beginning", "-e", "-q"];
    let (ok, out, err) = kcat(internal, &args, None);
    assert!(ok, "{err}");
    String::from_utf8_lossy(&out).lines().count()
}

#[test]
fn acls_decide_who_produces_and_joins_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, ready) = start(dir.path(), "\"User:admin\", \"User:ANONYMOUS\"");
    let internal = listener(&broker, "INTERNAL");
    for user in ["alice", "bob", "admin"] {
        let args = [
            "user",
            "create",
            user,
            "--password-stdin",
            "--broker",
            &internal,
        ];
        let (ok, said) = oxbow(&args, &format!("{user}-pw\n"));
        assert!(ok, "{said}");
    }
    for topic in ["orders-eu", "orders-secret", "payments"] {
        let (ok, _, err) = kcat(&internal, &["-P", "-t", topic], Some(b"seed\n"));
        assert!(ok, "{err}");
    }
    // alice: every orders-* topic (prefixed), except orders-secret (a DENY beats the ALLOW),
    // and the group billing.
    acl(
        &internal,
        &[
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "Write",
            "--operation",
            "Read",
            "--topic",
            "orders-",
            "--prefixed",
        ],
    );
    acl(
        &internal,
        &[
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "Write",
            "--deny",
            "--topic",
            "orders-secret",
        ],
    );
    acl(
        &internal,
        &[
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "Read",
            "--group",
            "billing",
        ],
    );
    let (ok, listing) = oxbow(
        &["acl", "list", "--output", "json", "--broker", &internal],
        "",
    );
    assert!(
        ok && listing.matches("User:alice").count() == 4,
        "{listing}"
    );

    let sasl = listener(&broker, "SASL_PLAINTEXT");
    let produce = |user: &str, topic: &str| {
        as_user(
            user,
            &[
                "produce",
                "--bootstrap",
                &sasl,
                "--topic",
                topic,
                "--count",
                "5",
                "--timeout-ms",
                "10000",
            ],
        )
    };
    let (ok, said) = produce("alice", "orders-eu");
    assert!(ok, "{said}");
    for (user, topic) in [
        ("alice", "payments"),
        ("alice", "orders-secret"),
        ("bob", "orders-eu"),
    ] {
        let (ok, said) = produce(user, topic);
        assert!(
            !ok && said.contains("TOPIC_AUTHORIZATION_FAILED"),
            "{user} to {topic}: {said}"
        );
    }
    assert_eq!(stored(&internal, "orders-eu"), 6);
    assert_eq!(
        stored(&internal, "orders-secret"),
        1,
        "a denied produce appended"
    );
    assert_eq!(
        stored(&internal, "payments"),
        1,
        "a denied produce appended"
    );

    let consume = |group: &str| {
        let args = [
            "group-consume",
            "--bootstrap",
            &sasl,
            "--topic",
            "orders-eu",
            "--group",
            group,
        ];
        as_user(
            "alice",
            &[&args[..], &["--expect", "6", "--timeout-ms", "8000"]].concat(),
        )
    };
    let (ok, said) = consume("billing");
    assert!(ok && said.matches("msg ").count() == 6, "{said}");
    let (ok, said) = consume("shipping");
    assert!(!ok && said.contains("GROUP_AUTHORIZATION_FAILED"), "{said}");

    // Admin calls answer per resource: alice may write orders-eu, not grow, reconfigure or
    // trim it.
    for (op, refused) in [
        ("add-partitions", "error TOPIC_AUTHORIZATION_FAILED"),
        ("alter-config", "error TOPIC_AUTHORIZATION_FAILED"),
        ("delete-records", "error 0 TOPIC_AUTHORIZATION_FAILED"),
    ] {
        let args = [
            "admin",
            "--op",
            op,
            "--bootstrap",
            &sasl,
            "--topic",
            "orders-eu",
        ];
        let (ok, said) = as_user(
            "alice",
            &[
                &args[..],
                &["--partitions", "3", "--config", "retention.ms=1000"],
                &["--delete", "0=3"],
            ]
            .concat(),
        );
        assert!(ok && said.contains(refused), "{op}: {said}");
    }
    assert_eq!(stored(&internal, "orders-eu"), 6, "denied deletion deleted");
    let args = [
        "group-admin",
        "--bootstrap",
        &sasl,
        "--topic",
        "orders-eu",
        "--group",
        "billing",
    ];
    let (ok, said) = as_user("alice", &args);
    assert!(
        ok && said.contains("error GROUP_AUTHORIZATION_FAILED"),
        "{said}"
    );

    // Kafka's AdminClient manages ACLs as the super user admin.
    let (ok, said) = as_user("admin", &["acls", "--bootstrap", &sasl, "--topic", "x-"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("match User:carol PREFIXED") && said.contains("deleted 1"),
        "{said}"
    );
    assert!(said.contains("left 0"), "{said}");
    let (ok, said) = as_user("alice", &["acls", "--bootstrap", &sasl, "--topic", "x-"]);
    assert!(
        !ok && said.contains("CLUSTER_AUTHORIZATION_FAILED"),
        "{said}"
    );

    // Counted and audited.
    let mut broker = broker;
    let audit = broker.wait_for("denied");
    assert!(audit.contains("principal=User:"), "{audit}");
    let metrics = http_get(&field(&ready, "metrics"), "/metrics");
    assert!(
        sample(&metrics, "oxbow_authorization_denials_total") >= 4.0,
        "{metrics}"
    );
    drop(broker);

    // kill -9 and back: the users and ACLs are in the metadata.
    let (broker, _) = start(dir.path(), "\"User:admin\", \"User:ANONYMOUS\"");
    let sasl = listener(&broker, "SASL_PLAINTEXT");
    let produce = |topic: &str| {
        as_user(
            "alice",
            &[
                "produce",
                "--bootstrap",
                &sasl,
                "--topic",
                topic,
                "--count",
                "1",
                "--timeout-ms",
                "10000",
            ],
        )
    };
    assert!(produce("orders-eu").0);
    let (ok, said) = produce("payments");
    assert!(!ok && said.contains("TOPIC_AUTHORIZATION_FAILED"), "{said}");

    // Removing alice's prefixed ALLOW closes orders-eu to her.
    let internal = listener(&broker, "INTERNAL");
    acl(
        &internal,
        &[
            "remove",
            "--principal",
            "User:alice",
            "--topic",
            "orders-",
            "--prefixed",
        ],
    );
    let (ok, said) = produce("orders-eu");
    assert!(!ok && said.contains("TOPIC_AUTHORIZATION_FAILED"), "{said}");
}

#[test]
fn without_acls_nothing_is_allowed_on_either_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, ready) = start(dir.path(), "\"User:admin\"");
    let internal = listener(&broker, "INTERNAL");
    // Anonymous on the Kafka listener: no topic to see, no write, no admin.
    let (ok, _, err) = kcat(
        &internal,
        &["-P", "-t", "open", "-X", "message.timeout.ms=5000"],
        Some(b"x\n"),
    );
    assert!(!ok && err.contains("Topic authorization failed"), "{err}");
    let (ok, said) = oxbow(&["acl", "list", "--broker", &internal], "");
    assert!(!ok && said.contains("31"), "{said}");
    // And on the native protocol.
    let native = field(&ready, "native");
    let (ok, said) = oxbow(&["produce", "--broker", &native, "--topic", "open"], "x\n");
    assert!(!ok && said.contains("not authorized"), "{said}");
    broker.wait_for("denied");
}
