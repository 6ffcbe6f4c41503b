//! Reconciles a `Cluster`: checks its spec, applies the objects it owns with server-side
//! apply, and reports what it sees in the status. An invalid spec changes nothing: it only
//! sets `Ready=False` with a message that says what to change.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{self, Cluster, ClusterStatus, Topic, condition};
use crate::resources::{self, Settings, config_map::default_replication_factor};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "tributary-operator";

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} '{name}' has no namespace; Tributary resources are namespaced")]
    NoNamespace { kind: &'static str, name: String },
}

/// Why `cluster` cannot be applied as it is, with what to change; `None` when it can.
pub fn spec_problem(cluster: &Cluster, topics: &[Topic]) -> Option<String> {
    let spec = &cluster.spec;
    let rf = default_replication_factor(cluster);
    if rf > spec.replicas {
        return Some(format!(
            "config.defaultReplicationFactor is {rf} but replicas is {}: lower defaultReplicationFactor or raise replicas to at least {rf}",
            spec.replicas
        ));
    }
    if let Some(min_isr) = spec.config.min_insync_replicas
        && min_isr > rf
    {
        return Some(format!(
            "config.minInsyncReplicas is {min_isr} but the default replication factor is {rf}: acks=all writes could never succeed; lower minInsyncReplicas to at most {rf}"
        ));
    }
    let name = cluster.name_any();
    let mut too_big: Vec<(String, i32)> = topics
        .iter()
        .filter(|t| t.spec.cluster == name)
        .filter_map(|t| Some((t.name_any(), t.spec.replication_factor?)))
        .filter(|(_, topic_rf)| *topic_rf > spec.replicas)
        .collect();
    too_big.sort();
    if let Some((topic, topic_rf)) = too_big.first() {
        return Some(format!(
            "topic '{topic}' has replicationFactor {topic_rf} but replicas is {}: raise replicas to at least {topic_rf} (a cluster cannot have fewer brokers than a topic has replicas)",
            spec.replicas
        ));
    }
    None
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Writes the whole status with server-side apply, keeping the transition time of
/// conditions that did not change.
async fn write_status(
    client: &Client,
    cluster: &Cluster,
    mut status: ClusterStatus,
) -> Result<(), Error> {
    let namespace = namespace_of(cluster)?;
    let old = cluster.status.clone().unwrap_or_default();
    status.conditions = condition::merge(&old.conditions, status.conditions);
    let api: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({
        "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
        "kind": "Cluster",
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

fn namespace_of(cluster: &Cluster) -> Result<String, Error> {
    cluster.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "Cluster",
        name: cluster.name_any(),
    })
}

/// Brings the cluster's objects in line with its spec and reports on them.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = namespace_of(&cluster)?;
    let client = &ctx.client;
    let generation = cluster.metadata.generation;
    let topics = Api::<Topic>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await?
        .items;
    if let Some(problem) = spec_problem(&cluster, &topics) {
        tracing::warn!(cluster = %cluster.name_any(), %namespace, %problem, "invalid Cluster spec; nothing changed");
        let old = cluster.status.clone().unwrap_or_default();
        let status = ClusterStatus {
            observed_generation: generation,
            phase: Some("Invalid".into()),
            conditions: vec![
                condition::condition(condition::READY, false, "InvalidSpec", problem, generation),
                condition::condition(
                    condition::RECONCILING,
                    false,
                    "InvalidSpec",
                    "waiting for a valid spec; the existing brokers are left as they are",
                    generation,
                ),
            ],
            ..old
        };
        write_status(client, &cluster, status).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    let owned = resources::owned(&cluster, &ctx.settings);
    apply::<ServiceAccount>(client, &namespace, &owned.service_account).await?;
    apply::<Service>(client, &namespace, &owned.headless_service).await?;
    apply::<Service>(client, &namespace, &owned.client_service).await?;
    apply::<ConfigMap>(client, &namespace, &owned.config_map).await?;
    let statefulset = apply::<StatefulSet>(client, &namespace, &owned.statefulset).await?;
    apply::<PodDisruptionBudget>(client, &namespace, &owned.pod_disruption_budget).await?;

    let sts_status = statefulset.status.unwrap_or_default();
    let ready = sts_status.ready_replicas.unwrap_or(0);
    let replicas = cluster.spec.replicas;
    let rolled_out = ready == replicas
        && sts_status.updated_replicas.unwrap_or(0) == replicas
        && sts_status.observed_generation >= statefulset.metadata.generation;
    let (phase, ready_condition, reconciling) = if rolled_out {
        (
            "Running",
            condition::condition(
                condition::READY,
                true,
                "AllBrokersReady",
                format!("{ready} of {replicas} brokers are ready"),
                generation,
            ),
            condition::condition(
                condition::RECONCILING,
                false,
                "UpToDate",
                "every broker runs the current spec",
                generation,
            ),
        )
    } else {
        (
            "Reconciling",
            condition::condition(
                condition::READY,
                false,
                "BrokersNotReady",
                format!("{ready} of {replicas} brokers are ready"),
                generation,
            ),
            condition::condition(
                condition::RECONCILING,
                true,
                "RollingOut",
                format!(
                    "waiting for {replicas} brokers of the current spec to be ready ({ready} are)"
                ),
                generation,
            ),
        )
    };
    let old = cluster.status.clone().unwrap_or_default();
    let status = ClusterStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        ready_replicas: ready,
        conditions: vec![ready_condition, reconciling],
        ..old
    };
    write_status(client, &cluster, status).await?;
    Ok(Action::requeue(Duration::from_secs(if rolled_out {
        300
    } else {
        10
    })))
}

#[cfg(test)]
mod tests;
