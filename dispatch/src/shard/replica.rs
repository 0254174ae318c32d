//! Replication on a partition's owner shard: the shell around the sans-IO cores of
//! `oxbow_cluster::replication`. Every metadata version a shard serves sets each hosted
//! partition's role: the only replica (nothing to do), the leader (a `LeaderProgress` fed by its
//! followers' fetches; the high watermark caps what readers see and releases acks=all
//! appends), or a follower (a task that converses with the leader through a `Follower` and
//! appends what it sends, as stored). Frames travel over the cluster transport.

use super::delete_records::StartWaits;
use super::message::PartitionError;
use super::{PartitionHost, Shard};
use oxbow_cluster::metadata_group::raft_id;
use oxbow_cluster::replication::{
    CatchUpThrottle, Follower, FollowerAction, LeaderProgress, PartitionKey, ReplicaFrame,
    ReplicationSettings,
};
use oxbow_cluster::PartitionMeta;
use oxbow_core::RecordBatch;
use oxbow_storage::LeaderEpochs;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What this node does for one partition it hosts.
#[derive(Default)]
pub enum Role {
    /// The only replica: appends and reads need nobody else.
    #[default]
    Alone,
    /// Leads it for followers.
    Leader(Leading),
    /// Follows its leader.
    Follower(Following),
    /// Holds a replica while the partition has no leader.
    Offline,
}

impl Role {
    /// Whether this node serves the partition's clients (appends, reads, subscriptions).
    pub fn serves(&self) -> bool {
        matches!(self, Role::Alone | Role::Leader(_))
    }
}

/// A led replicated partition's replication state, for metrics.
#[derive(Debug, Clone)]
pub struct ReplicationInfo {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Replicas in the replica set.
    pub replicas: usize,
    /// In-sync replicas (the leader among them).
    pub isr: usize,
    /// Each follower's lag.
    pub followers: Vec<oxbow_cluster::replication::FollowerLag>,
}

/// The leader's state.
pub struct Leading {
    pub(super) progress: LeaderProgress,
    /// acks=all appends waiting for the high watermark to reach their end.
    waiters: Vec<(u64, flume::Sender<()>)>,
    /// The bandwidth of followers outside the ISR (`cluster.catch_up_bytes_per_sec`).
    pub(super) catch_up: Option<CatchUpThrottle>,
    /// Deletions of records waiting for the followers' logs to start at their offset.
    pub(super) start_waits: StartWaits,
}

/// A running follower task, stopped by dropping this.
pub struct Following {
    leader: i32,
    epoch: i32,
    inbox: flume::Sender<ReplicaFrame>,
    stop: Rc<Cell<bool>>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.stop.set(true);
    }
}

pub(super) fn now_ms() -> u64 {
    oxbow_storage::now_ms().max(0) as u64
}

/// What an append waits for beyond the leader's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplicaWait {
    /// Nothing more (acks=0, acks=1).
    LeaderOnly,
    /// Every in-sync replica holding it (acks=all), at most `timeout` (`None`: until they do
    /// or the leadership moves).
    InSync { timeout: Option<Duration> },
}

impl Shard {
    /// The replication settings of a topic with `overrides`: its `min.insync.replicas`, else
    /// the broker's.
    fn replication_settings(
        &self,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> ReplicationSettings {
        let topic = (overrides.iter()).map(|(name, value)| (name.as_str(), value.as_str()));
        let min_insync = oxbow_core::config::min_insync_replicas_override(topic)
            .unwrap_or(self.config.cluster.min_insync_replicas);
        ReplicationSettings {
            replica_lag_time_max_ms: self.config.cluster.replica_lag_time_max_ms,
            min_insync_replicas: min_insync as usize,
        }
    }

    /// Proposes, for the partitions this shard leads, the in-sync replicas that follow from
    /// their followers' progress (a follower behind for `replica_lag_time_max_ms` leaves, one
    /// caught up rejoins), through the metadata group; runs while the node runs.
    pub async fn maintain_isr_forever(self: Rc<Self>) {
        let lag = self.config.cluster.replica_lag_time_max_ms;
        let every = Duration::from_millis((lag / 4).clamp(10, 1_000));
        loop {
            glommio::timer::sleep(every).await;
            let metadata = self.metadata();
            let mut proposals = Vec::new();
            for host in self.owned() {
                if let Role::Leader(leading) = &*host.role.borrow() {
                    if let Some(isr) = leading.progress.isr_proposal(now_ms()) {
                        proposals.push(oxbow_cluster::MetadataChange::AlterIsr {
                            topic: host.topic.to_string(),
                            partition: host.partition,
                            leader: self.config.node_id,
                            leader_epoch: leading.progress.epoch(),
                            isr,
                        });
                    }
                }
            }
            drop(metadata);
            for change in proposals {
                let what = format!("{change:?}");
                let committed = self
                    .run_on(0, move |shard| async move {
                        shard
                            .change_cluster(change)
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
                match committed {
                    Some(Ok(())) => tracing::info!(change = %what, "in-sync replicas changed"),
                    Some(Err(e)) => {
                        tracing::debug!(change = %what, error = %e, "ISR change refused")
                    }
                    None => return,
                }
            }
        }
    }

    /// The node's metadata has caught up with the group since it started (its registration
    /// for this start is applied): replicated partitions take their roles from now on.
    pub fn enable_roles(self: &Rc<Self>) {
        self.roles_enabled.set(true);
        self.reconcile_roles();
    }

    /// Sets every hosted partition's role from the metadata this shard serves.
    pub fn reconcile_roles(self: &Rc<Self>) {
        let metadata = self.metadata();
        for host in self.owned() {
            let Some(topic) = metadata.topic(&host.topic) else {
                continue;
            };
            let Some(meta) = topic.partitions.get(host.partition as usize) else {
                continue;
            };
            let key = PartitionKey {
                topic_id: topic.id.0,
                partition: host.partition,
                leader_epoch: meta.leader_epoch,
            };
            let settings = self.replication_settings(&topic.configs);
            self.reconcile(&host, meta, key, settings);
        }
    }

    fn reconcile(
        self: &Rc<Self>,
        host: &Rc<PartitionHost>,
        meta: &PartitionMeta,
        key: PartitionKey,
        settings: ReplicationSettings,
    ) {
        let me = self.config.node_id;
        let mut role = host.role.borrow_mut();
        match &mut *role {
            Role::Alone if meta.replicas.len() <= 1 => return,
            Role::Leader(leading)
                if meta.leader == me && leading.progress.epoch() == meta.leader_epoch =>
            {
                leading.progress.set_replicas(&meta.replicas, now_ms());
                leading.progress.set_settings(settings);
                if let Some(hw) = leading.progress.isr_committed(&meta.isr) {
                    high_watermark_moved(host, leading, hw);
                }
                // A follower that left the ISR no longer holds deletions back.
                let own_start = host.log.log_start_offset();
                (leading.start_waits).low_watermark_moved(leading.progress.isr(), me, own_start);
                (host.subscriptions).lead_cursors(in_sync_followers(meta, me), false);
                return;
            }
            Role::Follower(following)
                if following.leader == meta.leader && following.epoch == meta.leader_epoch =>
            {
                return;
            }
            Role::Offline if meta.leader < 0 || !self.roles_enabled.get() => return,
            _ => {}
        }
        // The old role ends: a follower task stops, waiting acks=all appends fail. A leader
        // that stays at a new epoch (a replica left) keeps them, as Kafka keeps its delayed
        // produces: its log is unchanged and the new epoch's high watermark answers them.
        let carried = match &mut *role {
            Role::Leader(leading) if meta.leader == me => std::mem::take(&mut leading.waiters),
            _ => Vec::new(),
        };
        let served = role.serves();
        *role = if meta.replicas.len() <= 1 {
            host.subscriptions.lead_cursors(Vec::new(), !served);
            Role::Alone
        } else if !self.roles_enabled.get() {
            Role::Offline
        } else if meta.leader == me {
            host.log.set_leader_epoch(meta.leader_epoch);
            let end = host.log.durable_end_offset();
            let progress = LeaderProgress::new(
                me,
                meta.leader_epoch,
                &meta.replicas,
                &meta.isr,
                end,
                host.log.log_end_offset(),
                now_ms(),
                settings,
            );
            let rate = self.config.cluster.catch_up_bytes_per_sec;
            let hw = progress.high_watermark();
            let mut leading = Leading {
                progress,
                waiters: carried,
                catch_up: (rate > 0).then(|| CatchUpThrottle::new(rate, now_ms())),
                start_waits: StartWaits::default(),
            };
            high_watermark_moved(host, &mut leading, hw);
            tracing::info!(topic = %host.topic, partition = host.partition,
                epoch = meta.leader_epoch, "leading");
            (host.subscriptions).lead_cursors(in_sync_followers(meta, me), true);
            Role::Leader(leading)
        } else if meta.leader >= 0 && meta.replicas.contains(&me) {
            let (inbox, frames) = flume::bounded(16);
            let stop = Rc::new(Cell::new(false));
            let follower = Follower::new(key, me, meta.leader);
            let task = follow(self.clone(), host.clone(), follower, frames, stop.clone());
            glommio::spawn_local(task).detach();
            tracing::info!(topic = %host.topic, partition = host.partition,
                leader = meta.leader, epoch = meta.leader_epoch, "following");
            Role::Follower(Following {
                leader: meta.leader,
                epoch: meta.leader_epoch,
                inbox,
                stop,
            })
        } else {
            Role::Offline
        };
        if served && !role.serves() {
            let moved = oxbow_core::native::LEADER_MOVED;
            let reason = match meta.leader {
                leader if leader >= 0 => format!(
                    "{moved}broker {leader} leads {}-{} now",
                    host.topic, host.partition
                ),
                _ => format!("{moved}{}-{} has no leader", host.topic, host.partition),
            };
            host.subscriptions.leadership_moved(&reason);
        }
    }

    /// The replication state of every replicated partition this shard leads.
    pub fn replication_infos(&self) -> Vec<ReplicationInfo> {
        let metadata = self.metadata();
        let now = now_ms();
        (self.owned().iter())
            .filter_map(|host| {
                let role = host.role.borrow();
                let Role::Leader(leading) = &*role else {
                    return None;
                };
                let replicas = (metadata.topic(&host.topic))
                    .and_then(|t| t.partitions.get(host.partition as usize))
                    .map_or(0, |p| p.replicas.len());
                Some(ReplicationInfo {
                    topic: host.topic.clone(),
                    partition: host.partition,
                    replicas,
                    isr: leading.progress.isr().len(),
                    followers: leading.progress.lags(now),
                })
            })
            .collect()
    }

    /// A hosted partition clients may produce to and read from: this node leads it (or it
    /// has no other replica).
    pub fn leading(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Rc<PartitionHost>, PartitionError> {
        let host = self.local(topic, partition)?;
        if host.role.borrow().serves() {
            return Ok(host);
        }
        let leader = (self.metadata().topic(topic))
            .and_then(|t| t.partitions.get(partition as usize))
            .map_or(-1, |p| p.leader);
        Err(PartitionError::NotLeader { leader })
    }

    /// Before an acks=all append: are there enough in-sync replicas?
    pub(super) fn check_acks_all(&self, host: &PartitionHost) -> Result<(), PartitionError> {
        match &*host.role.borrow() {
            Role::Leader(leading) => leading
                .progress
                .check_acks_all()
                .map_err(|_| PartitionError::NotEnoughReplicas),
            _ => Ok(()),
        }
    }

    /// Waits until every in-sync replica of a partition this node leads holds everything
    /// below `end` (at once where it has no other replica), at most `timeout`: how a state
    /// log's writer (group offsets) makes its appends as durable as acks=all.
    pub async fn wait_for_replicas(
        &self,
        host: &PartitionHost,
        end: u64,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        let wait = ReplicaWait::InSync {
            timeout: Some(timeout),
        };
        self.replicated(host, end, wait).await
    }

    /// After a local append up to `end`: the leader's own progress, and what `wait` asks.
    pub(super) async fn replicated(
        &self,
        host: &PartitionHost,
        end: u64,
        wait: ReplicaWait,
    ) -> Result<(), PartitionError> {
        let waiting = {
            let mut role = host.role.borrow_mut();
            let Role::Leader(leading) = &mut *role else {
                return Ok(());
            };
            let durable = host.log.durable_end_offset();
            if let Some(hw) = leading.progress.local_appended(durable) {
                high_watermark_moved(host, leading, hw);
            }
            let ReplicaWait::InSync { timeout } = wait else {
                return Ok(());
            };
            if leading.progress.high_watermark() >= end {
                return Ok(());
            }
            // Waiters that timed out are gone: no need to keep them until the mark passes.
            leading
                .waiters
                .retain(|(_, waiter)| !waiter.is_disconnected());
            let (tx, rx) = flume::bounded(1);
            leading.waiters.push((end, tx));
            (rx, timeout)
        };
        let (waiting, timeout) = waiting;
        let replicated = async {
            // A waiter dropped unanswered: leadership moved before the replicas caught up.
            (waiting.recv_async().await).map_err(|_| PartitionError::NotLeader { leader: -1 })
        };
        match timeout {
            None => replicated.await,
            Some(timeout) => {
                futures_lite::future::or(replicated, async {
                    glommio::timer::sleep(timeout).await;
                    Err(PartitionError::TimedOut)
                })
                .await
            }
        }
    }

    /// Hands replication frames from the cluster network to their partitions' owner shards,
    /// for as long as the network runs (shard 0). Undecodable frames and frames for unknown
    /// topics are dropped (the asking side times out and asks again).
    pub async fn route_replica_frames(self: Rc<Self>, frames: flume::Receiver<bytes::Bytes>) {
        while let Ok(bytes) = frames.recv_async().await {
            let frame = match ReplicaFrame::decode(bytes) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(error = %e, "replication frame dropped");
                    continue;
                }
            };
            let key = *frame.key();
            let topic = (self.metadata().topics.values())
                .find(|t| t.id.0 == key.topic_id)
                .map(|t| Arc::<str>::from(t.name.as_str()));
            let Some(topic) = topic else {
                continue;
            };
            let inbox = self.owner_inbox(&topic, key.partition);
            let message = super::ShardMessage::Replica {
                topic: topic.clone(),
                partition: key.partition,
                frame,
            };
            let _ = inbox.send_async(message).await;
        }
    }

    /// A replication frame for a partition this shard owns.
    pub(super) async fn replica_frame(&self, topic: Arc<str>, partition: u32, frame: ReplicaFrame) {
        let Ok(host) = self.local(&topic, partition) else {
            return;
        };
        match frame {
            ReplicaFrame::EpochQuery { replica, .. } | ReplicaFrame::Fetch { replica, .. } => {
                if let Some(answer) = self.lead(&host, frame).await {
                    self.send_replica(replica, &answer);
                }
            }
            answer => {
                if let Role::Follower(following) = &*host.role.borrow() {
                    let _ = following.inbox.try_send(answer);
                }
            }
        }
    }

    pub(super) fn send_replica(&self, broker: i32, frame: &ReplicaFrame) {
        if let Some(transport) = self.transport() {
            transport.send(raft_id(broker), frame.encode());
        }
    }
}

/// The high watermark moved to `hw`: readers see up to it, acks=all appends it covers return.
pub(super) fn high_watermark_moved(host: &PartitionHost, leading: &mut Leading, hw: u64) {
    host.log.set_high_watermark(hw);
    leading.waiters.retain(|(end, waiter)| {
        if *end <= hw {
            let _ = waiter.send(());
            return false;
        }
        true
    });
}

/// The follower task: asks, waits for the answer (or gives up after a while), acts on it.
async fn follow(
    shard: Rc<Shard>,
    host: Rc<PartitionHost>,
    mut follower: Follower,
    frames: flume::Receiver<ReplicaFrame>,
    stop: Rc<Cell<bool>>,
) {
    let log = host.log.clone();
    let settings = &shard.config.cluster;
    let timeout = Duration::from_millis(settings.replica_fetch_timeout_ms);
    let backoff = Duration::from_millis(settings.replica_fetch_backoff_ms);
    while !stop.get() {
        let epochs = epochs_of(&log.leader_epochs());
        let end = log.durable_end_offset();
        follower.log_start_held(log.log_start_offset());
        if let Some(request) = follower.next_request(epochs.latest(), end, end) {
            shard.send_replica(follower.leader(), &request);
        }
        let answer = futures_lite::future::or(async { frames.recv_async().await.ok() }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        if stop.get() {
            return;
        }
        let Some(answer) = answer else {
            follower.request_lost();
            continue;
        };
        match follower.on_frame(answer, &epochs, end) {
            FollowerAction::TruncateTo(cut) if cut < end => {
                if let Err(e) = log.truncate_to(cut).await {
                    tracing::error!(topic = %host.topic, error = %e, "truncating to the leader");
                    return;
                }
            }
            FollowerAction::Append {
                offset,
                batches,
                high_watermark,
                log_start,
                restart,
                cursors,
            } => {
                if restart {
                    if let Err(e) = log.restart_at(offset).await {
                        tracing::error!(topic = %host.topic, error = %e, "restarting the log");
                        return;
                    }
                }
                let batches = match RecordBatch::parse_many(batches) {
                    Ok(batches) => batches,
                    Err(e) => {
                        tracing::warn!(topic = %host.topic, error = %e, "leader sent bad batches");
                        continue;
                    }
                };
                let idle = batches.is_empty() && cursors.is_none();
                if let Err(e) = log.append_replicated_all(batches).await {
                    tracing::error!(topic = %host.topic, error = %e, "appending replicated");
                    return;
                }
                log.set_high_watermark(high_watermark.min(log.durable_end_offset()));
                // Records the leader deleted go here too, as far as this log reaches.
                let start = log_start.min(log.log_end_offset());
                if start > log.log_start_offset() {
                    if let Err(e) = log.delete_records(start).await {
                        tracing::warn!(topic = %host.topic, error = %e,
                            "moving the log start to the leader's");
                    }
                }
                if let Some(snapshot) = cursors {
                    let generation = snapshot.generation;
                    match host.subscriptions.store_cursor_snapshot(snapshot).await {
                        Ok(()) => follower.cursors_held(generation),
                        Err(e) => tracing::warn!(topic = %host.topic, error = %e,
                            "storing the leader's cursors"),
                    }
                }
                if idle {
                    glommio::timer::sleep(backoff).await;
                }
            }
            FollowerAction::Retry => glommio::timer::sleep(backoff).await,
            FollowerAction::Stop => return,
            FollowerAction::TruncateTo(_) | FollowerAction::Ignore => {}
        }
    }
}

/// The in-sync replicas other than `me`: whom a leader's cursor writes wait for.
fn in_sync_followers(meta: &PartitionMeta, me: i32) -> Vec<i32> {
    meta.isr.iter().copied().filter(|&r| r != me).collect()
}

fn epochs_of(entries: &[(i32, u64)]) -> LeaderEpochs {
    let mut epochs = LeaderEpochs::default();
    for &(epoch, start) in entries {
        epochs.assign(epoch, start);
    }
    epochs
}
