//! Where a follower's log stops agreeing with its leader's (Kafka's OffsetsForLeaderEpoch,
//! KIP-101 and KIP-279). The follower names the newest epoch it holds; the leader answers
//! where that epoch (or the newest one it knows at or below it) ends on the leader's log;
//! the follower keeps what both logs wrote in that epoch and cuts the rest. Records a leader
//! of an older epoch appended and never replicated are what gets cut, so they can never be
//! read as committed after a leader change.

use oxbow_storage::LeaderEpochs;

/// The offset a follower truncates its log to before it fetches from a new leader.
///
/// `own` and `own_end` are the follower's epoch cache and log end; `leader_answer` is what the
/// leader's [`LeaderEpochs::end_offset_for`] answered for the follower's newest epoch: `None`
/// when the leader knows no epoch that old (the follower keeps nothing).
pub fn truncation_point(
    own: &LeaderEpochs,
    own_end: u64,
    leader_answer: Option<(i32, u64)>,
) -> u64 {
    let Some((epoch, leader_end)) = leader_answer else {
        return 0;
    };
    // Both logs agree up to where the epoch they share ends on the shorter of them.
    let own_end_of_epoch = match own.end_offset_for(epoch, own_end) {
        Some((found, end)) if found == epoch => end,
        // The follower never wrote in that epoch: it agrees up to where its own older epochs
        // end, which is at most where the leader's epoch began.
        Some((_, end)) => end,
        None => 0,
    };
    leader_end.min(own_end_of_epoch).min(own_end)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(truncation_point(&follower, 70, answer), 70);
    }

    #[test]
    fn an_old_leaders_unreplicated_tail_is_cut_where_the_new_epoch_began() {
        // Old leader wrote 50..60 in epoch 1 alone; the new leader (epoch 2) took over at 50.
        let leader = epochs(&[(0, 0), (2, 50)]);
        let old_leader = epochs(&[(0, 0), (1, 50)]);
        let answer = leader.end_offset_for(1, 90);
        assert_eq!(answer, Some((0, 50)));
        assert_eq!(truncation_point(&old_leader, 60, answer), 50);
    }

    #[test]
    fn a_follower_behind_the_leader_keeps_its_whole_log() {
        let leader = epochs(&[(0, 0), (3, 40)]);
        let follower = epochs(&[(0, 0)]);
        let answer = leader.end_offset_for(0, 90);
        assert_eq!(truncation_point(&follower, 30, answer), 30);
    }

    #[test]
    fn a_follower_with_only_epochs_the_leader_never_knew_keeps_nothing() {
        let leader = epochs(&[(5, 100)]);
        let follower = epochs(&[(2, 0)]);
        let answer = leader.end_offset_for(2, 120);
        assert_eq!(answer, None);
        assert_eq!(truncation_point(&follower, 30, answer), 0);
    }
}
