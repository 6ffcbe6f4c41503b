//! CreateTopics and DeleteTopics, forwarded to the controller like the gRPC admin calls; the
//! answer comes once this broker has applied the change, so a created topic is ready to use.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::KafkaService;
use super::errors::status_error;
use crate::metadata::NewTopic;
use crate::protocol::kafka::messages::create_topics_response::CreatableTopicResult;
use crate::protocol::kafka::messages::delete_topics_response::DeletableTopicResult;
use crate::protocol::kafka::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use crate::protocol::kafka::{ResponseError, StrBytes};

/// The longest a request waits for this broker to learn of its change, whatever it asks.
const MAX_APPLY_WAIT: Duration = Duration::from_secs(30);

fn apply_wait(timeout_ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)).min(MAX_APPLY_WAIT)
}

impl KafkaService {
    pub(super) async fn create_topics(
        &self,
        version: i16,
        request: CreateTopicsRequest,
    ) -> (CreateTopicsResponse, bool) {
        let mut ok = true;
        let mut results = Vec::new();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(topic.name.clone());
            let refused = |error: ResponseError, message: String| {
                result
                    .clone()
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            };
            if !topic.assignments.is_empty() {
                ok = false;
                results.push(refused(
                    ResponseError::InvalidRequest,
                    "manual replica assignments are not supported; give a partition count and replication factor and the controller places the replicas".into(),
                ));
                continue;
            }
            let config: BTreeMap<String, String> = topic
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let new = NewTopic {
                name: name.clone(),
                partitions: u32::try_from(topic.num_partitions)
                    .unwrap_or(self.settings.default_partitions),
                replication_factor: u32::try_from(topic.replication_factor).ok(),
                config,
            };
            let created = match self.link.create_topic(new, request.validate_only).await {
                Ok(record) => record,
                Err(status) => {
                    ok = false;
                    let error = ResponseError::try_from_code(status_error(&status))
                        .unwrap_or(ResponseError::UnknownServerError);
                    results.push(refused(error, status.message().to_string()));
                    continue;
                }
            };
            if !request.validate_only {
                let id = created.id;
                let applied = self
                    .replicas
                    .wait_for_metadata(apply_wait(request.timeout_ms), |m| {
                        m.topics.get(&name).is_some_and(|t| t.id == id)
                    })
                    .await;
                if !applied {
                    ok = false;
                    results.push(refused(
                        ResponseError::RequestTimedOut,
                        "the topic was created but this broker has not learned of it yet".into(),
                    ));
                    continue;
                }
            }
            let mut result = result
                .with_num_partitions(created.partitions.len() as i32)
                .with_replication_factor(created.replication_factor() as i16);
            if version >= 7 {
                result = result.with_topic_id(created.id);
            }
            results.push(result);
        }
        (CreateTopicsResponse::default().with_topics(results), ok)
    }

    pub(super) async fn delete_topics(
        &self,
        version: i16,
        request: DeleteTopicsRequest,
    ) -> (DeleteTopicsResponse, bool) {
        let snapshot = self.replicas.metadata();
        // v6 names topics by name or id; earlier versions by name.
        let asked: Vec<(Option<String>, Uuid)> = if version >= 6 {
            request
                .topics
                .iter()
                .map(|t| {
                    let name = t.name.as_ref().map(|n| n.0.to_string()).or_else(|| {
                        snapshot
                            .topics
                            .values()
                            .find(|r| r.id == t.topic_id)
                            .map(|r| r.name.clone())
                    });
                    (name, t.topic_id)
                })
                .collect()
        } else {
            request
                .topic_names
                .iter()
                .map(|n| (Some(n.0.to_string()), Uuid::nil()))
                .collect()
        };
        let mut ok = true;
        let mut responses = Vec::new();
        for (name, id) in asked {
            let mut result = DeletableTopicResult::default();
            if version >= 6 {
                result = result.with_topic_id(id);
            }
            let Some(name) = name else {
                ok = false;
                responses.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
                continue;
            };
            result = result.with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            let outcome = match self.link.delete_topic(&name).await {
                Ok(()) => {
                    let gone = self
                        .replicas
                        .wait_for_metadata(apply_wait(request.timeout_ms), |m| {
                            !m.topics.contains_key(&name)
                        })
                        .await;
                    if gone {
                        Ok(())
                    } else {
                        Err((
                            ResponseError::RequestTimedOut.code(),
                            "the topic was deleted but this broker has not learned of it yet"
                                .to_string(),
                        ))
                    }
                }
                Err(status) => Err((status_error(&status), status.message().to_string())),
            };
            if let Err((code, message)) = outcome {
                ok = false;
                result = result.with_error_code(code);
                if version >= 5 {
                    result = result.with_error_message(Some(StrBytes::from_string(message)));
                }
            }
            responses.push(result);
        }
        (
            DeleteTopicsResponse::default().with_responses(responses),
            ok,
        )
    }
}
