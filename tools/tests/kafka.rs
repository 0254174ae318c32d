//! The Kafka wire protocol with a real client: kcat (librdkafka) against the real `oxbow`
//! binary on a port chosen at run time. Needs `kcat` on PATH (scripts/test installs it).

mod common;

use common::{kcat, start_broker};
use std::io::{Read, Write};
use std::net::TcpStream;

fn lines(count: usize) -> Vec<u8> {
    (0..count)
        .map(|i| format!("line {i} {}\n", "•".repeat(i % 13)))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn kcat_round_trips_10000_lines_byte_for_byte_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(data.path(), 2);
    let sent = lines(10_000);
    let (ok, _, err) = kcat(&addr, &["-P", "-t", "lines", "-X", "acks=all"], Some(&sent));
    assert!(ok, "produce failed: {err}");
    let consume = ["-C", "-t", "lines", "-o", "beginning", "-e", "-q"];
    let (ok, received, err) = kcat(&addr, &consume, None);
    assert!(ok, "consume failed: {err}");
    assert_eq!(received.len(), sent.len());
    assert!(
        received == sent,
        "consumed bytes differ from produced bytes"
    );
    assert!(broker.signal(libc::SIGTERM).success());

    let (_broker, addr) = start_broker(data.path(), 2);
    let (ok, received, err) = kcat(&addr, &consume, None);
    assert!(ok, "consume after restart failed: {err}");
    assert!(received == sent, "messages changed across a restart");
    let (ok, listing, _) = kcat(&addr, &["-L"], None);
    assert!(ok && String::from_utf8_lossy(&listing).contains("topic \"lines\" with 1 partitions"));
}

/// Sends raw bytes and returns what comes back before the broker closes the connection.
fn raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // The broker may close before taking every byte: writing and half-closing can fail then.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut back = Vec::new();
    match stream.read_to_end(&mut back) {
        Ok(_) => back,
        // Closing with unread bytes in the socket resets it: also a close.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => back,
        Err(e) => panic!("the broker must close the connection, not hang: {e}"),
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as i32).to_be_bytes()[..], body].concat()
}

#[test]
fn hostile_frames_close_their_connection_and_clients_keep_working() {
    let data = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(data.path(), 2);
    // Metadata v0 (api 3) claiming 2^31-1 topics in 14 bytes: the decoder's up-front allocation
    // used to abort the whole process.
    let mut claim = Vec::new();
    claim.extend_from_slice(&3i16.to_be_bytes());
    claim.extend_from_slice(&0i16.to_be_bytes());
    claim.extend_from_slice(&7i32.to_be_bytes());
    claim.extend_from_slice(&(-1i16).to_be_bytes());
    claim.extend_from_slice(&i32::MAX.to_be_bytes());
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("absurd array length", frame(&claim)),
        ("oversized frame", i32::MAX.to_be_bytes().to_vec()),
        ("negative frame length", (-5i32).to_be_bytes().to_vec()),
        ("unknown api key", frame(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1])),
        (
            "unsupported produce version",
            frame(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff]),
        ),
        (
            "truncated frame",
            [&100i32.to_be_bytes()[..], b"short"].concat(),
        ),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (name, bytes) in &attacks {
        assert!(
            raw(&addr, bytes).is_empty(),
            "{name}: expected the connection to be closed"
        );
    }
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker died"
    );
    // Each close is explained in the log.
    broker.wait_for("malformed Metadata v0 request");
    broker.wait_for("request of 2147483647 bytes");
    // ApiVersions with a version from the future gets UNSUPPORTED_VERSION (35) in a v0 body.
    let reply = raw(&addr, &frame(&[0, 18, 0, 99, 0, 0, 0, 42, 0xff, 0xff]));
    assert!(reply.len() >= 10, "no ApiVersions answer");
    assert_eq!(&reply[4..8], &42i32.to_be_bytes(), "correlation id");
    assert_eq!(&reply[8..10], &35i16.to_be_bytes(), "error code");

    let (ok, _, err) = kcat(&addr, &["-P", "-t", "after"], Some(b"still here\n"));
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(
        &addr,
        &["-C", "-t", "after", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, b"still here\n");
}

#[test]
fn metrics_endpoint_counts_requests_bytes_partitions_and_fsyncs() {
    let data = tempfile::tempdir().unwrap();
    let (mut broker, addr) = common::start_broker(data.path(), 2);
    let metrics_addr = common::field(&broker.seen.last().unwrap().clone(), "metrics");
    let (ok, _, err) = kcat(
        &addr,
        &["-P", "-t", "measured", "-X", "acks=all"],
        Some(&lines(500)),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = kcat(
        &addr,
        &["-C", "-t", "measured", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok, "{err}");
    let metrics = common::http_get(&metrics_addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        common::sample(
            &metrics,
            "oxbow_kafka_request_seconds_count{api=\"Produce\"}"
        ) >= 1.0
    );
    assert!(common::sample(&metrics, "oxbow_kafka_request_seconds_count{api=\"Fetch\"}") >= 1.0);
    assert!(common::sample(&metrics, "oxbow_kafka_bytes_in_total") > 500.0 * 8.0);
    assert_eq!(common::sample(&metrics, "oxbow_partitions"), 1.0);
    assert!(
        common::sample(&metrics, "oxbow_fsync_seconds_count") >= 1.0,
        "flush=always must have synced"
    );
    // The metadata group of one node: it leads; registering, naming the cluster and creating
    // the topic were proposals that committed, and every committed entry is applied.
    assert_eq!(common::sample(&metrics, "oxbow_metadata_leader"), 0.0);
    assert!(common::sample(&metrics, "oxbow_metadata_term") >= 1.0);
    let committed = "oxbow_metadata_proposals_total{outcome=\"committed\"}";
    assert!(common::sample(&metrics, committed) >= 3.0, "{metrics}");
    assert_eq!(common::sample(&metrics, "oxbow_metadata_apply_lag"), 0.0);
    assert!(
        common::sample(&metrics, "oxbow_metadata_commit_index")
            >= common::sample(&metrics, committed)
    );
    assert!(common::sample(&metrics, "oxbow_metadata_proposal_seconds_count") >= 3.0);
    assert!(common::http_get(&metrics_addr, "/other").starts_with("HTTP/1.1 404"));
    assert!(broker.child.try_wait().unwrap().is_none());
}

/// Whether the broker has closed `stream` (a read returns end of file or a reset).
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn slow_senders_idle_clients_and_excess_connections_are_closed() {
    let data = tempfile::tempdir().unwrap();
    let limits = "shards = 1\nkafka_connections_max = 3\nkafka_idle_timeout_ms = 1500\nkafka_request_timeout_ms = 300\n";
    let (mut broker, addr, _) = common::start_broker_with_config(data.path(), limits);
    let connect = || {
        let stream = TcpStream::connect(&addr).unwrap();
        // Only a bound on a broker that never closes: the checks wait for the close itself.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        stream
    };

    // Slowloris: a request that starts and never finishes is closed after the request timeout.
    let mut slow = connect();
    slow.write_all(&100i32.to_be_bytes()).unwrap();
    slow.write_all(&[0, 3]).unwrap();
    assert!(closed(&mut slow), "a slow sender must be closed");
    broker.wait_for("timed out");

    // Three idle connections fill the limit; a fourth is closed at once, while they stay open.
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
    // A round trip on each proves they were accepted before the fourth arrives.
    for stream in &mut held {
        stream
            .write_all(&frame(&[0, 18, 0, 0, 0, 0, 0, 9, 0xff, 0xff]))
            .unwrap();
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut body).unwrap();
    }
    let mut excess = connect();
    assert!(
        closed(&mut excess),
        "the connection over the limit must be closed"
    );
    broker.wait_for("kafka_connections_max reached");
    for stream in &mut held {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let still_open =
            matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "connections within the limit must stay open");
        stream.set_nonblocking(false).unwrap();
    }
    // The held ones are closed only by the idle timeout.
    for stream in &mut held {
        assert!(
            closed(stream),
            "idle connections must be closed after kafka_idle_timeout_ms"
        );
    }
    let (ok, _, err) = kcat(&addr, &["-L"], None);
    assert!(ok, "a normal client must work afterwards: {err}");
}

#[test]
fn pipelined_produce_requests_are_answered_in_order_with_rising_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(dir.path(), 2);
    let mut stream = TcpStream::connect(&addr).unwrap();
    // Every request goes out before any answer is read: the broker reads on while earlier
    // ones wait for their fdatasync, and must still answer each in order, at its own offset.
    let requests = 200;
    let all: Vec<u8> = (0..requests)
        .flat_map(|i| {
            let mut batch = oxbow_core::BatchBuilder::new(0);
            batch.push(None, Some(format!("m{i}").as_bytes()), 0);
            common::kafka_produce_request(i, "pipelined", batch.build())
        })
        .collect();
    stream.write_all(&all).unwrap();
    let mut last_offset = -1;
    for i in 0..requests {
        let (correlation_id, partition) = common::kafka_produce_response(&mut stream);
        assert_eq!(correlation_id, i, "answers in request order");
        assert_eq!(partition.error_code, 0, "request {i}");
        assert_eq!(partition.base_offset, last_offset + 1, "request {i}");
        last_offset = partition.base_offset;
    }
    let (ok, out, err) = kcat(&addr, &["-C", "-t", "pipelined", "-e", "-q"], None);
    assert!(ok, "{err}");
    let expected: String = (0..requests).map(|i| format!("m{i}\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

/// Kafka's rule: clients never write control batches (transaction markers), INVALID_RECORD.
/// And while Oxbow runs no transactions, a transactional batch is refused too
/// (INVALID_TXN_STATE): nothing would ever end its transaction, and readers would take its
/// records as committed. Neither is stored; ordinary batches around them are.
#[test]
fn control_and_transactional_batches_from_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(dir.path(), 2);
    let mut stream = TcpStream::connect(&addr).unwrap();
    let batch = |value: &str, attribute_bits: i16| {
        let mut builder = oxbow_core::BatchBuilder::new(0).producer(42, 0, 0);
        builder.push(None, Some(value.as_bytes()), 0);
        let mut bytes = builder.build().into_bytes().to_vec();
        // Attributes at byte 21, sealed by the CRC-32C at byte 17 over everything after it.
        let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) | attribute_bits;
        bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        oxbow_core::RecordBatch::parse(bytes::Bytes::from(bytes)).unwrap()
    };
    let mut produce = |i: i32, batch| {
        let request = common::kafka_produce_request(i, "markers", batch);
        stream.write_all(&request).unwrap();
        common::kafka_produce_response(&mut stream).1.error_code
    };
    assert_eq!(produce(1, batch("before", 0)), 0);
    assert_eq!(produce(2, batch("marker", 0x30)), 87, "INVALID_RECORD");
    assert_eq!(
        produce(3, batch("in a transaction", 0x10)),
        48,
        "INVALID_TXN_STATE"
    );
    let mut after = oxbow_core::BatchBuilder::new(0);
    after.push(None, Some(b"after"), 0);
    assert_eq!(produce(4, after.build()), 0);
    let (ok, out, err) = kcat(&addr, &["-C", "-t", "markers", "-e", "-q"], None);
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8(out).unwrap(), "before\nafter\n");
}
