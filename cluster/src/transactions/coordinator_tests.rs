use super::*;

const ID: &str = "payments-tx";

fn partitions(names: &[(&str, u32)]) -> Vec<(String, u32)> {
    names.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

/// Carries out a step as a shell whose appends succeed, returning its reply.
fn durable<T>(coordinator: &mut TxnCoordinator, step: Step<T>) -> Result<T, TxnError> {
    if let Some((id, _)) = &step.record {
        coordinator.persisted(id, true);
    }
    step.reply
}

/// A coordinator holding `ID` with producer 100 at epoch 0.
fn initialized() -> TxnCoordinator {
    let mut coordinator = TxnCoordinator::new(TxnSettings::default());
    let step = coordinator.init_producer_id(ID, 60_000, None, 0, || 100);
    assert_eq!(durable(&mut coordinator, step), Ok((100, 0)));
    coordinator
}

/// Ends the transaction of `ID` the way the shell does: prepare, markers, complete.
fn finish(coordinator: &mut TxnCoordinator, step: Step<()>) -> MarkerJob {
    let markers = step.markers.clone().expect("an ending writes markers");
    durable(coordinator, step).unwrap();
    let (id, complete) = coordinator
        .markers_written(ID, 5)
        .expect("a complete record");
    assert!(!complete.status.is_preparing());
    coordinator.persisted(&id, true);
    markers
}

#[test]
fn a_transaction_opens_with_its_partitions_and_ends_through_prepare_markers_and_complete() {
    let mut coordinator = initialized();
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 1)]), 10);
    assert_eq!(durable(&mut coordinator, step), Ok(()));
    // Adding what is already in the transaction writes nothing.
    let again = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 1)]), 11);
    assert_eq!((again.reply, again.record), (Ok(()), None));
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("audit", 0)]), 12);
    durable(&mut coordinator, step).unwrap();
    let txn = coordinator.describe(ID).unwrap();
    assert_eq!((txn.status, txn.started_ms), (TxnStatus::Ongoing, 10));

    let step = coordinator.end_txn(ID, 100, 0, true, 20);
    assert_eq!(
        step.record.as_ref().unwrap().1.status,
        TxnStatus::PrepareCommit
    );
    let markers = finish(&mut coordinator, step);
    assert_eq!(
        markers,
        MarkerJob {
            transactional_id: ID.to_string(),
            producer_id: 100,
            producer_epoch: 0,
            commit: true,
            partitions: partitions(&[("audit", 0), ("orders", 1)]),
        }
    );
    let txn = coordinator.describe(ID).unwrap();
    assert_eq!(txn.status, TxnStatus::CompleteCommit);
    assert!(txn.partitions.is_empty());
    // A retried commit is answered as the first; an abort now does not fit.
    assert_eq!(coordinator.end_txn(ID, 100, 0, true, 30).reply, Ok(()));
    assert_eq!(
        coordinator.end_txn(ID, 100, 0, false, 30).reply,
        Err(TxnError::InvalidTxnState)
    );
    // The next transaction starts afresh.
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 2)]), 40);
    durable(&mut coordinator, step).unwrap();
    let txn = coordinator.describe(ID).unwrap();
    assert_eq!(txn.partitions.len(), 1);
    assert_eq!(txn.started_ms, 40);
}

#[test]
fn requests_wait_while_a_record_is_pending_and_a_failed_append_changes_nothing() {
    let mut coordinator = initialized();
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 1)]), 10);
    assert!(step.record.is_some());
    let meanwhile = coordinator.end_txn(ID, 100, 0, true, 11);
    assert_eq!(meanwhile.reply, Err(TxnError::ConcurrentTransactions));
    coordinator.persisted(ID, false);
    assert_eq!(coordinator.describe(ID).unwrap().status, TxnStatus::Empty);
    // Ending a transaction that never opened does not fit.
    let step = coordinator.end_txn(ID, 100, 0, true, 12);
    assert_eq!(step.reply, Err(TxnError::InvalidTxnState));
    // An id whose very first record failed is not known at all.
    let mut fresh = TxnCoordinator::new(TxnSettings::default());
    fresh.init_producer_id("other", 1_000, None, 0, || 7);
    fresh.persisted("other", false);
    assert!(fresh.describe("other").is_none());
    assert_eq!(fresh.list().count(), 0);
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_open_transaction() {
    let mut coordinator = initialized();
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 1)]), 10);
    durable(&mut coordinator, step).unwrap();
    // The new instance is told to retry while the old transaction aborts under epoch 1.
    let step = coordinator.init_producer_id(ID, 60_000, None, 20, || unreachable!());
    assert_eq!(step.reply, Err(TxnError::ConcurrentTransactions));
    let markers = step.markers.clone().unwrap();
    assert_eq!((markers.commit, markers.producer_epoch), (false, 1));
    assert_eq!(markers.partitions, partitions(&[("orders", 1)]));
    coordinator.persisted(ID, true);
    let retry = coordinator.init_producer_id(ID, 60_000, None, 21, || unreachable!());
    assert_eq!(retry.reply, Err(TxnError::ConcurrentTransactions));
    // The old instance is fenced from here on.
    let old = coordinator.end_txn(ID, 100, 0, true, 22);
    assert_eq!(old.reply, Err(TxnError::ProducerFenced));
    let (id, _) = coordinator.markers_written(ID, 23).unwrap();
    coordinator.persisted(&id, true);
    assert_eq!(
        coordinator.describe(ID).unwrap().status,
        TxnStatus::CompleteAbort
    );
    let step = coordinator.init_producer_id(ID, 60_000, None, 24, || unreachable!());
    assert_eq!(durable(&mut coordinator, step), Ok((100, 2)));
    let add = coordinator.add_partitions(ID, 100, 1, &partitions(&[("orders", 1)]), 25);
    assert_eq!(add.reply, Err(TxnError::ProducerFenced));
    let wrong = coordinator.add_partitions(ID, 555, 2, &partitions(&[("orders", 1)]), 25);
    assert_eq!(wrong.reply, Err(TxnError::InvalidProducerIdMapping));
}

#[test]
fn a_retried_init_gets_the_same_epoch_and_a_stranger_is_fenced() {
    let mut coordinator = initialized();
    let step = coordinator.init_producer_id(ID, 60_000, Some((100, 0)), 1, || unreachable!());
    assert_eq!(durable(&mut coordinator, step), Ok((100, 1)));
    // Its answer was lost; the client asks again with what it held.
    let retry = coordinator.init_producer_id(ID, 60_000, Some((100, 0)), 2, || unreachable!());
    assert_eq!((retry.reply, retry.record), (Ok((100, 1)), None));
    // Not once the new instance has a transaction open: the old one is a zombie, and is
    // answered by aborting that transaction under a new epoch (KIP-360 fences it).
    let step = coordinator.add_partitions(ID, 100, 1, &partitions(&[("orders", 1)]), 3);
    durable(&mut coordinator, step).unwrap();
    let zombie = coordinator.init_producer_id(ID, 60_000, Some((100, 0)), 3, || unreachable!());
    assert_eq!(zombie.reply, Err(TxnError::ProducerFenced));
    let stranger = coordinator.init_producer_id(ID, 60_000, Some((100, 5)), 3, || 1);
    assert_eq!(stranger.reply, Err(TxnError::ProducerFenced));
    // An exhausted epoch moves to a new producer id.
    let mut worn = initialized();
    let mut metadata = worn.describe(ID).unwrap().clone();
    metadata.producer_epoch = i16::MAX - 1;
    worn.restore(ID, Some(metadata));
    let step = worn.init_producer_id(ID, 60_000, None, 4, || 200);
    assert_eq!(durable(&mut worn, step), Ok((200, 0)));
}

#[test]
fn timeouts_are_checked_and_an_open_transaction_past_its_timeout_aborts_fenced() {
    let mut coordinator = TxnCoordinator::new(TxnSettings::default());
    for bad in [0, -1, 900_001] {
        let step = coordinator.init_producer_id(ID, bad, None, 0, || 1);
        assert_eq!(
            step.reply,
            Err(TxnError::InvalidTransactionTimeout),
            "{bad}"
        );
    }
    let step = coordinator.init_producer_id(ID, 1_000, None, 0, || 100);
    durable(&mut coordinator, step).unwrap();
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 1)]), 500);
    durable(&mut coordinator, step).unwrap();
    assert!(coordinator.time_out(1_499).is_empty());
    let mut steps = coordinator.time_out(1_500);
    assert_eq!(steps.len(), 1);
    let step = steps.pop().unwrap();
    let markers = step.markers.clone().unwrap();
    assert_eq!((markers.commit, markers.producer_epoch), (false, 1));
    // Nothing times out twice while its abort is under way.
    assert!(coordinator.time_out(2_000).is_empty());
    finish(&mut coordinator, step);
    let late = coordinator.end_txn(ID, 100, 0, true, 2_001);
    assert_eq!(late.reply, Err(TxnError::ProducerFenced));
}

#[test]
fn restored_endings_are_finished_and_idle_ids_expire() {
    let mut coordinator = initialized();
    let step = coordinator.add_partitions(ID, 100, 0, &partitions(&[("orders", 1)]), 10);
    durable(&mut coordinator, step).unwrap();
    let step = coordinator.end_txn(ID, 100, 0, false, 20);
    let prepare = step.record.clone().unwrap().1;
    // A restart after the prepare record: the new coordinator finishes the abort.
    let mut restarted = TxnCoordinator::new(TxnSettings::default());
    restarted.restore(ID, Some(prepare));
    let unfinished = restarted.unfinished();
    assert_eq!(unfinished.len(), 1);
    assert!(!unfinished[0].commit);
    assert_eq!(
        restarted.end_txn(ID, 100, 0, false, 21).reply,
        Err(TxnError::ConcurrentTransactions)
    );
    let (id, complete) = restarted.markers_written(ID, 22).unwrap();
    restarted.persisted(&id, true);
    assert!(restarted.unfinished().is_empty());
    let day = 24 * 3_600_000;
    assert!(restarted.expire(22 + 7 * day).is_empty());
    assert_eq!(restarted.expire(23 + 7 * day), vec![ID.to_string()]);
    // While its tombstone is stored, the id takes no request.
    let meanwhile = restarted.init_producer_id(ID, 1_000, None, 24 + 7 * day, || 9);
    assert_eq!(meanwhile.reply, Err(TxnError::ConcurrentTransactions));
    restarted.persisted(ID, true);
    assert!(restarted.describe(ID).is_none());
    assert_eq!(complete.status, TxnStatus::CompleteAbort);
}

/// Random requests from two instances of one id, random append failures and marker delays,
/// timeouts and restarts, against a model: every ending writes markers to exactly the
/// partitions added to its transaction, commit or abort as decided, once; epochs never go
/// back; a producer whose epoch is not the id's current one is never answered Ok.
#[test]
fn random_schedules_end_every_transaction_once_on_exactly_its_partitions() {
    let mut totals = [0; 2];
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut coordinator = TxnCoordinator::new(TxnSettings::default());
        let mut next_id = 1_000;
        // What each instance holds (producer id, epoch), as it last heard.
        let mut held: [Option<(i64, i16)>; 2] = [None, None];
        // Partitions acknowledged as added to the open transaction of (producer id, epoch).
        let mut added: BTreeMap<(i64, i16), BTreeSet<(String, u32)>> = BTreeMap::new();
        // Markers waiting to be written.
        let mut writing: Vec<MarkerJob> = Vec::new();
        let mut endings = [0; 2];
        let mut now = 0;
        let mut last_epoch = (0, -1);
        for _ in 0..200 {
            now += rng.i64(0..400);
            let who = rng.usize(..2);
            let ok = rng.u8(..10) != 0;
            let before = coordinator
                .describe(ID)
                .map(|c| (c.producer_id, c.producer_epoch));
            let stale = |reply: &Result<(), TxnError>, asked: (i64, i16)| {
                assert!(
                    reply.is_err() || before == Some(asked),
                    "seed {seed}: {asked:?} answered Ok while the id holds {before:?}"
                );
            };
            let step: Step<()> = match rng.u8(..12) {
                0..=1 => {
                    let step = coordinator.init_producer_id(ID, 2_000, None, now, || {
                        next_id += 1;
                        next_id
                    });
                    let reply = step.reply;
                    let step = Step {
                        reply: reply.map(|_| ()),
                        record: step.record,
                        markers: step.markers,
                    };
                    if let (Ok(()), Ok(got), true) = (step.reply, reply, ok) {
                        held[who] = Some(got);
                    }
                    step
                }
                2..=6 => {
                    let Some((pid, epoch)) = held[who] else {
                        continue;
                    };
                    let wanted = vec![("t".to_string(), rng.u32(..4))];
                    let step = coordinator.add_partitions(ID, pid, epoch, &wanted, now);
                    stale(&step.reply, (pid, epoch));
                    if step.reply.is_ok() && (ok || step.record.is_none()) {
                        added.entry((pid, epoch)).or_default().extend(wanted);
                    }
                    step
                }
                7..=8 => {
                    let Some((pid, epoch)) = held[who] else {
                        continue;
                    };
                    let step = coordinator.end_txn(ID, pid, epoch, rng.bool(), now);
                    stale(&step.reply, (pid, epoch));
                    step
                }
                9 => match coordinator.time_out(now).pop() {
                    Some(step) => step,
                    None => continue,
                },
                _ => {
                    // Markers of an earlier ending finish being written.
                    if let Some(job) = writing.pop() {
                        if let Some((id, _)) =
                            coordinator.markers_written(&job.transactional_id, now)
                        {
                            coordinator.persisted(&id, rng.u8(..10) != 0);
                        } else {
                            writing.push(job);
                        }
                    }
                    continue;
                }
            };
            if let Some((id, _)) = &step.record {
                coordinator.persisted(id, ok);
                if ok {
                    if let Some(job) = step.markers {
                        // The markers are written with the epoch the transaction ends under;
                        // its partitions are those added under the epoch before a fencing.
                        let key = (added.keys().copied()).find(|(pid, _)| *pid == job.producer_id);
                        let expected: BTreeSet<(String, u32)> = match key {
                            Some(key) => added.remove(&key).unwrap_or_default(),
                            None => BTreeSet::new(),
                        };
                        let got: BTreeSet<(String, u32)> = job.partitions.iter().cloned().collect();
                        assert_eq!(
                            got, expected,
                            "seed {seed}: markers go where the records went"
                        );
                        added.retain(|(pid, _), _| *pid != job.producer_id);
                        endings[job.commit as usize] += 1;
                        writing.push(job);
                    }
                }
            }
            if let Some(c) = coordinator.describe(ID) {
                let epoch = (c.producer_id, c.producer_epoch);
                assert!(
                    epoch.0 != last_epoch.0 || epoch.1 >= last_epoch.1,
                    "seed {seed}"
                );
                last_epoch = epoch;
            }
            if rng.u8(..30) == 0 {
                // A restart: only what is durable survives; unfinished endings are resumed.
                let mut restarted = TxnCoordinator::new(TxnSettings::default());
                if let Some(c) = coordinator.describe(ID) {
                    restarted.restore(ID, Some(c.clone()));
                }
                coordinator = restarted;
                writing = coordinator.unfinished();
            }
        }
        totals[0] += endings[0];
        totals[1] += endings[1];
    }
    // Both kinds of ending ran, many times.
    assert!(totals[0] > 300 && totals[1] > 300, "{totals:?}");
}
