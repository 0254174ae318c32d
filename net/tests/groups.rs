//! The group coordinator's time rules, driven with explicit clock values (no sleeps): silent
//! members expire after their session timeout, a member id handed out with MEMBER_ID_REQUIRED
//! lapses if never claimed, commits are replayed from `__consumer_offsets` by a new
//! coordinator; and static members (KIP-345) are replaced, fenced and removed by instance id.

mod common;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_core::BrokerConfig;
use oxbow_net::kafka::groups::{serve, Client, Coordinator};
use std::time::{Duration, Instant};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn join(member_id: &str) -> RequestKind {
    let mut request = JoinGroupRequest::default();
    request.group_id = GroupId(text("g"));
    request.session_timeout_ms = 10_000;
    request.rebalance_timeout_ms = 10_000;
    request.member_id = text(member_id);
    request.protocol_type = text("consumer");
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    request.protocols = vec![protocol];
    RequestKind::JoinGroup(request)
}

fn join_static(member_id: &str, instance: &str) -> RequestKind {
    let RequestKind::JoinGroup(mut request) = join(member_id) else {
        unreachable!()
    };
    request.group_instance_id = Some(text(instance));
    RequestKind::JoinGroup(request)
}

fn sync(member_id: &str, instance: &str, generation: i32, assignment: &[u8]) -> RequestKind {
    let mut request = SyncGroupRequest::default();
    request.group_id = GroupId(text("g"));
    request.member_id = text(member_id);
    request.group_instance_id = Some(text(instance));
    request.generation_id = generation;
    let mut given = SyncGroupRequestAssignment::default();
    given.member_id = text(member_id);
    given.assignment = bytes::Bytes::copy_from_slice(assignment);
    request.assignments = vec![given];
    RequestKind::SyncGroup(request)
}

fn heartbeat_static(member_id: &str, instance: &str, generation: i32) -> RequestKind {
    let RequestKind::Heartbeat(mut request) = heartbeat(member_id, generation) else {
        unreachable!()
    };
    request.group_instance_id = Some(text(instance));
    RequestKind::Heartbeat(request)
}

fn heartbeat(member_id: &str, generation: i32) -> RequestKind {
    let mut request = HeartbeatRequest::default();
    request.group_id = GroupId(text("g"));
    request.member_id = text(member_id);
    request.generation_id = generation;
    RequestKind::Heartbeat(request)
}

fn commit(name: &str, index: i32, offset: i64) -> RequestKind {
    let mut partition = OffsetCommitRequestPartition::default();
    partition.partition_index = index;
    partition.committed_offset = offset;
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text(name));
    topic.partitions = vec![partition];
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(text("simple"));
    request.generation_id_or_member_epoch = -1;
    request.topics = vec![topic];
    RequestKind::OffsetCommit(request)
}

fn fetch_offsets() -> RequestKind {
    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(text("simple"));
    request.topics = None; // all topics
    RequestKind::OffsetFetch(request)
}

/// Runs `test` with an `ask(request, version)` to a coordinator on a real shard.
macro_rules! with_coordinator {
    (|$ask:ident, $coordinator:ident, $shard:ident| $body:block) => {{
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let config = BrokerConfig {
                    data_dir: data.clone(),
                    offsets_topic_partitions: 2,
                    ..BrokerConfig::default()
                };
                let ($shard, _node) = common::shard_with_node(config).await;
                let $coordinator = Coordinator::new(0);
                $shard.set_extension($coordinator.clone());
                let $ask = |request, version| {
                    let shard = $shard.clone();
                    let client = Client {
                        id: "client".into(),
                        host: "/127.0.0.1".into(),
                        session: None,
                    };
                    async move {
                        let session = oxbow_net::session::Session::anonymous(None);
                        let gate = oxbow_net::authorize::Gate::new(&shard, &session);
                        serve(&shard, &gate, request, version, client).await.ok()
                    }
                };
                $body
                $shard.close().await;
            })
            .unwrap()
            .join()
            .unwrap();
    }};
}

#[test]
fn a_static_member_back_under_a_new_id_keeps_its_place_and_fences_its_old_self() {
    with_coordinator!(|ask, _coordinator, shard| {
        // Static members join without MEMBER_ID_REQUIRED.
        let Some(ResponseKind::JoinGroup(first)) = ask(join_static("", "s"), 5).await else {
            panic!()
        };
        assert_eq!((first.error_code, first.generation_id), (0, 1));
        let old = first.member_id.to_string();
        let Some(ResponseKind::SyncGroup(synced)) = ask(sync(&old, "s", 1, b"p0"), 5).await else {
            panic!()
        };
        assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"p0"[..]));

        // Back after a restart, with no member id: a new one, the same generation (no
        // rebalance), and the assignment it had. As Kafka does, the answer names the leader
        // as it was, so the returning leader does not compute an assignment.
        let Some(ResponseKind::JoinGroup(back)) = ask(join_static("", "s"), 5).await else {
            panic!()
        };
        let new = back.member_id.to_string();
        assert_ne!(new, old);
        assert_eq!((back.error_code, back.generation_id), (0, 1));
        assert_eq!(back.leader.as_str(), old);
        assert!(back.members.is_empty());
        let Some(ResponseKind::SyncGroup(synced)) = ask(sync(&new, "s", 1, b"other"), 5).await
        else {
            panic!()
        };
        assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"p0"[..]));

        // The old self is fenced; the new one is answered normally.
        let Some(ResponseKind::Heartbeat(beat)) = ask(heartbeat_static(&old, "s", 1), 5).await
        else {
            panic!()
        };
        assert_eq!(beat.error_code, 82, "FENCED_INSTANCE_ID");
        let Some(ResponseKind::Heartbeat(beat)) = ask(heartbeat_static(&new, "s", 1), 5).await
        else {
            panic!()
        };
        assert_eq!(beat.error_code, 0);
        let Some(ResponseKind::JoinGroup(stale)) = ask(join_static(&old, "s"), 5).await else {
            panic!()
        };
        assert_eq!(stale.error_code, 82);

        // LeaveGroup v3+ by instance id alone removes whoever holds it.
        let mut leave = LeaveGroupRequest::default();
        leave.group_id = GroupId(text("g"));
        let mut member = MemberIdentity::default();
        member.group_instance_id = Some(text("s"));
        leave.members = vec![member];
        let Some(ResponseKind::LeaveGroup(left)) = ask(RequestKind::LeaveGroup(leave), 4).await
        else {
            panic!()
        };
        assert_eq!(left.members[0].error_code, 0);
        assert_eq!(left.members[0].member_id.as_str(), new);
        let Some(ResponseKind::Heartbeat(beat)) = ask(heartbeat_static(&new, "s", 1), 5).await
        else {
            panic!()
        };
        assert_eq!(beat.error_code, 25, "gone: UNKNOWN_MEMBER_ID");
    });
}

#[test]
fn a_static_member_that_misses_a_rebalance_keeps_its_place_until_its_session_expires() {
    with_coordinator!(|ask, coordinator, shard| {
        // s: static, a 10 s session but a 3 s rebalance timeout; it leads generation 1.
        let RequestKind::JoinGroup(mut request) = join_static("", "s") else {
            unreachable!()
        };
        request.rebalance_timeout_ms = 3_000;
        let Some(ResponseKind::JoinGroup(first)) = ask(RequestKind::JoinGroup(request), 5).await
        else {
            panic!()
        };
        let s = first.member_id.to_string();
        let Some(ResponseKind::SyncGroup(_)) = ask(sync(&s, "s", 1, b"p0"), 5).await else {
            panic!()
        };
        // A dynamic member joins (v3: no MEMBER_ID_REQUIRED) and starts a rebalance that s,
        // restarting somewhere, does not rejoin.
        let RequestKind::JoinGroup(mut request) = join("") else {
            unreachable!()
        };
        request.rebalance_timeout_ms = 3_000;
        let newcomer = glommio::spawn_local(ask(RequestKind::JoinGroup(request), 3));
        let mut describe = DescribeGroupsRequest::default();
        describe.groups = vec![GroupId(text("g"))];
        let state = || {
            let describe = RequestKind::DescribeGroups(describe.clone());
            async move {
                match ask(describe, 5).await {
                    Some(ResponseKind::DescribeGroups(d)) => d.groups[0].group_state.to_string(),
                    _ => panic!(),
                }
            }
        };
        while state().await != "PreparingRebalance" {
            futures_lite::future::yield_now().await;
        }
        // The rebalance timeout passes, the session does not: the newcomer leads generation
        // 2 and is told of s too, which keeps its place (Kafka drops only dynamic members
        // that did not rejoin).
        coordinator.tick(Instant::now() + Duration::from_secs(4), &Default::default());
        let Some(ResponseKind::JoinGroup(joined)) = newcomer.await else {
            panic!()
        };
        assert_eq!((joined.error_code, joined.generation_id), (0, 2));
        assert_eq!(
            joined.leader, joined.member_id,
            "a member that rejoined leads"
        );
        let instances: Vec<_> = (joined.members.iter())
            .map(|m| m.group_instance_id.as_ref().map(|i| i.to_string()))
            .collect();
        assert_eq!(instances.len(), 2, "{instances:?}");
        assert!(instances.contains(&Some("s".to_string())), "{instances:?}");
        // Its session over, s is gone.
        coordinator.tick(
            Instant::now() + Duration::from_secs(11),
            &Default::default(),
        );
        let Some(ResponseKind::Heartbeat(beat)) = ask(heartbeat_static(&s, "s", 2), 5).await else {
            panic!()
        };
        assert_eq!(beat.error_code, 25);
    });
}

#[test]
fn sessions_expire_pending_ids_lapse_and_commits_to_existing_partitions_persist() {
    with_coordinator!(|ask, coordinator, shard| {
        // v4+: an empty member id gets MEMBER_ID_REQUIRED and an id to rejoin with.
        let Some(ResponseKind::JoinGroup(first)) = ask(join(""), 4).await else {
            panic!()
        };
        assert_eq!(first.error_code, 79);
        let member = first.member_id.to_string();
        let Some(ResponseKind::JoinGroup(joined)) = ask(join(&member), 4).await else {
            panic!()
        };
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.leader.as_str(), member, "the only member leads");
        let Some(ResponseKind::Heartbeat(beat)) = ask(heartbeat(&member, 1), 4).await else {
            panic!()
        };
        assert_eq!(
            beat.error_code, 0,
            "awaiting SyncGroup, heartbeats are answered normally"
        );

        // Silent past its session timeout: removed, so its next heartbeat is refused.
        coordinator.tick(
            Instant::now() + Duration::from_secs(11),
            &Default::default(),
        );
        let Some(ResponseKind::Heartbeat(beat)) = ask(heartbeat(&member, 1), 4).await else {
            panic!()
        };
        assert_eq!(beat.error_code, 25, "expired member must be unknown");

        // An id handed out but never claimed lapses.
        let Some(ResponseKind::JoinGroup(pending)) = ask(join(""), 4).await else {
            panic!()
        };
        coordinator.tick(
            Instant::now() + Duration::from_secs(61),
            &Default::default(),
        );
        let Some(ResponseKind::JoinGroup(late)) = ask(join(&pending.member_id), 4).await else {
            panic!()
        };
        assert_eq!(late.error_code, 25);

        // Commits to a topic or partition that does not exist are refused one by one, as
        // Kafka does (UNKNOWN_TOPIC_OR_PARTITION), and nothing of them is stored.
        shard.create_topic("t".into(), 4, Vec::new()).await.unwrap();
        for (name, index) in [("nowhere", 0), ("t", 4), ("t", -1)] {
            let Some(ResponseKind::OffsetCommit(refused)) = ask(commit(name, index, 99), 8).await
            else {
                panic!()
            };
            assert_eq!(
                refused.topics[0].partitions[0].error_code, 3,
                "{name}-{index}"
            );
        }
        // A simple consumer's commit (generation -1, no members) is durable.
        let Some(ResponseKind::OffsetCommit(done)) = ask(commit("t", 3, 1234), 8).await else {
            panic!()
        };
        assert_eq!(done.topics[0].partitions[0].error_code, 0);
        // A new coordinator knows nothing until it replays the offsets partition.
        shard.set_extension(Coordinator::new(0));
        let Some(ResponseKind::OffsetFetch(fetched)) = ask(fetch_offsets(), 7).await else {
            panic!()
        };
        assert_eq!(fetched.topics.len(), 1, "only the stored commit");
        assert_eq!(fetched.topics[0].partitions.len(), 1);
        let partition = &fetched.topics[0].partitions[0];
        assert_eq!(
            (partition.partition_index, partition.committed_offset),
            (3, 1234)
        );
    });
}
