//! Where a follower's log stops agreeing with its leader's (Kafka's OffsetsForLeaderEpoch,
//! KIP-101 and KIP-279). The follower names the newest epoch it holds; the leader answers
//! where that epoch (or the newest one it knows at or below it) ends on the leader's log;
//! the follower keeps what both logs wrote in that epoch and cuts the rest. Records a leader
//! of an older epoch appended and never replicated are what gets cut, so they can never be
//! read as committed after a leader change.

use oxbow_storage::LeaderEpochs;

/// Where a follower cuts its log after one answer from its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Cut the log here (nothing to do when it is the log end).
    pub offset: u64,
    /// The logs agree below `offset`: fetch from there. When false, ask the leader again with
    /// the newest epoch left after the cut.
    pub complete: bool,
}

/// Where a follower cuts its log, given the leader's answer for the follower's newest epoch.
///
/// `own` and `own_end` are the follower's epoch cache and log end; `leader_answer` is what the
/// leader's [`LeaderEpochs::end_offset_for`] answered: the newest epoch it knows at or below
/// the follower's, and where that epoch ends on the leader's log (`None`: it knows no epoch
/// that old, so nothing the follower holds is on the leader's log).
///
/// When the leader answers with an epoch the follower never wrote in, the follower cannot tell
/// yet where its older records stop matching: it cuts what lies past its own epochs up to that
/// one and asks again (Kafka does the same); every such round drops at least one epoch.
pub fn truncation_point(
    own: &LeaderEpochs,
    own_end: u64,
    leader_answer: Option<(i32, u64)>,
) -> Truncation {
    let done = |offset: u64| Truncation {
        offset: offset.min(own_end),
        complete: true,
    };
    let Some((epoch, leader_end)) = leader_answer else {
        return done(0);
    };
    match own.end_offset_for(epoch, own_end) {
        // Both wrote in `epoch`: they agree up to where it ends on the shorter log.
        Some((found, end)) if found == epoch => done(leader_end.min(end)),
        Some((_, end)) => Truncation {
            offset: end.min(own_end),
            complete: false,
        },
        None => done(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(offset: u64) -> Truncation {
        Truncation {
            offset,
            complete: true,
        }
    }

    fn epochs(entries: &[(i32, u64)]) -> LeaderEpochs {
        let mut cache = LeaderEpochs::default();
        for &(epoch, start) in entries {
            cache.assign(epoch, start);
        }
        cache
    }

    #[test]
    fn a_follower_of_the_same_epoch_keeps_what_the_leader_holds() {
        let leader = epochs(&[(0, 0), (1, 50)]);
        let follower = epochs(&[(0, 0), (1, 50)]);
        let answer = leader.end_offset_for(1, 80);
        assert_eq!(truncation_point(&follower, 70, answer), complete(70));
    }

    #[test]
    fn an_old_leaders_unreplicated_tail_is_cut_where_the_new_epoch_began() {
        // Old leader wrote 50..60 in epoch 1 alone; the new leader (epoch 2) took over at 50.
        let leader = epochs(&[(0, 0), (2, 50)]);
        let old_leader = epochs(&[(0, 0), (1, 50)]);
        let answer = leader.end_offset_for(1, 90);
        assert_eq!(answer, Some((0, 50)));
        assert_eq!(truncation_point(&old_leader, 60, answer), complete(50));
    }

    #[test]
    fn a_follower_behind_the_leader_keeps_its_whole_log() {
        let leader = epochs(&[(0, 0), (3, 40)]);
        let follower = epochs(&[(0, 0)]);
        let answer = leader.end_offset_for(0, 90);
        assert_eq!(truncation_point(&follower, 30, answer), complete(30));
    }

    #[test]
    fn a_follower_with_only_epochs_the_leader_never_knew_keeps_nothing() {
        let leader = epochs(&[(5, 100)]);
        let follower = epochs(&[(2, 0)]);
        let answer = leader.end_offset_for(2, 120);
        assert_eq!(answer, None);
        assert_eq!(truncation_point(&follower, 30, answer), complete(0));
    }

    #[test]
    fn an_epoch_the_follower_never_wrote_in_takes_another_round() {
        // The leader: epoch 1 up to 26, epoch 2 from there. The follower led epoch 4 from 27
        // after holding one more epoch-1 record (26) that the leader lost.
        let leader = epochs(&[(0, 0), (1, 10), (2, 26)]);
        let mut follower = epochs(&[(0, 0), (1, 10), (4, 27)]);
        let answer = leader.end_offset_for(4, 29);
        assert_eq!(answer, Some((2, 29)));
        let first = truncation_point(&follower, 32, answer);
        assert_eq!(
            first,
            Truncation {
                offset: 27,
                complete: false
            }
        );
        follower.truncate_from(27);
        let answer = leader.end_offset_for(follower.latest().unwrap(), 29);
        assert_eq!(truncation_point(&follower, 27, answer), complete(26));
    }
}
