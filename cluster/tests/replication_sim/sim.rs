//! One schedule: the brokers, the metadata, the network, the steps that change them and the
//! checks after each.

use crate::model::{
    decode_records, encode_records, key, Envelope, History, Record, Replica, BROKERS,
    FETCH_RECORDS_MAX, INITIAL_REPLICAS, SETTINGS, TOPIC, TOPIC_ID,
};
use oxbow_cluster::controller::{elections, preferred_leader_elections};
use oxbow_cluster::replication::{
    check_request, Follower, FollowerAction, LeaderProgress, ReplicaFrame,
};
use oxbow_cluster::{BrokerMeta, Metadata, MetadataChange, PartitionMeta, TopicId, TopicMeta};
use oxbow_storage::LeaderEpochs;
use std::collections::{BTreeMap, BTreeSet};

pub struct Sim {
    rng: fastrand::Rng,
    now: u64,
    metadata: Metadata,
    replicas: BTreeMap<i32, Replica>,
    network: Vec<Envelope>,
    pub history: History,
    next_value: u64,
    faults: bool,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let mut metadata = Metadata::default();
        for id in BROKERS {
            metadata
                .apply(&MetadataChange::RegisterBroker(BrokerMeta {
                    id,
                    kafka_addr: format!("b{id}:9092"),
                    native_addr: format!("b{id}:6650"),
                    cluster_addr: None,
                    rack: None,
                    shards: 1,
                    kafka_listeners: Default::default(),
                    native_listeners: Default::default(),
                }))
                .unwrap();
        }
        let partition = PartitionMeta {
            replicas: INITIAL_REPLICAS.to_vec(),
            leader: 1,
            leader_epoch: 0,
            isr: INITIAL_REPLICAS.to_vec(),
        };
        let topic = TopicMeta {
            name: TOPIC.into(),
            id: TopicId(TOPIC_ID),
            partitions: vec![partition],
            configs: BTreeMap::new(),
            internal: false,
        };
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        let replicas = (BROKERS.iter())
            .map(|&id| {
                let replica = Replica {
                    id,
                    alive: true,
                    log: Vec::new(),
                    durable: 0,
                    epochs: LeaderEpochs::default(),
                    hw: 0,
                    view: (-2, -1),
                    follower: None,
                    leading: None,
                };
                (id, replica)
            })
            .collect();
        let mut sim = Sim {
            rng: fastrand::Rng::with_seed(seed),
            now: 0,
            metadata,
            replicas,
            network: Vec::new(),
            history: History::default(),
            next_value: 1,
            faults: true,
        };
        for id in BROKERS {
            sim.refresh_view(id);
        }
        sim
    }

    fn partition(&self) -> &PartitionMeta {
        &self.metadata.topic(TOPIC).unwrap().partitions[0]
    }

    /// Applies a change as the metadata group would commit it; false when refused.
    fn commit(&mut self, change: MetadataChange) -> bool {
        let ok = self.metadata.apply(&change).is_ok();
        if !ok {
            self.history.refused += 1;
        }
        ok
    }

    /// A broker learns the current metadata: it becomes leader of a newer epoch, stops
    /// leading, or takes a new committed ISR.
    fn refresh_view(&mut self, id: i32) {
        let p = self.partition().clone();
        let now = self.now;
        let r = self.replicas.get_mut(&id).unwrap();
        if !r.alive {
            return;
        }
        if !p.replicas.contains(&id) {
            if r.view != (-2, -1) || !r.log.is_empty() {
                r.remove();
            }
            return;
        }
        let view = (p.leader, p.leader_epoch);
        if view != r.view {
            if r.leading.is_some() && p.leader == id {
                // A leader staying at a new epoch keeps its acks=all produces waiting, as the
                // broker does.
                let old_epoch = r.view.1;
                for pending in &mut self.history.pending {
                    if pending.0 == id && pending.1 == old_epoch {
                        pending.1 = p.leader_epoch;
                    }
                }
            }
            r.view = view;
            r.leading = None;
            r.follower = (p.leader >= 0 && p.leader != id)
                .then(|| Follower::new(key(p.leader_epoch), id, p.leader));
            if p.leader == id {
                // A new leader syncs what it holds and starts its epoch at its log end.
                r.durable = r.log.len();
                r.epochs.assign(p.leader_epoch, r.log.len() as u64);
                let end = r.log.len() as u64;
                let progress = LeaderProgress::new(
                    id,
                    p.leader_epoch,
                    &p.replicas,
                    &p.isr,
                    end,
                    r.hw,
                    now,
                    SETTINGS,
                );
                r.hw = progress.high_watermark();
                r.leading = Some(progress);
            }
        } else if let Some(progress) = r.leading.as_mut() {
            progress.set_replicas(&p.replicas, now);
            if let Some(hw) = progress.isr_committed(&p.isr) {
                self.high_watermark_moved(id, hw);
            }
        }
    }

    fn high_watermark_moved(&mut self, leader: i32, hw: u64) {
        let r = &self.replicas[&leader];
        let epoch = r.view.1;
        let log = r.log.clone();
        self.replicas.get_mut(&leader).unwrap().hw = hw;
        let committed = &mut self.history.committed;
        for (offset, record) in log.iter().enumerate().take(hw as usize) {
            match committed.get(offset) {
                Some(before) => assert_eq!(
                    before, record,
                    "offset {offset} changed after a high watermark covered it"
                ),
                None => committed.push(*record),
            }
        }
        let history = &mut self.history;
        history.pending.retain(|&(l, e, offset, value)| {
            if l == leader && e == epoch && offset < hw {
                let before = history.acked.insert(offset, value);
                assert!(before.is_none(), "offset {offset} acknowledged twice");
                history.acks += 1;
                return false;
            }
            true
        });
    }

    pub fn step(&mut self) {
        self.now += self.rng.u64(1..40);
        let id = BROKERS[self.rng.usize(..BROKERS.len())];
        match self.rng.u16(..1000) {
            0..=199 => self.produce(id),
            200..=349 => {
                if self.replicas[&id].alive {
                    if let Some(hw) = self.replicas.get_mut(&id).unwrap().fsync() {
                        self.high_watermark_moved(id, hw);
                    }
                }
            }
            350..=599 => {
                let timed_out = self.rng.u8(..10) == 0;
                self.follow(id, timed_out);
            }
            600..=879 => self.deliver(),
            880..=904 => self.refresh_view(id),
            905..=909 => self.reassign(),
            910..=912 if self.faults => self.cancel_reassignment(),
            913..=919 => self.complete_reassignments(),
            920..=959 => self.propose_isr(id),
            960..=969 if self.faults => self.crash(id),
            970..=984 => self.restart(id),
            985..=989 if self.faults => self.fence(id),
            990..=993 if self.faults => self.shut_down(id),
            994..=997 => self.rebalance(),
            _ => self.heartbeat(id),
        }
        self.check();
    }

    fn produce(&mut self, id: i32) {
        let r = self.replicas.get_mut(&id).unwrap();
        let Some(progress) = r.leading.as_ref().filter(|_| r.alive) else {
            return;
        };
        if progress.check_acks_all().is_err() {
            return;
        }
        let epoch = progress.epoch();
        let value = self.next_value;
        self.next_value += 1;
        r.log.push(Record { epoch, value });
        self.history
            .pending
            .push((id, epoch, r.log.len() as u64 - 1, value));
    }

    /// A follower asks its leader for its divergence point, or for records; sometimes its
    /// request in flight times out first (the network may have dropped it).
    fn follow(&mut self, id: i32, timed_out: bool) {
        let r = self.replicas.get_mut(&id).unwrap();
        let (latest, end, durable) = (r.epochs.latest(), r.log.len() as u64, r.durable as u64);
        let Some(follower) = r.follower.as_mut().filter(|_| r.alive) else {
            return;
        };
        if timed_out {
            follower.request_lost();
        }
        if let Some(frame) = follower.next_request(latest, end, durable) {
            let to = follower.leader();
            self.network.push(Envelope {
                from: id,
                to,
                frame: frame.encode(),
            });
        }
    }

    fn deliver(&mut self) {
        if self.network.is_empty() {
            return;
        }
        let envelope = self
            .network
            .swap_remove(self.rng.usize(..self.network.len()));
        if self.faults {
            match self.rng.u8(..20) {
                0 => return,
                1 => self.network.push(envelope.clone()),
                _ => {}
            }
        }
        if !self.replicas[&envelope.to].alive {
            return;
        }
        let frame = ReplicaFrame::decode(envelope.frame).expect("frames decode");
        match frame {
            ReplicaFrame::EpochQuery { .. } | ReplicaFrame::Fetch { .. } => {
                if let Some(answer) = self.lead(envelope.to, frame) {
                    let back = Envelope {
                        from: envelope.to,
                        to: envelope.from,
                        frame: answer.encode(),
                    };
                    self.network.push(back);
                }
            }
            frame => self.take_answer(envelope.to, frame),
        }
    }

    /// The leader's side: answers a follower's request.
    fn lead(&mut self, id: i32, frame: ReplicaFrame) -> Option<ReplicaFrame> {
        let now = self.now;
        let r = self.replicas.get_mut(&id).unwrap();
        let key = *frame.key();
        let leading = r.leading.as_ref().map(LeaderProgress::epoch);
        let fetch_offset = match &frame {
            ReplicaFrame::Fetch { offset, .. } => Some(*offset),
            _ => None,
        };
        let from = match check_request(&key, leading, fetch_offset, 0, r.log.len() as u64) {
            Ok(from) => from,
            Err(refusal) => return Some(ReplicaFrame::Refused { key, refusal }),
        };
        let answer = match frame {
            ReplicaFrame::EpochQuery { latest_epoch, .. } => ReplicaFrame::EpochAnswer {
                key,
                answer: latest_epoch.and_then(|e| r.epochs.end_offset_for(e, r.log.len() as u64)),
            },
            ReplicaFrame::Fetch {
                replica,
                durable_end,
                ..
            } => {
                let progress = r.leading.as_mut().expect("checked: it leads");
                // A replica the leader does not know (removed, or added after its last view)
                // gets no answer, as on a broker.
                let moved = progress.follower_fetched(replica, durable_end, now).ok()?;
                let end = (from as usize + FETCH_RECORDS_MAX).min(r.log.len());
                let answer = ReplicaFrame::Data {
                    key,
                    offset: from,
                    high_watermark: progress.high_watermark(),
                    log_start: 0,
                    cursors: None,
                    batches: encode_records(&r.log[from as usize..end]),
                };
                if let Some(hw) = moved {
                    self.high_watermark_moved(id, hw);
                }
                answer
            }
            _ => unreachable!("only requests reach the leader"),
        };
        Some(answer)
    }

    /// The follower's side: acts on its leader's answer.
    fn take_answer(&mut self, id: i32, frame: ReplicaFrame) {
        let r = self.replicas.get_mut(&id).unwrap();
        let end = r.log.len() as u64;
        let Some(follower) = r.follower.as_mut() else {
            return;
        };
        match follower.on_frame(frame, &r.epochs, end) {
            FollowerAction::TruncateTo(cut) => self.history.truncated += r.truncate(cut),
            FollowerAction::Append {
                offset,
                batches,
                high_watermark,
                restart,
                ..
            } => {
                assert!(!restart && offset == end, "the log start never moves here");
                for record in decode_records(batches) {
                    r.epochs.observe(record.epoch, r.log.len() as u64);
                    r.log.push(record);
                }
                r.hw = r.hw.max(high_watermark.min(r.log.len() as u64));
            }
            FollowerAction::Retry | FollowerAction::Stop | FollowerAction::Ignore => {}
        }
    }

    fn propose_isr(&mut self, id: i32) {
        let r = &self.replicas[&id];
        let Some(progress) = r.leading.as_ref().filter(|_| r.alive) else {
            return;
        };
        let Some(isr) = progress.isr_proposal(self.now) else {
            return;
        };
        let change = MetadataChange::AlterIsr {
            topic: TOPIC.into(),
            partition: 0,
            leader: id,
            leader_epoch: progress.epoch(),
            isr,
        };
        if self.commit(change) {
            self.history.isr_changes += 1;
            self.refresh_view(id);
        }
    }

    /// Controlled shutdown: the metadata hands what `id` leads to another in-sync replica
    /// and fences it; then it stops (as a crash: whatever it had not synced is lost, which a
    /// real stop would have synced).
    fn shut_down(&mut self, id: i32) {
        if !self.replicas[&id].alive {
            return;
        }
        if self.commit(MetadataChange::ShutDownBroker { id }) {
            self.history.shutdowns += 1;
            self.elect();
        }
        self.crash(id);
    }

    fn crash(&mut self, id: i32) {
        if self.replicas[&id].alive {
            self.history.crashes += 1;
            self.replicas.get_mut(&id).unwrap().crash();
        }
    }

    /// A broker comes back and registers again: it is live, and if the metadata still names
    /// it leader, the controller bumps the epoch (a restarted leader never resumes its old
    /// epoch: followers may hold records it lost).
    fn restart(&mut self, id: i32) {
        if self.replicas[&id].alive {
            return;
        }
        let r = self.replicas.get_mut(&id).unwrap();
        r.alive = true;
        r.view = (-2, -1);
        if self.metadata.shutting_down.contains(&id) {
            // A node that shut down registers again (and leaves the in-sync replicas).
            let broker = self.metadata.brokers[&id].clone();
            self.commit(MetadataChange::RegisterBroker(broker));
        } else {
            self.commit(MetadataChange::UnfenceBroker { id });
        }
        let p = self.partition().clone();
        if p.leader == id {
            self.commit(MetadataChange::ElectLeader {
                topic: TOPIC.into(),
                partition: 0,
                leader: id,
                leader_epoch: p.leader_epoch + 1,
                isr: p.isr.clone(),
            });
            self.history.elections += 1;
        }
        self.elect();
        self.refresh_view(id);
    }

    /// The controller stops hearing `id` (crashed, or only cut off) and moves leadership.
    fn fence(&mut self, id: i32) {
        if self.commit(MetadataChange::FenceBroker { id }) {
            self.elect();
        }
    }

    /// A running broker is heard again.
    fn heartbeat(&mut self, id: i32) {
        if self.replicas[&id].alive && self.metadata.fenced.contains(&id) {
            self.commit(MetadataChange::UnfenceBroker { id });
            self.elect();
        }
    }

    /// The controller hands leadership back to the preferred replica (broker 1) when it is
    /// in sync (no imbalance threshold: one partition).
    fn rebalance(&mut self) {
        let live: BTreeSet<i32> = (BROKERS.iter().copied())
            .filter(|id| !self.metadata.fenced.contains(id))
            .collect();
        for change in preferred_leader_elections(&self.metadata, &live, 0) {
            if self.commit(change) {
                self.history.rebalances += 1;
            }
        }
    }

    /// An operator moves the partition to three of the four brokers, in a random order.
    fn reassign(&mut self) {
        let mut target = BROKERS.to_vec();
        self.rng.shuffle(&mut target);
        target.truncate(3);
        let change = MetadataChange::ReassignPartition {
            topic: TOPIC.into(),
            partition: 0,
            replicas: target,
        };
        if self.commit(change) {
            self.history.reassignments += 1;
        }
    }

    /// An operator calls the move in progress off.
    fn cancel_reassignment(&mut self) {
        let change = MetadataChange::CancelReassignment {
            topic: TOPIC.into(),
            partition: 0,
        };
        if self.commit(change) {
            self.history.cancelled += 1;
            self.elect();
        }
    }

    /// The controller's look: moves whose new replicas are all in sync complete.
    fn complete_reassignments(&mut self) {
        for change in self.metadata.reassignments_done() {
            if self.commit(change) {
                self.history.completed += 1;
            }
        }
    }

    fn elect(&mut self) {
        let live: BTreeSet<i32> = (BROKERS.iter().copied())
            .filter(|id| !self.metadata.fenced.contains(id))
            .collect();
        for change in elections(&self.metadata, &live) {
            if self.commit(change) {
                self.history.elections += 1;
            }
        }
    }

    fn check(&self) {
        let committed = &self.history.committed;
        for (&offset, &value) in &self.history.acked {
            assert_eq!(
                committed.get(offset as usize).map(|r| r.value),
                Some(value),
                "acknowledged offset {offset} is not committed with its value"
            );
        }
        for r in self.replicas.values() {
            let below = (r.hw as usize).min(r.log.len()).min(committed.len());
            assert_eq!(
                r.log[..below],
                committed[..below],
                "replica {} disagrees with what was committed below its high watermark {}",
                r.id,
                r.hw
            );
        }
        // Every in-sync replica, running or crashed, holds everything acknowledged durably.
        let p = self.partition();
        if let Some((&last, _)) = self.history.acked.last_key_value() {
            for id in &p.isr {
                let r = &self.replicas[id];
                assert!(
                    r.durable as u64 > last,
                    "in-sync replica {id} holds {} records durably, offset {last} was acknowledged",
                    r.durable
                );
            }
        }
    }

    /// Heals every fault and runs until all replicas hold the same log.
    pub fn settle(&mut self) {
        self.faults = false;
        for id in BROKERS {
            self.restart(id);
            self.heartbeat(id);
        }
        for round in 0.. {
            assert!(round < 20_000, "replicas never converged");
            self.now += 10;
            self.complete_reassignments();
            for id in BROKERS {
                self.refresh_view(id);
                if let Some(hw) = self.replicas.get_mut(&id).unwrap().fsync() {
                    self.high_watermark_moved(id, hw);
                }
                // The network was drained: whatever was in flight is lost.
                self.follow(id, true);
                self.propose_isr(id);
            }
            while !self.network.is_empty() {
                self.deliver();
            }
            self.check();
            let p = self.partition().clone();
            let logs: BTreeSet<Vec<Record>> = (p.replicas.iter())
                .map(|id| self.replicas[id].log.clone())
                .collect();
            let others_empty =
                (self.replicas.values()).all(|r| p.replicas.contains(&r.id) || r.log.is_empty());
            let mut in_sync = p.isr.clone();
            let mut replicas = p.replicas.clone();
            in_sync.sort_unstable();
            replicas.sort_unstable();
            let everyone = in_sync == replicas && self.metadata.reassignments.is_empty();
            let leader = &self.replicas[&p.leader];
            let hw_at_end = leader.hw == leader.log.len() as u64;
            if logs.len() == 1 && others_empty && everyone && hw_at_end {
                return;
            }
        }
    }
}
