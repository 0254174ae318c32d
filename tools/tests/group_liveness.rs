//! Consumer-group members that die without leaving (SIGKILL of a confluent-kafka consumer,
//! session.timeout.ms = 6 s): the coordinator expires them once their session times out, in a
//! stable group and in the middle of a rebalance, so the others are assigned within the session
//! timeout + 3 s, as with Kafka, and never wait out the rebalance timeout (max.poll.interval.ms,
//! 300 s by default). A static member (KIP-345, group.instance.id) killed and started again
//! within its session takes its old place at once, and nobody else rebalances. Needs python3
//! with confluent-kafka (scripts/test installs it).

mod common;

use common::start_broker;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_client.py"
);
const TOPIC: &str = "liveness";
/// The members' session.timeout.ms (set by the client script).
const SESSION: Duration = Duration::from_secs(6);
/// Kafka's promise: a dead member is gone and the rest assigned within this.
const BOUND: Duration = Duration::from_secs(9);

/// A group member whose assignments are read as it prints them.
struct Member {
    child: Child,
    assignments: mpsc::Receiver<Vec<u32>>,
}

impl Member {
    fn start(addr: &str) -> Member {
        Member::start_as(addr, None)
    }

    /// A member with static instance id `instance` (group.instance.id), or a dynamic one.
    fn start_as(addr: &str, instance: Option<&str>) -> Member {
        let mut command = Command::new("python3");
        command
            .arg(CLIENT)
            .args(["group-consume", "--bootstrap", addr, "--topic", TOPIC])
            .args(["--partitions", "2", "--group", "liveness-group"])
            .args(["--expect", "1000000", "--timeout-ms", "120000"]);
        if let Some(instance) = instance {
            command.args(["--client-config", &format!("group.instance.id={instance}")]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with confluent-kafka (scripts/test installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, assignments) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(owned) = line.strip_prefix("assigned ") {
                    let owned = (owned.split(','))
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse().unwrap())
                        .collect();
                    if tx.send(owned).is_err() {
                        return;
                    }
                }
            }
        });
        Member { child, assignments }
    }

    /// Waits up to `limit` for an assignment that `wanted` accepts, and returns it.
    fn assigned(&self, what: &str, wanted: impl Fn(&[u32]) -> bool, limit: Duration) -> Vec<u32> {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.assignments.recv_timeout(left) {
                Ok(owned) if wanted(&owned) => return owned,
                Ok(_) => {}
                Err(_) => panic!("no assignment of {what} within {limit:?}"),
            }
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker with the two-partition topic the members share.
fn start_with_topic(data: &std::path::Path) -> (common::Broker, String) {
    let (broker, addr) = start_broker(data, 2);
    let created = Command::new("python3")
        .arg(CLIENT)
        .args(["produce", "--bootstrap", &addr, "--topic", TOPIC])
        .args(["--partitions", "2", "--create", "--count", "20"])
        .output()
        .expect("python3 with confluent-kafka (scripts/test installs it)");
    assert!(created.status.success(), "{created:?}");
    (broker, addr)
}

#[test]
fn members_killed_without_leaving_expire_after_their_session_timeout() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_with_topic(data.path());

    let mut first = Member::start(&addr);
    let both = |owned: &[u32]| owned == [0, 1];
    let one = |owned: &[u32]| owned.len() == 1;
    first.assigned("both partitions", both, Duration::from_secs(60));
    let mut second = Member::start(&addr);
    second.assigned("one partition", one, Duration::from_secs(60));

    // Outside a rebalance: the stable group loses a member; the other takes everything.
    let killed = Instant::now();
    first.kill();
    second.assigned("both partitions", both, BOUND);
    let stable = killed.elapsed();

    // During a rebalance: the last member dies and a newcomer's join starts a rebalance that
    // the dead member can never finish; it expires with its session, the newcomer gets all.
    let killed = Instant::now();
    second.kill();
    let newcomer = Member::start(&addr);
    newcomer.assigned("both partitions", both, BOUND);
    let rebalancing = killed.elapsed();
    eprintln!(
        "dead member replaced after {stable:?} in a stable group, {rebalancing:?} during a \
         rebalance (session timeout {SESSION:?}, bound {BOUND:?})"
    );
    assert!(stable <= BOUND && rebalancing <= BOUND);
}

/// KIP-345: a static member killed (a static member never sends LeaveGroup) and started again
/// under the same group.instance.id within its session gets the partition it had at once,
/// without waiting for its old self to expire, and the other member sees no rebalance at all.
/// A dynamic member in its place would wait out the session timeout and rebalance everyone.
#[test]
fn a_static_member_back_within_its_session_keeps_its_partition_and_nobody_rebalances() {
    let data = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_with_topic(data.path());
    let both = |owned: &[u32]| owned == [0, 1];
    let one = |owned: &[u32]| owned.len() == 1;
    let mut first = Member::start_as(&addr, Some("first"));
    first.assigned("both partitions", both, Duration::from_secs(60));
    let second = Member::start_as(&addr, Some("second"));
    let kept = second.assigned("one partition", one, Duration::from_secs(60));
    let had = first.assigned("one partition", one, Duration::from_secs(60));

    let killed = Instant::now();
    first.kill();
    let again = Member::start_as(&addr, Some("first"));
    // Well inside the session: the old member is replaced, not waited for.
    let rejoin_limit = SESSION - Duration::from_secs(2);
    again.assigned("its partition again", |owned| owned == had, rejoin_limit);
    let back = killed.elapsed();
    // Had the group rebalanced (the old member expiring, or the new one joining as a
    // stranger), the second member would have been assigned again within the session
    // timeout and a little more.
    match second.assignments.recv_timeout(BOUND) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("the other member was rebalanced: {other:?} (it had {kept:?})"),
    }
    eprintln!("static member back on partition {had:?} after {back:?}; no rebalance");
}
