//! Metadata: the brokers with their Kafka listeners, and each topic's partitions with
//! leader, leader epoch, replicas and in-sync replicas. Topics a client names that do not
//! exist are created when auto-creation is on and the client allows it.

use std::time::Duration;

use super::KafkaService;
use super::errors::status_error;
use crate::metadata::{MetadataSnapshot, NewTopic, TopicRecord};
use crate::protocol::kafka::ResponseError;
use crate::protocol::kafka::StrBytes;
use crate::protocol::kafka::messages::describe_cluster_response::DescribeClusterBroker;
use crate::protocol::kafka::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use crate::protocol::kafka::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};

/// How long a request that created a topic waits for this broker to learn of it.
const CREATED_WAIT: Duration = Duration::from_secs(5);

/// Kafka's answer for a topic name it cannot hold.
pub(super) fn topic_name_problem(name: &str) -> Option<ResponseError> {
    crate::validate_topic_name(name)
        .err()
        .map(|_| ResponseError::InvalidTopicException)
}

/// The brokers as Kafka clients reach them: host and Kafka port.
pub(super) fn brokers(snapshot: &MetadataSnapshot) -> Vec<MetadataResponseBroker> {
    snapshot
        .brokers
        .values()
        .filter(|b| b.kafka_port != 0)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.kafka_port))
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect()
}

fn describe(topic: &TopicRecord) -> MetadataResponseTopic {
    let ids = |ids: &[i32]| ids.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.is_internal())
        .with_partitions(
            topic
                .partitions
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    let error = if p.leader < 0 {
                        ResponseError::LeaderNotAvailable.code()
                    } else {
                        0
                    };
                    MetadataResponsePartition::default()
                        .with_error_code(error)
                        .with_partition_index(index as i32)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.isr))
                })
                .collect(),
        )
}

fn unknown(name: &str, error: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
}

impl KafkaService {
    pub(super) async fn metadata(
        &self,
        version: i16,
        request: MetadataRequest,
    ) -> (MetadataResponse, bool) {
        let mut snapshot = self.replicas.metadata();
        // v0 asks for every topic with an empty list; later versions with a null one.
        let wanted: Option<Vec<String>> = match request.topics {
            None => None,
            Some(topics) if topics.is_empty() && version == 0 => None,
            Some(topics) => Some(
                topics
                    .into_iter()
                    .filter_map(|t| {
                        t.name.map(|n| n.0.to_string()).or_else(|| {
                            snapshot
                                .topics
                                .values()
                                .find(|r| r.id == t.topic_id)
                                .map(|r| r.name.clone())
                        })
                    })
                    .collect(),
            ),
        };
        // Auto-creation: v0-v3 always allow it; later versions say.
        let allow_create = version < 4 || request.allow_auto_topic_creation;
        let mut created = Vec::new();
        if let Some(names) = &wanted
            && allow_create
            && self.settings.auto_create_topics
        {
            for name in names {
                if snapshot.topics.contains_key(name) || topic_name_problem(name).is_some() {
                    continue;
                }
                created.push((name.clone(), self.auto_create(name).await));
            }
            if !created.is_empty() {
                let names: Vec<String> = created.iter().map(|(n, _)| n.clone()).collect();
                self.replicas
                    .wait_for_metadata(CREATED_WAIT, |m| {
                        names.iter().all(|n| m.topics.contains_key(n))
                    })
                    .await;
                snapshot = self.replicas.metadata();
            }
        }
        let topics = match &wanted {
            None => snapshot.topics.values().map(describe).collect(),
            Some(names) => names
                .iter()
                .map(|name| match snapshot.topics.get(name) {
                    Some(topic) => describe(topic),
                    None => {
                        let error = topic_name_problem(name)
                            .map(|e| e.code())
                            .or_else(|| {
                                created
                                    .iter()
                                    .find(|(n, _)| n == name)
                                    .and_then(|(_, e)| *e)
                            })
                            .unwrap_or(if created.iter().any(|(n, _)| n == name) {
                                // Made, but not yet known here: Kafka's answer while a
                                // new topic's leaders are being elected.
                                ResponseError::LeaderNotAvailable.code()
                            } else {
                                ResponseError::UnknownTopicOrPartition.code()
                            });
                        unknown(name, error)
                    }
                })
                .collect(),
        };
        let mut response = MetadataResponse::default();
        if version >= 2 && !snapshot.cluster_id.is_empty() {
            response =
                response.with_cluster_id(Some(StrBytes::from_string(snapshot.cluster_id.clone())));
        }
        let response = response
            .with_brokers(brokers(&snapshot))
            // Kafka clients send some admin requests to the controller; any broker
            // forwards them to the real one, so this broker names itself.
            .with_controller_id(BrokerId(self.replicas.broker_id()))
            .with_topics(topics);
        (response, true)
    }

    /// DescribeCluster: the brokers with their Kafka listeners and the cluster id.
    pub(super) async fn describe_cluster(
        &self,
        _version: i16,
        request: DescribeClusterRequest,
    ) -> (DescribeClusterResponse, bool) {
        // Endpoint type 2 asks for the controllers, which Kafka clients cannot reach here.
        if request.endpoint_type == 2 {
            return (
                DescribeClusterResponse::default()
                    .with_error_code(ResponseError::UnsupportedEndpointType.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Tributary's controller has no Kafka listener; ask for the brokers",
                    ))),
                false,
            );
        }
        let snapshot = self.replicas.metadata();
        let brokers = snapshot
            .brokers
            .values()
            .filter(|b| b.kafka_port != 0)
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(i32::from(b.kafka_port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect();
        (
            DescribeClusterResponse::default()
                .with_cluster_id(StrBytes::from_string(snapshot.cluster_id.clone()))
                .with_controller_id(BrokerId(self.replicas.broker_id()))
                .with_brokers(brokers),
            true,
        )
    }

    /// Creates `name` with the cluster's defaults; the Kafka error code when that failed
    /// (other than a racing creation of the same topic).
    async fn auto_create(&self, name: &str) -> Option<i16> {
        let topic = NewTopic {
            name: name.to_string(),
            partitions: self.settings.default_partitions,
            replication_factor: None,
            config: Default::default(),
        };
        match self.link.create_topic(topic, false).await {
            Ok(_) => {
                tracing::info!(topic = name, "created a topic a Kafka client asked for");
                None
            }
            Err(status) => {
                let code = status_error(&status);
                if code == ResponseError::TopicAlreadyExists.code() {
                    None
                } else {
                    tracing::warn!(topic = name, error = %status.message(), "could not create a topic a Kafka client asked for");
                    Some(code)
                }
            }
        }
    }
}
