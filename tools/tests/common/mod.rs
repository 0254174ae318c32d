//! Starting the real `oxbow` binary for tests, and reading its log.
#![allow(dead_code)]

pub mod cluster;
pub mod native_client;
pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Only a bound on a hung broker; the tests wait on log lines, not on time.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A current-thread tokio runtime for a test's clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A running `oxbow serve` with a Kafka listener on a port chosen at start.
pub struct Broker {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Log lines read so far.
    pub seen: Vec<String>,
}

impl Broker {
    /// Starts `oxbow serve` with these extra arguments (debug logs on stderr).
    pub fn start(args: &[&str]) -> Broker {
        Broker::start_in(None, args)
    }

    /// Starts `oxbow serve` in working directory `dir` (or the test's).
    pub fn start_in(dir: Option<&std::path::Path>, args: &[&str]) -> Broker {
        let listeners = [
            "--kafka-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--native-listen",
            "127.0.0.1:0",
        ];
        let args: Vec<&str> = listeners.iter().chain(args).copied().collect();
        Broker::start_exactly(dir, &args)
    }

    /// Starts `oxbow serve` with exactly these arguments (the listeners' ports included).
    pub fn start_exactly(dir: Option<&std::path::Path>, args: &[&str]) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_oxbow"));
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Broker {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one contains `needle`; panics with the log if the broker exits or
    /// hangs first.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.try_wait_for(needle)
            .unwrap_or_else(|log| panic!("no {needle:?} in broker log:\n{log}"))
    }

    /// Reads log lines until one contains `needle`, or answers the log when the broker exits
    /// or keeps logging without writing it (a hung broker) for the start-up limit.
    pub fn try_wait_for(&mut self, needle: &str) -> Result<String, String> {
        let deadline = std::time::Instant::now() + STARTUP_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => return Err(self.seen.join("\n")),
            }
        }
    }

    /// Takes in the log lines written so far without waiting, and returns the whole log.
    pub fn log_so_far(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n")
    }

    pub fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
        self.wait_for("oxbow stopped");
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `field=` in a log line.
pub fn field(line: &str, field: &str) -> String {
    let key = format!("{field}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[at..].split_whitespace().next().unwrap().to_string()
}

/// How many log segments a partition directory holds.
pub fn segment_count(partition_dir: &std::path::Path) -> usize {
    std::fs::read_dir(partition_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

/// Ports a test keeps across restarts of its brokers are chosen below the kernel's ephemeral
/// range (32768-60999 here), where brokers started on port 0 by tests running beside it never
/// land: a port freed by a killed broker must not be taken before it comes back (a client then
/// reached another test's broker, seen in CI as cluster tests failing at random).
const RESTARTABLE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// `count` different ports from [`RESTARTABLE_PORTS`] that `bind` finds free, each held until
/// all are chosen.
pub fn restartable_ports<S>(count: usize, bind: impl Fn(u16) -> std::io::Result<S>) -> Vec<u16> {
    let mut held = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let port = fastrand::u16(RESTARTABLE_PORTS);
        if ports.contains(&port) {
            continue;
        }
        if let Ok(socket) = bind(port) {
            held.push(socket);
            ports.push(port);
        }
    }
    ports
}

/// Free TCP ports on loopback for brokers that are restarted on them.
pub fn free_ports(count: usize) -> Vec<u16> {
    restartable_ports(count, |port| {
        std::net::TcpListener::bind(("127.0.0.1", port))
    })
}

/// `oxbow serve` arguments for `data` with Kafka, native and metrics listeners on ports chosen
/// now, so the broker can be started again on the same addresses; and those addresses.
pub fn fixed_port_args(data: &std::path::Path) -> (Vec<String>, [String; 3]) {
    let ports = free_ports(3);
    let [kafka, native, metrics] = [0, 1, 2].map(|i| format!("127.0.0.1:{}", ports[i]));
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--kafka-listen",
        &kafka,
        "--native-listen",
        &native,
        "--metrics-listen",
        &metrics,
    ];
    let args = args.iter().map(|a| a.to_string()).collect();
    (args, [kafka, native, metrics])
}

/// Starts a broker on `data` and returns it with its Kafka address once it is ready.
pub fn start_broker(data: &std::path::Path, shards: usize) -> (Broker, String) {
    let shards = shards.to_string();
    let mut broker = Broker::start(&["--data-dir", data.to_str().unwrap(), "--shards", &shards]);
    let ready = broker.wait_for("oxbow ready");
    (broker, field(&ready, "kafka"))
}

/// Starts a broker with `toml` as its config file and a data directory inside `dir`; returns it
/// with its Kafka address and the data directory.
pub fn start_broker_with_config(
    dir: &std::path::Path,
    toml: &str,
) -> (Broker, String, std::path::PathBuf) {
    let (broker, ready) = start_configured(dir, toml);
    (broker, field(&ready, "kafka"), dir.join("data"))
}

/// Starts a broker with `toml` as its config file (written in `dir`) and `dir/data` as its data
/// directory; returns it with its ready line (its addresses are fields of it).
pub fn start_configured(dir: &std::path::Path, toml: &str) -> (Broker, String) {
    let config = dir.join("oxbow.toml");
    std::fs::write(&config, toml).unwrap();
    let data = dir.join("data");
    let mut broker = Broker::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let ready = broker.wait_for("oxbow ready");
    (broker, ready)
}

/// Runs `oxbow ARGS` with `input` on standard input and `OXBOW_SASL_PASSWORD` set to
/// `password` (or unset); returns whether it succeeded and all it printed.
pub fn oxbow_command(args: &[&str], password: Option<&str>, input: &str) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxbow"));
    command.args(args).env_remove("OXBOW_SASL_PASSWORD");
    if let Some(password) = password {
        command.env("OXBOW_SASL_PASSWORD", password);
    }
    let mut child = (command.stdin(Stdio::piped()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input closes the pipe: its exit says why.
    let _ = write!(child.stdin.take().unwrap(), "{input}");
    let output = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// Starts a broker on `dir/data` with `toml` as its config; returns it with its native address.
pub fn start_native_broker(dir: &std::path::Path, toml: &str) -> (Broker, String) {
    let (broker, ready) = start_configured(dir, toml);
    (broker, field(&ready, "native"))
}

/// Runs kcat against the Kafka listener at `addr`; returns success, stdout and stderr.
pub fn kcat(addr: &str, args: &[&str], input: Option<&[u8]>) -> (bool, Vec<u8>, String) {
    let mut child = Command::new("kcat")
        .args(["-b", addr])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (scripts/test installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A plain HTTP/1.1 GET; returns the whole response.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: oxbow\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The value of the first metrics sample whose line starts with `prefix`.
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Encodes a Kafka Produce v9 (acks=all) of `batch` to partition 0 of `topic`, framed.
pub fn kafka_produce_request(
    correlation_id: i32,
    topic: &str,
    batch: oxbow_core::RecordBatch,
) -> Vec<u8> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.into_bytes()))])]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(correlation_id);
    let mut body = bytes::BytesMut::new();
    header.encode(&mut body, 2).unwrap();
    request.encode(&mut body, 9).unwrap();
    [&(body.len() as i32).to_be_bytes()[..], &body].concat()
}

/// Reads the answer to one [`kafka_produce_request`]: its correlation id and the partition's
/// result.
pub fn kafka_produce_response(
    stream: &mut std::net::TcpStream,
) -> (
    i32,
    kafka_protocol::messages::produce_response::PartitionProduceResponse,
) {
    use kafka_protocol::messages::{ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    let mut response = bytes::Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, 1).unwrap();
    let mut answer = ProduceResponse::decode(&mut response, 9).unwrap();
    let partition = answer.responses.remove(0).partition_responses.remove(0);
    (header.correlation_id, partition)
}

/// Sends one Kafka request at `version` on `stream` and decodes its answer.
pub fn kafka_call<R: kafka_protocol::protocol::Request>(
    stream: &mut std::net::TcpStream,
    version: i16,
    request: &R,
) -> R::Response {
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(7);
    // A hung broker fails the test instead of hanging it.
    stream.set_read_timeout(Some(STARTUP_LIMIT)).unwrap();
    let mut body = bytes::BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    stream
        .write_all(&(body.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    let mut response = bytes::Bytes::from(response);
    let answer = ResponseHeader::decode(&mut response, R::Response::header_version(version));
    assert_eq!(answer.unwrap().correlation_id, 7);
    R::Response::decode(&mut response, version).unwrap()
}

/// The cursors stored for `topic`/`partition` (subscription → every offset below is
/// acknowledged), read from the partition's cursor log while no broker runs on `data`.
pub fn stored_cursors(
    data: &std::path::Path,
    topic: &str,
    partition: u32,
) -> std::collections::HashMap<String, u64> {
    let dir = data
        .join(topic)
        .join(".subscriptions")
        .join(partition.to_string());
    if !dir.exists() {
        return Default::default();
    }
    let data = data.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&data, "cursor-reader")
                .await
                .unwrap();
            let config = oxbow_core::LogConfig {
                flush: oxbow_core::FlushPolicy::Always,
                ..oxbow_core::LogConfig::default()
            };
            let log = oxbow_storage::Partition::open(&dir, config, Default::default())
                .await
                .unwrap();
            let log = std::rc::Rc::new(log);
            let settings = oxbow_storage::CompactionSettings {
                compaction_bytes_min: u64::MAX,
            };
            let state = oxbow_storage::StateLog::open(log.clone(), settings, 1 << 20)
                .await
                .unwrap();
            let cursors = state
                .entries()
                .into_iter()
                .map(|(name, value)| {
                    let cursor = oxbow_dispatch::CursorState::decode(&value).unwrap();
                    (
                        String::from_utf8(name.to_vec()).unwrap(),
                        cursor.mark_delete,
                    )
                })
                .collect();
            log.close().await;
            cursors
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Polls `check` until it answers, or fails naming `what` once `limit` has passed.
pub fn eventually<T>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(answer) = check() {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached: {what}"
        );
        // Between polls of a remote state, not a wait for it.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The confluent-kafka (librdkafka) client script the tests drive.
pub const CONFLUENT_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);

/// Runs the confluent-kafka client script with `args`; what it printed (it must succeed).
pub fn confluent(args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(CONFLUENT_CLIENT)
        .args(args)
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
    stdout
}
