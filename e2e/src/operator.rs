//! The tests need the operator installed (they do not install it): its CRDs, and its
//! Deployment running somewhere, watching every namespace, since each test makes its own.

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use tributary_operator::crd::{Cluster, Topic};

/// How to install the operator so that the tests find it.
pub const HOW_TO_INSTALL: &str = "run e2e/kind.sh (a kind cluster with everything installed), or install the operator watching all namespaces: helm install tributary-operator charts/tributary-operator -n tributary-system --create-namespace --set watch.allNamespaces=true";

/// Labels of the operator's Deployment, from both the Helm chart and
/// `tributary-operator install`.
const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/name=tributary-operator,app.kubernetes.io/component=operator";

/// Fails, saying how to install it, unless the CRDs are there and an operator replica is
/// available and watches every namespace.
pub async fn expect_installed(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [Cluster::crd_name(), Topic::crd_name()] {
        if crds
            .get_opt(name)
            .await
            .with_context(|| format!("reading the CRD {name}"))?
            .is_none()
        {
            bail!("the CRD {name} is not installed: {HOW_TO_INSTALL}");
        }
    }
    let operator = &deployment(client).await?;
    let where_ = format!(
        "Deployment {}/{}",
        operator.namespace().unwrap_or_default(),
        operator.name_any()
    );
    let available = operator
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if available < 1 {
        bail!(
            "the operator ({where_}) has no available replica; see `kubectl -n {} describe deployment {}` and its pods' logs",
            operator.namespace().unwrap_or_default(),
            operator.name_any()
        );
    }
    if let Some(watched) = watched_namespace(operator) {
        bail!(
            "the operator ({where_}) watches only the namespace {watched}, and each test makes its own: {HOW_TO_INSTALL}"
        );
    }
    Ok(())
}

/// The operator's Deployment, found by its labels in any namespace.
async fn deployment(client: &Client) -> anyhow::Result<Deployment> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let found = deployments
        .list(&ListParams::default().labels(OPERATOR_SELECTOR))
        .await
        .context("listing the operator's Deployments")?
        .items;
    found.into_iter().next().with_context(|| {
        format!("no tributary-operator Deployment (labels {OPERATOR_SELECTOR}) in any namespace: {HOW_TO_INSTALL}")
    })
}

/// The namespace and name of the Lease the operator's replicas elect their leader with
/// (`--lease-name`, default `tributary-operator`, in the operator's namespace); its
/// holder is the leader pod's name.
pub async fn leader_lease(client: &Client) -> anyhow::Result<(String, String)> {
    let operator = deployment(client).await?;
    let args = operator
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.args.iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let name = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .unwrap_or("tributary-operator")
        .to_string();
    Ok((operator.namespace().unwrap_or_default(), name))
}

/// The one namespace the operator watches (its TRIBUTARY_WATCH_NAMESPACE), if it does.
fn watched_namespace(deployment: &Deployment) -> Option<String> {
    let spec = deployment.spec.as_ref()?.template.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == "TRIBUTARY_WATCH_NAMESPACE")
        .and_then(|e| e.value.clone())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operator::install::{self, Install};

    fn deployment(watch: Option<&str>) -> Deployment {
        let objects = install::objects(&Install {
            namespace: "tributary-system".into(),
            watch: watch.map(str::to_string),
            image: install::default_image(),
        });
        let object = objects
            .into_iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("install makes a Deployment");
        serde_json::from_value(object).expect("a Deployment")
    }

    #[test]
    fn an_operator_watching_one_namespace_is_told_apart_from_one_watching_all() {
        assert_eq!(
            watched_namespace(&deployment(Some("streams"))).as_deref(),
            Some("streams")
        );
        assert_eq!(watched_namespace(&deployment(None)), None);
    }

    #[test]
    fn the_selector_matches_the_labels_install_gives_the_deployment() {
        let deployment = deployment(None);
        let labels = deployment.metadata.labels.unwrap_or_default();
        for pair in OPERATOR_SELECTOR.split(',') {
            let (key, value) = pair.split_once('=').unwrap();
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
    }
}
