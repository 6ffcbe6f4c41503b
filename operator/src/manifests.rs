//! What `tributary-operator manifests` and `install` print for `kubectl apply -f -`: the
//! objects the Clusters of a manifest file become, and any list of objects as YAML.

use std::path::Path;

use serde::Deserialize;

use crate::crd::Cluster;
use crate::resources::{self, Settings};

/// The objects the operator makes of each Cluster in `file` (other kinds are skipped), as
/// YAML documents.
pub fn of_clusters(file: &Path, settings: &Settings) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| {
            format!(
                "{}, document {}: not valid YAML: {e}",
                file.display(),
                i + 1
            )
        })?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("Cluster") {
            continue;
        }
        let mut cluster: Cluster = serde_yaml::from_value(value)
            .map_err(|e| format!("{}, document {}: {e}", file.display(), i + 1))?;
        cluster
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        // What the API server would have given it, so owner references can be shown.
        cluster
            .metadata
            .uid
            .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
        for object in resources::owned(&cluster, settings).to_json() {
            out.push(serde_yaml::to_string(&object).expect("objects serialize"));
        }
    }
    if out.is_empty() {
        return Err(format!("{} has no Cluster resource", file.display()));
    }
    Ok(out.join("---\n"))
}

/// Objects as YAML documents, one after another.
pub fn to_yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("objects serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}
