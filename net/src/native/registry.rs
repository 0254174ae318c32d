//! The subscriptions of the partitions a shard owns, and the task that drives each one.
//!
//! Every subscription on a partition is a [`Subscription`] core (crate `dispatch`) plus a
//! driver task on the partition's owner shard. The driver reads the log when the core asks,
//! hands deliveries to the consumers' connections (any shard) over flume, produces dead
//! letters, writes the cursor file debounced, and sleeps until a command, an append or a
//! deadline wakes it. Commands arrive from connections as [`Command`]s over the shard mesh.
//!
//! Reliable subscriptions are durable: a cursor file per subscription and partition under
//! `<data>/<topic>/.subscriptions/<partition>/<name>.cursor`, written when a subscription is
//! created, at most every `cursor_persist_interval_ms` while it moves, and on shutdown.
//! Non-reliable subscriptions live only while consumers are attached.

use crate::native::Outbound;
use crate::shard::Shard;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use oxbow_core::native::{
    ErrorCode, Mode, ServerFrame, StartPosition, SubscriptionInfo, SubscriptionType,
};
use oxbow_core::{BatchBuilder, RecordBatch};
use oxbow_dispatch::{
    ConsumerId, CursorState, DecodedBatches, DispatchLimits, Subscription, Undecodable,
};
use oxbow_storage::{Partition, ReadError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause after a failed log read before the driver tries again.
const READ_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Attempts to produce a dead letter before leaving it unacknowledged (it is retried after a
/// restart, since it stays below the cursor).
const DEAD_LETTER_ATTEMPTS: u32 = 10;

pub use oxbow_dispatch::StoredMessage;

/// A skipped batch's first and last offset, and the subscriptions that went past it.
pub type Skipped = (u64, u64, Vec<String>);

/// A failure to report to the client.
pub type Refusal = (ErrorCode, String);

/// Where a consumer's messages go.
pub struct Sink {
    /// The client's id for the consumer.
    pub consumer_id: u64,
    /// The connection's outbound queue.
    pub outbound: flume::Sender<Outbound>,
    /// The connection's budget of queued message bytes.
    pub budget: Arc<crate::native::OutboundBudget>,
}

/// Which subscription on which partition.
#[derive(Debug, Clone)]
pub struct Target {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Subscription name.
    pub subscription: String,
}

/// A consumer's request to the partition's owner.
pub enum Command {
    /// Attach a consumer, creating the subscription if needed.
    Attach {
        /// Where.
        target: Target,
        /// Type asked for.
        kind: SubscriptionType,
        /// Mode asked for.
        mode: Mode,
        /// The broker-wide id of this attachment.
        consumer: ConsumerId,
        /// Consumer name.
        name: String,
        /// Failover priority.
        priority: i32,
        /// Start of a new subscription.
        start: StartPosition,
        /// Where its messages go.
        sink: Sink,
        /// Answer.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// Detach a consumer.
    Detach {
        /// Where.
        target: Target,
        /// Which.
        consumer: ConsumerId,
    },
    /// Grant permits.
    Flow {
        /// Where.
        target: Target,
        /// Which.
        consumer: ConsumerId,
        /// How many.
        permits: u32,
    },
    /// Individual acks.
    Ack {
        /// Where.
        target: Target,
        /// Offsets.
        offsets: Vec<u64>,
    },
    /// Cumulative ack.
    AckCumulative {
        /// Where.
        target: Target,
        /// Last offset acknowledged.
        offset: u64,
    },
    /// Negative acks.
    Nack {
        /// Where.
        target: Target,
        /// Offsets.
        offsets: Vec<u64>,
        /// Redelivery delay.
        delay: Duration,
    },
    /// Move the cursor.
    Seek {
        /// Where.
        target: Target,
        /// New position.
        position: StartPosition,
        /// Answer.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// Delete the subscription (detaching its consumers).
    Delete {
        /// Where.
        target: Target,
        /// Consumer doing it (not told it was closed), if any.
        by: Option<ConsumerId>,
        /// Answer.
        reply: flume::Sender<Result<(), Refusal>>,
    },
    /// An operator's skip of the undecodable batch holding `offset`.
    Skip {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// An offset in the batch.
        offset: u64,
        /// Only this subscription; `None`: every one stopped at the batch.
        subscription: Option<String>,
        /// Answer: the batch's first and last offset and the subscriptions that passed it.
        reply: flume::Sender<Result<Skipped, Refusal>>,
    },
    /// The subscriptions of a partition.
    List {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Answer.
        reply: flume::Sender<Vec<SubscriptionInfo>>,
    },
}

/// One subscription on one partition, with its driver.
struct SubscriptionCell {
    target: Target,
    core: RefCell<Subscription<StoredMessage>>,
    sinks: RefCell<HashMap<ConsumerId, Sink>>,
    wake: LocalSender<()>,
    closing: Cell<bool>,
    deleted: Cell<bool>,
    driver: RefCell<Option<glommio::Task<()>>>,
    cursor_path: PathBuf,
    decoded: Rc<RefCell<DecodedBatches>>,
    /// First offset of the blocked batch the consumers have been told about.
    told_blocked: Cell<Option<u64>>,
}

impl SubscriptionCell {
    fn wake(&self) {
        // Full means a wake-up is pending already.
        let _ = self.wake.try_send(());
    }

    /// Tells a consumer that delivery on this partition is stopped in front of `batch`.
    fn tell_blocked(&self, sink: &Sink, batch: &Undecodable) {
        let _ = sink
            .outbound
            .send(Outbound::Frame(ServerFrame::DeliveryBlocked {
                consumer_id: sink.consumer_id,
                partition: self.target.partition,
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
                reason: batch.reason.clone(),
            }));
    }
}

type PartitionKey = (Arc<str>, u32);

/// The subscriptions of one partition and the decoded batches they share.
struct PartitionSubscriptions {
    subs: HashMap<String, Rc<SubscriptionCell>>,
    decoded: Rc<RefCell<DecodedBatches>>,
}

/// The subscriptions of one shard's partitions.
#[derive(Default)]
pub struct Registry {
    by_partition: RefCell<HashMap<PartitionKey, PartitionSubscriptions>>,
}

fn subscriptions_dir(shard: &Shard, topic: &str, partition: u32) -> PathBuf {
    shard
        .config
        .data_dir
        .join(topic)
        .join(".subscriptions")
        .join(partition.to_string())
}

fn storage_refusal(e: impl std::fmt::Display) -> Refusal {
    (ErrorCode::Storage, e.to_string())
}

impl Registry {
    /// Handles one command on the partition's owner shard.
    pub async fn handle(&self, shard: &Rc<Shard>, command: Command) {
        match command {
            Command::Attach {
                target,
                kind,
                mode,
                consumer,
                name,
                priority,
                start,
                sink,
                reply,
            } => {
                let result = self
                    .attach(
                        shard, target, kind, mode, consumer, &name, priority, start, sink,
                    )
                    .await;
                let _ = reply.send(result);
            }
            Command::Detach { target, consumer } => {
                if let Some(cell) = self.find(&target) {
                    cell.sinks.borrow_mut().remove(&consumer);
                    cell.core.borrow_mut().detach(Instant::now(), consumer);
                    cell.wake();
                    if cell.core.borrow().mode() == Mode::NonReliable
                        && cell.core.borrow().is_idle()
                    {
                        self.remove(&target, &cell).await;
                    }
                }
            }
            Command::Flow {
                target,
                consumer,
                permits,
            } => {
                if let Some(cell) = self.find(&target) {
                    cell.core.borrow_mut().add_permits(consumer, permits);
                    cell.wake();
                }
            }
            Command::Ack { target, offsets } => {
                if let Some(cell) = self.find(&target) {
                    cell.core.borrow_mut().ack(&offsets);
                    cell.wake();
                }
            }
            Command::AckCumulative { target, offset } => {
                if let Some(cell) = self.find(&target) {
                    if let Err(e) = cell.core.borrow_mut().ack_cumulative(offset) {
                        tracing::debug!(subscription = %target.subscription, error = e, "ignored");
                    }
                    cell.wake();
                }
            }
            Command::Nack {
                target,
                offsets,
                delay,
            } => {
                if let Some(cell) = self.find(&target) {
                    cell.core.borrow_mut().nack(Instant::now(), &offsets, delay);
                    cell.wake();
                }
            }
            Command::Seek {
                target,
                position,
                reply,
            } => {
                let result = self.seek(shard, &target, position).await;
                let _ = reply.send(result);
            }
            Command::Delete { target, by, reply } => {
                let result = match self.find_or_load(shard, &target) {
                    Ok(Some(cell)) => {
                        for (consumer, sink) in cell.sinks.borrow_mut().drain() {
                            if Some(consumer) != by {
                                let _ = sink.outbound.send(Outbound::ConsumerClosed {
                                    consumer_id: sink.consumer_id,
                                    reason: "subscription deleted".into(),
                                });
                            }
                        }
                        cell.deleted.set(true);
                        self.remove(&target, &cell).await;
                        Ok(())
                    }
                    Ok(None) => Err((
                        ErrorCode::UnknownSubscription,
                        format!("no subscription {}", target.subscription),
                    )),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::List {
                topic,
                partition,
                reply,
            } => {
                let _ = self.load(shard, &topic, partition);
                let list = self
                    .by_partition
                    .borrow()
                    .get(&(topic.clone(), partition))
                    .map(|p| {
                        p.subs
                            .values()
                            .map(|cell| info(&cell.target, &cell.core.borrow()))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(list);
            }
            Command::Skip {
                topic,
                partition,
                offset,
                subscription,
                reply,
            } => {
                let result = self
                    .skip(shard, topic, partition, offset, subscription)
                    .await;
                let _ = reply.send(result);
            }
        }
    }

    /// Moves the subscriptions stopped at the batch holding `offset` past it, durably.
    async fn skip(
        &self,
        shard: &Rc<Shard>,
        topic: Arc<str>,
        partition: u32,
        offset: u64,
        only: Option<String>,
    ) -> Result<Skipped, Refusal> {
        self.load(shard, &topic, partition)?;
        let cells: Vec<Rc<SubscriptionCell>> = self
            .by_partition
            .borrow()
            .get(&(topic.clone(), partition))
            .map(|p| p.subs.values().cloned().collect())
            .unwrap_or_default();
        let mut batch = None;
        let mut passed = Vec::new();
        let mut refusal = None;
        for cell in cells {
            let name = &cell.target.subscription;
            if only.as_ref().is_some_and(|only| only != name) {
                continue;
            }
            let skipped = cell.core.borrow_mut().skip(offset);
            match skipped {
                Ok(range) => {
                    tracing::warn!(topic = %topic, partition, subscription = %name,
                        first_offset = range.0, last_offset = range.1,
                        "an operator skipped an undecodable batch");
                    persist(&cell).await;
                    cell.wake();
                    batch = Some(range);
                    passed.push(name.clone());
                }
                Err(e) => refusal = Some(e.to_string()),
            }
        }
        match batch {
            Some((first, last)) => Ok((first, last, passed)),
            None => Err((
                ErrorCode::BadRequest,
                refusal.unwrap_or_else(|| match only {
                    Some(name) => format!("no subscription {name} on {topic}/{partition}"),
                    None => format!("{topic}/{partition} has no subscription"),
                }),
            )),
        }
    }

    /// Every subscription's figures, for metrics.
    pub fn infos(&self) -> Vec<SubscriptionInfo> {
        self.by_partition
            .borrow()
            .values()
            .flat_map(|p| p.subs.values())
            .map(|cell| info(&cell.target, &cell.core.borrow()))
            .collect()
    }

    /// Compressed batches decoded on this shard's partitions, and reads served without decoding.
    pub fn decoded_counts(&self) -> (u64, u64) {
        self.by_partition
            .borrow()
            .values()
            .map(|p| p.decoded.borrow().counts())
            .fold((0, 0), |(d, h), (pd, ph)| (d + pd, h + ph))
    }

    /// Stops every driver (reliable ones write their cursor first). Called at shutdown.
    pub async fn close(&self) {
        let cells: Vec<Rc<SubscriptionCell>> = self
            .by_partition
            .borrow_mut()
            .drain()
            .flat_map(|(_, p)| p.subs.into_values())
            .collect();
        for cell in cells {
            stop_driver(&cell).await;
        }
    }

    /// Stops the drivers of a partition being deleted (its files go with the topic).
    pub async fn drop_partition(&self, topic: &str, partition: u32) {
        let subs = self
            .by_partition
            .borrow_mut()
            .remove(&(Arc::from(topic), partition));
        for cell in subs.into_iter().flat_map(|p| p.subs.into_values()) {
            for (_, sink) in cell.sinks.borrow_mut().drain() {
                let _ = sink.outbound.send(Outbound::ConsumerClosed {
                    consumer_id: sink.consumer_id,
                    reason: "topic deleted".into(),
                });
            }
            cell.deleted.set(true);
            stop_driver(&cell).await;
        }
    }

    fn find(&self, target: &Target) -> Option<Rc<SubscriptionCell>> {
        self.by_partition
            .borrow()
            .get(&(target.topic.clone(), target.partition))
            .and_then(|p| p.subs.get(&target.subscription))
            .cloned()
    }

    fn find_or_load(
        &self,
        shard: &Rc<Shard>,
        target: &Target,
    ) -> Result<Option<Rc<SubscriptionCell>>, Refusal> {
        self.load(shard, &target.topic, target.partition)?;
        Ok(self.find(target))
    }

    /// Brings the partition's durable subscriptions into memory on first use.
    fn load(&self, shard: &Rc<Shard>, topic: &Arc<str>, partition: u32) -> Result<(), Refusal> {
        let key = (topic.clone(), partition);
        if self.by_partition.borrow().contains_key(&key) {
            return Ok(());
        }
        let log = shard
            .local(topic, partition)
            .map_err(|e| (ErrorCode::UnknownTopic, e.to_string()))?;
        let dir = subscriptions_dir(shard, topic, partition);
        let decoded = Rc::new(RefCell::new(DecodedBatches::new(
            shard.config.subscriptions.decoded_cache_bytes_max,
        )));
        let mut subs = HashMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage_refusal(format!("{dir:?}: {e}"))),
        };
        for entry in entries {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.ends_with(".tmp") {
                // A write cut short by a crash; the cursor it was replacing is intact.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(name) = file_name.strip_suffix(".cursor") else {
                continue;
            };
            let state = match std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| CursorState::decode(&bytes).map_err(|e| e.to_string()))
            {
                Ok(state) => state,
                Err(e) => {
                    // Redelivering everything is the loss-free answer to a damaged cursor.
                    tracing::error!(path = ?entry.path(), error = %e,
                        "cursor unreadable: the subscription restarts from the log start");
                    CursorState {
                        kind: SubscriptionType::Shared,
                        mark_delete: log.log_start_offset(),
                        acked: Vec::new(),
                        skipped: Vec::new(),
                    }
                }
            };
            let core =
                Subscription::restore(&state, limits(shard), partition, log.log_end_offset());
            let target = Target {
                topic: topic.clone(),
                partition,
                subscription: name.to_string(),
            };
            subs.insert(
                name.to_string(),
                start_driver(shard, &log, target, core, &dir, &decoded),
            );
        }
        self.by_partition
            .borrow_mut()
            .insert(key, PartitionSubscriptions { subs, decoded });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn attach(
        &self,
        shard: &Rc<Shard>,
        target: Target,
        kind: SubscriptionType,
        mode: Mode,
        consumer: ConsumerId,
        name: &str,
        priority: i32,
        start: StartPosition,
        sink: Sink,
    ) -> Result<(), Refusal> {
        let cell = match self.find_or_load(shard, &target)? {
            Some(cell) => cell,
            None => {
                let log = shard
                    .local(&target.topic, target.partition)
                    .map_err(|e| (ErrorCode::UnknownTopic, e.to_string()))?;
                let offset = resolve(shard, &log, &target, start).await?;
                // Another consumer may have created it while the offset was looked up.
                match self.find_or_load(shard, &target)? {
                    Some(cell) => cell,
                    None => {
                        let mut core = Subscription::new(
                            kind,
                            mode,
                            limits(shard),
                            target.partition,
                            offset,
                            log.log_end_offset(),
                        );
                        let first_cursor = core.take_cursor_if_dirty();
                        let dir = subscriptions_dir(shard, &target.topic, target.partition);
                        let key = (target.topic.clone(), target.partition);
                        let decoded = self.by_partition.borrow()[&key].decoded.clone();
                        let cell = start_driver(shard, &log, target.clone(), core, &dir, &decoded);
                        if let Some(p) = self.by_partition.borrow_mut().get_mut(&key) {
                            p.subs.insert(target.subscription.clone(), cell.clone());
                        }
                        if let Some(state) = first_cursor {
                            // Durable from the first answer: a crash right after subscribing
                            // keeps the subscription and where it starts.
                            write_cursor(cell.cursor_path.clone(), state.encode())
                                .await
                                .map_err(storage_refusal)?;
                        }
                        cell
                    }
                }
            }
        };
        cell.core
            .borrow_mut()
            .attach(Instant::now(), consumer, name, priority, kind, mode)
            .map_err(|e| (ErrorCode::ConsumerBusy, e.to_string()))?;
        if let Some(batch) = cell.core.borrow().blocked() {
            // The others were told already; this one joins a stopped partition.
            if cell.told_blocked.get() == Some(batch.base_offset) {
                cell.tell_blocked(&sink, batch);
            }
        }
        cell.sinks.borrow_mut().insert(consumer, sink);
        cell.wake();
        Ok(())
    }

    async fn seek(
        &self,
        shard: &Rc<Shard>,
        target: &Target,
        position: StartPosition,
    ) -> Result<(), Refusal> {
        let Some(cell) = self.find_or_load(shard, target)? else {
            return Err((
                ErrorCode::UnknownSubscription,
                format!("no subscription {}", target.subscription),
            ));
        };
        let log = shard
            .local(&target.topic, target.partition)
            .map_err(|e| (ErrorCode::UnknownTopic, e.to_string()))?;
        let offset = resolve(shard, &log, target, position).await?;
        cell.core.borrow_mut().seek(offset);
        let state = cell.core.borrow_mut().take_cursor_if_dirty();
        if let Some(state) = state {
            write_cursor(cell.cursor_path.clone(), state.encode())
                .await
                .map_err(storage_refusal)?;
        }
        cell.wake();
        Ok(())
    }

    async fn remove(&self, target: &Target, cell: &Rc<SubscriptionCell>) {
        if let Some(p) = self
            .by_partition
            .borrow_mut()
            .get_mut(&(target.topic.clone(), target.partition))
        {
            p.subs.remove(&target.subscription);
        }
        stop_driver(cell).await;
        if cell.deleted.get() {
            if let Err(e) = std::fs::remove_file(&cell.cursor_path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(path = ?cell.cursor_path, error = %e, "removing cursor failed");
                }
            }
        }
    }
}

fn limits(shard: &Shard) -> DispatchLimits {
    DispatchLimits::from(&shard.config.subscriptions)
}

fn info(target: &Target, core: &Subscription<StoredMessage>) -> SubscriptionInfo {
    let stats = core.stats();
    SubscriptionInfo {
        topic: target.topic.to_string(),
        partition: target.partition,
        name: target.subscription.clone(),
        kind: core.kind(),
        mode: core.mode(),
        cursor: stats.cursor,
        lag: stats.lag,
        unacked: stats.unacked,
        consumers: stats.consumers,
        dropped: stats.dropped,
        blocked: stats.blocked,
        skipped: core.skipped().to_vec(),
    }
}

/// The offset a start position names on this partition, clamped to the log.
async fn resolve(
    shard: &Rc<Shard>,
    log: &Partition,
    target: &Target,
    start: StartPosition,
) -> Result<u64, Refusal> {
    let (first, end) = (log.log_start_offset(), log.log_end_offset());
    Ok(match start {
        StartPosition::Earliest => first,
        StartPosition::Latest => end,
        StartPosition::Offset(offset) => offset.clamp(first, end),
        StartPosition::Timestamp(ms) => {
            let (offset, _) = shard
                .list_offset(target.topic.clone(), target.partition, ms.max(0))
                .await
                .map_err(storage_refusal)?;
            if offset < 0 {
                end
            } else {
                offset as u64
            }
        }
    })
}

fn start_driver(
    shard: &Rc<Shard>,
    log: &Rc<Partition>,
    target: Target,
    core: Subscription<StoredMessage>,
    dir: &std::path::Path,
    decoded: &Rc<RefCell<DecodedBatches>>,
) -> Rc<SubscriptionCell> {
    let (wake, woken) = local_channel::new_bounded(1);
    let cursor_path = dir.join(format!("{}.cursor", target.subscription));
    let cell = Rc::new(SubscriptionCell {
        target,
        core: RefCell::new(core),
        sinks: RefCell::default(),
        wake,
        closing: Cell::new(false),
        deleted: Cell::new(false),
        driver: RefCell::new(None),
        cursor_path,
        decoded: decoded.clone(),
        told_blocked: Cell::new(None),
    });
    let task = glommio::spawn_local(drive(cell.clone(), log.clone(), shard.clone(), woken));
    *cell.driver.borrow_mut() = Some(task);
    cell
}

async fn stop_driver(cell: &Rc<SubscriptionCell>) {
    cell.closing.set(true);
    cell.wake();
    let task = cell.driver.borrow_mut().take();
    if let Some(task) = task {
        task.await;
    }
}

/// Splits stored batches into messages, up to the first batch that cannot be decoded; returns
/// them, the offset after the last batch split, and the batch that stopped the split.
fn split_batches(
    batches: &[RecordBatch],
    decoded: &RefCell<DecodedBatches>,
    decompressed_bytes_max: u64,
) -> (Vec<StoredMessage>, u64, Option<Undecodable>) {
    let mut messages = Vec::new();
    let mut end = 0;
    for batch in batches {
        match decoded.borrow_mut().messages(batch, decompressed_bytes_max) {
            Ok(split) => messages.extend(split.iter().cloned()),
            Err(e) => {
                let stop = Undecodable {
                    base_offset: batch.base_offset(),
                    last_offset: batch.last_offset(),
                    reason: e.to_string(),
                };
                return (messages, batch.base_offset(), Some(stop));
            }
        }
        end = batch.last_offset() + 1;
    }
    (messages, end, None)
}

async fn drive(
    cell: Rc<SubscriptionCell>,
    log: Rc<Partition>,
    shard: Rc<Shard>,
    woken: LocalReceiver<()>,
) {
    let config = &shard.config.subscriptions;
    let persist_every = Duration::from_millis(config.cursor_persist_interval_ms);
    let mut last_persist: Option<Instant> = None;
    let mut retry_read_at: Option<Instant> = None;
    loop {
        if cell.closing.get() {
            break;
        }
        let known_end = log.log_end_offset();
        cell.core.borrow_mut().on_log_end(known_end);
        if retry_read_at.is_none_or(|at| at <= Instant::now()) {
            retry_read_at = read_ahead(
                &cell,
                &log,
                config.read_bytes_max as usize,
                shard.config.batch_decompressed_bytes_max,
            )
            .await;
        }
        let now = Instant::now();
        let next_tick = cell.core.borrow_mut().tick(now);
        let deliveries = cell.core.borrow_mut().poll_deliveries(now);
        // Handing messages out may have made room to read more: go round again rather than
        // wait for a wake-up that a consumer with permits to spare would never send.
        let progressed = !deliveries.is_empty();
        send_deliveries(&cell, deliveries);
        announce_blocked(&cell);
        let dead_letters = cell.core.borrow_mut().poll_dead_letters();
        for (message, redeliveries) in dead_letters {
            glommio::spawn_local(dead_letter(
                cell.clone(),
                shard.clone(),
                message,
                redeliveries,
            ))
            .detach();
        }
        let mut persist_at = None;
        if cell.core.borrow().cursor_dirty() {
            let due = last_persist.map_or(now, |at| at + persist_every);
            if due <= now {
                persist(&cell).await;
                last_persist = Some(now);
            } else {
                persist_at = Some(due);
            }
        }
        if progressed {
            glommio::executor().yield_if_needed().await;
            continue;
        }
        let deadline = [next_tick, persist_at, retry_read_at]
            .into_iter()
            .flatten()
            .min();
        let listening = !cell.core.borrow().is_idle() && log.stopped().is_none();
        let appended = async {
            if listening {
                log.wait_for_offset(known_end).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await
                }
                None => std::future::pending::<()>().await,
            }
        };
        let command = async {
            woken.recv().await;
        };
        futures_lite::future::or(command, futures_lite::future::or(appended, timer)).await;
    }
    if !cell.deleted.get() {
        persist(&cell).await;
    }
}

/// Reads while the core asks for it; returns when to try again after a failed read.
async fn read_ahead(
    cell: &SubscriptionCell,
    log: &Partition,
    read_bytes_max: usize,
    decompressed_bytes_max: u64,
) -> Option<Instant> {
    loop {
        let from = cell.core.borrow_mut().next_read()?;
        match log.read(from, read_bytes_max).await {
            Ok(batches) if batches.is_empty() => {
                cell.core.borrow_mut().on_read_failed();
                return None;
            }
            Ok(batches) => {
                let limit = decompressed_bytes_max;
                let (messages, end, stop) = split_batches(&batches, &cell.decoded, limit);
                cell.core.borrow_mut().on_read(messages, end);
                if let Some(batch) = stop {
                    undecodable(cell, batch);
                }
            }
            Err(ReadError::OffsetOutOfRange { .. }) if from < log.log_start_offset() => {
                let mut core = cell.core.borrow_mut();
                core.on_read_failed();
                core.on_log_start(log.log_start_offset());
            }
            Err(e) => {
                cell.core.borrow_mut().on_read_failed();
                tracing::warn!(topic = %cell.target.topic, partition = cell.target.partition,
                    subscription = %cell.target.subscription, offset = from, error = %e,
                    "subscription read failed; retrying");
                return Some(Instant::now() + READ_RETRY_DELAY);
            }
        }
    }
}

/// A read reached a batch that cannot be split into messages: a reliable subscription stops
/// in front of it (its consumers are told by [`announce_blocked`]); a non-reliable one counts
/// it as dropped.
fn undecodable(cell: &SubscriptionCell, batch: Undecodable) {
    let target = &cell.target;
    cell.core.borrow_mut().on_undecodable(batch.clone());
    if cell.core.borrow().blocked().is_none() {
        tracing::warn!(topic = %target.topic, partition = target.partition,
            subscription = %target.subscription, first_offset = batch.base_offset,
            last_offset = batch.last_offset, reason = %batch.reason,
            "non-reliable subscription dropped a batch it cannot decode");
        return;
    }
    tracing::error!(topic = %target.topic, partition = target.partition,
        subscription = %target.subscription, first_offset = batch.base_offset,
        last_offset = batch.last_offset, reason = %batch.reason,
        "subscription stopped in front of a batch it cannot decode; \
         `oxbow subscription skip` moves it on");
}

/// Tells the consumers once that delivery stopped, after what precedes the batch went out.
fn announce_blocked(cell: &SubscriptionCell) {
    let core = cell.core.borrow();
    let Some(batch) = core.blocked() else {
        cell.told_blocked.set(None);
        return;
    };
    if cell.told_blocked.get() == Some(batch.base_offset) {
        return;
    }
    for sink in cell.sinks.borrow().values() {
        cell.tell_blocked(sink, batch);
    }
    cell.told_blocked.set(Some(batch.base_offset));
}

fn send_deliveries(
    cell: &SubscriptionCell,
    deliveries: Vec<oxbow_dispatch::Delivery<StoredMessage>>,
) {
    let mut by_consumer: HashMap<ConsumerId, Vec<(StoredMessage, u32)>> = HashMap::new();
    for delivery in deliveries {
        by_consumer
            .entry(delivery.consumer)
            .or_default()
            .push((delivery.message, delivery.redeliveries));
    }
    let mut overflowed = Vec::new();
    {
        let sinks = cell.sinks.borrow();
        for (consumer, messages) in by_consumer {
            let Some(sink) = sinks.get(&consumer) else {
                continue;
            };
            if !sink.budget.reserve(crate::native::payload_bytes(&messages)) {
                overflowed.push(consumer);
                continue;
            }
            // A closed connection detaches its consumers itself; what was handed out here
            // comes back through that detach.
            let _ = sink.outbound.send(Outbound::Messages {
                consumer_id: sink.consumer_id,
                partition: cell.target.partition,
                messages,
            });
        }
    }
    for consumer in overflowed {
        // The client is not reading: it is cut off, and what it was given goes to others.
        cell.sinks.borrow_mut().remove(&consumer);
        cell.core.borrow_mut().detach(Instant::now(), consumer);
        tracing::warn!(topic = %cell.target.topic, partition = cell.target.partition,
            subscription = %cell.target.subscription,
            "consumer's connection exceeded native_outbound_bytes_max: detached");
    }
}

async fn persist(cell: &SubscriptionCell) {
    let Some(state) = cell.core.borrow_mut().take_cursor_if_dirty() else {
        return;
    };
    if let Err(e) = write_cursor(cell.cursor_path.clone(), state.encode()).await {
        tracing::error!(path = ?cell.cursor_path, error = %e, "writing cursor failed");
    }
}

/// Replaces a cursor file atomically and durably, off the shard's thread.
async fn write_cursor(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            use std::io::Write;
            let dir = path.parent().expect("cursor paths have a directory");
            std::fs::create_dir_all(dir)?;
            // A name per write: two writes of one cursor may overlap (a seek and the driver).
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let serial = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temporary = path.with_extension(format!("cursor.{serial}.tmp"));
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await
}

/// Produces a message that failed too often to `<topic>-<subscription>-DLQ`, then acks it.
async fn dead_letter(
    cell: Rc<SubscriptionCell>,
    shard: Rc<Shard>,
    message: StoredMessage,
    deliveries: u32,
) {
    let topic = format!("{}-{}-DLQ", cell.target.topic, cell.target.subscription);
    for attempt in 1..=DEAD_LETTER_ATTEMPTS {
        if cell.closing.get() {
            return;
        }
        if shard.partition_count(&topic).is_none() {
            if let Err(e) = shard.create_topic(topic.clone(), 1, Vec::new()).await {
                tracing::debug!(topic, error = %e, "creating the dead-letter topic");
            }
        }
        let mut batch = BatchBuilder::new(message.timestamp);
        let headers: Vec<(&[u8], Option<&[u8]>)> = message
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        batch.push_with_headers(
            message.key.as_deref(),
            Some(&message.value),
            &headers,
            message.timestamp,
        );
        let produced = shard
            .send_produce(Arc::from(topic.as_str()), 0, vec![batch.build()])
            .recv_async()
            .await;
        match produced {
            Ok(Ok(_)) => {
                tracing::info!(topic = %cell.target.topic, partition = cell.target.partition,
                    offset = message.offset, deliveries, dead_letter_topic = topic,
                    "message dead-lettered");
                cell.core.borrow_mut().ack(&[message.offset]);
                cell.wake();
                return;
            }
            outcome => {
                tracing::warn!(topic, attempt, outcome = ?outcome.map(|o| o.err()),
                    "dead-letter produce failed");
                glommio::timer::sleep(Duration::from_millis(200) * attempt).await;
            }
        }
    }
}
