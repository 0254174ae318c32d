//! Native-protocol delivery benchmark: one producer, N consumers on one subscription, each on
//! its own thread and connection (as separate applications would be).
//!
//! Without `--rate`, the producer sends `--messages` as fast as acks=1 allows and the report
//! is delivered msg/s (first send to last delivery). With `--rate`, it sends on a fixed
//! schedule and latency is measured from each message's *intended* send time, so a stall in
//! the broker or client shows in the percentiles (no coordinated omission). Prints one line of
//! `key=value` pairs for `benches/native.py`.

use clap::Parser;
use hdrhistogram::Histogram;
use oxbow_client::{Acks, Client, Mode, SubscriptionType};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// After the producer is done, a consumer that receives nothing for this long stops (a
/// non-reliable subscription may have dropped the rest).
const IDLE_END: Duration = Duration::from_secs(3);

#[derive(Parser, Debug)]
struct Args {
    /// Broker's native-protocol address.
    #[arg(long, default_value = "127.0.0.1:6650")]
    broker: String,
    /// shared-reliable or exclusive-nonreliable.
    #[arg(long)]
    scenario: String,
    /// Consumers on the subscription.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Messages to send.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Message size in bytes (at least 8: the send time travels in the first 8).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Fixed send rate in msg/s (latency mode); none: as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
    /// Topic name (fresh per run).
    #[arg(long)]
    topic: String,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

struct Shared {
    delivered: AtomicU64,
    last_delivery_ns: AtomicU64,
    producer_done: AtomicBool,
    latency_us: Mutex<Histogram<u64>>,
}

fn consumer_thread(
    args: Arc<Args>,
    i: usize,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<()>,
) {
    runtime().block_on(async move {
        let (kind, mode) = match args.scenario.as_str() {
            "shared-reliable" => (SubscriptionType::Shared, Mode::Reliable),
            _ => (SubscriptionType::Exclusive, Mode::NonReliable),
        };
        let client = Client::builder()
            .broker(&args.broker)
            .connect()
            .await
            .unwrap();
        let mut consumer = client
            .consumer(&args.topic, "bench")
            .kind(kind)
            .mode(mode)
            .name(format!("bench-{i}"))
            .receiver_queue(2_000)
            .build()
            .await
            .unwrap();
        ready.send(()).unwrap();
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        loop {
            let batch = match tokio::time::timeout(IDLE_END, consumer.recv_batch(512)).await {
                Ok(batch) => batch.unwrap(),
                Err(_) if shared.producer_done.load(Ordering::Acquire) => break,
                Err(_) => continue,
            };
            let now = now_ns();
            for message in &batch {
                let sent = u64::from_le_bytes(message.value[..8].try_into().unwrap());
                latency.saturating_record(now.saturating_sub(sent) / 1_000);
            }
            if mode == Mode::Reliable {
                consumer.ack_all(&batch).unwrap();
            }
            shared.last_delivery_ns.fetch_max(now, Ordering::AcqRel);
            let total = shared
                .delivered
                .fetch_add(batch.len() as u64, Ordering::AcqRel)
                + batch.len() as u64;
            if total >= args.messages {
                break;
            }
        }
        shared.latency_us.lock().unwrap().add(&latency).unwrap();
        let _ = consumer.close().await;
    });
}

fn main() {
    let args = Arc::new(Args::parse());
    assert!(args.size >= 8, "--size must be at least 8");
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        producer_done: AtomicBool::new(false),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
    });
    let rt = runtime();
    let client = rt.block_on(async {
        let client = Client::builder()
            .broker(&args.broker)
            .connect()
            .await
            .unwrap();
        client.create_topic(&args.topic, 1).await.unwrap();
        client
    });
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let consumers: Vec<_> = (0..args.consumers)
        .map(|i| {
            let (args, shared, ready_tx) = (args.clone(), shared.clone(), ready_tx.clone());
            std::thread::spawn(move || consumer_thread(args, i, shared, ready_tx))
        })
        .collect();
    for _ in 0..args.consumers {
        ready.recv().unwrap();
    }
    let first_send_ns = now_ns();
    rt.block_on(async {
        let producer = client
            .producer(&args.topic)
            .acks(Acks::Leader)
            // At a fixed rate each message goes at once (what a latency-sensitive user sets);
            // at full speed a millisecond of linger fills batches.
            .linger(match args.rate {
                Some(_) => Duration::ZERO,
                None => Duration::from_millis(1),
            })
            .build()
            .await
            .unwrap();
        let mut value = vec![0u8; args.size];
        let start = Instant::now();
        let start_ns = now_ns();
        let mut pending = Vec::new();
        for i in 0..args.messages {
            let intended_ns = match args.rate {
                Some(rate) => {
                    let offset = Duration::from_nanos(i * 1_000_000_000 / rate);
                    let due = start + offset;
                    // tokio's timer ticks in milliseconds, too coarse for this schedule, and
                    // spinning would take a core from the broker: the thread sleeps (this
                    // runtime serves only the producer's connection), then yields right after
                    // the send below so the writer puts the message on the wire at once.
                    if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(ahead);
                    }
                    start_ns + offset.as_nanos() as u64
                }
                None => now_ns(),
            };
            value[..8].copy_from_slice(&intended_ns.to_le_bytes());
            pending.push(producer.send(None, &value).await.unwrap());
            if args.rate.is_some() {
                tokio::task::yield_now().await;
            }
            if pending.len() >= 10_000 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        producer.flush().await.unwrap();
        for p in pending {
            p.await.unwrap();
        }
    });
    shared.producer_done.store(true, Ordering::Release);
    for consumer in consumers {
        consumer.join().unwrap();
    }
    let delivered = shared.delivered.load(Ordering::Acquire);
    let elapsed_s = (shared.last_delivery_ns.load(Ordering::Acquire) - first_send_ns) as f64 / 1e9;
    let h = shared.latency_us.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "delivered={delivered} produced={} msgs_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        args.messages,
        delivered as f64 / elapsed_s,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1e3
    );
}
