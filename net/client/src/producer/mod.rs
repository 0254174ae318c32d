//! A producer: batches messages per partition (linger and size bound), sends each batch as one
//! record batch in the shared format to its partition's leader, and resolves every message
//! with its offset. With idempotence (the default under acks = all) a batch whose answer was
//! lost goes again until the delivery timeout and is appended once; see [`delivery`].
//!
//! A partition's open batch is taken only by a sender holding an in-flight slot, so while
//! every slot is out (a slow or stalled broker) messages keep gathering in the open batch
//! instead of blocking `send`, and each slot that frees carries everything gathered, as
//! librdkafka's accumulator does. `send` waits only when its partition's open batch is full
//! (`batch_bytes_max`) and still waiting for a slot: that bounds what a producer holds.

mod delivery;

use crate::error::ClientError;
use crate::partitioner::partition_for_key;
use crate::routing::Router;
use crate::Client;
use delivery::{Lane, ProducerIdentity};
use oxbow_core::native::Acks;
use oxbow_core::{BatchBuilder, Codec};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: u32,
    /// Offset; `None` under `Acks::None`, which gets no answer.
    pub offset: Option<u64>,
}

/// How long a message may take from `send` to its answer by default (Kafka's
/// `delivery.timeout.ms`).
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of a producer.
pub struct ProducerBuilder {
    client: Client,
    topic: String,
    acks: Acks,
    linger: Duration,
    batch_bytes_max: usize,
    in_flight_batches_max: usize,
    compression: (Codec, Option<i32>),
    idempotence: Option<bool>,
    delivery_timeout: Duration,
}

impl ProducerBuilder {
    pub(crate) fn new(client: Client, topic: String) -> ProducerBuilder {
        ProducerBuilder {
            client,
            topic,
            acks: Acks::All,
            linger: Duration::from_millis(1),
            batch_bytes_max: 256 * 1024,
            in_flight_batches_max: 64,
            compression: (Codec::None, None),
            idempotence: None,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
        }
    }

    /// Whether batches carry a producer id and per-partition sequences (Kafka's
    /// `enable.idempotence`), so that a batch whose answer was lost is sent again and appended
    /// once. Default: on under `Acks::All`, off otherwise; turning it on with other acks fails
    /// at [`build`](Self::build), as in Kafka. Costs one request at build, and keeps at most
    /// [`oxbow_core::PRODUCER_BATCHES_KEPT`] (16) batches per partition unanswered.
    pub fn idempotence(mut self, on: bool) -> ProducerBuilder {
        self.idempotence = Some(on);
        self
    }

    /// How long a message may take from `send` to its answer, retries included (default 120
    /// s, Kafka's `delivery.timeout.ms`). Past it, `send`'s result is the last attempt's error.
    pub fn delivery_timeout(mut self, timeout: Duration) -> ProducerBuilder {
        self.delivery_timeout = timeout;
        self
    }

    /// Compresses every batch with `codec` (default none) at `level` (`None`: the codec's
    /// default; gzip 1-9, lz4 1-17, zstd 1-22; snappy has no levels). Kafka consumers read
    /// these batches as they read a Kafka producer's.
    pub fn compression(
        mut self,
        codec: Codec,
        level: Option<i32>,
    ) -> Result<ProducerBuilder, ClientError> {
        codec.check_level(level).map_err(ClientError::Config)?;
        self.compression = (codec, level);
        Ok(self)
    }

    /// When the broker answers (default `All`).
    pub fn acks(mut self, acks: Acks) -> ProducerBuilder {
        self.acks = acks;
        self
    }

    /// How long a batch waits for more messages before it is sent (default 1 ms).
    pub fn linger(mut self, linger: Duration) -> ProducerBuilder {
        self.linger = linger;
        self
    }

    /// Largest batch; a message that would overflow it starts the next (default 256 KiB).
    pub fn batch_bytes_max(mut self, bytes: usize) -> ProducerBuilder {
        self.batch_bytes_max = bytes.max(1);
        self
    }

    /// Batches sent and not yet answered (default 64). While this many are out, messages
    /// gather in their partition's open batch; `send` waits only once that batch is full.
    pub fn in_flight_batches_max(mut self, batches: usize) -> ProducerBuilder {
        self.in_flight_batches_max = batches.max(1);
        self
    }

    /// Applies the settings of a [`crate::ProducerConfig`].
    pub fn config(self, config: &crate::ProducerConfig) -> Result<ProducerBuilder, ClientError> {
        let mut builder = self;
        builder.idempotence = config.idempotence;
        builder
            .acks(config.acks()?)
            .delivery_timeout(Duration::from_millis(config.delivery_timeout_ms))
            .linger(Duration::from_millis(config.linger_ms))
            .batch_bytes_max(config.batch_bytes_max)
            .in_flight_batches_max(config.in_flight_batches_max)
            .compression(config.codec()?, config.compression_level)
    }

    /// Looks the topic and its leaders up (it must exist), asks for a producer id if
    /// idempotent, and returns the producer.
    pub async fn build(self) -> Result<Producer, ClientError> {
        let idempotent = match (self.idempotence, self.acks) {
            (Some(true), Acks::None | Acks::Leader) => {
                return Err(ClientError::Config(
                    "idempotence needs acks = all (a batch sent again must be known held)".into(),
                ))
            }
            (Some(on), _) => on,
            (None, acks) => acks == Acks::All,
        };
        let partitions = self.client.router.refresh(&self.topic).await?.len() as u32;
        if partitions == 0 {
            return Err(ClientError::Protocol(format!(
                "topic {} has no partitions",
                self.topic
            )));
        }
        let identity = match idempotent {
            true => Some(Mutex::new(
                delivery::new_identity(&self.client.router).await?,
            )),
            false => None,
        };
        Ok(Producer {
            inner: Arc::new(Inner {
                router: self.client.router.clone(),
                topic: self.topic,
                partitions,
                acks: self.acks,
                linger: self.linger,
                batch_bytes_max: self.batch_bytes_max,
                compression: self.compression,
                in_flight: Arc::new(Semaphore::new(self.in_flight_batches_max)),
                in_flight_max: self.in_flight_batches_max as u32,
                delivery_timeout: self.delivery_timeout,
                identity,
                lanes: (0..partitions).map(|_| Lane::new()).collect(),
                outlets: (0..partitions).map(|_| Outlet::default()).collect(),
                state: Mutex::default(),
            }),
        })
    }
}

type Waiter = oneshot::Sender<Result<Delivered, ClientError>>;

struct OpenBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    /// When its first message came: the delivery timeout counts from there, time spent
    /// waiting for an in-flight slot included.
    opened: Instant,
}

#[derive(Default)]
struct State {
    open: HashMap<u32, OpenBatch>,
    /// Partitions whose open batch a sender task is on its way to take.
    sending: HashSet<u32>,
    sticky: u32,
}

/// Where a message went in `send`.
enum Placed<'a> {
    /// Its partition's batch is full and waits for a slot: look again once it is taken.
    Waiting(Pin<Box<tokio::sync::futures::Notified<'a>>>),
    /// Added to `partition`'s open batch, which it `filled`; `starts_sender`: no sender task
    /// was on its way to take that batch.
    Added {
        partition: u32,
        filled: bool,
        starts_sender: bool,
    },
}

/// How a partition's batches leave.
#[derive(Default)]
struct Outlet {
    /// Held from taking a batch until its request is written: batches leave in order.
    order: tokio::sync::Mutex<()>,
    /// The open batch was taken: sends waiting for room look again.
    taken: Notify,
    /// The open batch is full: its sender stops lingering.
    full: Notify,
}

struct Inner {
    router: Arc<Router>,
    topic: String,
    partitions: u32,
    acks: Acks,
    linger: Duration,
    batch_bytes_max: usize,
    compression: (Codec, Option<i32>),
    in_flight: Arc<Semaphore>,
    in_flight_max: u32,
    delivery_timeout: Duration,
    /// Set when idempotent; replaced after a batch is given up (`start_over`).
    identity: Option<Mutex<ProducerIdentity>>,
    /// Per partition, used when idempotent.
    lanes: Vec<Lane>,
    /// Per partition: the order its batches leave in, and the waits for them to.
    outlets: Vec<Outlet>,
    state: Mutex<State>,
}

/// Sends messages to one topic. Cheap to clone; clones share batches.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

/// The outcome of one `send`, resolved when its batch is acknowledged.
pub struct PendingSend {
    answer: oneshot::Receiver<Result<Delivered, ClientError>>,
}

impl Future for PendingSend {
    type Output = Result<Delivered, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// Partitions of the topic.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// This producer, serializing keys with `keys` and values with `values`.
    pub fn typed<K, V, KS, VS>(self, keys: KS, values: VS) -> crate::TypedProducer<K, V, KS, VS>
    where
        K: ?Sized,
        V: ?Sized,
        KS: crate::Serializer<K>,
        VS: crate::Serializer<V>,
    {
        crate::TypedProducer::new(self, keys, values)
    }

    /// Adds a message to its partition's batch. A keyed message goes where Kafka's default
    /// partitioner puts it; unkeyed ones stick to one partition per batch. Waits only when its
    /// partition's open batch is full and every in-flight slot is out. Await the returned
    /// value for the offset.
    pub async fn send(&self, key: Option<&[u8]>, value: &[u8]) -> Result<PendingSend, ClientError> {
        self.send_with_headers(key, value, &[]).await
    }

    /// [`Producer::send`] with record headers (a name and a value or `None` each), which
    /// consumers of both protocols receive.
    pub async fn send_with_headers(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<PendingSend, ClientError> {
        let inner = &self.inner;
        let headers: Vec<(&[u8], Option<&[u8]>)> =
            headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        let headers_bytes: usize = headers
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 10)
            .sum();
        let bytes = value.len() + key.map_or(0, <[u8]>::len) + headers_bytes + 32;
        let (tx, answer) = oneshot::channel();
        let timestamp = now_ms();
        // Unkeyed messages move on to the next partition when the sticky one's batch is full.
        let mut moves_left = inner.partitions;
        let mut tx = Some(tx);
        loop {
            let placed = {
                let mut state = inner.state.lock().expect("not poisoned");
                let partition = match key {
                    Some(key) => partition_for_key(key, inner.partitions),
                    None => state.sticky,
                };
                let full = (state.open.get(&partition))
                    .is_some_and(|open| open.builder.size_bytes() + bytes > inner.batch_bytes_max);
                if full && key.is_none() && moves_left > 1 {
                    moves_left -= 1;
                    state.sticky = (partition + 1) % inner.partitions;
                    continue;
                }
                if full {
                    // Registered before the lock goes, so the taking cannot be missed.
                    let outlet = &inner.outlets[partition as usize];
                    let mut taken = Box::pin(outlet.taken.notified());
                    taken.as_mut().enable();
                    outlet.full.notify_one();
                    Placed::Waiting(taken)
                } else {
                    let (codec, level) = inner.compression;
                    let open = state.open.entry(partition).or_insert_with(|| OpenBatch {
                        builder: BatchBuilder::new(timestamp).compression(codec, level),
                        waiters: Vec::new(),
                        opened: Instant::now(),
                    });
                    open.builder
                        .push_with_headers(key, Some(value), &headers, timestamp);
                    open.waiters.push(tx.take().expect("placed once"));
                    Placed::Added {
                        partition,
                        filled: open.builder.size_bytes() >= inner.batch_bytes_max,
                        starts_sender: state.sending.insert(partition),
                    }
                }
            };
            match placed {
                // Wait for the full batch to be taken, then look again.
                Placed::Waiting(taken) => {
                    taken.await;
                    moves_left = inner.partitions;
                }
                Placed::Added {
                    partition,
                    filled,
                    starts_sender,
                } => {
                    if filled {
                        inner.outlets[partition as usize].full.notify_one();
                    }
                    if starts_sender {
                        let producer = self.clone();
                        tokio::spawn(async move { producer.send_batch(partition, true).await });
                    }
                    return Ok(PendingSend { answer });
                }
            }
        }
    }

    /// Takes `partition`'s open batch and sends it: after the linger (cut short when the batch
    /// fills) if `linger`, then once an in-flight slot is free, taking whatever gathered by
    /// then.
    async fn send_batch(&self, partition: u32, linger: bool) {
        let inner = &self.inner;
        let outlet = &inner.outlets[partition as usize];
        if linger && !inner.linger.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(inner.linger) => {}
                _ = outlet.full.notified() => {}
            }
        }
        let Ok(permit) = inner.in_flight.clone().acquire_owned().await else {
            return;
        };
        let order = outlet.order.lock().await;
        let batch = {
            let mut state = inner.state.lock().expect("not poisoned");
            state.sending.remove(&partition);
            let batch = state.open.remove(&partition);
            if batch.is_some() && partition == state.sticky {
                state.sticky = (state.sticky + 1) % inner.partitions;
            }
            outlet.taken.notify_waiters();
            batch
        };
        if let Some(batch) = batch {
            self.dispatch(partition, batch, permit).await;
        }
        drop(order);
    }

    /// Sends every open batch now and waits until every batch sent so far is answered.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let partitions: Vec<u32> = {
            let state = self.inner.state.lock().expect("not poisoned");
            state.open.keys().copied().collect()
        };
        for partition in partitions {
            self.send_batch(partition, false).await;
        }
        let all = self
            .inner
            .in_flight
            .acquire_many(self.inner.in_flight_max)
            .await
            .map_err(|_| ClientError::Closed)?;
        drop(all);
        Ok(())
    }

    async fn dispatch(&self, partition: u32, batch: OpenBatch, permit: OwnedSemaphorePermit) {
        let OpenBatch {
            builder,
            waiters,
            opened,
        } = batch;
        let resolve = move |result: Result<Option<u64>, ClientError>| {
            for (i, waiter) in waiters.into_iter().enumerate() {
                let _ = waiter.send(result.clone().map(|base_offset| Delivered {
                    partition,
                    offset: base_offset.map(|base| base + i as u64),
                }));
            }
        };
        (self.inner.clone())
            .deliver(partition, builder, opened, Box::new(resolve), permit)
            .await;
    }
}
