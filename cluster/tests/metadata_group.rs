//! Seeded simulation of whole metadata groups: 3 and 5 nodes, each a [`MetadataRaft`] core with
//! its log on its own crash-simulating disk, over a simulated network that drops, delays,
//! duplicates and partitions messages, on a simulated clock. Nodes crash (in the middle of a
//! disk write too) and restart from what their disk kept.
//!
//! Checked on every step: at most one leader per term; every committed entry is the same on
//! every node that applies it, at the same index, across crashes; every node's metadata is the
//! canonical metadata at its applied index (a prefix of the group's); what a node serves never
//! goes back, partition leader epochs included. After the faults stop, every node converges on
//! the same metadata, which includes every acknowledged change.
//!
//! `OXBOW_SIM_CASES` (default 1,000 per group size), `OXBOW_SIM_SEED` to replay one seed.

mod sim;

use sim::{Schedule, Totals};

fn cases() -> u64 {
    std::env::var("OXBOW_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn run_cases(nodes: usize) -> Totals {
    let cases = cases();
    let first_seed: u64 = std::env::var("OXBOW_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let totals = sim::run_on_executor(move || async move {
        let mut totals = Totals::default();
        for seed in first_seed..first_seed + cases {
            sim::set_current_seed(seed);
            let outcome = Schedule::new(seed, nodes).run().await;
            totals.add(&outcome.totals);
        }
        totals
    });
    eprintln!("{nodes} nodes, {cases} schedules from seed {first_seed}: {totals:?}");
    totals
}

#[test]
fn three_node_groups_stay_safe_under_faults_and_converge() {
    let totals = run_cases(3);
    if cases() >= 100 {
        totals.assert_everything_happened();
    }
}

#[test]
fn five_node_groups_stay_safe_under_faults_and_converge() {
    let totals = run_cases(5);
    if cases() >= 100 {
        totals.assert_everything_happened();
    }
}

#[test]
fn a_seed_replays_the_same_schedule() {
    let digest = |seed| {
        sim::run_on_executor(move || async move { Schedule::new(seed, 3).run().await.digest })
    };
    let seed = fastrand::u64(..);
    sim::set_current_seed(seed);
    assert_eq!(digest(seed), digest(seed));
}

#[test]
fn a_minority_side_cannot_commit() {
    sim::run_on_executor(|| async {
        for seed in 0..20 {
            sim::set_current_seed(seed);
            Schedule::new(seed, 5).minority_cannot_commit().await;
        }
    });
}
