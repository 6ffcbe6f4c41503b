//! Applies YAML files as `kubectl apply --server-side` does: every document, into one
//! namespace, with the tests' own field manager.

use std::path::Path;

use anyhow::{Context, bail};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

/// The field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "tributary-e2e";

/// The documents of a YAML file, empty ones left out.
pub fn documents(path: &Path) -> anyhow::Result<Vec<DynamicObject>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut objects = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("{}, document {}", path.display(), i + 1))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml::from_value(value).with_context(|| {
            format!(
                "{}, document {}: not a Kubernetes object",
                path.display(),
                i + 1
            )
        })?;
        objects.push(object);
    }
    Ok(objects)
}

/// Applies every document of `path` into `namespace`; returns the objects as the API
/// server holds them.
pub async fn apply_file(
    client: &Client,
    namespace: &str,
    path: &Path,
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for mut object in documents(path)? {
        let Some(types) = object.types.clone() else {
            bail!(
                "{}: the object {} has no apiVersion or kind",
                path.display(),
                object.name_any()
            );
        };
        let gvk = GroupVersionKind::try_from(&types)
            .with_context(|| format!("{}: {types:?}", path.display()))?;
        let (resource, _) = pinned_kind(client, &gvk).await.with_context(|| {
            format!(
                "the API server does not serve {} {}: are the CRDs installed?",
                types.api_version, types.kind
            )
        })?;
        object.metadata.namespace = Some(namespace.to_string());
        let name = object.name_any();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let result = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| {
                format!(
                    "applying {} {name} from {} into {namespace}",
                    types.kind,
                    path.display()
                )
            })?;
        applied.push(result);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_the_tests_apply_are_one_cluster_and_its_topics() {
        let root = crate::repo_root();
        let cluster = documents(&root.join("examples/cluster.yaml")).unwrap();
        assert_eq!(cluster.len(), 1);
        assert_eq!(cluster[0].types.as_ref().unwrap().kind, "Cluster");
        let topics = documents(&root.join("examples/topics.yaml")).unwrap();
        assert!(!topics.is_empty());
        for topic in &topics {
            assert_eq!(topic.types.as_ref().unwrap().kind, "Topic");
            assert_eq!(topic.data["spec"]["cluster"], cluster[0].name_any());
        }
    }
}
