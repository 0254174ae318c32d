//! Which Kafka API versions Oxbow advertises. Only versions whose every field the handlers
//! honour are listed (ENVIRONMENT.md records what librdkafka and kafka-python need).

use kafka_protocol::messages::ApiKey;
use std::ops::RangeInclusive;

/// (API, lowest, highest) advertised in ApiVersions.
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::InitProducerId, 0, 4),
    // v4 and later are the brokers' own (KIP-890 verification).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    // v5 bumps the epoch at every transaction (KIP-890 part 2), not done here.
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    // v3 carries the member and generation (KIP-447); v4 and later are KIP-890 part 2.
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    // v2 adds a transactional id pattern, not served.
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeQuorum, 0, 1),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
];

/// The advertised range of `api`, if it is served at all.
pub fn advertised(api: ApiKey) -> Option<RangeInclusive<i16>> {
    ADVERTISED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|(_, min, max)| *min..=*max)
}

/// Whether an advertised version is also answered. Produce v0-2 is listed only because
/// librdkafka before 2.11 enables compression codecs only when Produce v0 is in the range; those
/// versions carry message-set v0/v1 that Oxbow does not store, so they close the connection.
/// SaslHandshake v0 likewise: librdkafka before 2.11 (Debian's kcat) enables SASL only when v0
/// is in the range, then uses v1 and SaslAuthenticate; v0 would be followed by bare tokens.
pub fn decodable(api: ApiKey, version: i16) -> bool {
    match api {
        ApiKey::Produce => version >= 3,
        ApiKey::SaslHandshake => version >= 1,
        _ => true,
    }
}
