//! Seeded simulation of the log over the simulated disk ([`oxbow_storage::torture::sim`]): the
//! real code (log core, writer task, recovery) runs on one glommio executor against `SimDisk`,
//! through random appends (several in flight at once), leader-epoch changes, truncations,
//! retention, deleted records, clean restarts and crashes that land while appends are in
//! flight, and checks after every reopen:
//! - every append acknowledged under `flush = always` is there, at its offset, with its bytes;
//! - everything recovered is something that was appended, in offset order, contiguous;
//! - no acknowledged offset ever holds other bytes later (offsets are never reused);
//! - the recovered leader epochs match the epochs in the recovered batches;
//! - records deleted by an answered deletion stay deleted (unless `flush = never`), and the log
//!   never starts later than it ever did.
//!
//! `OXBOW_SIM_CASES` (default 10,000) cases per run, `OXBOW_SIM_SEED` to replay one seed.
//! `oxbow storage torture` runs the same cases for as long as it is asked to.

use oxbow_storage::torture::sim::run_case;

#[test]
fn the_log_survives_random_crashes_with_every_acknowledged_append() {
    let cases: u64 = std::env::var("OXBOW_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let first_seed: u64 = std::env::var("OXBOW_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let started = std::time::Instant::now();
    let outcome = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let (mut checks, mut deletions) = (0, 0);
            for seed in first_seed..first_seed + cases {
                match run_case(seed).await {
                    Ok(stats) => {
                        checks += stats.recoveries_checked;
                        deletions += stats.deletions;
                    }
                    Err(violation) => return Err((seed, violation)),
                }
            }
            Ok((checks, deletions))
        })
        .expect("executor")
        .join()
        .expect("the simulation's executor");
    match outcome {
        Ok((checks, deletions)) => eprintln!(
            "{cases} cases, {deletions} deletions of records, {checks} recoveries checked in \
             {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err((seed, violation)) => panic!(
            "case {seed} failed: {violation}; replay it with OXBOW_SIM_SEED={seed} \
             OXBOW_SIM_CASES=1"
        ),
    }
}
