//! The custom resources: `Cluster` and `Topic` (group `tributary.dev`, version `v1alpha1`).
//! Validation the API server can do at `kubectl apply` time is in the schema as CEL rules;
//! what needs the cluster's state is reported in status conditions.

mod cluster;
pub mod condition;
mod topic;

pub use cluster::*;

pub use topic::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResourceExt;

pub const GROUP: &str = "tributary.dev";
pub const VERSION: &str = "v1alpha1";

/// `"true"` on a Cluster or Topic: the operator changes nothing of it (a Cluster's
/// controller keeps running) until the annotation goes, and says so in the
/// `ReconciliationPaused` condition.
pub const PAUSE_ANNOTATION: &str = "tributary.dev/pause-reconciliation";
/// On a Cluster: a new value (say, the time) rolls its brokers one at a time, each back in
/// sync before the next goes.
pub const RESTART_ANNOTATION: &str = "tributary.dev/restart";

/// Whether `object` carries [`PAUSE_ANNOTATION`] set to `true`.
pub fn is_paused(object: &impl kube::ResourceExt) -> bool {
    object
        .annotations()
        .get(PAUSE_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Every CRD the operator serves, with the file name it has in `crds/`.
pub fn all() -> Vec<(String, CustomResourceDefinition)> {
    [Cluster::crd(), Topic::crd()]
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            (file, crd)
        })
        .collect()
}

/// One CRD as YAML, as `tributary-operator crd` prints it and `crds/` holds it.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD serializes")
}

/// Topic configuration as the broker takes it: every value a string, as Kafka's are
/// (manifests may write numbers bare).
pub fn config_strings(
    config: &std::collections::BTreeMap<String, IntOrString>,
) -> std::collections::BTreeMap<String, String> {
    config
        .iter()
        .map(|(key, value)| {
            let value = match value {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => s.clone(),
            };
            (key.clone(), value)
        })
        .collect()
}

/// A CEL rule that every key of the map at `path` is a topic configuration key.
pub fn config_keys_rule(path: &str) -> kube::core::Rule {
    let keys: Vec<String> = tributary_broker::config::KEYS
        .iter()
        .map(|k| format!("'{}'", k.name))
        .collect();
    let names: Vec<&str> = tributary_broker::config::KEYS
        .iter()
        .map(|k| k.name)
        .collect();
    let message = format!(
        "unknown topic configuration key; the keys are: {}",
        names.join(", ")
    );
    kube::core::Rule::new(format!("{path}.all(k, k in [{}])", keys.join(", ")))
        .message(message.as_str())
}

#[cfg(test)]
mod tests;
