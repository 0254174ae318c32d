//! The simulated world: machines, a network and a clock, driven by a seeded event queue.

mod changes;
mod check;
mod node;

use changes::{marker_change, random_change};
use check::Checker;
use node::{run_or_abandon, Collected, Machine, Running};
use oxbow_cluster::metadata_group::{
    run_cycle, GroupError, GroupSettings, Message, MessageType, ProposalId,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);

/// Remembers the seed being run, for the failure message.
pub fn set_current_seed(seed: u64) {
    CURRENT_SEED.store(seed, Ordering::Relaxed);
}

/// Runs `work` on a fresh glommio executor; a failure names the seed to replay.
pub fn run_on_executor<F, Fut, T>(work: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(work)
        .expect("executor")
        .join()
        .unwrap_or_else(|_| {
            let seed = CURRENT_SEED.load(Ordering::Relaxed);
            panic!("seed {seed} failed; replay it with OXBOW_SIM_SEED={seed} OXBOW_SIM_CASES=1")
        })
}

/// Simulated milliseconds between a node's ticks.
const TICK_MS: u64 = 10;
/// How long faults are injected.
const CHAOS_MS: u64 = 1_500;
/// How long the group may take to converge once faults stop.
const CONVERGE_MS: u64 = 60_000;

/// Counts over schedules, to show the faults happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub schedules: u64,
    pub committed: u64,
    pub terms_with_leaders: u64,
    pub crashes: u64,
    pub crashes_mid_write: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub suffixes_replaced: u64,
    pub refused_changes: u64,
    pub dropped_messages: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.schedules += other.schedules;
        self.committed += other.committed;
        self.terms_with_leaders += other.terms_with_leaders;
        self.crashes += other.crashes;
        self.crashes_mid_write += other.crashes_mid_write;
        self.snapshots_taken += other.snapshots_taken;
        self.snapshots_installed += other.snapshots_installed;
        self.suffixes_replaced += other.suffixes_replaced;
        self.refused_changes += other.refused_changes;
        self.dropped_messages += other.dropped_messages;
    }

    /// Over enough schedules, every kind of event the checks are about took place.
    pub fn assert_everything_happened(&self) {
        let counts = [
            ("entries committed", self.committed),
            ("leader changes", self.terms_with_leaders - self.schedules),
            ("crashes in the middle of a write", self.crashes_mid_write),
            ("snapshots taken", self.snapshots_taken),
            ("snapshots installed", self.snapshots_installed),
            ("log suffixes replaced", self.suffixes_replaced),
            ("changes refused", self.refused_changes),
        ];
        for (what, count) in counts {
            assert!(count > 0, "no {what} in {self:?}");
        }
    }
}

/// What one schedule produced.
pub struct Outcome {
    pub totals: Totals,
    /// A hash of everything that happened, to show a seed replays identically.
    pub digest: u64,
}

enum Event {
    Tick(u64),
    Deliver(Message),
    Propose,
    Crash,
    Restart(u64),
    Partition,
}

/// One seeded run of a group.
pub struct Schedule {
    rng: fastrand::Rng,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    next_event: u64,
    machines: BTreeMap<u64, Machine>,
    voters: Vec<u64>,
    snapshot_entries: u64,
    /// Nodes cut off from the others (both ways); empty when the network is whole.
    isolated: Vec<u64>,
    faults: bool,
    check: Checker,
    totals: Totals,
    digest: DefaultHasher,
    /// The last proposal every node must apply before the schedule ends.
    marker: Option<ProposalId>,
}

impl Schedule {
    pub fn new(seed: u64, nodes: usize) -> Schedule {
        let mut rng = fastrand::Rng::with_seed(seed);
        let voters: Vec<u64> = (1..=nodes as u64).collect();
        let yields_max = rng.usize(..4);
        let machines = voters
            .iter()
            .map(|&id| (id, Machine::new(id, rng.u64(..), yields_max)))
            .collect();
        Schedule {
            snapshot_entries: [3, 8, 32][rng.usize(..3)],
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            machines,
            voters,
            isolated: Vec::new(),
            faults: true,
            check: Checker::default(),
            totals: Totals {
                schedules: 1,
                ..Totals::default()
            },
            digest: DefaultHasher::new(),
            marker: None,
        }
    }

    /// Schedules `event` after a delay drawn from `delay` (ms).
    fn at(&mut self, delay: std::ops::Range<u64>, event: Event) {
        let delay = self.rng.u64(delay);
        self.next_event += 1;
        self.queue
            .push(Reverse((self.now + delay, self.next_event)));
        self.events.insert(self.next_event, event);
    }

    fn settings(&mut self, id: u64) -> GroupSettings {
        // raft-rs draws election timeouts from an unseeded generator: a range of one value
        // keeps the schedule a function of the seed; the seed varies it per boot instead.
        let election = 10 + self.rng.usize(..10);
        GroupSettings {
            node_id: id,
            election_ticks: election..election + 1,
            heartbeat_ticks: 2,
            snapshot_entries: self.snapshot_entries,
            message_bytes_max: 4 * 1024,
            inflight_messages_max: 8,
        }
    }

    async fn boot(&mut self, id: u64) {
        let settings = self.settings(id);
        let boot = self.rng.u64(..);
        let voters = self.voters.clone();
        let machine = self.machines.get_mut(&id).expect("machine");
        machine.boot(&voters, settings, boot).await;
        self.observe(id);
        self.drive(id).await;
    }

    async fn start(&mut self) {
        for id in self.voters.clone() {
            self.boot(id).await;
            self.at(0..TICK_MS, Event::Tick(id));
        }
    }

    /// Runs the schedule: faults for a while, then none until every node has applied the
    /// same entries, the marker among them.
    pub async fn run(mut self) -> Outcome {
        self.start().await;
        self.at(0..50, Event::Propose);
        self.at(100..400, Event::Crash);
        self.at(100..400, Event::Partition);
        while let Some((time, event)) = self.pop() {
            if self.faults && time > CHAOS_MS {
                self.stop_faults().await;
            }
            self.now = time;
            self.handle(event).await;
            if !self.faults && self.converged() {
                break;
            }
            assert!(
                self.now < CHAOS_MS + CONVERGE_MS,
                "the group did not converge after the faults stopped: {}",
                self.describe()
            );
        }
        self.finish()
    }

    fn pop(&mut self) -> Option<(u64, Event)> {
        let Reverse((time, id)) = self.queue.pop()?;
        Some((time, self.events.remove(&id).expect("event")))
    }

    async fn stop_faults(&mut self) {
        self.faults = false;
        self.isolated.clear();
        for id in self.voters.clone() {
            if self.machines[&id].running.is_none() {
                self.boot(id).await;
            }
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(id) => {
                id.hash(&mut self.digest);
                if let Some(running) = self.running(id) {
                    running.core.tick();
                    self.drive(id).await;
                }
                self.at(TICK_MS - 2..TICK_MS + 3, Event::Tick(id));
            }
            Event::Deliver(message) => {
                let to = message.to;
                (to, message.from, message.get_msg_type() as u8).hash(&mut self.digest);
                if let Some(running) = self.running(to) {
                    running
                        .core
                        .step(message)
                        .unwrap_or_else(|e| panic!("node {to} refused a message: {e}"));
                    self.drive(to).await;
                }
            }
            Event::Propose => self.propose().await,
            Event::Crash => {
                if self.faults {
                    let id = self.voters[self.rng.usize(..self.voters.len())];
                    if self.running(id).is_some() {
                        self.crash(id);
                    }
                    self.at(100..600, Event::Crash);
                }
            }
            Event::Restart(id) => {
                if self.machines[&id].running.is_none() {
                    self.boot(id).await;
                }
            }
            Event::Partition => {
                if self.faults {
                    self.isolated.clear();
                    if self.rng.bool() {
                        let count = 1 + self.rng.usize(..self.voters.len() / 2);
                        let mut nodes = self.voters.clone();
                        self.rng.shuffle(&mut nodes);
                        self.isolated = nodes[..count].to_vec();
                    }
                    self.at(100..500, Event::Partition);
                }
            }
        }
    }

    fn running(&mut self, id: u64) -> Option<&mut Running> {
        self.machines.get_mut(&id)?.running.as_mut()
    }

    fn crash(&mut self, id: u64) {
        id.hash(&mut self.digest);
        self.totals.crashes += 1;
        let machine = self.machines.get_mut(&id).expect("machine");
        machine.crash(&mut self.rng);
        self.at(20..300, Event::Restart(id));
    }

    /// A change made from a random node's view: a topic created or deleted, or a partition's
    /// leader moved (at the next epoch, so proposals from stale views are refused).
    async fn propose(&mut self) {
        let up: Vec<u64> = self
            .voters
            .iter()
            .copied()
            .filter(|id| self.machines[id].running.is_some())
            .collect();
        let marker_pending = self
            .marker
            .is_none_or(|m| self.check.committed_index(m).is_none());
        if !up.is_empty() {
            let id = up[self.rng.usize(..up.len())];
            let view = self.running(id).expect("up").core.metadata().clone();
            let change = match self.faults {
                true => random_change(&mut self.rng, &view, &self.voters),
                false => marker_change(&mut self.rng),
            };
            let running = self.running(id).expect("up");
            match running.core.propose(change) {
                Ok(proposal) if !self.faults && marker_pending => self.marker = Some(proposal),
                Ok(_) | Err(GroupError::NoLeader) => {}
                Err(e) => panic!("node {id} refused a proposal: {e}"),
            }
            self.drive(id).await;
        }
        if self.faults || marker_pending {
            self.at(5..40, Event::Propose);
        }
    }

    /// Carries out a node's pending work, cycle after cycle; the node may crash anywhere in
    /// a cycle, in the middle of a disk operation too.
    async fn drive(&mut self, id: u64) {
        loop {
            let crash_after = self.crash_point();
            let Some(running) = self.running(id) else {
                return;
            };
            let mut outbox = Collected::default();
            let work = run_cycle(&mut running.core, &running.disk, &mut outbox);
            let cycle = run_or_abandon(work, crash_after).await;
            // What was sent before a crash is on the wire.
            let snapshots = self.send(id, outbox.0);
            let cycle = match cycle {
                None => return self.crash_mid_write(id),
                Some(cycle) => cycle.unwrap_or_else(|e| panic!("node {id} failed: {e}")),
            };
            let Some(cycle) = cycle else { return };
            self.totals.snapshots_installed += cycle.installed_snapshot as u64;
            self.totals.suffixes_replaced += cycle.replaced_suffix as u64;
            self.totals.snapshots_taken += cycle.took_snapshot as u64;
            for entry in &cycle.applied {
                self.totals.refused_changes += entry.outcome.is_err() as u64;
                entry.index.hash(&mut self.digest);
            }
            self.check.applied(id, &cycle.applied);
            let running = up(&mut self.machines, id);
            for (to, delivered) in snapshots {
                running.core.snapshot_sent(to, delivered);
            }
            self.observe(id);
        }
    }

    /// Whether (and after how many polls) the next disk operation is cut short by a crash.
    fn crash_point(&mut self) -> Option<usize> {
        (self.faults && self.rng.f64() < 0.01).then(|| self.rng.usize(..12))
    }

    fn crash_mid_write(&mut self, id: u64) {
        self.totals.crashes_mid_write += 1;
        self.crash(id);
    }

    fn observe(&mut self, id: u64) {
        let Some(running) = self.machines.get(&id).and_then(|m| m.running.as_ref()) else {
            return;
        };
        if running.core.is_leader() {
            self.check.leader(running.core.term(), id);
        }
        self.check
            .node_state(&running.core, running.recovered_commit);
    }

    /// Puts messages on the network; returns, for each snapshot sent, whether it got through
    /// (a stream carrying a snapshot knows).
    fn send(&mut self, from: u64, messages: Vec<Message>) -> Vec<(u64, bool)> {
        let mut snapshots = Vec::new();
        for message in messages {
            let to = message.to;
            let cut = self.isolated.contains(&from) != self.isolated.contains(&to);
            let dropped = cut || (self.faults && self.rng.f64() < 0.05);
            if message.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push((to, !dropped));
            }
            if dropped {
                self.totals.dropped_messages += 1;
                continue;
            }
            let copies = match self.faults && self.rng.f64() < 0.02 {
                true => 2,
                false => 1,
            };
            for _ in 0..copies {
                let delay = match self.faults {
                    true => 1..16,
                    false => 1..4,
                };
                self.at(delay, Event::Deliver(message.clone()));
            }
        }
        snapshots
    }

    /// Cuts the leader and one follower off from the other nodes: nothing proposed on their
    /// side commits while the cut holds, while the majority side elects a leader and commits.
    pub async fn minority_cannot_commit(mut self) {
        self.faults = false;
        self.start().await;
        self.run_until(|s| s.check.committed() > 0, 10_000).await;
        let leader = self.leader().expect("a leader");
        let follower = *self.voters.iter().find(|&&v| v != leader).expect("peers");
        self.isolated = vec![leader, follower];
        let majority: Vec<u64> = (self.voters.iter().copied())
            .filter(|v| !self.isolated.contains(v))
            .collect();
        let (mut cut_off, mut accepted) = (Vec::new(), Vec::new());
        for round in 0..20 {
            for id in [leader, follower, majority[round % majority.len()]] {
                let change = marker_change(&mut self.rng);
                if let Ok(proposal) = up(&mut self.machines, id).core.propose(change) {
                    match majority.contains(&id) {
                        true => accepted.push(proposal),
                        false => cut_off.push(proposal),
                    }
                }
                self.drive(id).await;
            }
            let until = self.now + 100;
            self.run_until(|s| s.now >= until, 1_000).await;
        }
        assert!(!cut_off.is_empty(), "the minority side took no proposal");
        for proposal in &cut_off {
            assert_eq!(
                self.check.committed_index(*proposal),
                None,
                "a proposal of the minority side committed"
            );
        }
        assert!(
            accepted
                .iter()
                .any(|p| self.check.committed_index(*p).is_some()),
            "the majority side committed nothing"
        );
    }

    async fn run_until(&mut self, done: impl Fn(&Schedule) -> bool, limit_ms: u64) {
        let limit = self.now + limit_ms;
        while !done(self) {
            let (time, event) = self.pop().expect("ticks never stop");
            assert!(time < limit, "condition not reached within {limit_ms} ms");
            self.now = time;
            self.handle(event).await;
        }
    }

    /// The leader of the highest term among running nodes.
    fn leader(&self) -> Option<u64> {
        (self.machines.values())
            .filter_map(|m| m.running.as_ref())
            .filter(|r| r.core.is_leader())
            .max_by_key(|r| r.core.term())
            .map(|r| r.core.id())
    }

    /// Each node's state, for failure messages.
    fn describe(&self) -> String {
        let nodes: Vec<String> = (self.machines.values())
            .map(|m| match &m.running {
                None => format!("{}: down", m.id),
                Some(r) => format!(
                    "{}: term {} leader {} applied {} commit {} last {} snapshot {}",
                    m.id,
                    r.core.term(),
                    r.core.leader(),
                    r.core.applied(),
                    r.core.commit(),
                    r.core.last_index(),
                    r.core.snapshot_index()
                ),
            })
            .collect();
        format!(
            "committed {}, marker {:?}; {}",
            self.check.committed(),
            self.marker.map(|m| self.check.committed_index(m)),
            nodes.join("; ")
        )
    }

    fn converged(&self) -> bool {
        let Some(marker) = self.marker.and_then(|m| self.check.committed_index(m)) else {
            return false;
        };
        let applied: Vec<u64> = self
            .machines
            .values()
            .filter_map(|m| m.running.as_ref().map(|r| r.core.applied()))
            .collect();
        applied.len() == self.voters.len()
            && applied.iter().all(|&a| a == applied[0] && a >= marker)
    }

    fn finish(mut self) -> Outcome {
        let index = self.check.committed();
        for machine in self.machines.values() {
            let core = &machine.running.as_ref().expect("all up").core;
            assert_eq!(
                core.applied(),
                index,
                "node {} did not converge",
                machine.id
            );
            let view = self
                .check
                .view(index)
                .expect("the state every node converged to");
            assert_eq!(**core.metadata(), **view);
        }
        self.totals.committed = index;
        self.totals.terms_with_leaders = self.check.terms_with_leaders() as u64;
        self.now.hash(&mut self.digest);
        Outcome {
            totals: self.totals,
            digest: self.digest.finish(),
        }
    }
}

fn up(machines: &mut BTreeMap<u64, Machine>, id: u64) -> &mut Running {
    let machine = machines.get_mut(&id).expect("machine");
    machine.running.as_mut().expect("up")
}
