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
    /// Committed entries: index i at `entries[i - 1]`, as (term, command).
    entries: Vec<(u64, Option<Command>)>,
    /// `views[i]`: the metadata after entries 1..=i.
    views: Vec<Arc<Metadata>>,
    served: HashMap<u64, Served>,
}

impl Default for Checker {
    fn default() -> Checker {
        Checker {
            leaders: HashMap::new(),
            entries: Vec::new(),
            views: vec![Arc::new(Metadata::default())],
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

    /// A node applied entries: each must be the entry every other node applied at its index.
    pub fn applied(&mut self, node: u64, applied: &[AppliedEntry]) {
        for entry in applied {
            let index = entry.index as usize;
            assert!(
                index <= self.entries.len() + 1,
                "node {node} applied entry {index} but entries up to {} only are known",
                self.entries.len()
            );
            let got = (entry.term, entry.command.clone());
            if index <= self.entries.len() {
                assert_eq!(
                    self.entries[index - 1],
                    got,
                    "node {node} applied a different entry at index {index}"
                );
                continue;
            }
            let mut view = (*self.views[index - 1]).clone();
            if let Some(command) = &entry.command {
                let outcome = view.apply(&command.change);
                assert_eq!(outcome, entry.outcome, "entry {index} applied differently");
            }
            self.entries.push(got);
            self.views.push(Arc::new(view));
        }
    }

    /// A node's state after a step: its metadata is the canonical one at its applied index, and
    /// once it serves (it has applied what it had committed when it started), what it serves
    /// never goes back.
    pub fn node_state(&mut self, core: &MetadataRaft, recovered_commit: u64) {
        let node = core.id();
        let applied = core.applied() as usize;
        assert!(
            applied < self.views.len(),
            "node {node} applied {applied} but entries up to {} only are known",
            self.views.len() - 1
        );
        assert_eq!(
            **core.metadata(),
            *self.views[applied],
            "node {node} holds metadata that is not the group's at index {applied}"
        );
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
            .position(|(_, c)| c.as_ref().is_some_and(|c| c.proposal == proposal))
            .map(|i| i as u64 + 1)
    }

    /// Entries committed so far.
    pub fn committed(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The group's metadata at an index.
    pub fn view(&self, index: u64) -> &Arc<Metadata> {
        &self.views[index as usize]
    }
}
