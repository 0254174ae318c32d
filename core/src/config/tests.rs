use super::*;

#[test]
fn defaults_are_valid_and_toml_overrides_them() {
    BrokerConfig::default().validate().unwrap();
    let config = BrokerConfig::from_toml(
        "shards = 2\n[log]\nsegment_bytes_max = 4194304\nflush = \"interval\"\nflush_interval_ms = 5\n",
    )
    .unwrap();
    assert_eq!(config.shards, 2);
    assert_eq!(config.log.segment_bytes_max, 4 << 20);
    assert_eq!(config.log.flush, FlushPolicy::Interval);
    assert_eq!(config.log.flush_interval_ms, 5);
    config.validate().unwrap();
}

#[test]
fn topic_overrides_apply_on_top_and_are_validated() {
    let base = LogConfig::default();
    let topic = base
        .with_overrides([
            ("segment.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("flush.ms", "50"),
        ])
        .unwrap();
    assert_eq!(topic.segment_bytes_max, 1 << 20);
    assert_eq!(topic.retention_age_max_ms, None);
    assert_eq!(
        (topic.flush, topic.flush_interval_ms),
        (FlushPolicy::Interval, 50)
    );
    assert_eq!(topic.index_interval_bytes, base.index_interval_bytes);
    assert!(base.with_overrides([("segment.bytes", "10")]).is_err());
    assert!(base.with_overrides([("compression.type", "zstd")]).is_err());
    assert!(base.with_overrides([("segment.ms", "soon")]).is_err());
    // Kafka clients often name the policy: delete is the default.
    assert_eq!(
        base.with_overrides([("cleanup.policy", "delete")]).unwrap(),
        base
    );
    let compact = base
        .with_overrides([
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("delete.retention.ms", "1000"),
            ("max.compaction.lag.ms", "9223372036854775807"),
        ])
        .unwrap();
    assert!(compact.cleanup_policy.compact && !compact.cleanup_policy.delete);
    assert_eq!(compact.min_cleanable_dirty_ratio.get(), 0.1);
    assert_eq!(compact.delete_retention_ms, 1000);
    assert_eq!(compact.max_compaction_lag_ms, None);
    let bad = base.with_overrides([("cleanup.policy", "compacted")]);
    assert_eq!(bad.unwrap_err().field, "cleanup.policy");
    let bad = base.with_overrides([("min.cleanable.dirty.ratio", "2")]);
    assert_eq!(bad.unwrap_err().field, "min.cleanable.dirty.ratio");
    let bad = base.with_overrides([
        ("min.compaction.lag.ms", "10"),
        ("max.compaction.lag.ms", "5"),
    ]);
    assert_eq!(bad.unwrap_err().field, "log.max_compaction_lag_ms");
    assert!(base.with_overrides([("min.insync.replicas", "0")]).is_err());
    assert!(base
        .with_overrides([("unclean.leader.election.enable", "yes")])
        .is_err());
}

#[test]
fn bad_values_name_their_field() {
    let mut config = BrokerConfig::default();
    config.log.segment_bytes_max = 10;
    assert_eq!(
        config.validate().unwrap_err().field,
        "log.segment_bytes_max"
    );
    assert_eq!(
        BrokerConfig::from_toml("nonsense = 1").unwrap_err().field,
        "<file>"
    );
    let invalid = |toml: &str| {
        BrokerConfig::from_toml(toml)
            .unwrap()
            .validate()
            .unwrap_err()
    };
    assert_eq!(invalid("node_id = -1").field, "node_id");
    for replicas in ["0", "32768"] {
        let toml = format!("default_replication_factor = {replicas}");
        assert_eq!(invalid(&toml).field, "default_replication_factor");
    }
    assert_eq!(invalid("rack = \"\"").field, "rack");
    let racked = BrokerConfig::from_toml("rack = \"r1\"").unwrap();
    assert!(racked.validate().is_ok());
    assert_eq!(racked.rack.as_deref(), Some("r1"));
    for in_flight in [0, KAFKA_PRODUCE_IN_FLIGHT_LIMIT + 1] {
        let config = BrokerConfig {
            kafka_produce_in_flight_max: in_flight,
            ..BrokerConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().field,
            "kafka_produce_in_flight_max"
        );
    }
}

#[test]
fn cluster_settings_name_the_voters_and_include_this_node() {
    let toml = "node_id = 2\n[cluster]\nlisten = \"127.0.0.1:9093\"\n\
                initial_voters = [\"1@127.0.0.1:9091\", \"2@127.0.0.1:9093\"]\n";
    let config = BrokerConfig::from_toml(toml).unwrap();
    config.validate().unwrap();
    let voters = config.cluster.voters().unwrap();
    assert_eq!(voters[1].node_id, 2);
    assert_eq!(
        voters[0].addr,
        "127.0.0.1:9091".parse::<std::net::SocketAddr>().unwrap()
    );
    let refused = |config: BrokerConfig| config.validate().unwrap_err().field;
    let mut other = config.clone();
    other.node_id = 3;
    assert_eq!(refused(other), "cluster.initial_voters");
    let mut unlisted = config.clone();
    unlisted.cluster.initial_voters.clear();
    assert_eq!(refused(unlisted), "cluster.initial_voters");
    let mut alone = config.clone();
    alone.cluster.listen = None;
    assert_eq!(refused(alone), "cluster.listen");
    for bad in [
        "2@nowhere",
        "x@127.0.0.1:1",
        "127.0.0.1:1",
        "-1@127.0.0.1:1",
    ] {
        let mut malformed = config.clone();
        malformed.cluster.initial_voters = vec![bad.into()];
        assert_eq!(refused(malformed), "cluster.initial_voters", "{bad}");
    }
    let mut no_replicas = config.clone();
    no_replicas.cluster.min_insync_replicas = 0;
    assert_eq!(refused(no_replicas), "cluster.min_insync_replicas");
    let mut huge_fetch = config.clone();
    huge_fetch.cluster.replica_fetch_bytes_max = huge_fetch.cluster.frame_bytes_max;
    assert_eq!(refused(huge_fetch), "cluster.replica_fetch_bytes_max");
    let mut no_lag = config.clone();
    no_lag.cluster.replica_lag_time_max_ms = 0;
    assert_eq!(refused(no_lag), "cluster.replica_lag_time_max_ms");
    let mut held_past_timeout = config.clone();
    held_past_timeout.cluster.replica_fetch_wait_max_ms = config.cluster.replica_fetch_timeout_ms;
    assert_eq!(
        refused(held_past_timeout),
        "cluster.replica_fetch_wait_max_ms"
    );
    let mut held_past_lag = config.clone();
    held_past_lag.cluster.replica_lag_time_max_ms = config.cluster.replica_fetch_wait_max_ms;
    assert_eq!(refused(held_past_lag), "cluster.replica_fetch_wait_max_ms");
    let mut tiny_buffers = config.clone();
    tiny_buffers.cluster.socket_buffer_bytes = 4096;
    assert_eq!(refused(tiny_buffers), "cluster.socket_buffer_bytes");
    let mut joining = config.clone();
    joining.cluster.initial_voters.clear();
    joining.cluster.join = Some("1@127.0.0.1:9091".into());
    joining.validate().unwrap();
    assert_eq!(joining.cluster.join_via().unwrap().unwrap().node_id, 1);
    let mut both = joining.clone();
    both.cluster.initial_voters = config.cluster.initial_voters.clone();
    assert_eq!(refused(both), "cluster.initial_voters");
    let mut itself = joining.clone();
    itself.cluster.join = Some("2@127.0.0.1:9091".into());
    assert_eq!(refused(itself), "cluster.join");
    let mut twice = config.clone();
    twice.cluster.initial_voters.push("2@127.0.0.1:9095".into());
    assert_eq!(refused(twice), "cluster.initial_voters");
}

#[test]
fn kafka_listeners_replace_the_shorthand_and_are_checked() {
    let shorthand = BrokerConfig::default().kafka_listeners_in_effect();
    assert_eq!(shorthand.len(), 1);
    assert_eq!(shorthand[0].name(), "PLAINTEXT");
    assert_eq!(shorthand[0].address, "127.0.0.1:9092");

    let config = BrokerConfig::from_toml(
        "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:9092\"\n\
         [[kafka_listeners]]\naddress = \"0.0.0.0:9093\"\nsecurity = \"SASL_SSL\"\n\
         tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n",
    )
    .unwrap();
    config.validate().unwrap();
    let listeners = config.kafka_listeners_in_effect();
    assert_eq!(
        listeners.iter().map(|l| l.name()).collect::<Vec<_>>(),
        ["INTERNAL", "SASL_SSL"]
    );
    assert!(listeners[1].security.uses_tls() && listeners[1].security.uses_sasl());
    assert_eq!(
        listeners[1].sasl_mechanisms,
        ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    );

    let field_of = |toml: &str| {
        let config = BrokerConfig::from_toml(toml).unwrap();
        config.validate().unwrap_err().field
    };
    let listener = "[[kafka_listeners]]\naddress = \"127.0.0.1:9093\"\n";
    for (extra, field) in [
        ("security = \"SSL\"\n", "kafka_listeners.tls_cert_file"),
        (
            "tls_cert_file = \"c.pem\"\n",
            "kafka_listeners.tls_cert_file",
        ),
        (
            "security = \"SASL_PLAINTEXT\"\nsasl_mechanisms = []\n",
            "kafka_listeners.sasl_mechanisms",
        ),
        (
            "security = \"SASL_PLAINTEXT\"\nsasl_mechanisms = [\"GSSAPI\"]\n",
            "kafka_listeners.sasl_mechanisms",
        ),
        ("name = \"a b\"\n", "kafka_listeners.name"),
        (
            "advertised_address = \"nohost\"\n",
            "kafka_listeners.advertised_address",
        ),
    ] {
        assert_eq!(field_of(&format!("{listener}{extra}")), field, "{extra}");
    }
    assert_eq!(
        field_of(&format!("{listener}{listener}")),
        "kafka_listeners.name"
    );
    assert_eq!(
        field_of(&format!("{listener}{listener}name = \"OTHER\"\n")),
        "kafka_listeners.address"
    );
    assert_eq!(
        field_of("[authentication]\ntimeout_ms = 1\n"),
        "authentication.timeout_ms"
    );
    assert_eq!(
        field_of("[[native_listeners]]\naddress = \"x\"\n"),
        "native_listeners.address"
    );
    let metrics = "[metrics_listener]\naddress = \"127.0.0.1:9644\"\n";
    assert_eq!(
        field_of(&format!("{metrics}security = \"SASL_SSL\"\n")),
        "metrics_listener.security"
    );
    assert_eq!(
        field_of(&format!("{metrics}security = \"SSL\"\n")),
        "metrics_listener.tls_cert_file"
    );
    assert_eq!(
        field_of("[authentication]\ntls_handshakes_per_second_max = 0\n"),
        "authentication.tls_handshakes_per_second_max"
    );
    let plain = BrokerConfig::from_toml(metrics).unwrap();
    assert_eq!(plain.metrics_listener_in_effect().address, "127.0.0.1:9644");
}
