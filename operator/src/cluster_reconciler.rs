//! Reconciles a `Cluster`: checks its spec, applies the objects it owns with server-side
//! apply, and reports what it sees in the status. An invalid spec changes nothing: it only
//! sets `Ready=False` with a message that says what to change.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tributary_broker::controller::{Controller, ControllerError};
use tributary_broker::metadata::MetadataSnapshot;

use crate::api::{MANAGER, apply};
pub use crate::context::{Context, Error};
use crate::crd::{self, Cluster, ClusterStatus, Topic, condition};
use crate::hosting::{self, controller_config};
use crate::kube_store::KubeStore;
use crate::racks;
use crate::resources;
use crate::scaling;

/// Why `cluster` cannot be applied as it is, with what to change; `None` when it can.
pub fn spec_problem(cluster: &Cluster, topics: &[Topic]) -> Option<String> {
    if let Err(problem) = controller_config(cluster) {
        return Some(format!("{problem}; correct or remove that setting"));
    }
    let spec = &cluster.spec;
    let rf = cluster.default_replication_factor();
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

/// Writes the whole status with server-side apply, keeping the transition time of
/// conditions that did not change.
async fn write_status(
    ctx: &Context,
    cluster: &Cluster,
    mut status: ClusterStatus,
) -> Result<(), Error> {
    let namespace = namespace_of(cluster)?;
    let old = cluster.status.clone().unwrap_or_default();
    status.conditions = condition::merge(&old.conditions, status.conditions);
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
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
    ctx.record_transitions(cluster, &old.conditions, &status.conditions)
        .await;
    Ok(())
}

fn namespace_of(cluster: &Cluster) -> Result<String, Error> {
    cluster.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "Cluster",
        name: cluster.name_any(),
    })
}

/// Brings the cluster's objects in line with its spec and reports on them: validate,
/// start (or reconfigure) its controller, tell it the brokers' racks, decide the broker
/// count, apply the objects it owns, write the status.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = namespace_of(&cluster)?;
    if crd::is_paused(&*cluster) {
        keep_controller(&ctx, &cluster).await?;
        report_paused(&ctx, &cluster).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let topics = Api::<Topic>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await?
        .items;
    if let Some(problem) = spec_problem(&cluster, &topics) {
        keep_controller(&ctx, &cluster).await?;
        report_invalid(&ctx, &cluster, &namespace, problem).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let config = controller_config(&cluster).map_err(Error::Invalid)?;
    let controller = ctx
        .controllers
        .ensure(&ctx.client, &cluster, config)
        .await?;
    let racks = racks::resolve(&ctx.client, &cluster, &namespace).await?;
    match &racks {
        // Nodes could not be read: the brokers keep the racks they had.
        Some(racks) if racks.unreadable.is_some() => {}
        Some(racks) => controller.set_racks(racks.known.clone()).await?,
        // Without spec.rack (or with it removed), no broker has a rack from its node.
        None => controller.set_racks(Default::default()).await?,
    }
    let decision = decide_scale(&ctx, &cluster, &namespace, &controller).await?;
    let statefulset = apply_owned(&ctx, &cluster, &namespace, &decision).await?;
    let rack_condition = racks.map(|r| racks::condition(&cluster, &r));
    let (mut status, settled) =
        observed_status(&cluster, statefulset, &controller.snapshot(), decision);
    status.conditions.extend(rack_condition);
    write_status(&ctx, &cluster, status).await?;
    // Broker sessions and ISRs change without any Kubernetes object changing: look again
    // soon while something is amiss, and regularly otherwise.
    Ok(Action::requeue(Duration::from_secs(if settled {
        30
    } else {
        5
    })))
}

/// The cluster's controller runs whatever state the rest of its spec, or one of its
/// Topics, is in: the brokers already running and the Topics' finalizers depend on it. An
/// invalid spec leaves a running controller as it is; one that is not running (the
/// operator restarted) is started, unless its own settings are what is invalid.
async fn keep_controller(ctx: &Context, cluster: &Cluster) -> Result<(), Error> {
    if ctx.controllers.get(&cluster.key()).is_some() {
        return Ok(());
    }
    if let Ok(config) = controller_config(cluster) {
        ctx.controllers.ensure(&ctx.client, cluster, config).await?;
    }
    Ok(())
}

/// A paused Cluster changes nothing (its controller keeps running, so its brokers and
/// Topics carry on): the status keeps what it said and adds `ReconciliationPaused`.
async fn report_paused(ctx: &Context, cluster: &Cluster) -> Result<(), Error> {
    let generation = cluster.metadata.generation;
    let mut status = cluster.status.clone().unwrap_or_default();
    status
        .conditions
        .retain(|c| c.type_ != condition::RECONCILIATION_PAUSED);
    status.conditions.push(condition::condition(
        condition::RECONCILIATION_PAUSED,
        true,
        "PauseAnnotation",
        format!(
            "the annotation {}=true stops the operator changing this cluster's objects; remove it to resume",
            crd::PAUSE_ANNOTATION
        ),
        generation,
    ));
    write_status(ctx, cluster, status).await
}

/// An invalid spec changes nothing: the status says what to change.
async fn report_invalid(
    ctx: &Context,
    cluster: &Cluster,
    namespace: &str,
    problem: String,
) -> Result<(), Error> {
    tracing::warn!(cluster = %cluster.name_any(), %namespace, %problem, "invalid Cluster spec; nothing changed");
    let generation = cluster.metadata.generation;
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
    write_status(ctx, cluster, status).await
}

/// The broker count, decided by the controller: a scale-down drains the brokers that go
/// before they go. Cordons what the decision drains and starts the rebalance it asks for.
async fn decide_scale(
    ctx: &Context,
    cluster: &Cluster,
    namespace: &str,
    controller: &Controller<KubeStore>,
) -> Result<scaling::Decision, Error> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let running = statefulsets
        .get_opt(&resources::Names::of(cluster).statefulset)
        .await?
        .and_then(|s| s.spec?.replicas);
    let desired = cluster.spec.replicas;
    let decided = controller
        .decide_scale(
            desired,
            running.unwrap_or(desired),
            cluster.spec.rebalance.auto_on_scale,
            scaling::ASK,
        )
        .await?;
    let decision = scaling::for_cluster(decided, cluster.metadata.generation);
    controller.cordon(decision.cordon.clone()).await?;
    if decision.rebalance {
        match controller.rebalance(false).await {
            Ok(plan) => {
                tracing::info!(cluster = %cluster.name_any(), moves = plan.total, "rebalance started")
            }
            Err(ControllerError::RebalanceInProgress { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(decision)
}

/// Applies every object the cluster owns, the StatefulSet at the decided size; returns the
/// StatefulSet as the API server holds it.
async fn apply_owned(
    ctx: &Context,
    cluster: &Cluster,
    namespace: &str,
    decision: &scaling::Decision,
) -> Result<StatefulSet, Error> {
    let client = &ctx.client;
    let mut owned = resources::owned(cluster, &ctx.settings);
    if let Some(spec) = owned.statefulset.spec.as_mut() {
        spec.replicas = Some(decision.statefulset_replicas);
    }
    apply::<ServiceAccount>(client, namespace, &owned.service_account).await?;
    apply::<Service>(client, namespace, &owned.headless_service).await?;
    apply::<Service>(client, namespace, &owned.client_service).await?;
    apply::<ConfigMap>(client, namespace, &owned.config_map).await?;
    let statefulset = apply::<StatefulSet>(client, namespace, &owned.statefulset).await?;
    apply::<PodDisruptionBudget>(client, namespace, &owned.pod_disruption_budget).await?;
    Ok(statefulset)
}

/// The status the cluster has now, and whether it is settled (every broker rolled out and
/// ready, nothing degraded, no rebalance running).
fn observed_status(
    cluster: &Cluster,
    statefulset: StatefulSet,
    snapshot: &MetadataSnapshot,
    decision: scaling::Decision,
) -> (ClusterStatus, bool) {
    let generation = cluster.metadata.generation;
    let sts_status = statefulset.status.unwrap_or_default();
    let ready = sts_status.ready_replicas.unwrap_or(0);
    let replicas = decision.statefulset_replicas;
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
    let brokers = hosting::broker_statuses(snapshot, replicas);
    let under_replicated = snapshot.under_replicated() as i32;
    let degraded = degraded_condition(&brokers, replicas, under_replicated, generation);
    let healthy = degraded.status == "False" && decision.rebalancing.status == "False";
    let (phase, ready_condition) = match &decision.refused {
        Some(why) => (
            "Invalid",
            condition::condition(
                condition::READY,
                false,
                "ScaleDownRefused",
                why.clone(),
                generation,
            ),
        ),
        None => (phase, ready_condition),
    };
    let status = ClusterStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        ready_replicas: ready,
        conditions: vec![ready_condition, reconciling, degraded, decision.rebalancing],
        brokers,
        under_replicated_partitions: under_replicated,
        listeners: listeners(cluster),
    };
    (status, rolled_out && healthy)
}

/// Where clients bootstrap from: the client Service, on each listener's port.
fn listeners(cluster: &Cluster) -> Vec<crd::ListenerStatus> {
    let service = resources::Names::of(cluster).client;
    let namespace = cluster.namespace().unwrap_or_default();
    [
        ("kafka", resources::KAFKA_PORT),
        ("grpc", resources::GRPC_PORT),
    ]
    .into_iter()
    .map(|(name, port)| crd::ListenerStatus {
        name: name.into(),
        bootstrap_servers: format!("{service}.{namespace}.svc:{port}"),
    })
    .collect()
}

/// Degraded when a broker the spec asks for has no session with the controller, or a
/// partition has fewer in-sync replicas than replicas.
fn degraded_condition(
    brokers: &[crd::BrokerStatus],
    replicas: i32,
    under_replicated: i32,
    generation: Option<i64>,
) -> Condition {
    let down: Vec<String> = brokers
        .iter()
        .filter(|b| b.id < replicas && !b.alive)
        .map(|b| b.id.to_string())
        .collect();
    if !down.is_empty() {
        return condition::condition(
            condition::DEGRADED,
            true,
            "BrokersDown",
            format!(
                "broker(s) {} have no session with the controller; {under_replicated} partition(s) are under-replicated",
                down.join(", ")
            ),
            generation,
        );
    }
    if under_replicated > 0 {
        return condition::condition(
            condition::DEGRADED,
            true,
            "UnderReplicated",
            format!(
                "{under_replicated} partition(s) have fewer in-sync replicas than replicas; followers are catching up"
            ),
            generation,
        );
    }
    condition::condition(
        condition::DEGRADED,
        false,
        "AllReplicasInSync",
        format!("all {replicas} brokers are in session and every partition is fully in sync"),
        generation,
    )
}

#[cfg(test)]
mod tests;
