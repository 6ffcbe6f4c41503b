//! Reading `Topic` (and `Cluster`) manifests: the same YAML files that `kubectl apply` takes,
//! so a topic defined once runs locally and on Kubernetes.
//!
//! ```yaml
//! apiVersion: tributary.dev/v1alpha1
//! kind: Topic
//! metadata:
//!   name: orders
//! spec:
//!   cluster: demo
//!   partitions: 6
//!   replicationFactor: 1
//!   config:
//!     retention.ms: "604800000"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

pub const API_GROUP: &str = "tributary.dev";

/// A document found in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Topic(TopicManifest),
    /// A `Cluster` document: named, but not used by a local cluster.
    Cluster {
        name: String,
    },
}

/// A `Topic` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicManifest {
    pub name: String,
    pub cluster: Option<String>,
    pub partitions: u32,
    pub replication_factor: Option<u32>,
    pub config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<Metadata>,
    spec: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct Metadata {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TopicSpec {
    cluster: Option<String>,
    partitions: u32,
    replication_factor: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, serde_yaml::Value>,
}

/// Parses every document in `text` (separated by `---`). `source` names the file in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<Manifest>, String> {
    let mut manifests = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = format!("{source}, document {}", i + 1);
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| format!("{at}: not valid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        let document: Document = serde_yaml::from_value(value).map_err(|e| format!("{at}: {e}"))?;
        let api_group = document
            .api_version
            .as_deref()
            .and_then(|v| v.split('/').next());
        if api_group != Some(API_GROUP) {
            return Err(format!(
                "{at}: apiVersion is {:?}; expected {API_GROUP}/v1alpha1",
                document.api_version.unwrap_or_default()
            ));
        }
        let name = document
            .metadata
            .and_then(|m| m.name)
            .ok_or_else(|| format!("{at}: metadata.name is missing"))?;
        match document.kind.as_deref() {
            Some("Topic") => {
                let spec = document
                    .spec
                    .ok_or_else(|| format!("{at}: Topic '{name}' has no spec"))?;
                let spec: TopicSpec = serde_yaml::from_value(spec)
                    .map_err(|e| format!("{at}: Topic '{name}': spec: {e}"))?;
                let config = spec
                    .config
                    .into_iter()
                    .map(|(key, value)| match value {
                        serde_yaml::Value::String(s) => Ok((key, s)),
                        serde_yaml::Value::Number(n) => Ok((key, n.to_string())),
                        serde_yaml::Value::Bool(b) => Ok((key, b.to_string())),
                        _ => Err(format!(
                            "{at}: Topic '{name}': config value of {key} must be a string or number"
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                manifests.push(Manifest::Topic(TopicManifest {
                    name,
                    cluster: spec.cluster,
                    partitions: spec.partitions,
                    replication_factor: spec.replication_factor,
                    config,
                }));
            }
            Some("Cluster") => manifests.push(Manifest::Cluster { name }),
            other => {
                return Err(format!(
                    "{at}: kind {other:?} is not a Tributary resource; expected Topic or Cluster"
                ));
            }
        }
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_clusters_parse_from_multi_document_yaml() {
        let text = r#"
apiVersion: tributary.dev/v1alpha1
kind: Cluster
metadata: {name: demo}
spec: {replicas: 3}
---
apiVersion: tributary.dev/v1alpha1
kind: Topic
metadata:
  name: orders
  labels: {team: shop}
spec:
  cluster: demo
  partitions: 6
  replicationFactor: 1
  config:
    retention.ms: 604800000
    message.timestamp.type: LogAppendTime
---
"#;
        let parsed = parse(text, "topics.yaml").unwrap();
        assert_eq!(
            parsed[0],
            Manifest::Cluster {
                name: "demo".into()
            }
        );
        let Manifest::Topic(topic) = &parsed[1] else {
            panic!("not a topic")
        };
        assert_eq!(
            (
                topic.name.as_str(),
                topic.partitions,
                topic.replication_factor
            ),
            ("orders", 6, Some(1))
        );
        assert_eq!(topic.config["retention.ms"], "604800000");
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn mistakes_are_reported_with_file_and_document() {
        let typo = "apiVersion: tributary.dev/v1alpha1\nkind: Topic\nmetadata: {name: t}\nspec: {partition: 3}\n";
        let err = parse(typo, "t.yaml").unwrap_err();
        assert!(
            err.starts_with("t.yaml, document 1: Topic 't': spec:"),
            "{err}"
        );
        assert!(err.contains("partition"), "{err}");
        let foreign = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
        assert!(
            parse(foreign, "f.yaml")
                .unwrap_err()
                .contains("expected tributary.dev/v1alpha1")
        );
        let nameless = "apiVersion: tributary.dev/v1alpha1\nkind: Topic\nspec: {partitions: 1}\n";
        assert!(
            parse(nameless, "n.yaml")
                .unwrap_err()
                .contains("metadata.name is missing")
        );
        assert!(
            parse("a: [", "bad.yaml")
                .unwrap_err()
                .contains("not valid YAML")
        );
    }
}
