//! Producer and consumer threads, the pacing of a fixed rate, and the per-protocol set-up.

use super::meter::{now_ns, Meter};
use super::payload::Payloads;
use super::plan::{Plan, Protocol, Workload};
use super::{current_thread_runtime, kafka, native, Control};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pacing thread sleeps only for waits longer than this; shorter ones are sent at once
/// (a sleep overshoots by tens of microseconds, and the stamp holds the slot anyway).
const PACING_SLEEP_MIN: Duration = Duration::from_micros(50);

pub type Worker = JoinHandle<Result<(), String>>;

/// Creates the topic when the plan says so; returns its partition count.
pub async fn setup(plan: &Plan) -> Result<u32, String> {
    match plan.protocol {
        Protocol::Native => native::setup(plan).await,
        Protocol::Kafka => {
            let mut connection =
                kafka::Connection::connect(&plan.broker, plan.tls.as_ref()).await?;
            if plan.create_topic {
                connection
                    .create_topic(&plan.topic, plan.partitions)
                    .await?;
            }
            let partitions = connection.partitions(&plan.topic).await;
            connection.close().await;
            partitions
        }
        #[cfg(feature = "nats")]
        Protocol::Nats => super::nats::setup(plan).await,
    }
}

pub async fn cleanup(plan: &Plan, subscription: &str) -> Result<(), String> {
    match plan.protocol {
        Protocol::Native => native::cleanup(plan, subscription).await,
        Protocol::Kafka if plan.delete_topic => {
            let mut connection =
                kafka::Connection::connect(&plan.broker, plan.tls.as_ref()).await?;
            let deleted = connection.delete_topic(&plan.topic).await;
            connection.close().await;
            deleted
        }
        Protocol::Kafka => Ok(()),
        #[cfg(feature = "nats")]
        Protocol::Nats => super::nats::cleanup(plan).await,
    }
}

/// Counts a worker out when it ends, however it ends; an error stops the whole run.
struct Running<'a> {
    running: &'a AtomicUsize,
    control: &'a Control,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Running<'_> {
    fn outcome(&self, result: Result<(), String>) -> Result<(), String> {
        if result.is_err() {
            self.control.stop.store(true, Ordering::Release);
        }
        result
    }
}

// One per consumer thread, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Consumer {
    Kafka(kafka::Consumer),
    Native(native::Consumer),
    #[cfg(feature = "nats")]
    Nats(super::nats::Consumer),
}

impl Consumer {
    async fn poll(&mut self, meter: &Meter) -> Result<u64, String> {
        match self {
            Consumer::Kafka(c) => c.poll(meter).await,
            Consumer::Native(c) => c.poll(meter).await,
            #[cfg(feature = "nats")]
            Consumer::Nats(c) => c.poll(meter).await,
        }
    }

    async fn close(self) -> Result<(), String> {
        match self {
            Consumer::Native(c) => c.close().await,
            Consumer::Kafka(c) => {
                c.close().await;
                Ok(())
            }
            #[cfg(feature = "nats")]
            Consumer::Nats(_) => Ok(()),
        }
    }
}

/// Starts the consumers and returns once each is subscribed (or the first failed to).
pub fn start_consumers(
    plan: &Plan,
    subscription: &str,
    meter: &Arc<Meter>,
    control: &Arc<Control>,
) -> Result<Vec<Worker>, String> {
    let (ready_tx, ready) = mpsc::channel::<Result<(), String>>();
    let threads: Vec<Worker> = (0..plan.consumers)
        .map(|index| {
            let (plan, meter, control) = (plan.clone(), meter.clone(), control.clone());
            let (subscription, ready_tx) = (subscription.to_string(), ready_tx.clone());
            std::thread::Builder::new()
                .name(format!("bench-consumer-{index}"))
                .spawn(move || {
                    let running = Running {
                        running: &control.consumers_running,
                        control: &control,
                    };
                    let result = current_thread_runtime().and_then(|runtime| {
                        runtime.block_on(async {
                            let opened = match plan.protocol {
                                Protocol::Kafka => {
                                    kafka::Consumer::open(&plan, index, plan.consumers)
                                        .await
                                        .map(Consumer::Kafka)
                                }
                                Protocol::Native => {
                                    native::Consumer::open(&plan, &subscription, index)
                                        .await
                                        .map(Consumer::Native)
                                }
                                #[cfg(feature = "nats")]
                                Protocol::Nats => {
                                    super::nats::Consumer::open(&plan, index, plan.consumers)
                                        .await
                                        .map(Consumer::Nats)
                                }
                            };
                            let _ =
                                ready_tx.send(opened.as_ref().map(|_| ()).map_err(Clone::clone));
                            consume(&plan, opened?, &meter, &control).await
                        })
                    });
                    running.outcome(result)
                })
                .expect("spawning a consumer thread")
        })
        .collect();
    drop(ready_tx);
    for _ in 0..plan.consumers {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stop_all(control, threads, e)),
            Err(_) => return Err(stop_all(control, threads, "a consumer ended early".into())),
        }
    }
    Ok(threads)
}

fn stop_all(control: &Control, threads: Vec<Worker>, error: String) -> String {
    control.stop.store(true, Ordering::Release);
    for thread in threads {
        let _ = thread.join();
    }
    error
}

/// Receives until the run is over: for a consume-only run, the measured duration, or all
/// consumers idle for the drain timeout once data came; otherwise, once the producers are
/// done, every produced message received or the drain timeout passed without any.
async fn consume(
    plan: &Plan,
    mut consumer: Consumer,
    meter: &Meter,
    control: &Control,
) -> Result<(), String> {
    let drain_ns = plan.drain_timeout.as_nanos() as u64;
    let idle_since = |at_ns: u64| now_ns().saturating_sub(at_ns) >= drain_ns;
    let mut producers_done_ns = None;
    while !control.stopped() {
        consumer.poll(meter).await?;
        let Some(timeline) = control.timeline.get() else {
            continue;
        };
        let last_received_ns = meter.consumed.last_ns();
        let over = if plan.workload == Workload::Consume {
            Instant::now() >= timeline.produce_until
                || (meter.consumed.total() > 0 && idle_since(last_received_ns))
        } else if control.producers_running.load(Ordering::Acquire) == 0 {
            let done_ns = *producers_done_ns.get_or_insert_with(now_ns);
            meter.consumed.total() >= meter.produced.total()
                || idle_since(last_received_ns.max(done_ns))
        } else {
            false
        };
        if over {
            break;
        }
    }
    consumer.close().await
}

enum Sink {
    Kafka(kafka::Producer),
    Native(native::Producer),
    #[cfg(feature = "nats")]
    Nats(Box<super::nats::Producer>),
}

impl Sink {
    async fn push(&mut self, payload: &[u8], intended_ns: u64) -> Result<(), String> {
        match self {
            Sink::Kafka(p) => p.push(payload, intended_ns).await,
            Sink::Native(p) => p.push(payload, intended_ns).await,
            #[cfg(feature = "nats")]
            Sink::Nats(p) => p.push(payload, intended_ns).await,
        }
    }

    /// Sends a partly filled batch now. The other clients linger (or not) by themselves.
    async fn flush(&mut self) -> Result<(), String> {
        match self {
            Sink::Kafka(p) => p.flush().await,
            _ => Ok(()),
        }
    }

    fn open_since(&self) -> Option<Instant> {
        match self {
            Sink::Kafka(p) => p.open_since(),
            _ => None,
        }
    }

    async fn close(self) -> Result<(), String> {
        match self {
            Sink::Kafka(p) => p.close().await,
            Sink::Native(p) => p.close().await,
            #[cfg(feature = "nats")]
            Sink::Nats(p) => p.close().await,
        }
    }
}

pub fn start_producers(plan: &Plan, meter: &Arc<Meter>, control: &Arc<Control>) -> Vec<Worker> {
    (0..plan.producers)
        .map(|index| {
            let (plan, meter, control) = (plan.clone(), meter.clone(), control.clone());
            std::thread::Builder::new()
                .name(format!("bench-producer-{index}"))
                .spawn(move || {
                    let running = Running {
                        running: &control.producers_running,
                        control: &control,
                    };
                    let result = current_thread_runtime().and_then(|runtime| {
                        runtime.block_on(produce(&plan, index, &meter, &control))
                    });
                    running.outcome(result)
                })
                .expect("spawning a producer thread")
        })
        .collect()
}

async fn produce(
    plan: &Plan,
    index: usize,
    meter: &Arc<Meter>,
    control: &Control,
) -> Result<(), String> {
    let mut sink = match plan.protocol {
        Protocol::Kafka => Sink::Kafka(kafka::Producer::open(plan, index, meter.clone()).await?),
        Protocol::Native => Sink::Native(native::Producer::open(plan, meter.clone()).await?),
        #[cfg(feature = "nats")]
        Protocol::Nats => Sink::Nats(Box::new(
            super::nats::Producer::open(plan, index, meter.clone()).await?,
        )),
    };
    let timeline = control.timeline.get().expect("set before producers start");
    let mut payloads = Payloads::new(plan.payload, plan.message_size, index as u64);
    let limit = plan.messages_per_producer.unwrap_or(u64::MAX);
    match plan.producer_rate() {
        None => {
            let mut sent = 0;
            while sent < limit && Instant::now() < timeline.produce_until && !control.stopped() {
                let intended_ns = now_ns();
                sink.push(payloads.next(intended_ns), intended_ns).await?;
                sent += 1;
            }
        }
        Some(per_second) => {
            let (slots_tx, mut slots) = tokio::sync::mpsc::unbounded_channel();
            let pacer = {
                let schedule = Schedule {
                    per_second,
                    // Producers take turns within each interval instead of bursting together.
                    phase: index as f64 / plan.producers as f64,
                    start: timeline.started,
                    start_ns: timeline.started_ns,
                    until: timeline.produce_until,
                    limit,
                };
                std::thread::Builder::new()
                    .name(format!("bench-pacer-{index}"))
                    .spawn(move || schedule.release(slots_tx))
                    .map_err(|e| format!("spawning a pacing thread: {e}"))?
            };
            loop {
                let slot = match sink.open_since() {
                    Some(opened) if !plan.linger.is_zero() => {
                        let left = plan.linger.saturating_sub(opened.elapsed());
                        // tokio's timers round up to the next millisecond, so a timeout that is
                        // due now loses to any slot arriving within that millisecond; waiting
                        // again would let slots hold the batch open until it is full.
                        if left.is_zero() {
                            sink.flush().await?;
                            continue;
                        }
                        match tokio::time::timeout(left, slots.recv()).await {
                            Ok(slot) => slot,
                            Err(_) => {
                                sink.flush().await?;
                                continue;
                            }
                        }
                    }
                    _ => slots.recv().await,
                };
                let Some(slot_ns) = slot else { break };
                if control.stopped() {
                    break;
                }
                let intended_ns = if plan.correct_omission {
                    slot_ns
                } else {
                    now_ns()
                };
                sink.push(payloads.next(intended_ns), intended_ns).await?;
                if plan.linger.is_zero() && slots.is_empty() {
                    sink.flush().await?;
                }
            }
            drop(slots);
            let _ = pacer.join();
        }
    }
    control
        .sending_ended_ns
        .fetch_max(now_ns(), Ordering::AcqRel);
    sink.close().await
}

/// A producer's share of a fixed rate.
struct Schedule {
    per_second: f64,
    /// Fraction of one interval this producer's slots are shifted by.
    phase: f64,
    start: Instant,
    start_ns: u64,
    until: Instant,
    limit: u64,
}

impl Schedule {
    /// Sends each slot's intended time when it comes, until the end or the receiver is gone.
    fn release(self, slots: tokio::sync::mpsc::UnboundedSender<u64>) {
        let interval_ns = 1e9 / self.per_second;
        for i in 0..self.limit {
            let offset = Duration::from_nanos(((i as f64 + self.phase) * interval_ns) as u64);
            let due = self.start + offset;
            if due >= self.until {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                if wait >= PACING_SLEEP_MIN {
                    std::thread::sleep(wait);
                }
            }
            if slots
                .send(self.start_ns + offset.as_nanos() as u64)
                .is_err()
            {
                break;
            }
        }
    }
}
