//! The native protocol behind TLS and SCRAM, driven by the `oxbow` CLI (the Rust client): a
//! user authenticates over a SASL_SSL native listener, produces and consumes what the ACLs let
//! it; a subscription without Read is refused, and so are a wrong password, no credentials and
//! a client that does not trust the broker's certificate, and a consumer whose Read is revoked
//! is detached. The operator's tools use a loopback PLAINTEXT Kafka listener whose anonymous
//! principal is a super user.

mod common;

use common::pki::{kafka_listener, native_listener, pki};
use common::{kcat, oxbow_command as oxbow, Broker};
use std::path::Path;

/// A broker with a PLAINTEXT Kafka listener for the operator and a SASL_SSL native listener,
/// its certificates, both listeners' addresses, and `user` created with `password`.
struct Secured {
    broker: Broker,
    pki: common::pki::Pki,
    internal: String,
    native: String,
}

fn start(dir: &Path, user: &str, password: &str) -> Secured {
    let pki = pki(dir);
    let toml = format!(
        "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
         [[native_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SASL_SSL\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n\
         [authorizer]\nenabled = true\nsuper_users = [\"User:ANONYMOUS\"]\n\
         [authentication]\nfailure_delay_ms = 10\n",
        pki.server_cert, pki.server_key
    );
    let (broker, _) = common::start_configured(dir, &toml);
    let internal = kafka_listener(&broker, "INTERNAL");
    let native = native_listener(&broker, "SASL_SSL");
    let create = ["user", "create", user, "--password-stdin"];
    operate(&internal, &create, &format!("{password}\n"));
    Secured {
        broker,
        pki,
        internal,
        native,
    }
}

/// Runs an operator's `oxbow ARGS` through the PLAINTEXT Kafka listener `internal`, whose
/// anonymous principal is a super user; it must succeed.
fn operate(internal: &str, args: &[&str], input: &str) {
    let (ok, said) = oxbow(&[args, &["--broker", internal]].concat(), None, input);
    assert!(ok, "{said}");
}

#[test]
fn native_clients_authenticate_over_tls_and_get_what_the_acls_give() {
    let dir = tempfile::tempdir().unwrap();
    // The broker runs until `_broker` goes at the end of the test.
    let Secured {
        broker: _broker,
        pki,
        internal,
        native,
    } = start(dir.path(), "alice", "alice-pw");
    let (ok, _, err) = kcat(&internal, &["-P", "-t", "events"], Some(b"seed\n"));
    assert!(ok, "{err}");
    let acl = |args: &[&str]| operate(&internal, &[&["acl"][..], args].concat(), "");
    let alice = ["--principal", "User:alice"];
    acl(&[
        &["add"][..],
        &alice,
        &[
            "--operation",
            "Write",
            "--operation",
            "Read",
            "--topic",
            "events",
        ],
    ]
    .concat());
    acl(&[
        &["add"][..],
        &alice,
        &["--operation", "Read", "--group", "billing"],
    ]
    .concat());

    let ca = pki.ca.to_str().unwrap();
    let secured = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(
            [
                "--broker",
                &native,
                "--tls-ca",
                ca,
                "--sasl-mechanism",
                "SCRAM-SHA-512",
            ]
            .map(String::from),
        );
        all.extend(["--sasl-username", "alice"].map(String::from));
        all
    };
    let run = |args: Vec<String>, password: Option<&str>, input: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        oxbow(&args, password, input)
    };
    let (ok, said) = run(
        secured(&["produce", "--topic", "events"]),
        Some("alice-pw"),
        "a\nb\nc\n",
    );
    assert!(ok, "{said}");
    let consume = |subscription: &str, password: &str| {
        let args = [
            "consume",
            "--topic",
            "events",
            "--subscription",
            subscription,
            "--count",
            "4",
        ];
        run(secured(&args), Some(password), "")
    };
    let (ok, said) = consume("billing", "alice-pw");
    assert!(ok, "{said}");
    for value in ["seed", "a", "b", "c"] {
        assert!(said.lines().any(|l| l == value), "{value} not in {said}");
    }

    // A subscription is a group: without Read on it, refused.
    let (ok, said) = consume("shipping", "alice-pw");
    assert!(!ok && said.contains("not authorized"), "{said}");
    // A wrong password, no password, and no TLS trust are each refused.
    let (ok, said) = consume("billing", "guess");
    assert!(
        !ok && said.to_lowercase().contains("authentication"),
        "{said}"
    );
    let (ok, said) = run(secured(&["produce", "--topic", "events"]), None, "x\n");
    assert!(!ok, "produced without a password: {said}");
    let stranger = pki.stranger_ca.to_str().unwrap();
    let args = [
        "produce", "--topic", "events", "--broker", &native, "--tls-ca", stranger,
    ];
    let (ok, said) = oxbow(
        &[
            &args[..],
            &[
                "--sasl-mechanism",
                "SCRAM-SHA-512",
                "--sasl-username",
                "alice",
            ],
        ]
        .concat(),
        Some("alice-pw"),
        "x\n",
    );
    assert!(
        !ok,
        "a client that does not trust the broker went on: {said}"
    );
    // Without TLS and SASL at all: the TLS port is no plaintext port.
    let (ok, said) = oxbow(
        &["produce", "--topic", "events", "--broker", &native],
        None,
        "x\n",
    );
    assert!(!ok, "{said}");

    // Only alice's three messages were appended (the refused ones were not).
    let args = ["-C", "-t", "events", "-o", "beginning", "-e", "-q"];
    let (ok, out, err) = kcat(&internal, &args, None);
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).lines().count(), 4);
}

/// An attached consumer is checked again at every Flow, as Kafka checks every Fetch: once its
/// Read on the topic is removed, the broker detaches it with the reason, after at most the
/// few messages its permits already covered, and a new subscription is refused.
#[test]
fn a_consumer_whose_read_is_revoked_is_detached_at_its_next_flow() {
    let dir = tempfile::tempdir().unwrap();
    // The broker runs until `_broker` goes at the end of the test.
    let Secured {
        broker: _broker,
        pki,
        internal,
        native,
    } = start(dir.path(), "carol", "carol-pw");
    let acl = |args: &[&str]| operate(&internal, &[&["acl"][..], args].concat(), "");
    let carol = ["--principal", "User:carol", "--operation", "Read"];
    acl(&[&["add"][..], &carol, &["--topic", "audited"]].concat());
    acl(&[&["add"][..], &carol, &["--group", "ledger"]].concat());
    let produce = |value: &str| {
        let (ok, _, err) = kcat(&internal, &["-P", "-t", "audited"], Some(value.as_bytes()));
        assert!(ok, "{err}");
    };
    produce("before\n");

    let runtime = common::runtime();
    runtime.block_on(async {
        let client = oxbow_client::Client::builder()
            .broker(&native)
            .tls_ca_file(&pki.ca)
            .sasl(
                oxbow_client::SaslMechanism::ScramSha512,
                "carol",
                "carol-pw",
            )
            .connect()
            .await
            .unwrap();
        let mut consumer = (client.consumer("audited", "ledger"))
            .receiver_queue(2)
            .build()
            .await
            .unwrap();
        let first = consumer.recv().await.unwrap();
        assert_eq!(&first.value[..], b"before");
        consumer.ack(&first).unwrap();

        acl(&[&["remove"][..], &carol, &["--topic", "audited"]].concat());
        // One message at a time, so the consumer keeps asking for more (Flow) until refused.
        let mut after = 0;
        let reason = loop {
            assert!(
                after < 50,
                "still consuming {after} messages after the revocation"
            );
            produce(&format!("after-{after}\n"));
            let wait = std::time::Duration::from_secs(10);
            match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(Ok(message)) => {
                    consumer.ack(&message).unwrap();
                    after += 1;
                }
                Ok(Err(oxbow_client::ClientError::ConsumerClosed(reason))) => break reason,
                Ok(Err(other)) => panic!("consumer ended with {other}"),
                Err(_) => panic!("no message and no detach within {wait:?}"),
            }
        };
        assert!(
            reason.contains("not authorized: Read on Topic audited"),
            "{reason}"
        );
        let again = client.consumer("audited", "ledger").build().await;
        let refusal = again.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refusal.contains("not authorized"), "{refusal}");
    });
}
