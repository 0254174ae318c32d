//! The keyed state log: a seeded simulation over the crash-simulating disk (puts of several
//! tasks at once, compactions, clean restarts, crashes with puts in flight), and a storm of a
//! million puts that must leave the log bounded.
//!
//! After every reopen, each key holds the value of its last acknowledged put or of a put
//! issued after it (in flight at the crash, so either outcome is allowed), never an older one.
//! `OXBOW_SIM_CASES` (default 2,000) cases per run, `OXBOW_SIM_SEED` to replay one seed.

use bytes::Bytes;
use oxbow_core::{FlushPolicy, LogConfig};
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::{CompactionSettings, Disk, OpenOptions, Partition, StateLog};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);

const DIR: &str = "/data/.state/0";
const KEYS: u64 = 12;

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        flush: FlushPolicy::Always,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: 32 * 1024,
        ..LogConfig::default()
    }
}

/// Every put of one key in call order: its value (`None` deletes) and whether it was
/// acknowledged.
#[derive(Default)]
struct History {
    puts: Vec<(Option<Bytes>, bool)>,
}

impl History {
    /// The values the key may hold after a crash.
    fn allowed(&self) -> Vec<Option<Bytes>> {
        let last_acked = self.puts.iter().rposition(|(_, acked)| *acked);
        let mut allowed: Vec<Option<Bytes>> = match last_acked {
            Some(i) => self.puts[i..].iter().map(|(v, _)| v.clone()).collect(),
            None => self.puts.iter().map(|(v, _)| v.clone()).collect(),
        };
        if last_acked.is_none() {
            allowed.push(None);
        }
        allowed
    }
}

struct Case {
    rng: fastrand::Rng,
    disk: SimDisk,
    settings: CompactionSettings,
    histories: Rc<RefCell<HashMap<u64, History>>>,
    next_value: u64,
    /// Segments compactions deleted, over all cases (the test fails if none ever was).
    deleted_segments: Rc<std::cell::Cell<u64>>,
}

fn key(k: u64) -> Bytes {
    Bytes::from(format!("key-{k}"))
}

impl Case {
    async fn open(&self) -> Rc<StateLog> {
        let disk: Rc<dyn Disk> = Rc::new(self.disk.boot());
        let log = Partition::open(Path::new(DIR), log_config(), OpenOptions::with_disk(disk))
            .await
            .expect("recovery never fails on a crashed disk");
        let state = StateLog::open(Rc::new(log), self.settings, 16 * 1024)
            .await
            .expect("the state log replays");
        Rc::new(state)
    }

    /// Starts puts of random keys on their own tasks; each records its outcome when it comes.
    fn start_puts(&mut self, state: &Rc<StateLog>) -> Vec<glommio::Task<()>> {
        (0..self.rng.usize(1..6))
            .map(|_| {
                let changes: Vec<(u64, Option<Bytes>)> = (0..self.rng.usize(1..4))
                    .map(|_| {
                        let k = self.rng.u64(..KEYS);
                        self.next_value += 1;
                        let size = self.rng.usize(1..3000);
                        let value = format!("{}-{}", self.next_value, "v".repeat(size));
                        (k, (self.rng.u8(..10) > 0).then(|| Bytes::from(value)))
                    })
                    .collect();
                let mut histories = self.histories.borrow_mut();
                let positions: Vec<(u64, usize)> = changes
                    .iter()
                    .map(|(k, v)| {
                        let history = histories.entry(*k).or_default();
                        history.puts.push((v.clone(), false));
                        (*k, history.puts.len() - 1)
                    })
                    .collect();
                let (state, histories) = (state.clone(), self.histories.clone());
                let put = changes.into_iter().map(|(k, v)| (key(k), v)).collect();
                glommio::spawn_local(async move {
                    if state.put(put).await.is_ok() {
                        let mut histories = histories.borrow_mut();
                        for (k, at) in positions {
                            histories.get_mut(&k).unwrap().puts[at].1 = true;
                        }
                    }
                })
            })
            .collect()
    }

    fn check(&self, state: &StateLog) {
        for (k, history) in self.histories.borrow().iter() {
            let got = state.get(&key(*k));
            assert!(
                history.allowed().contains(&got),
                "key {k} holds {got:?}; allowed {:?}",
                history.allowed()
            );
        }
    }

    /// After a check, a key's history starts at what it holds: older puts are settled.
    fn settle(&self, state: &StateLog) {
        for (k, history) in self.histories.borrow_mut().iter_mut() {
            history.puts = vec![(state.get(&key(*k)), true)];
        }
    }

    async fn run(mut self) {
        let mut state = self.open().await;
        for _ in 0..self.rng.usize(4..30) {
            match self.rng.u8(..100) {
                0..=49 => {
                    for task in self.start_puts(&state) {
                        task.await;
                    }
                    self.check(&state);
                }
                50..=64 => {
                    let tasks = self.start_puts(&state);
                    let deleted = state.compact().await.expect("compaction");
                    self.deleted_segments
                        .set(self.deleted_segments.get() + deleted as u64);
                    for task in tasks {
                        task.await;
                    }
                    self.check(&state);
                }
                65..=74 => {
                    state.log().close().await;
                    drop(state);
                    state = self.open().await;
                    self.check(&state);
                    self.settle(&state);
                }
                _ => {
                    // Crash with puts, and perhaps a compaction, in flight.
                    let tasks = self.start_puts(&state);
                    let compaction = self.rng.bool().then(|| {
                        let state = state.clone();
                        glommio::spawn_local(async move {
                            let _ = state.compact().await;
                        })
                    });
                    for _ in 0..self.rng.usize(0..16) {
                        futures_lite::future::yield_now().await;
                    }
                    let keep = CrashKeep {
                        sector: [0.0, 0.5, 0.9][self.rng.usize(..3)],
                        set_len: [0.5, 1.0][self.rng.usize(..2)],
                    };
                    self.disk.crash(&mut self.rng, keep);
                    drop((tasks, compaction));
                    drop(state);
                    state = self.open().await;
                    self.check(&state);
                    self.settle(&state);
                }
            }
        }
        state.log().close().await;
    }
}

#[test]
fn a_state_log_keeps_every_acknowledged_put_through_compactions_and_crashes() {
    let cases: u64 = std::env::var("OXBOW_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let first_seed: u64 = std::env::var("OXBOW_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let deleted = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let deleted_segments = Rc::new(std::cell::Cell::new(0));
            for seed in first_seed..first_seed + cases {
                let mut rng = fastrand::Rng::with_seed(seed);
                let disk = SimDisk::with_latency(seed, rng.usize(..4));
                disk.create_dir_all(Path::new(DIR)).unwrap();
                let settings = CompactionSettings {
                    compaction_bytes_min: [0, 4096, 64 * 1024][rng.usize(..3)],
                };
                let case = Case {
                    rng,
                    disk,
                    settings,
                    histories: Rc::default(),
                    next_value: 0,
                    deleted_segments: deleted_segments.clone(),
                };
                CURRENT_SEED.store(seed, Ordering::Relaxed);
                case.run().await;
            }
            deleted_segments.get()
        })
        .expect("executor")
        .join()
        .unwrap_or_else(|_| {
            let seed = CURRENT_SEED.load(Ordering::Relaxed);
            panic!("case {seed} failed; replay it with OXBOW_SIM_SEED={seed} OXBOW_SIM_CASES=1")
        });
    assert!(
        cases < 100 || deleted > 0,
        "no compaction ever deleted a segment"
    );
    eprintln!("{cases} cases, compactions deleted {deleted} segments");
}

/// A million puts over a hundred keys, compacting whenever due: the log never holds more than
/// the compaction threshold plus a copy of the live state and two segments, and reopens with
/// the last value of every key.
#[test]
fn a_storm_of_a_million_puts_leaves_the_log_bounded() {
    const PUTS: u64 = 1_000_000;
    const KEYS: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let path = root.join("state");
    let settings = CompactionSettings {
        compaction_bytes_min: 1 << 20,
    };
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&root, "storm")
                .await
                .unwrap();
            let open = || async {
                let log = Partition::open(&path, log_config(), OpenOptions::default())
                    .await
                    .unwrap();
                StateLog::open(Rc::new(log), settings, 16 * 1024)
                    .await
                    .unwrap()
            };
            let state = open().await;
            let (mut largest, mut compactions) = (0, 0);
            for round in 0..PUTS / KEYS {
                let changes = (0..KEYS)
                    .map(|k| (key(k), Some(Bytes::from(format!("{round}:{k}")))))
                    .collect();
                state.put(changes).await.unwrap();
                largest = largest.max(state.log().stats().log_bytes);
                if state.compaction_due() {
                    compactions += 1;
                    state.compact().await.unwrap();
                }
            }
            let bound = settings.compaction_bytes_min
                + 2 * log_config().segment_bytes_max
                + 2 * state.live_bytes();
            assert!(
                largest <= bound,
                "the log reached {largest} bytes (bound {bound})"
            );
            assert!(compactions > 10, "{compactions} compactions");
            let last = PUTS / KEYS - 1;
            state.log().close().await;
            drop(state);
            let state = open().await;
            for k in 0..KEYS {
                assert_eq!(state.get(&key(k)), Some(Bytes::from(format!("{last}:{k}"))));
            }
            eprintln!("{PUTS} puts, {compactions} compactions, largest log {largest} bytes");
        })
        .unwrap()
        .join()
        .unwrap();
}
