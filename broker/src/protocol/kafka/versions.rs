//! The Kafka APIs a broker answers, and at which versions: from Kafka 4's floors (KIP-896)
//! up to the newest this broker implements. ApiVersions lists exactly these, so a client
//! never sends a request the broker cannot answer; anything else gets UNSUPPORTED_VERSION.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// One API and the versions it is served at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub api: ApiKey,
    /// The lowest version advertised. Below `min` only where Kafka 4 advertises more than
    /// it answers: Produce from v0, because librdkafka before 2.x decides whether a broker
    /// takes compressed batches by the Produce versions listed.
    pub advertised_min: i16,
    pub min: i16,
    pub max: i16,
}

const fn served(api: ApiKey, min: i16, max: i16) -> Served {
    Served {
        api,
        advertised_min: min,
        min,
        max,
    }
}

/// Every API this broker answers.
pub const SERVED: &[Served] = &[
    Served {
        api: ApiKey::Produce,
        advertised_min: 0,
        min: 3,
        max: 12,
    },
    served(ApiKey::Fetch, 4, 17),
    served(ApiKey::ListOffsets, 1, 6),
    served(ApiKey::OffsetForLeaderEpoch, 2, 4),
    served(ApiKey::Metadata, 0, 12),
    served(ApiKey::OffsetCommit, 2, 9),
    served(ApiKey::OffsetFetch, 1, 9),
    served(ApiKey::FindCoordinator, 0, 6),
    served(ApiKey::JoinGroup, 2, 9),
    served(ApiKey::Heartbeat, 0, 4),
    served(ApiKey::LeaveGroup, 0, 5),
    served(ApiKey::SyncGroup, 0, 5),
    served(ApiKey::DescribeGroups, 0, 5),
    served(ApiKey::ListGroups, 0, 5),
    served(ApiKey::DeleteGroups, 0, 2),
    served(ApiKey::OffsetDelete, 0, 0),
    served(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    served(ApiKey::ConsumerGroupDescribe, 0, 1),
    served(ApiKey::ApiVersions, 0, 4),
    served(ApiKey::CreateTopics, 2, 7),
    served(ApiKey::DeleteTopics, 1, 6),
    served(ApiKey::DeleteRecords, 0, 2),
    served(ApiKey::DescribeConfigs, 1, 4),
    served(ApiKey::DescribeCluster, 0, 1),
    served(ApiKey::AlterConfigs, 0, 2),
    served(ApiKey::CreatePartitions, 0, 3),
    served(ApiKey::IncrementalAlterConfigs, 0, 1),
    served(ApiKey::InitProducerId, 0, 5),
    served(ApiKey::DescribeProducers, 0, 0),
];

/// The versions of `api` this broker answers, if it answers it at all.
pub fn served_versions(api: ApiKey) -> Option<&'static Served> {
    SERVED.iter().find(|s| s.api == api)
}

/// Whether a request of `api` at `version` is answered (else: UNSUPPORTED_VERSION).
pub fn is_served(api: ApiKey, version: i16) -> bool {
    served_versions(api).is_some_and(|s| (s.min..=s.max).contains(&version))
}

/// The ApiVersions answer: every served API with its advertised range.
pub fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SERVED
            .iter()
            .map(|s| {
                ApiVersion::default()
                    .with_api_key(s.api as i16)
                    .with_min_version(s.advertised_min)
                    .with_max_version(s.max)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_range_is_one_the_message_schemas_define() {
        for s in SERVED {
            let defined = s.api.valid_versions();
            assert!(
                defined.min <= s.min && s.max <= defined.max && s.min <= s.max,
                "{:?} is served at {}..={} but its schemas define {}",
                s.api,
                s.min,
                s.max,
                defined
            );
            assert!(s.advertised_min <= s.min);
        }
    }

    #[test]
    fn produce_is_advertised_from_v0_but_answered_from_v3_as_kafka_4_does() {
        let produce = api_versions()
            .api_keys
            .into_iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .expect("Produce is listed");
        assert_eq!((produce.min_version, produce.max_version), (0, 12));
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert!(!is_served(ApiKey::SaslHandshake, 0));
    }
}
