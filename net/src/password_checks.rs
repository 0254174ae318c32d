//! A PLAIN login is checked against the user's SCRAM credential, which costs one PBKDF2 on the
//! shard's own thread (about a millisecond and a half at 4096 iterations of SHA-512). A flood
//! of them from many addresses, each under its own `authentication.failures_per_address_max`,
//! could take a shard from the clients it serves. So each shard paces its password checks to
//! `authentication.password_checks_per_second_max` (`crate::pacer`): a check waits for its
//! slot, and one whose slot lies further than `authentication.timeout_ms` ahead is refused at
//! once (counted as throttled) instead of queueing past its deadline. SCRAM logins do no
//! PBKDF2 on the broker and are not paced.

use crate::pacer::Pacer;
use crate::shard::Shard;
use std::time::Duration;

/// This shard's schedule of password checks.
struct PasswordChecks(Pacer);

/// Waits for a password check's turn on this shard; `false` when it is too far off (then the
/// login is refused as throttled, not failed: the client did nothing wrong).
pub async fn turn(shard: &Shard) -> bool {
    let per_second = shard.config.authentication.password_checks_per_second_max;
    let checks = shard.extension_or_insert_with(|| PasswordChecks(Pacer::new(per_second)));
    let longest = Duration::from_millis(shard.config.authentication.timeout_ms);
    checks.0.turn(shard, longest).await
}

/// What a client is told when its login is not checked for lack of time.
pub const BUSY: &str = "too many password checks on this broker: try again later";
