//! Changes applied to the metadata: order, refusals, elections, ISR changes, fencing.

use super::*;

/// A broker with made-up addresses, for tests of the metadata and of the controller.
pub(crate) fn broker(id: i32) -> BrokerMeta {
    BrokerMeta {
        id,
        kafka_addr: format!("h:{id}"),
        native_addr: String::new(),
        cluster_addr: None,
        rack: None,
        shards: 1,
        kafka_listeners: Default::default(),
        native_listeners: Default::default(),
    }
}

/// A partition at leader epoch 4.
fn partition(replicas: Vec<i32>, leader: i32, isr: Vec<i32>) -> PartitionMeta {
    PartitionMeta {
        replicas,
        leader,
        leader_epoch: 4,
        isr,
    }
}

fn topic(name: &str, id: u8) -> TopicMeta {
    TopicMeta::on_one_broker(name.into(), TopicId([id; 16]), 3, 1, BTreeMap::new())
}

#[test]
fn changes_apply_in_order_and_refusals_change_nothing() {
    let mut metadata = Metadata::default();
    metadata
        .apply(&MetadataChange::CreateTopic(topic("a", 1)))
        .unwrap();
    assert_eq!(
        (metadata.version, metadata.partition_count("a")),
        (1, Some(3))
    );
    let again = metadata.apply(&MetadataChange::CreateTopic(topic("a", 2)));
    assert_eq!(again, Err(MetadataError::TopicExists("a".into())));
    let same_id = metadata.apply(&MetadataChange::CreateTopic(topic("b", 1)));
    assert!(matches!(same_id, Err(MetadataError::Invalid(_))));
    assert_eq!(metadata.version, 1);
    let delete = MetadataChange::DeleteTopic { name: "a".into() };
    metadata.apply(&delete).unwrap();
    assert_eq!(
        metadata.apply(&delete),
        Err(MetadataError::UnknownTopic("a".into()))
    );
    assert_eq!((metadata.version, metadata.topics.len()), (2, 0));
}

#[test]
fn elections_take_the_next_epoch_an_in_sync_replica_and_refuse_stale_views() {
    let mut metadata = Metadata::default();
    let mut replicated = topic("a", 1);
    replicated.partitions[1] = partition(vec![1, 2, 3], 1, vec![1, 2, 3]);
    metadata
        .apply(&MetadataChange::CreateTopic(replicated))
        .unwrap();
    let elect = |leader, leader_epoch, isr: &[i32]| MetadataChange::ElectLeader {
        topic: "a".into(),
        partition: 1,
        leader,
        leader_epoch,
        isr: isr.to_vec(),
    };
    metadata.apply(&elect(2, 5, &[2, 3])).unwrap();
    let partition = &metadata.topic("a").unwrap().partitions[1];
    assert_eq!((partition.leader, partition.leader_epoch), (2, 5));
    assert_eq!(partition.isr, vec![2, 3]);
    // The same election again was made from a view before the first one.
    assert!(matches!(
        metadata.apply(&elect(3, 5, &[3])),
        Err(MetadataError::Stale(_))
    ));
    for (leader, isr) in [(1, &[2, 3][..]), (9, &[9][..]), (3, &[3, 9][..])] {
        assert!(matches!(
            metadata.apply(&elect(leader, 6, isr)),
            Err(MetadataError::Invalid(_))
        ));
    }
    assert_eq!(metadata.version, 2);
}

#[test]
fn isr_changes_come_from_the_current_leader_and_add_only_live_replicas() {
    let mut metadata = Metadata::default();
    let mut replicated = topic("a", 1);
    replicated.partitions[0] = partition(vec![1, 2, 3], 1, vec![1, 2]);
    metadata
        .apply(&MetadataChange::CreateTopic(replicated))
        .unwrap();
    metadata.fenced.insert(3);
    let alter = |leader, leader_epoch, isr: &[i32]| MetadataChange::AlterIsr {
        topic: "a".into(),
        partition: 0,
        leader,
        leader_epoch,
        isr: isr.to_vec(),
    };
    let refused = [
        (2, 4, &[1, 2][..]),
        (1, 3, &[1][..]),
        (1, 4, &[2][..]),
        (1, 4, &[1, 3]),
    ];
    for (leader, epoch, isr) in refused {
        assert!(
            metadata.apply(&alter(leader, epoch, isr)).is_err(),
            "{isr:?}"
        );
    }
    metadata.apply(&alter(1, 4, &[1])).unwrap();
    metadata.fenced.remove(&3);
    metadata.apply(&alter(1, 4, &[1, 3])).unwrap();
    assert_eq!(metadata.topic("a").unwrap().partitions[0].isr, vec![1, 3]);
}

#[test]
fn fencing_follows_heartbeats_and_registration_lifts_it() {
    let mut metadata = Metadata::default();
    let broker = BrokerMeta {
        id: 2,
        kafka_addr: "h:1".into(),
        native_addr: "h:2".into(),
        cluster_addr: None,
        rack: None,
        shards: 1,
        kafka_listeners: Default::default(),
        native_listeners: Default::default(),
    };
    let fence = MetadataChange::FenceBroker { id: 2 };
    assert!(metadata.apply(&fence).is_err(), "not registered");
    let register = MetadataChange::RegisterBroker(broker);
    metadata.apply(&register).unwrap();
    metadata.apply(&fence).unwrap();
    assert!(metadata.apply(&fence).is_err(), "fenced already");
    assert_eq!(metadata.unfenced_brokers().count(), 0);
    let unfence = MetadataChange::UnfenceBroker { id: 2 };
    metadata.apply(&unfence).unwrap();
    assert!(metadata.apply(&unfence).is_err(), "not fenced");
    metadata.apply(&fence).unwrap();
    metadata.apply(&register).unwrap();
    assert_eq!(metadata.unfenced_brokers().count(), 1);
    metadata.apply(&fence).unwrap();
    let unregister = MetadataChange::UnregisterBroker { id: 2 };
    metadata.apply(&unregister).unwrap();
    assert!(metadata.fenced.is_empty());
    assert_eq!(metadata.version, 7);
}

#[test]
fn cluster_ids_are_base64_uuids_like_kafkas() {
    let mut rng = fastrand::Rng::with_seed(3);
    let id = random_cluster_id(&mut rng);
    assert_eq!(id.len(), 22);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    // The last digit carries two bits followed by four zero bits.
    let last = id.as_bytes()[21];
    assert!(b"AQgw".contains(&last), "{id}");
    assert_ne!(id, random_cluster_id(&mut rng));
}

#[test]
fn topic_ids_are_random_v4_uuids_and_round_trip_as_hex() {
    let mut rng = fastrand::Rng::with_seed(7);
    let id = TopicId::random(&mut rng);
    assert_ne!(id, TopicId::random(&mut rng));
    assert_eq!(id.0[6] >> 4, 4);
    let text: String = id.into();
    assert_eq!(TopicId::try_from(text).unwrap(), id);
    assert!(TopicId::try_from("zz".to_string()).is_err());
}

#[test]
fn a_broker_registering_again_leaves_the_isrs_and_hands_over_what_it_led() {
    let mut metadata = Metadata::default();
    for id in 1..=3 {
        metadata
            .apply(&MetadataChange::RegisterBroker(broker(id)))
            .unwrap();
    }
    let mut topic = topic("a", 1);
    topic.partitions = vec![
        partition(vec![1, 2, 3], 1, vec![1, 2, 3]),
        partition(vec![2, 1, 3], 2, vec![1, 2, 3]),
        partition(vec![1], 1, vec![1]),
        partition(vec![1, 2], NO_LEADER, vec![1]),
    ];
    metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
    metadata
        .apply(&MetadataChange::RegisterBroker(broker(1)))
        .unwrap();
    let got: Vec<(i32, i32, Vec<i32>)> = (metadata.topic("a").unwrap().partitions.iter())
        .map(|p| (p.leader, p.leader_epoch, p.isr.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, 5, vec![2, 3]),
            (2, 4, vec![2, 3]),
            (1, 5, vec![1]),
            (NO_LEADER, 4, vec![1]),
        ]
    );
}

#[test]
fn a_broker_shutting_down_hands_over_to_unfenced_replicas_and_stays_fenced_until_it_registers() {
    let mut metadata = Metadata::default();
    for id in 1..=4 {
        metadata
            .apply(&MetadataChange::RegisterBroker(broker(id)))
            .unwrap();
    }
    metadata
        .apply(&MetadataChange::FenceBroker { id: 2 })
        .unwrap();
    let mut topic = topic("a", 1);
    topic.partitions = vec![
        // Led by 1: broker 2 comes first but is fenced, so 3 leads.
        partition(vec![1, 2, 3], 1, vec![1, 2, 3]),
        // Followed by 1: it leaves the ISR, the leader stays.
        partition(vec![4, 1], 4, vec![4, 1]),
        // 1 is the only unfenced in-sync replica: it keeps leading until it stops.
        partition(vec![1, 2], 1, vec![1, 2]),
        partition(vec![1], 1, vec![1]),
    ];
    metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
    metadata
        .apply(&MetadataChange::ShutDownBroker { id: 1 })
        .unwrap();
    let got: Vec<(i32, i32, Vec<i32>)> = (metadata.topic("a").unwrap().partitions.iter())
        .map(|p| (p.leader, p.leader_epoch, p.isr.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, 5, vec![2, 3]),
            (4, 4, vec![4]),
            (1, 4, vec![1, 2]),
            (1, 4, vec![1]),
        ]
    );
    assert!(metadata.fenced.contains(&1) && metadata.shutting_down.contains(&1));
    // Still heard while it stops, it is not unfenced; registering again (a new start) lifts
    // both.
    let unfence = MetadataChange::UnfenceBroker { id: 1 };
    assert!(metadata.apply(&unfence).is_err());
    assert!(metadata
        .apply(&MetadataChange::ShutDownBroker { id: 9 })
        .is_err());
    metadata
        .apply(&MetadataChange::RegisterBroker(broker(1)))
        .unwrap();
    assert!(!metadata.fenced.contains(&1) && !metadata.shutting_down.contains(&1));
}

#[test]
fn a_config_change_computed_from_configs_changed_meanwhile_is_refused_as_stale() {
    let mut metadata = Metadata::default();
    metadata
        .apply(&MetadataChange::CreateTopic(topic("a", 1)))
        .unwrap();
    let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let alter =
        |previous: &[(&str, &str)], now: &[(&str, &str)]| MetadataChange::AlterTopicConfigs {
            topic: "a".into(),
            previous: configs(previous),
            configs: configs(now),
        };
    // Two nodes saw no overrides; the first change wins, the second is refused.
    metadata
        .apply(&alter(&[], &[("retention.ms", "1000")]))
        .unwrap();
    let second = alter(&[], &[("segment.ms", "5000")]);
    assert!(matches!(
        metadata.apply(&second),
        Err(MetadataError::Stale(_))
    ));
    // Computed again from what it holds now, it keeps both.
    let both = [("retention.ms", "1000"), ("segment.ms", "5000")];
    metadata
        .apply(&alter(&[("retention.ms", "1000")], &both))
        .unwrap();
    assert_eq!(metadata.topics["a"].configs, configs(&both));
}
