//! Kafka listeners with TLS and SASL, driven by unmodified clients (confluent-kafka and kcat,
//! both librdkafka with OpenSSL): SSL, SASL_SSL with PLAIN and SCRAM-SHA-512, SASL_PLAINTEXT
//! with SCRAM-SHA-256 and mutual TLS; users created in a stopped broker's data directory and
//! through a running one; refusals of wrong passwords, unknown users, untrusted and expired
//! certificates and the wrong transport, while the broker keeps serving everyone else.

mod common;

use common::pki::{kafka_listener as listener, pki, Pki};
use common::{confluent, field, http_get, kcat, sample, Broker};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

/// A broker with one listener of each kind, all on ports chosen at start, and its ready line.
/// The refusals below make librdkafka log in again and again, some forty failures from one
/// address: past the default per-address limit, which has a test of its own (the last one).
fn start(dir: &Path, pki: &Pki) -> (Broker, String) {
    let tls = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.server_cert, pki.server_key
    );
    let toml = format!(
        "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n{tls}\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SASL_SSL\"\n{tls}\
         sasl_mechanisms = [\"PLAIN\", \"SCRAM-SHA-512\"]\n\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SASL_PLAINTEXT\"\n\
         sasl_mechanisms = [\"SCRAM-SHA-256\"]\n\
         [[kafka_listeners]]\nname = \"MTLS\"\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n\
         {tls}tls_client_ca_file = {:?}\n\
         [authentication]\nfailure_delay_ms = 10\nfailures_per_address_max = 1000\n",
        pki.ca
    );
    common::start_configured(dir, &toml)
}

/// `oxbow user ARGS` with `password` on standard input.
fn oxbow_user(args: &[&str], password: &str) -> (bool, String) {
    let args = [&["user"][..], args].concat();
    common::oxbow_command(&args, None, &format!("{password}\n"))
}

/// librdkafka settings for SASL as `user` with `mechanism` (TLS trusting `ca` when given).
fn sasl(mechanism: &str, user: &str, password: &str, ca: Option<&Path>) -> Vec<String> {
    let mut settings = vec![
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ];
    match ca {
        Some(ca) => {
            settings.push("security.protocol=sasl_ssl".into());
            settings.push(format!("ssl.ca.location={}", ca.display()));
        }
        None => settings.push("security.protocol=sasl_plaintext".into()),
    }
    settings
}

/// Arguments for confluent_client.py: `args`, then every setting as `--client-config`.
fn with_settings<'a>(args: &[&'a str], settings: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for setting in settings {
        all.extend(["--client-config", setting.as_str()]);
    }
    all
}

/// kcat's `-X` form of the same settings.
fn kcat_settings(settings: &[String]) -> Vec<&str> {
    settings.iter().flat_map(|s| ["-X", s.as_str()]).collect()
}

/// Whether kcat can fetch metadata through `addr` with `settings`; with its error output.
fn kcat_metadata(addr: &str, settings: &[String]) -> (bool, String) {
    let mut args = vec!["-L", "-m", "5"];
    args.extend(kcat_settings(settings));
    let (ok, out, err) = kcat(addr, &args, None);
    (ok && String::from_utf8_lossy(&out).contains("broker"), err)
}

#[test]
fn unmodified_clients_produce_and_consume_over_tls_and_sasl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // The first administrator, made with the broker stopped.
    let data = dir.path().join("data");
    let (created, said) = oxbow_user(
        &[
            "create",
            "admin",
            "--password-stdin",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "admin-secret",
    );
    assert!(created, "{said}");
    let (broker, _) = start(dir.path(), &pki);
    let internal = listener(&broker, "INTERNAL");
    // More users through the running broker (AlterUserScramCredentials).
    for (user, mechanism, password) in [
        ("alice", "SCRAM-SHA-512", "alice-secret"),
        ("bob", "SCRAM-SHA-256", "bob-secret"),
    ] {
        let args = ["create", user, "--mechanism", mechanism, "--password-stdin"];
        let (created, said) = oxbow_user(&[&args[..], &["--broker", &internal]].concat(), password);
        assert!(created, "{said}");
    }

    // confluent-kafka over SASL_SSL with SCRAM-SHA-512: creates the topic and produces.
    let sasl_ssl = listener(&broker, "SASL_SSL");
    let alice = sasl("SCRAM-SHA-512", "alice", "alice-secret", Some(&pki.ca));
    let args = ["produce", "--bootstrap", &sasl_ssl, "--topic", "secure"];
    let produced = confluent(&with_settings(
        &[
            &args[..],
            &["--create", "--partitions", "2", "--count", "40"],
        ]
        .concat(),
        &alice,
    ));
    assert_eq!(
        produced.lines().filter(|l| l.starts_with("ack ")).count(),
        40
    );

    // A consumer group over SASL_SSL with PLAIN, checked against the SCRAM credential.
    let admin = sasl("PLAIN", "admin", "admin-secret", Some(&pki.ca));
    let args = [
        "group-consume",
        "--bootstrap",
        &sasl_ssl,
        "--topic",
        "secure",
    ];
    let consumed = confluent(&with_settings(
        &[&args[..], &["--expect", "40"]].concat(),
        &admin,
    ));
    assert_eq!(
        consumed.lines().filter(|l| l.starts_with("msg ")).count(),
        40,
        "{consumed}"
    );

    // kcat over SSL, SASL_PLAINTEXT with SCRAM-SHA-256, and mutual TLS.
    let ssl = vec![
        "security.protocol=ssl".to_string(),
        format!("ssl.ca.location={}", pki.ca.display()),
    ];
    let bob = sasl("SCRAM-SHA-256", "bob", "bob-secret", None);
    let mut client_cert = ssl.clone();
    client_cert.push(format!(
        "ssl.certificate.location={}",
        pki.client_cert.display()
    ));
    client_cert.push(format!("ssl.key.location={}", pki.client_key.display()));
    for (name, settings) in [
        ("SSL", &ssl),
        ("SASL_PLAINTEXT", &bob),
        ("MTLS", &client_cert),
    ] {
        let mut args = vec!["-C", "-t", "secure", "-o", "beginning", "-e", "-q"];
        args.extend(kcat_settings(settings));
        let (ok, out, err) = kcat(&listener(&broker, name), &args, None);
        assert!(ok, "kcat over {name}: {err}");
        let values = String::from_utf8_lossy(&out).lines().count();
        assert_eq!(values, 40, "kcat over {name} read {values}: {err}");
    }

    // kafka-python over SASL_SSL with SCRAM-SHA-512 (idempotent producer, group consumer);
    // its consumer group needs no ACL: the authorizer is off here.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/kafka_python_client.py"
    );
    let ca_file = format!("ssl_cafile={}", pki.ca.display());
    let output = Command::new("python3")
        .args([
            script,
            &sasl_ssl,
            "kp-secure",
            "200",
            "security_protocol=SASL_SSL",
        ])
        .args(["sasl_mechanism=SCRAM-SHA-512", "sasl_plain_username=alice"])
        .args(["sasl_plain_password=alice-secret", &ca_file])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}{err}");
    assert!(said.contains("consumed 200 unique 200"), "{said}");

    // Metadata names each broker on the listener asked: the SASL_SSL port here.
    let mut args = vec!["-L", "-m", "5"];
    args.extend(kcat_settings(&alice));
    let (_, out, _) = kcat(&sasl_ssl, &args, None);
    let listing = String::from_utf8_lossy(&out).into_owned();
    assert!(listing.contains(&sasl_ssl), "{listing}");

    // The Kafka-side commands over the same listeners: users through SASL_SSL as alice,
    // the group through SSL (and every broker's SSL address from there), wrong passwords
    // refused with the broker's reason.
    let ca = pki.ca.to_str().unwrap();
    let alice_cli = [
        "--broker",
        &sasl_ssl,
        "--tls-ca",
        ca,
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        "alice",
    ];
    let list = [&["user", "list", "--output", "json"][..], &alice_cli].concat();
    let (refused, said) = common::oxbow_command(&list, Some("alice-guess"), "");
    assert!(!refused && said.contains("authenticating to"), "{said}");
    let ssl_listener = listener(&broker, "SSL");
    let group = [
        "group",
        "describe",
        "oxbow-test-group",
        "--bootstrap",
        &ssl_listener,
        "--tls-ca",
        ca,
    ];
    let (described, said) = common::oxbow_command(&group, None, "");
    assert!(described && said.contains("secure"), "{said}");
    let (listed, said) = common::oxbow_command(&list, Some("alice-secret"), "");
    assert!(listed, "{said}");
    for user in [
        "\"admin\"",
        "\"alice\"",
        "\"bob\"",
        "SCRAM-SHA-256",
        "SCRAM-SHA-512",
    ] {
        assert!(said.contains(user), "{user} not in {said}");
    }
}

#[test]
fn wrong_credentials_certificates_and_transports_are_refused_and_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (mut broker, ready) = start(dir.path(), &pki);
    let internal = listener(&broker, "INTERNAL");
    let (created, said) = oxbow_user(
        &["create", "alice", "--password-stdin", "--broker", &internal],
        "right",
    );
    assert!(created, "{said}");
    let sasl_ssl = listener(&broker, "SASL_SSL");
    let metrics = field(&ready, "metrics");
    let failures = || {
        sample(
            &http_get(&metrics, "/metrics"),
            "oxbow_authentication_failures_total",
        )
    };

    let ca = Some(pki.ca.as_path());
    let refused = "Authentication failed";
    let trusting_ca = vec![
        "security.protocol=ssl".to_string(),
        format!("ssl.ca.location={}", pki.ca.display()),
    ];
    let mut expired_certificate = trusting_ca.clone();
    expired_certificate.extend([
        format!(
            "ssl.certificate.location={}",
            pki.expired_client_cert.display()
        ),
        format!("ssl.key.location={}", pki.expired_client_key.display()),
    ]);
    let refusals: [(&str, &str, Vec<String>, &str); 7] = [
        (
            "a wrong password",
            "SASL_SSL",
            sasl("SCRAM-SHA-512", "alice", "wrong", ca),
            refused,
        ),
        (
            "a wrong PLAIN password",
            "SASL_SSL",
            sasl("PLAIN", "alice", "wrong", ca),
            refused,
        ),
        (
            "an unknown user",
            "SASL_SSL",
            sasl("SCRAM-SHA-512", "mallory", "right", ca),
            refused,
        ),
        (
            "a mechanism not offered",
            "SASL_SSL",
            sasl("SCRAM-SHA-256", "alice", "right", ca),
            "PLAIN,SCRAM-SHA-512",
        ),
        ("plaintext to a TLS port", "SSL", Vec::new(), ""),
        ("no client certificate", "MTLS", trusting_ca.clone(), ""),
        (
            "an expired client certificate",
            "MTLS",
            expired_certificate,
            "",
        ),
    ];
    for (what, name, settings, said) in &refusals {
        let before = failures();
        let (served, err) = kcat_metadata(&listener(&broker, name), settings);
        assert!(!served, "{what} was served");
        assert!(err.contains(said), "{what}: {err}");
        // Counted once the broker has closed the connection, which kcat does not wait for.
        common::eventually(what, std::time::Duration::from_secs(10), || {
            (failures() > before).then_some(())
        });
    }
    // The broker's log says why a certificate was refused.
    broker.wait_for("certificate expired");
    // An untrusted server certificate is refused by the client; TLS to the plaintext port
    // finds no TLS there.
    let untrusted = vec![
        "security.protocol=ssl".to_string(),
        format!("ssl.ca.location={}", pki.stranger_ca.display()),
    ];
    assert!(!kcat_metadata(&listener(&broker, "SSL"), &untrusted).0);
    assert!(!kcat_metadata(&internal, &trusting_ca).0);

    // Before authenticating, a request other than ApiVersions and SASL's closes the connection.
    let mut raw = std::net::TcpStream::connect(listener(&broker, "SASL_PLAINTEXT")).unwrap();
    let metadata = kafka_protocol::messages::MetadataRequest::default();
    let mut frame = Vec::new();
    {
        use kafka_protocol::protocol::Encodable;
        let mut body = bytes::BytesMut::new();
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(1)
            .with_correlation_id(1);
        header.encode(&mut body, 1).unwrap();
        metadata.encode(&mut body, 1).unwrap();
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
    }
    raw.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    assert!(
        answer.is_empty(),
        "answered before authentication: {answer:?}"
    );
    broker.wait_for("Metadata before authenticating");

    // Through all of that, the right password is served.
    let alice = sasl("SCRAM-SHA-512", "alice", "right", Some(&pki.ca));
    let (served, err) = kcat_metadata(&sasl_ssl, &alice);
    assert!(served, "{err}");
}

#[test]
fn users_survive_a_restart_and_a_deleted_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (broker, _) = start(dir.path(), &pki);
    let internal = listener(&broker, "INTERNAL");
    let (created, said) = oxbow_user(
        &["create", "carol", "--password-stdin", "--broker", &internal],
        "pw-carol",
    );
    assert!(created, "{said}");
    // kill -9: the users were committed to the metadata before they were acknowledged.
    drop(broker);
    let (broker, _) = start(dir.path(), &pki);
    let carol = sasl("SCRAM-SHA-512", "carol", "pw-carol", Some(&pki.ca));
    let (served, err) = kcat_metadata(&listener(&broker, "SASL_SSL"), &carol);
    assert!(served, "after a restart: {err}");
    let internal = listener(&broker, "INTERNAL");
    let (deleted, said) = oxbow_user(&["delete", "carol", "--broker", &internal], "");
    assert!(deleted, "{said}");
    let (served, _) = kcat_metadata(&listener(&broker, "SASL_SSL"), &carol);
    assert!(!served, "a deleted user was served");
}

#[test]
fn sighup_gives_new_connections_the_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki_first = pki(dir.path());
    let (mut broker, _) = start(dir.path(), &pki_first);
    let ssl = listener(&broker, "SSL");
    let trusting = |ca: &Path| {
        vec![
            "security.protocol=ssl".to_string(),
            format!("ssl.ca.location={}", ca.display()),
        ]
    };
    assert!(kcat_metadata(&ssl, &trusting(&pki_first.ca)).0);

    // A new certificate from another CA, in place of the files the listener names.
    let other = tempfile::tempdir().unwrap();
    let pki_second = pki(other.path());
    std::fs::copy(&pki_second.server_cert, &pki_first.server_cert).unwrap();
    std::fs::copy(&pki_second.server_key, &pki_first.server_key).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as i32, libc::SIGHUP) },
        0
    );
    broker.wait_for("TLS certificates reloaded listener=SSL");
    assert!(kcat_metadata(&ssl, &trusting(&pki_second.ca)).0);
    assert!(!kcat_metadata(&ssl, &trusting(&pki_first.ca)).0);

    // Broken files: the listener keeps the certificate it has, and says so.
    std::fs::write(&pki_first.server_key, "not a key").unwrap();
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as i32, libc::SIGHUP) },
        0
    );
    broker.wait_for("TLS certificates not reloaded");
    assert!(kcat_metadata(&ssl, &trusting(&pki_second.ca)).0);
}

#[test]
fn an_address_that_keeps_failing_is_closed_at_accept_until_its_window_ends() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
                [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SASL_PLAINTEXT\"\n\
                sasl_mechanisms = [\"PLAIN\"]\n\
                [authentication]\nfailure_delay_ms = 0\nfailures_per_address_max = 3\n\
                failure_window_ms = 8000\n";
    let (broker, ready) = common::start_configured(dir.path(), toml);
    let internal = listener(&broker, "INTERNAL");
    let sasl_plain = listener(&broker, "SASL_PLAINTEXT");
    let (created, said) = oxbow_user(
        &["create", "dave", "--password-stdin", "--broker", &internal],
        "pw",
    );
    assert!(created, "{said}");
    let metrics = field(&ready, "metrics");
    let throttled = || {
        sample(
            &http_get(&metrics, "/metrics"),
            "oxbow_authentication_throttled_total",
        )
    };
    let dave = |password: &str| {
        let mut settings = sasl("PLAIN", "dave", password, None);
        settings.push("reconnect.backoff.ms=10".into());
        settings.push("reconnect.backoff.max.ms=50".into());
        let mut args = vec!["-L", "-m", "2"];
        args.extend(kcat_settings(&settings));
        let (ok, out, _) = kcat(&sasl_plain, &args, None);
        ok && String::from_utf8_lossy(&out).contains("broker")
    };
    // librdkafka logs in again and again on new connections: enough failures, on every shard,
    // to pass the limit.
    assert!(!dave("guess"));
    assert!(
        !dave("pw"),
        "the right password got through a throttled address"
    );
    assert!(throttled() > 0.0);
    // The operator's listener needs no authentication, so it is not throttled.
    assert!(kcat_metadata(&internal, &[]).0);
    // The window ends without new failures: the address is served again.
    common::eventually(
        "the address served again",
        std::time::Duration::from_secs(20),
        || dave("pw").then_some(()),
    );
}

#[test]
fn a_client_certificate_is_the_principal_the_acls_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let toml = format!(
        "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
         [[kafka_listeners]]\nname = \"MTLS\"\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n\
         [authorizer]\nenabled = true\nsuper_users = [\"User:ANONYMOUS\"]\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let (mut broker, _) = common::start_configured(dir.path(), &toml);
    let internal = listener(&broker, "INTERNAL");
    for topic in ["certified", "other"] {
        let (ok, _, err) = kcat(&internal, &["-P", "-t", topic], Some(b"seed\n"));
        assert!(ok, "{err}");
    }
    let args = [
        "acl",
        "--broker",
        &internal,
        "add",
        "--principal",
        "User:CN=client",
    ];
    let (ok, said) = common::oxbow_command(
        &[&args[..], &["--operation", "Write", "--topic", "certified"]].concat(),
        None,
        "",
    );
    assert!(ok, "{said}");
    let mtls = [
        "-X".to_string(),
        "security.protocol=ssl".to_string(),
        "-X".to_string(),
        format!("ssl.ca.location={}", pki.ca.display()),
        "-X".to_string(),
        format!("ssl.certificate.location={}", pki.client_cert.display()),
        "-X".to_string(),
        format!("ssl.key.location={}", pki.client_key.display()),
        "-X".to_string(),
        "message.timeout.ms=5000".to_string(),
    ];
    let produce = |topic: &str| {
        let mut args = vec!["-P", "-t", topic];
        args.extend(mtls.iter().map(String::as_str));
        kcat(
            &listener(&broker, "MTLS"),
            &args,
            Some(b"from a certificate\n"),
        )
    };
    let (ok, _, err) = produce("certified");
    assert!(ok, "{err}");
    let (ok, _, err) = produce("other");
    assert!(!ok && err.contains("Topic authorization failed"), "{err}");
    let audit = broker.wait_for("denied");
    assert!(audit.contains("principal=User:CN=client"), "{audit}");
}

/// One raw PLAIN login on a new connection: the SaslAuthenticate answer's error code and
/// message.
fn plain_login(addr: &str, user: &str, password: &str) -> (i16, String) {
    use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mechanism = kafka_protocol::protocol::StrBytes::from_static_str("PLAIN");
    let handshake = SaslHandshakeRequest::default().with_mechanism(mechanism);
    assert_eq!(common::kafka_call(&mut stream, 1, &handshake).error_code, 0);
    let token = format!("\0{user}\0{password}");
    let login = SaslAuthenticateRequest::default().with_auth_bytes(token.into_bytes().into());
    let answer = common::kafka_call(&mut stream, 2, &login);
    let message = answer.error_message.map(|m| m.to_string());
    (answer.error_code, message.unwrap_or_default())
}

/// A PLAIN login costs the broker one PBKDF2, so each shard paces them
/// (`authentication.password_checks_per_second_max`, here 1 a second with a 500 ms
/// authentication timeout): logins past the pace are refused as busy, counted as throttled
/// and not as failures, while SCRAM logins (no PBKDF2 on the broker) go on.
#[test]
fn plain_logins_past_the_shards_pace_are_refused_as_busy_and_scram_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "shards = 1\n\
         [[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SASL_PLAINTEXT\"\n\
         sasl_mechanisms = [\"PLAIN\", \"SCRAM-SHA-256\"]\n\
         [authentication]\npassword_checks_per_second_max = 1\ntimeout_ms = 500\n";
    let (broker, ready) = common::start_configured(dir.path(), toml);
    let internal = listener(&broker, "INTERNAL");
    let args = [
        "create",
        "alice",
        "--mechanism",
        "SCRAM-SHA-256",
        "--password-stdin",
    ];
    let (created, said) = oxbow_user(&[&args[..], &["--broker", &internal]].concat(), "right");
    assert!(created, "{said}");
    let sasl_plaintext = listener(&broker, "SASL_PLAINTEXT");
    let metrics = field(&ready, "metrics");
    let count = |name| sample(&http_get(&metrics, "/metrics"), name);

    // Five logins in a row: the first is checked at once, the next would wait a second.
    let answers: Vec<(i16, String)> = (0..5)
        .map(|_| plain_login(&sasl_plaintext, "alice", "right"))
        .collect();
    assert_eq!(answers[0], (0, String::new()), "{answers:?}");
    let busy = (answers.iter())
        .filter(|(code, message)| *code == 58 && message.contains("too many password checks"))
        .count();
    let accepted = answers.iter().filter(|(code, _)| *code == 0).count();
    assert!(busy >= 1 && busy + accepted == 5, "{answers:?}");
    assert_eq!(count("oxbow_authentication_throttled_total"), busy as f64);
    assert_eq!(count("oxbow_authentication_failures_total"), 0.0);

    let alice = sasl("SCRAM-SHA-256", "alice", "right", None);
    let (served, err) = kcat_metadata(&sasl_plaintext, &alice);
    assert!(served, "SCRAM while PLAIN is paced: {err}");
}

/// The client side of TLS to a test broker: trusting `ca`, presenting `certificate` (PEM
/// certificate and key files) when given.
fn tls_client(
    ca: &Path,
    certificate: Option<(&Path, &Path)>,
) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match certificate {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap();
            let chain = chain.map(Result::unwrap).collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    std::sync::Arc::new(config)
}

/// Over TLS to `addr` (certificate name 127.0.0.1): the handshake, then `request` and
/// everything the broker answers until it closes; `None` when any of it fails.
fn over_tls(
    addr: &str,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    request: &[u8],
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(config);
    let runtime = common::runtime();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.ok()?;
        if request.is_empty() {
            return Some(String::new());
        }
        tls.write_all(request).await.ok()?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    let patience = std::time::Duration::from_secs(10);
    runtime.block_on(async { tokio::time::timeout(patience, exchange).await.ok()? })
}

/// Whether a TLS handshake with `addr`, trusting `ca`, completes.
fn tls_handshake(addr: &str, ca: &Path) -> bool {
    over_tls(addr, tls_client(ca, None), b"").is_some()
}

/// TLS handshakes cost a key exchange and a signature each, so each shard paces them
/// (`authentication.tls_handshakes_per_second_max`, here 1 a second with a 500 ms
/// authentication timeout): connections past the pace are closed at accept, counted as
/// throttled and not as failures.
#[test]
fn tls_handshakes_past_the_shards_pace_are_closed_at_accept() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let toml = format!(
        "shards = 1\n\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\n\
         [authentication]\ntls_handshakes_per_second_max = 1\ntimeout_ms = 500\n",
        pki.server_cert, pki.server_key
    );
    let (broker, ready) = common::start_configured(dir.path(), &toml);
    let ssl = listener(&broker, "SSL");
    let metrics = field(&ready, "metrics");
    let count = |name| sample(&http_get(&metrics, "/metrics"), name);

    // Five handshakes in a row: the first at once, the next would wait a second.
    let completed: Vec<bool> = (0..5).map(|_| tls_handshake(&ssl, &pki.ca)).collect();
    assert!(completed[0], "{completed:?}");
    let closed = completed.iter().filter(|done| !**done).count();
    assert!(closed >= 1, "{completed:?}");
    assert_eq!(count("oxbow_authentication_throttled_total"), closed as f64);
    assert_eq!(count("oxbow_authentication_failures_total"), 0.0);
}

/// The metrics endpoint as an SSL listener with mutual TLS: a scraper with a certificate the
/// CA signed reads `/metrics` over HTTPS; one without a certificate, or speaking plain HTTP,
/// gets nothing.
#[test]
fn the_metrics_endpoint_serves_https_to_scrapers_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let toml = format!(
        "[metrics_listener]\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let (_broker, ready) = common::start_configured(dir.path(), &toml);
    let metrics = field(&ready, "metrics");
    let get = b"GET /metrics HTTP/1.1\r\nHost: oxbow\r\n\r\n";
    let scraper = tls_client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let scraped = over_tls(&metrics, scraper, get).expect("an HTTPS answer");
    assert!(scraped.starts_with("HTTP/1.1 200 OK"), "{scraped}");
    assert!(sample(&scraped, "oxbow_authentication_failures_total") == 0.0);

    let stranger = over_tls(&metrics, tls_client(&pki.ca, None), get);
    let served = stranger.as_deref().is_some_and(|a| a.contains("200 OK"));
    assert!(!served, "{stranger:?}");
    let mut plain = std::net::TcpStream::connect(&metrics).unwrap();
    plain.write_all(get).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}
