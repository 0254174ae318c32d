//! The subscriptions of one partition on its owner shard: commands in, drivers started and
//! stopped, cursors loaded on first use.

use super::cursor_log::CursorLog;
use super::driver::{
    persist, start_driver, stop_driver, store_cursor, DriverContext, SubscriptionCell,
};
use super::{
    Command, ConsumerEvent, ConsumerSink, DeadLetters, DriverSettings, Refusal, Skipped, Target,
};
use crate::decoded::DecodedBatches;
use crate::subscription::{ConsumerId, DispatchLimits, Subscription};
use oxbow_core::native::{ErrorCode, Mode, StartPosition, SubscriptionInfo, SubscriptionType};
use oxbow_storage::Partition;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The subscriptions of one partition and the decoded batches they share. Owned by the
/// partition's host on its shard.
pub struct SubscriptionHost {
    topic: Arc<str>,
    partition: u32,
    /// Where the reliable subscriptions' cursors are stored.
    pub(super) cursors: Rc<CursorLog>,
    log: Rc<Partition>,
    pub(super) settings: DriverSettings,
    /// `None` until the durable subscriptions are loaded (on the first command).
    pub(super) subs: RefCell<Option<HashMap<String, Rc<SubscriptionCell>>>>,
    decoded: Rc<RefCell<DecodedBatches>>,
}

fn storage_refusal(e: impl std::fmt::Display) -> Refusal {
    (ErrorCode::Storage, e.to_string())
}

impl SubscriptionHost {
    /// Answers a command for a partition this shard does not hold (deleted meanwhile).
    pub fn refuse_unknown(command: Command) {
        let refusal = || {
            (
                ErrorCode::UnknownTopic,
                "unknown topic or partition".to_string(),
            )
        };
        match command {
            Command::Attach { reply, .. }
            | Command::Seek { reply, .. }
            | Command::Commit { reply, .. }
            | Command::SetDispatchRate { reply, .. }
            | Command::Delete { reply, .. } => {
                let _ = reply.send(Err(refusal()));
            }
            Command::Skip { reply, .. } => {
                let _ = reply.send(Err(refusal()));
            }
            Command::List { reply, .. } => {
                let _ = reply.send(Vec::new());
            }
            Command::Detach { .. }
            | Command::Flow { .. }
            | Command::Ack { .. }
            | Command::AckCumulative { .. }
            | Command::Nack { .. } => {}
        }
    }

    /// The subscriptions of `topic`/`partition`, whose log is `log`, with their cursor log under
    /// `data_dir`.
    pub fn new(
        topic: Arc<str>,
        partition: u32,
        data_dir: &Path,
        log: Rc<Partition>,
        settings: DriverSettings,
    ) -> SubscriptionHost {
        SubscriptionHost {
            cursors: Rc::new(CursorLog::new(
                data_dir,
                &topic,
                partition,
                settings.state_logs.clone(),
            )),
            decoded: Rc::new(RefCell::new(DecodedBatches::new(
                settings.subscriptions.decoded_cache_bytes_max,
            ))),
            topic,
            partition,
            log,
            settings,
            subs: RefCell::new(None),
        }
    }
}

impl SubscriptionHost {
    /// Carries out one command (on the partition's owner shard); `dead_letters` is where the
    /// drivers of subscriptions loaded now will send theirs.
    pub async fn handle(&self, dead_letters: &Rc<dyn DeadLetters>, command: Command) {
        match command {
            Command::Attach {
                target,
                kind,
                mode,
                consumer,
                name,
                reattaching,
                priority,
                start,
                sink,
                reply,
            } => {
                let result = self
                    .attach(
                        dead_letters,
                        target,
                        kind,
                        mode,
                        consumer,
                        (&name, reattaching),
                        priority,
                        start,
                        sink,
                    )
                    .await;
                let _ = reply.send(result);
            }
            Command::Detach { target, consumer } => self.detach(&target, consumer).await,
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
            Command::Commit {
                target,
                offsets,
                cumulative,
                reply,
            } => {
                let committed = match self.find(&target) {
                    Some(cell) => super::confirmed::commit(&cell, &offsets, cumulative).await,
                    None => Err(super::confirmed::not_held(
                        "the subscription is not attached here",
                    )),
                };
                let _ = reply.send(committed);
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
                let result = self.seek(dead_letters, &target, position).await;
                let _ = reply.send(result);
            }
            Command::SetDispatchRate {
                target,
                rate,
                reply,
            } => {
                let result = match self.find_or_load(dead_letters, &target).await {
                    Ok(Some(cell)) => super::confirmed::set_dispatch_rate(&cell, rate).await,
                    Ok(None) => Err(no_subscription(&target)),
                    Err(refusal) => Err(refusal),
                };
                let _ = reply.send(result);
            }
            Command::Delete { target, by, reply } => {
                let _ = reply.send(self.delete(dead_letters, &target, by).await);
            }
            Command::List {
                topic,
                partition,
                reply,
            } => {
                let _ = (topic, partition);
                let _ = self.load(dead_letters).await;
                let _ = reply.send(self.infos());
            }
            Command::Skip {
                topic,
                partition,
                offset,
                subscription,
                reply,
            } => {
                let _ = (topic, partition);
                let result = self.skip(dead_letters, offset, subscription).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn detach(&self, target: &Target, consumer: ConsumerId) {
        let Some(cell) = self.find(target) else {
            return;
        };
        cell.sinks.borrow_mut().remove(&consumer);
        cell.core.borrow_mut().detach(Instant::now(), consumer);
        cell.wake();
        let idle = cell.core.borrow().mode() == Mode::NonReliable && cell.core.borrow().is_idle();
        if idle {
            // A non-reliable subscription lives only while consumers are attached.
            self.remove(target, &cell).await;
        }
    }

    /// Deletes a subscription, telling its consumers (but not `by`, who asked).
    async fn delete(
        &self,
        dead_letters: &Rc<dyn DeadLetters>,
        target: &Target,
        by: Option<ConsumerId>,
    ) -> Result<(), Refusal> {
        let Some(cell) = self.find_or_load(dead_letters, target).await? else {
            return Err(no_subscription(target));
        };
        for (consumer, sink) in cell.sinks.borrow_mut().drain() {
            if Some(consumer) != by {
                sink.send(ConsumerEvent::Closed {
                    reason: "subscription deleted".into(),
                });
            }
        }
        cell.deleted.set(true);
        self.remove(target, &cell).await;
        Ok(())
    }

    /// Moves the subscriptions stopped at the batch holding `offset` past it, durably.
    async fn skip(
        &self,
        dead_letters: &Rc<dyn DeadLetters>,
        offset: u64,
        only: Option<String>,
    ) -> Result<Skipped, Refusal> {
        self.load(dead_letters).await?;
        let (topic, partition) = (&self.topic, self.partition);
        let cells = self.cells();
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

    /// Every subscription's figures, for metrics and listings.
    pub fn infos(&self) -> Vec<SubscriptionInfo> {
        let end = self.log.log_end_offset();
        self.cells().iter().map(|cell| info(cell, end)).collect()
    }

    /// Compressed batches decoded for this partition, and reads served without decoding.
    pub fn decoded_counts(&self) -> (u64, u64) {
        self.decoded.borrow().counts()
    }

    /// Stops every driver (reliable ones write their cursor first). Called at shutdown.
    pub async fn close(&self) {
        let cells = self.subs.borrow_mut().take().unwrap_or_default();
        for cell in cells.into_values() {
            stop_driver(&cell).await;
        }
        self.cursors.close().await;
    }

    /// Stops every driver of a partition being deleted, telling its consumers (the files go
    /// with the topic).
    pub async fn drop_all(&self) {
        let cells = self.subs.borrow_mut().take().unwrap_or_default();
        for cell in cells.into_values() {
            for (_, sink) in cell.sinks.borrow_mut().drain() {
                sink.send(ConsumerEvent::Closed {
                    reason: "topic deleted".into(),
                });
            }
            cell.deleted.set(true);
            stop_driver(&cell).await;
        }
        self.cursors.close().await;
    }

    pub(super) fn cells(&self) -> Vec<Rc<SubscriptionCell>> {
        self.subs
            .borrow()
            .as_ref()
            .map(|subs| subs.values().cloned().collect())
            .unwrap_or_default()
    }

    fn find(&self, target: &Target) -> Option<Rc<SubscriptionCell>> {
        self.subs
            .borrow()
            .as_ref()
            .and_then(|subs| subs.get(&target.subscription))
            .cloned()
    }

    async fn find_or_load(
        &self,
        dead_letters: &Rc<dyn DeadLetters>,
        target: &Target,
    ) -> Result<Option<Rc<SubscriptionCell>>, Refusal> {
        self.load(dead_letters).await?;
        Ok(self.find(target))
    }

    fn context(&self, dead_letters: &Rc<dyn DeadLetters>) -> DriverContext {
        DriverContext {
            log: self.log.clone(),
            dead_letters: dead_letters.clone(),
            settings: self.settings.clone(),
        }
    }

    /// How far a stored batch may decompress when it is read (a start position by time).
    fn decompression_limit(&self) -> u64 {
        self.settings.batch_decompressed_bytes_max
    }

    fn limits(&self) -> DispatchLimits {
        DispatchLimits::from(&self.settings.subscriptions)
    }

    /// Brings the partition's durable subscriptions into memory and starts their drivers, once
    /// (on first use, or for metrics).
    pub async fn load(&self, dead_letters: &Rc<dyn DeadLetters>) -> Result<(), Refusal> {
        if self.subs.borrow().is_some() {
            return Ok(());
        }
        let cursors = self
            .cursors
            .load(self.log.log_start_offset())
            .await
            .map_err(storage_refusal)?;
        if self.subs.borrow().is_some() {
            return Ok(()); // loaded by another command meanwhile
        }
        let context = self.context(dead_letters);
        let mut subs = HashMap::new();
        for (name, state) in cursors {
            let core = Subscription::restore(
                &state,
                self.limits(),
                self.partition,
                self.log.log_end_offset(),
            );
            let target = Target {
                topic: self.topic.clone(),
                partition: self.partition,
                subscription: name.clone(),
            };
            subs.insert(
                name,
                start_driver(&context, target, core, &self.cursors, &self.decoded),
            );
        }
        *self.subs.borrow_mut() = Some(subs);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn attach(
        &self,
        dead_letters: &Rc<dyn DeadLetters>,
        target: Target,
        kind: SubscriptionType,
        mode: Mode,
        consumer: ConsumerId,
        (name, reattaching): (&str, bool),
        priority: i32,
        start: StartPosition,
        sink: Box<dyn ConsumerSink>,
    ) -> Result<(), Refusal> {
        let cell = match self.find_or_load(dead_letters, &target).await? {
            Some(cell) => cell,
            None => {
                let offset = resolve(&self.log, start, self.decompression_limit()).await?;
                // Another consumer may have created it while the offset was looked up.
                match self.find_or_load(dead_letters, &target).await? {
                    Some(cell) => cell,
                    None => {
                        let mut core = Subscription::new(
                            kind,
                            mode,
                            self.limits(),
                            target.partition,
                            offset,
                            self.log.log_end_offset(),
                        );
                        let first_cursor = core.take_cursor_if_dirty();
                        let context = self.context(dead_letters);
                        let cell = start_driver(
                            &context,
                            target.clone(),
                            core,
                            &self.cursors,
                            &self.decoded,
                        );
                        if let Some(subs) = self.subs.borrow_mut().as_mut() {
                            subs.insert(target.subscription.clone(), cell.clone());
                        }
                        if let Some(state) = first_cursor {
                            // Durable from the first answer: a crash right after subscribing
                            // keeps the subscription and where it starts.
                            store_cursor(&cell, &state).await.map_err(storage_refusal)?;
                        }
                        cell
                    }
                }
            }
        };
        super::stale_session::replace(&cell, (kind, reattaching), consumer, name);
        cell.core
            .borrow_mut()
            .attach(Instant::now(), consumer, name, priority, kind, mode)
            .map_err(|e| (ErrorCode::ConsumerBusy, e.to_string()))?;
        if let Some(batch) = cell.core.borrow().blocked() {
            // The others were told already; this one joins a stopped partition.
            if cell.told_blocked() == Some(batch.base_offset) {
                cell.tell_blocked(sink.as_ref(), batch);
            }
        }
        cell.sinks.borrow_mut().insert(consumer, sink);
        cell.wake();
        Ok(())
    }

    async fn seek(
        &self,
        dead_letters: &Rc<dyn DeadLetters>,
        target: &Target,
        position: StartPosition,
    ) -> Result<(), Refusal> {
        let Some(cell) = self.find_or_load(dead_letters, target).await? else {
            return Err(no_subscription(target));
        };
        let offset = resolve(&self.log, position, self.decompression_limit()).await?;
        cell.core.borrow_mut().seek(offset);
        let state = cell.core.borrow_mut().take_cursor_if_dirty();
        if let Some(state) = state {
            store_cursor(&cell, &state).await.map_err(storage_refusal)?;
        }
        cell.wake();
        Ok(())
    }

    async fn remove(&self, target: &Target, cell: &Rc<SubscriptionCell>) {
        if let Some(subs) = self.subs.borrow_mut().as_mut() {
            subs.remove(&target.subscription);
        }
        stop_driver(cell).await;
        if cell.deleted.get() {
            self.cursors.remove(&target.subscription).await;
        }
    }
}

/// A subscription's state; its lag against the partition's visible end `end` now (the driver's
/// own view of the end moves only while it delivers).
fn info(cell: &SubscriptionCell, end: u64) -> SubscriptionInfo {
    let (target, core) = (&cell.target, &*cell.core.borrow());
    let stats = core.stats();
    SubscriptionInfo {
        topic: target.topic.to_string(),
        partition: target.partition,
        name: target.subscription.clone(),
        kind: core.kind(),
        mode: core.mode(),
        cursor: stats.cursor,
        persisted: cell.persisted.get(),
        lag: end.saturating_sub(stats.cursor),
        unacked: stats.unacked,
        consumers: stats.consumers,
        dropped: stats.dropped,
        blocked: stats.blocked,
        skipped: core.skipped().to_vec(),
        redelivered: stats.redelivered,
        dead_lettered: stats.dead_lettered,
        rate_messages_per_second: core.dispatch_rate().messages_per_second,
        rate_bytes_per_second: core.dispatch_rate().bytes_per_second,
    }
}

fn no_subscription(target: &Target) -> Refusal {
    (
        ErrorCode::UnknownSubscription,
        format!("no subscription {}", target.subscription),
    )
}

/// The offset a start position names on this partition, clamped to the log.
async fn resolve(
    log: &Partition,
    start: StartPosition,
    decompressed_bytes_max: u64,
) -> Result<u64, Refusal> {
    let (first, end) = (log.log_start_offset(), log.log_end_offset());
    Ok(match start {
        StartPosition::Earliest => first,
        StartPosition::Latest => end,
        StartPosition::Offset(offset) => offset.clamp(first, end),
        StartPosition::Timestamp(ms) => {
            let (offset, _) = crate::shard::offset_at_time(log, ms.max(0), decompressed_bytes_max)
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
