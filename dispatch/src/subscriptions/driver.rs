//! The task that drives one subscription on one partition: reads the log when its core asks,
//! hands out deliveries, tells consumers of a blocked batch, produces dead letters and writes the
//! cursor, debounced.

use super::cursor_log::CursorLog;
use super::{ConsumerEvent, ConsumerSink, DeadLetters, DriverSettings, Target};
use crate::cursor::CursorState;
use crate::decoded::DecodedBatches;
use crate::message::StoredMessage;
use crate::subscription::{ConsumerId, Subscription, Undecodable};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use oxbow_core::{BatchBuilder, RecordBatch};
use oxbow_storage::{AbortedTxn, Partition, ReadError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Pause after a failed log read before the driver tries again.
const READ_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Attempts to produce a dead letter before leaving it unacknowledged (it is retried after a
/// restart, since it stays below the cursor).
const DEAD_LETTER_ATTEMPTS: u32 = 10;

/// One subscription on one partition, with its driver.
pub(crate) struct SubscriptionCell {
    pub(crate) target: Target,
    pub(crate) core: RefCell<Subscription<StoredMessage>>,
    pub(crate) sinks: RefCell<HashMap<ConsumerId, Box<dyn ConsumerSink>>>,
    wake: LocalSender<()>,
    closing: Cell<bool>,
    /// Its cursor is no longer this driver's to write: the subscription or its topic was
    /// deleted, or another node leads the partition now.
    pub(crate) deleted: Cell<bool>,
    driver: RefCell<Option<glommio::Task<()>>>,
    /// Where its cursor is stored.
    pub(crate) cursors: Rc<CursorLog>,
    /// Every offset below this one is acknowledged and durably stored (on every in-sync
    /// replica of a replicated partition).
    pub(crate) persisted: Cell<u64>,
    /// The cursor generation `persisted` is from: confirmations may arrive out of order.
    persisted_generation: Cell<u64>,
    /// How long a written cursor may wait for the in-sync replicas.
    replication_timeout: Duration,
    decoded: Rc<RefCell<DecodedBatches>>,
    /// First offset of the blocked batch the consumers have been told about.
    told_blocked: Cell<Option<u64>>,
}

impl SubscriptionCell {
    pub(crate) fn wake(&self) {
        // Full means a wake-up is pending already.
        let _ = self.wake.try_send(());
    }

    /// Tells a consumer that delivery on this partition is stopped in front of `batch`.
    pub(crate) fn tell_blocked(&self, sink: &dyn ConsumerSink, batch: &Undecodable) {
        sink.send(ConsumerEvent::Blocked {
            partition: self.target.partition,
            base_offset: batch.base_offset,
            last_offset: batch.last_offset,
            reason: batch.reason.clone(),
        });
    }

    /// The cursor written as `generation` (with this mark) is durable wherever it must be.
    fn persisted_at(&self, generation: u64, mark: u64) {
        if generation > self.persisted_generation.get() {
            self.persisted_generation.set(generation);
            self.persisted.set(mark);
        }
    }

    /// The first offset of the blocked batch its consumers were told about.
    pub(crate) fn told_blocked(&self) -> Option<u64> {
        self.told_blocked.get()
    }
}

/// What a driver works with: the log, where dead letters go, its limits.
#[derive(Clone)]
pub(crate) struct DriverContext {
    pub(crate) log: Rc<Partition>,
    pub(crate) dead_letters: Rc<dyn DeadLetters>,
    pub(crate) settings: DriverSettings,
}

/// Starts a subscription's driver; `cursors` is where it stores its cursor.
pub(crate) fn start_driver(
    context: &DriverContext,
    target: Target,
    core: Subscription<StoredMessage>,
    cursors: &Rc<CursorLog>,
    decoded: &Rc<RefCell<DecodedBatches>>,
) -> Rc<SubscriptionCell> {
    let (wake, woken) = local_channel::new_bounded(1);
    let persisted = core.stats().cursor;
    let cell = Rc::new(SubscriptionCell {
        target,
        core: RefCell::new(core),
        sinks: RefCell::default(),
        wake,
        closing: Cell::new(false),
        deleted: Cell::new(false),
        driver: RefCell::new(None),
        cursors: cursors.clone(),
        persisted: Cell::new(persisted),
        persisted_generation: Cell::new(0),
        replication_timeout: Duration::from_millis(
            context.settings.subscriptions.cursor_replication_timeout_ms,
        ),
        decoded: decoded.clone(),
        told_blocked: Cell::new(None),
    });
    let task = glommio::spawn_local(drive(cell.clone(), context.clone(), woken));
    *cell.driver.borrow_mut() = Some(task);
    cell
}

pub(crate) async fn stop_driver(cell: &Rc<SubscriptionCell>) {
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
    aborted: &[AbortedTxn],
    decoded: &RefCell<DecodedBatches>,
    decompressed_bytes_max: u64,
) -> (Vec<StoredMessage>, u64, Option<Undecodable>) {
    let mut messages = Vec::new();
    let mut end = 0;
    for batch in batches {
        if in_aborted_transaction(batch, aborted) {
            end = batch.last_offset() + 1;
            continue;
        }
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

/// Whether `batch` belongs to one of the `aborted` transactions: its records are not
/// delivered (subscriptions read as Kafka's `read_committed` consumers do).
fn in_aborted_transaction(batch: &RecordBatch, aborted: &[AbortedTxn]) -> bool {
    batch.is_transactional()
        && !batch.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == batch.producer_id()
                && (a.first_offset..=a.last_offset).contains(&batch.base_offset())
        })
}

async fn drive(cell: Rc<SubscriptionCell>, context: DriverContext, woken: LocalReceiver<()>) {
    let log = &context.log;
    let config = &context.settings.subscriptions;
    let persist_every = Duration::from_millis(config.cursor_persist_interval_ms);
    let mut last_persist: Option<Instant> = None;
    let mut retry_read_at: Option<Instant> = None;
    loop {
        if cell.closing.get() {
            break;
        }
        // Subscriptions read committed records only: up to the last stable offset. It moves
        // only when more of the log becomes visible, so that is what an idle driver waits for.
        let visible_end = log.log_end_offset();
        let known_end = log.last_stable_offset();
        cell.core.borrow_mut().on_log_end(known_end);
        if retry_read_at.is_none_or(|at| at <= Instant::now()) {
            retry_read_at = read_ahead(
                &cell,
                log,
                config.read_bytes_max as usize,
                context.settings.batch_decompressed_bytes_max,
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
                context.dead_letters.clone(),
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
        let rate_limited_until = cell.core.borrow().rate_limited_until();
        let deadline = [next_tick, persist_at, retry_read_at, rate_limited_until]
            .into_iter()
            .flatten()
            .min();
        let listening = !cell.core.borrow().is_idle() && log.stopped().is_none();
        let appended = async {
            if listening {
                log.wait_for_offset(visible_end).await;
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
        match log.read_committed(from, read_bytes_max).await {
            Ok(batches) if batches.is_empty() => {
                cell.core.borrow_mut().on_read_failed();
                return None;
            }
            Ok(batches) => {
                let limit = decompressed_bytes_max;
                let upto = batches.last().map_or(from, |b| b.last_offset() + 1);
                let aborted = log.aborted_transactions(from, upto);
                let decoded = &cell.decoded;
                let (messages, end, stop) = split_batches(&batches, &aborted, decoded, limit);
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
        cell.tell_blocked(sink.as_ref(), batch);
    }
    cell.told_blocked.set(Some(batch.base_offset));
}

fn send_deliveries(cell: &SubscriptionCell, deliveries: Vec<crate::Delivery<StoredMessage>>) {
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
            if !sink.reserve(payload_bytes(&messages)) {
                overflowed.push(consumer);
                continue;
            }
            // A closed connection detaches its consumers itself; what was handed out here
            // comes back through that detach.
            sink.send(ConsumerEvent::Messages {
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

/// Bytes a delivery takes from a connection's budget: its data plus a per-message overhead.
pub fn payload_bytes(messages: &[(StoredMessage, u32)]) -> u64 {
    messages
        .iter()
        .map(|(m, _)| m.data_bytes() as u64 + 32)
        .sum()
}

/// Stores the cursor if it moved; a failure is logged (the stored cursor stays behind, so a
/// restart redelivers: at least once).
pub(crate) async fn persist(cell: &Rc<SubscriptionCell>) {
    let Some(state) = cell.core.borrow_mut().take_cursor_if_dirty() else {
        return;
    };
    if let Err(e) = store_cursor(cell, &state).await {
        tracing::error!(topic = %cell.target.topic, partition = cell.target.partition,
            subscription = %cell.target.subscription, error = %e, "writing cursor failed");
    }
}

/// Stores a cursor; records how far it is durable once the in-sync replicas hold it too,
/// without holding up the caller (a follower that is slow to answer must not stall delivery).
pub(crate) async fn store_cursor(
    cell: &Rc<SubscriptionCell>,
    state: &CursorState,
) -> Result<(), String> {
    let generation = cell.cursors.write(&cell.target.subscription, state).await?;
    let mark = state.mark_delete;
    let Some(replicated) = (cell.cursors).replicated(generation, cell.replication_timeout) else {
        cell.persisted_at(generation, mark);
        return Ok(());
    };
    let cell = cell.clone();
    let recorded = async move {
        match replicated.await {
            Ok(()) => cell.persisted_at(generation, mark),
            Err(e) => tracing::warn!(topic = %cell.target.topic,
                partition = cell.target.partition, subscription = %cell.target.subscription,
                error = %e, "cursor written but not replicated; its persisted position stays behind"),
        }
    };
    glommio::spawn_local(recorded).detach();
    Ok(())
}

/// Stores a cursor and waits until it is durable wherever it must be: here and, on a
/// replicated partition, on every in-sync follower (a confirmed commit).
pub(crate) async fn store_cursor_durably(
    cell: &Rc<SubscriptionCell>,
    state: &CursorState,
) -> Result<(), String> {
    let generation = cell.cursors.write(&cell.target.subscription, state).await?;
    if let Some(replicated) = (cell.cursors).replicated(generation, cell.replication_timeout) {
        replicated.await?;
    }
    cell.persisted_at(generation, state.mark_delete);
    Ok(())
}

/// Produces a message that failed too often to `<topic>-<subscription>-DLQ`, then acks it.
async fn dead_letter(
    cell: Rc<SubscriptionCell>,
    dead_letters: Rc<dyn DeadLetters>,
    message: StoredMessage,
    deliveries: u32,
) {
    let topic = format!("{}-{}-DLQ", cell.target.topic, cell.target.subscription);
    for attempt in 1..=DEAD_LETTER_ATTEMPTS {
        if cell.closing.get() {
            return;
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
        match dead_letters.produce(topic.clone(), batch.build()).await {
            Ok(()) => {
                tracing::info!(topic = %cell.target.topic, partition = cell.target.partition,
                    offset = message.offset, deliveries, dead_letter_topic = topic,
                    "message dead-lettered");
                cell.core.borrow_mut().ack(&[message.offset]);
                cell.wake();
                return;
            }
            Err(why) => {
                tracing::warn!(topic, attempt, error = %why, "dead-letter produce failed");
                glommio::timer::sleep(Duration::from_millis(200) * attempt).await;
            }
        }
    }
}
