//! Hostile load on the real broker: thousands of connections held and dropped, a consumer that
//! never reads. After each, normal clients work and the broker's memory (VmRSS from /proc) is
//! back near where it started. The numbers are printed for tests/README.md.

mod common;

use common::start_native_broker;
use oxbow_client::{Acks, Client, Mode, StartPosition, SubscriptionType};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Only a bound on a hung test.
const PATIENCE: Duration = Duration::from_secs(60);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Sum of the broker's open-connection gauges, from its metrics endpoint.
async fn open_connections(metrics: &str) -> u64 {
    use tokio::io::AsyncReadExt;
    let mut stream = TcpStream::connect(metrics).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with("oxbow_kafka_connections ") || l.starts_with("oxbow_native_connections ")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

async fn wait_for_connections(metrics: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // The metrics connection itself is not counted (it is HTTP).
    while open_connections(metrics).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {expected} connections"
        );
        tokio::task::yield_now().await;
    }
}

fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process (the broker child inherits it).
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= needed,
            "this test needs {needed} descriptors; the hard limit is {}",
            limit.rlim_max
        );
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[tokio::test]
async fn five_thousand_connections_held_then_dropped_leave_memory_near_baseline() {
    const CONNECTIONS: u64 = 5_000;
    raise_fd_limit(CONNECTIONS + 4_096);
    let dir = tempfile::tempdir().unwrap();
    let (broker, native) = start_native_broker(dir.path(), "");
    let ready = broker
        .seen
        .iter()
        .find(|l| l.contains("oxbow ready"))
        .unwrap()
        .clone();
    let (kafka, metrics) = (
        common::field(&ready, "kafka"),
        common::field(&ready, "metrics"),
    );
    let pid = broker.child.id();
    // Warm up every path once, so the baseline includes what any broker has after first use.
    let client = Client::builder().broker(&native).connect().await.unwrap();
    client.create_topic("warm", 2).await.unwrap();
    let producer = client
        .producer("warm")
        .acks(Acks::All)
        .build()
        .await
        .unwrap();
    producer.send(None, b"x").await.unwrap().await.unwrap();
    wait_for_connections(&metrics, 1).await;
    let baseline = rss_kib(pid);

    let mut held = Vec::with_capacity(CONNECTIONS as usize);
    for i in 0..CONNECTIONS {
        let addr = if i % 2 == 0 { &kafka } else { &native };
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for_connections(&metrics, CONNECTIONS + 1).await;
    let holding = rss_kib(pid);
    // While they are held, normal clients still work.
    let other = Client::builder().broker(&native).connect().await.unwrap();
    other.list_topics().await.unwrap();
    drop(other);
    drop(held);
    wait_for_connections(&metrics, 1).await;
    let after = rss_kib(pid);
    producer.send(None, b"after").await.unwrap().await.unwrap();
    eprintln!(
        "flood: {CONNECTIONS} connections; broker VmRSS {baseline} KiB before, {holding} KiB \
         holding them ({:.1} KiB each), {after} KiB after they closed",
        (holding.saturating_sub(baseline)) as f64 / CONNECTIONS as f64
    );
    assert!(
        holding - baseline < 64 * CONNECTIONS,
        "more than 64 KiB per idle connection: {baseline} -> {holding} KiB"
    );
    // A shard whose last connection closes hands freed memory back (malloc_trim).
    assert!(
        after <= baseline + (holding - baseline) / 2 + 8 * 1024,
        "memory did not come back: {baseline} -> {holding} -> {after} KiB"
    );
}

/// A consumer that grants a million permits and never reads is cut off once
/// `native_outbound_bytes_max` of messages wait for it; its messages go to a consumer that
/// reads, and the broker's memory stays bounded.
#[tokio::test]
async fn a_consumer_that_never_reads_is_disconnected_and_its_messages_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, native) = start_native_broker(
        dir.path(),
        // A window wide enough that the outbound budget, not the window, is what binds.
        "native_outbound_bytes_max = 4194304\n[log]\nflush = \"never\"\n\
         [subscriptions]\nunacked_messages_max = 1000000\n",
    );
    let pid = broker.child.id();
    let client = Client::builder().broker(&native).connect().await.unwrap();
    client.create_topic("flood", 1).await.unwrap();
    let baseline = rss_kib(pid);
    let mut silent = TcpStream::connect(&native).await.unwrap();
    let frames = [
        oxbow_core::native::ClientFrame::Connect {
            version: oxbow_core::native::PROTOCOL_VERSION,
            client_name: "never-reads".into(),
        },
        oxbow_core::native::ClientFrame::Subscribe {
            request_id: 1,
            consumer_id: 1,
            topic: "flood".into(),
            subscription: "work".into(),
            kind: SubscriptionType::Shared,
            mode: Mode::Reliable,
            consumer_name: "silent".into(),
            priority: 0,
            start: StartPosition::Earliest,
            partitions: None,
            reattaching: false,
        },
        oxbow_core::native::ClientFrame::Flow {
            consumer_id: 1,
            partition: None,
            permits: 1 << 20,
        },
    ];
    for frame in &frames {
        silent
            .write_all(&oxbow_core::native::encode_frame(frame, 0))
            .await
            .unwrap();
    }
    // 40 MB of 1 KiB messages: far more than socket buffers and the 4 MiB budget.
    let producer = client
        .producer("flood")
        .acks(Acks::Leader)
        .build()
        .await
        .unwrap();
    let value = vec![7u8; 1024];
    let mut pending = Vec::new();
    for i in 0..40_000 {
        pending.push(
            tokio::time::timeout(Duration::from_secs(5), producer.send(None, &value))
                .await
                .unwrap_or_else(|_| panic!("send {i} stuck"))
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    for p in pending {
        p.await.unwrap();
    }
    for needle in ["exceeded native_outbound_bytes_max", "reason=not reading"] {
        if !broker.seen.iter().any(|l| l.contains(needle)) {
            broker.wait_for(needle);
        }
    }
    let peak = rss_kib(pid);
    // Everything reaches a consumer that reads, the silent one's share included.
    let mut reader = client
        .consumer("flood", "work")
        .kind(SubscriptionType::Shared)
        .receiver_queue(5_000)
        .build()
        .await
        .unwrap();
    let mut offsets = std::collections::BTreeSet::new();
    while offsets.len() < 40_000 {
        let batch = tokio::time::timeout(PATIENCE, reader.recv_batch(5_000))
            .await
            .unwrap()
            .unwrap();
        offsets.extend(batch.iter().map(|m| m.offset));
        reader.ack_all(&batch).unwrap();
    }
    drop(silent);
    eprintln!(
        "non-reading consumer: 40,000 x 1 KiB produced; broker VmRSS {baseline} KiB before, \
         {peak} KiB when it was cut off"
    );
    assert!(
        peak < baseline + 128 * 1024,
        "the broker buffered too much for a client that does not read: {baseline} -> {peak} KiB"
    );
}
