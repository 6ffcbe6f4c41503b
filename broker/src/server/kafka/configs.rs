//! Topic configuration over the Kafka protocol: DescribeConfigs (every topic key with its
//! value and where it comes from), AlterConfigs (replace a topic's overrides),
//! IncrementalAlterConfigs (set, delete, append, subtract single keys), and CreatePartitions.
//! Changes go to the controller, which checks them as it checks Tributary's own.

use std::collections::BTreeMap;
use std::time::Duration;

use super::KafkaService;
use super::errors::status_error;
use crate::config::KEYS;
use crate::protocol::kafka::messages::create_partitions_response::CreatePartitionsTopicResult;
use crate::protocol::kafka::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use crate::protocol::kafka::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use crate::protocol::kafka::{ResponseError, StrBytes};

/// Kafka's resource types and config sources.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// How long a change may take to reach this broker before the answer says so.
const APPLY_WAIT: Duration = Duration::from_secs(10);

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A refused resource: its Kafka error code and why.
type Refusal = (i16, String);

impl KafkaService {
    /// Every topic key of `topic` (or just `keys`): its value, and whether the topic
    /// overrides it, the broker's defaults set it, or it is the built-in default.
    fn topic_configs(
        &self,
        topic: &str,
        keys: Option<&[StrBytes]>,
        version: i16,
    ) -> Result<Vec<DescribeConfigsResourceResult>, Refusal> {
        let snapshot = self.replicas.metadata();
        let record = snapshot.topics.get(topic).ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition.code(),
                format!("topic '{topic}' does not exist"),
            )
        })?;
        Ok(KEYS
            .iter()
            .filter(|k| keys.is_none_or(|keys| keys.iter().any(|w| &**w == k.name)))
            .map(|k| {
                let (value, source) =
                    match (record.config.get(k.name), self.topic_defaults.get(k.name)) {
                        (Some(v), _) => (v.clone(), DYNAMIC_TOPIC_CONFIG),
                        (None, Some(v)) => (v.clone(), STATIC_BROKER_CONFIG),
                        (None, None) => (k.default.to_string(), DEFAULT_CONFIG),
                    };
                let result = DescribeConfigsResourceResult::default()
                    .with_name(text(k.name))
                    .with_value(Some(text(value)))
                    .with_config_source(source);
                if version >= 3 {
                    result.with_documentation(Some(text(k.doc)))
                } else {
                    result
                }
            })
            .collect())
    }

    pub(super) async fn describe_configs(
        &self,
        version: i16,
        request: DescribeConfigsRequest,
    ) -> (DescribeConfigsResponse, bool) {
        let mut ok = true;
        let results = request
            .resources
            .into_iter()
            .map(|resource| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                let configs = match resource.resource_type {
                    TOPIC => self.topic_configs(
                        &resource.resource_name,
                        resource.configuration_keys.as_deref(),
                        version,
                    ),
                    // Brokers have no dynamic configuration: their settings are flags.
                    BROKER => Ok(Vec::new()),
                    other => Err((
                        ResponseError::InvalidRequest.code(),
                        format!("resource type {other} has no configuration in Tributary; topics (2) and brokers (4) do"),
                    )),
                };
                match configs {
                    Ok(configs) => result.with_configs(configs),
                    Err((code, message)) => {
                        ok = false;
                        result
                            .with_error_code(code)
                            .with_error_message(Some(text(message)))
                    }
                }
            })
            .collect();
        (DescribeConfigsResponse::default().with_results(results), ok)
    }

    /// Replaces `topic`'s overrides with `config` (after checking it, or only checking with
    /// `validate_only`), and waits for this broker to learn of it.
    async fn set_topic_config(
        &self,
        topic: &str,
        config: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        if validate_only {
            return crate::config::TopicConfig::resolve(&Default::default(), &config)
                .map(|_| ())
                .map_err(|e| (ResponseError::InvalidConfig.code(), e.to_string()));
        }
        let record = self
            .link
            .alter_topic_config(topic, config)
            .await
            .map_err(|s| (status_error(&s), s.message().to_string()))?;
        self.replicas
            .wait_for_metadata(APPLY_WAIT, |m| {
                m.topics
                    .get(topic)
                    .is_some_and(|t| t.config == record.config)
            })
            .await;
        Ok(())
    }

    fn overrides_of(&self, topic: &str) -> Result<BTreeMap<String, String>, Refusal> {
        self.replicas
            .metadata()
            .topics
            .get(topic)
            .map(|t| t.config.clone())
            .ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("topic '{topic}' does not exist"),
                )
            })
    }

    pub(super) async fn alter_configs(
        &self,
        _version: i16,
        request: AlterConfigsRequest,
    ) -> (AlterConfigsResponse, bool) {
        let mut ok = true;
        let mut responses = Vec::new();
        for resource in request.resources {
            let outcome = match resource.resource_type {
                TOPIC => {
                    let config = resource
                        .configs
                        .iter()
                        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                        .collect();
                    self.set_topic_config(&resource.resource_name, config, request.validate_only)
                        .await
                }
                other => Err(unsupported_resource(other)),
            };
            ok &= outcome.is_ok();
            let (code, message) = outcome.err().unzip();
            responses.push(
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name)
                    .with_error_code(code.unwrap_or(0))
                    .with_error_message(message.map(text)),
            );
        }
        (
            AlterConfigsResponse::default().with_responses(responses),
            ok,
        )
    }

    pub(super) async fn incremental_alter_configs(
        &self,
        _version: i16,
        request: IncrementalAlterConfigsRequest,
    ) -> (IncrementalAlterConfigsResponse, bool) {
        let mut ok = true;
        let mut responses = Vec::new();
        for resource in request.resources {
            let outcome = match resource.resource_type {
                TOPIC => match self.overrides_of(&resource.resource_name) {
                    Ok(mut config) => match apply_operations(&mut config, &resource.configs) {
                        Ok(()) => {
                            self.set_topic_config(
                                &resource.resource_name,
                                config,
                                request.validate_only,
                            )
                            .await
                        }
                        Err(refusal) => Err(refusal),
                    },
                    Err(refusal) => Err(refusal),
                },
                other => Err(unsupported_resource(other)),
            };
            ok &= outcome.is_ok();
            let (code, message) = outcome.err().unzip();
            responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name)
                    .with_error_code(code.unwrap_or(0))
                    .with_error_message(message.map(text)),
            );
        }
        (
            IncrementalAlterConfigsResponse::default().with_responses(responses),
            ok,
        )
    }

    pub(super) async fn create_partitions(
        &self,
        _version: i16,
        request: CreatePartitionsRequest,
    ) -> (CreatePartitionsResponse, bool) {
        let mut ok = true;
        let mut results = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let outcome = if topic.assignments.is_some() {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "manual replica assignments are not supported; give the new partition count and the controller places the replicas".to_string(),
                ))
            } else if let Ok(count) = u32::try_from(topic.count) {
                if request.validate_only {
                    Ok(())
                } else {
                    match self.link.create_partitions(&name, count).await {
                        Ok(record) => {
                            let n = record.partitions.len();
                            self.replicas
                                .wait_for_metadata(APPLY_WAIT, |m| {
                                    m.topics.get(&name).is_some_and(|t| t.partitions.len() == n)
                                })
                                .await;
                            Ok(())
                        }
                        Err(s) => Err((status_error(&s), s.message().to_string())),
                    }
                }
            } else {
                Err((
                    ResponseError::InvalidPartitions.code(),
                    format!("{} partitions: a topic has at least one", topic.count),
                ))
            };
            ok &= outcome.is_ok();
            let (code, message) = outcome.err().unzip();
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(topic.name)
                    .with_error_code(code.unwrap_or(0))
                    .with_error_message(message.map(text)),
            );
        }
        (
            CreatePartitionsResponse::default().with_results(results),
            ok,
        )
    }
}

fn unsupported_resource(resource_type: i8) -> Refusal {
    (
        ResponseError::InvalidRequest.code(),
        format!(
            "resource type {resource_type} cannot be changed in Tributary; topics (2) can, and brokers take their settings from flags"
        ),
    )
}

/// Applies IncrementalAlterConfigs operations to a topic's overrides: SET and DELETE a
/// key, APPEND to and SUBTRACT from a list value (comma-separated, as cleanup.policy).
fn apply_operations(
    config: &mut BTreeMap<String, String>,
    operations: &[crate::protocol::kafka::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(), Refusal> {
    for op in operations {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        match (op.config_operation, value) {
            (SET, Some(value)) => {
                config.insert(name, value);
            }
            (DELETE, _) => {
                config.remove(&name);
            }
            (APPEND | SUBTRACT, Some(value)) => {
                let mut items: Vec<String> = config
                    .get(&name)
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op.config_operation == APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                config.insert(name, items.join(","));
            }
            (operation, value) => {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    format!(
                        "operation {operation} on '{name}' with value {value:?} is not one Kafka defines (0 set, 1 delete, 2 append, 3 subtract, each but delete with a value)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::kafka::messages::incremental_alter_configs_request::AlterableConfig;

    fn op(name: &str, operation: i8, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(text(name))
            .with_config_operation(operation)
            .with_value(value.map(text))
    }

    #[test]
    fn incremental_operations_set_delete_append_and_subtract() {
        let mut config = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        apply_operations(
            &mut config,
            &[
                op("segment.bytes", SET, Some("2048")),
                op("retention.ms", DELETE, None),
                op("cleanup.policy", APPEND, Some("delete")),
                op("cleanup.policy", APPEND, Some("compact,delete")),
            ],
        )
        .unwrap();
        assert_eq!(config["segment.bytes"], "2048");
        assert!(!config.contains_key("retention.ms"));
        assert_eq!(config["cleanup.policy"], "delete,compact");
        apply_operations(
            &mut config,
            &[op("cleanup.policy", SUBTRACT, Some("compact"))],
        )
        .unwrap();
        assert_eq!(config["cleanup.policy"], "delete");
        assert!(apply_operations(&mut config, &[op("x", 9, Some("1"))]).is_err());
        assert!(apply_operations(&mut config, &[op("x", SET, None)]).is_err());
    }
}
