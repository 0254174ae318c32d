//! What must hold, checked as the simulation runs.

use oxbow_cluster::metadata_group::{AppliedEntry, Command, MetadataRaft, ProposalId};
use oxbow_cluster::{Metadata, TopicId};
use std::collections::HashMap;
use std::sync::Arc;

/// What a node has served so far, across its restarts.
#[derive(Default)]
struct Served {
    applied: u64,
    epochs: HashMap<(TopicId, usize), i32>,
}

/// The group's history as the nodes report it, and the checks against it.
pub struct Checker {
    /// The leader of each term.
    leaders: HashMap<u64, u64>,
    /// Committed entries: index i at `entries[i - 1]`, as (term, command); `None` while only
    /// a snapshot has shown it (a node applied it and crashed before its cycle reported it).
    entries: Vec<Option<(u64, Option<Command>)>>,
    /// `views[i]`: the metadata after entries 1..=i, `None` while unknown (a snapshot at a
    /// later index fills its own index in).
    views: Vec<Option<Arc<Metadata>>>,
    served: HashMap<u64, Served>,
}

impl Default for Checker {
    fn default() -> Checker {
        Checker {
            leaders: HashMap::new(),
            entries: Vec::new(),
            views: vec![Some(Arc::new(Metadata::default()))],
            served: HashMap::new(),
        }
    }
}

impl Checker {
    /// At most one leader per term.
    pub fn leader(&mut self, term: u64, node: u64) {
        let first = *self.leaders.entry(term).or_insert(node);
        assert_eq!(
            first, node,
            "two leaders in term {term}: {first} and {node}"
        );
    }

    /// Terms that had a leader.
    pub fn terms_with_leaders(&self) -> usize {
        self.leaders.len()
    }

    /// A node applied entries: each must be the entry every other node applied at its index,
    /// and applied to the state before it must give the state after it.
    pub fn applied(&mut self, node: u64, applied: &[AppliedEntry]) {
        for entry in applied {
            let index = entry.index as usize;
            let got = (entry.term, entry.command.clone());
            if index > self.entries.len() {
                // Entries before it reached this node in a snapshot nobody reported.
                self.entries.resize(index, None);
                self.views.resize(index + 1, None);
            }
            match &self.entries[index - 1] {
                Some(known) => {
                    assert_eq!(
                        *known, got,
                        "node {node} applied a different entry at index {index}"
                    );
                    continue;
                }
                None => self.entries[index - 1] = Some(got),
            }
            if let Some(before) = self.views[index - 1].clone() {
                let mut view = (*before).clone();
                if let Some(command) = &entry.command {
                    let outcome = view.apply(&command.change);
                    assert_eq!(outcome, entry.outcome, "entry {index} applied differently");
                }
                self.learn_view(index, Arc::new(view));
            }
        }
    }

    /// The state at `index` is `view`: it must agree with what is known there already.
    fn learn_view(&mut self, index: usize, view: Arc<Metadata>) {
        if index >= self.views.len() {
            self.entries.resize(index, None);
            self.views.resize(index + 1, None);
        }
        match &self.views[index] {
            Some(known) => assert_eq!(**known, *view, "two states at index {index}"),
            None => self.views[index] = Some(view),
        }
    }

    /// A node's state after a step: its metadata is the canonical one at its applied index, and
    /// once it serves (it has applied what it had committed when it started), what it serves
    /// never goes back.
    ///
    ///
    /// A node's state may lie beyond the entries reported so far (a node that applied them
    /// and took a snapshot crashed before its cycle returned, and the snapshot reached others):
    /// it is then taken as the state at its index, and every other way to that index (another
    /// snapshot, the entries once reported) must agree with it.
    pub fn node_state(&mut self, core: &MetadataRaft, recovered_commit: u64) {
        let node = core.id();
        let applied = core.applied() as usize;
        self.learn_view(applied, core.metadata().clone());
        if (applied as u64) < recovered_commit {
            return;
        }
        let served = self.served.entry(node).or_default();
        assert!(
            applied as u64 >= served.applied,
            "node {node} served index {} and then {applied}",
            served.applied
        );
        served.applied = applied as u64;
        for topic in core.metadata().topics.values() {
            for (number, partition) in topic.partitions.iter().enumerate() {
                let seen = served.epochs.entry((topic.id, number)).or_default();
                assert!(
                    partition.leader_epoch >= *seen,
                    "node {node} served leader epoch {} of {}-{number} after {seen}",
                    partition.leader_epoch,
                    topic.name
                );
                *seen = partition.leader_epoch;
            }
        }
    }

    /// The index at which a proposal was committed, if it was.
    pub fn committed_index(&self, proposal: ProposalId) -> Option<u64> {
        self.entries
            .iter()
            .position(|e| {
                (e.as_ref())
                    .is_some_and(|(_, c)| c.as_ref().is_some_and(|c| c.proposal == proposal))
            })
            .map(|i| i as u64 + 1)
    }

    /// Entries committed so far.
    pub fn committed(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The group's metadata at an index, if known.
    pub fn view(&self, index: u64) -> Option<&Arc<Metadata>> {
        self.views.get(index as usize)?.as_ref()
    }
}
