//! Reconciles a `Topic` through its cluster's controller: creates the topic, adds the
//! partitions the spec adds, applies configuration changes, and on deletion (behind a
//! finalizer) deletes the topic, whose partitions the brokers then delete. The controller
//! itself writes each partition's replicas, leader and ISR into the status (see
//! [`crate::kube_store`]); this reconciler writes the conditions.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tributary_broker::controller::{Controller, ControllerError};
use tributary_broker::metadata::{NewTopic, TopicRecord};

use crate::api::MANAGER;
use crate::context::{Context, Error};
use crate::crd::cluster_key;
use crate::crd::{self, Cluster, Topic, TopicStatus, condition};
use crate::kube_store::KubeStore;

/// Held by every Topic the operator has created a topic for, until the topic is deleted.
pub const FINALIZER: &str = "tributary.dev/topic-data";

/// How often a Topic is looked at without a change: leaders and ISRs change without one.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a Topic that waits on something is looked at again.
const RETRY: Duration = Duration::from_secs(5);

fn namespace_of(topic: &Topic) -> Result<String, Error> {
    topic.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "Topic",
        name: topic.name_any(),
    })
}

/// Brings the topic in line with its spec, or deletes it when the Topic is being deleted.
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = namespace_of(&topic)?;
    let key = cluster_key(&namespace, &topic.spec.cluster);
    let controller = ctx.controllers.get(&key);
    if crd::is_paused(&*topic) {
        // The spec is not acted on while paused: observedGeneration stays where it was.
        let observed = topic.status.as_ref().and_then(|s| s.observed_generation);
        write_conditions(&ctx, &topic, paused_conditions(&topic), observed).await?;
        return Ok(Action::requeue(RESYNC));
    }
    if topic.metadata.deletion_timestamp.is_some() {
        return delete(&topic, &ctx, &namespace, controller).await;
    }
    let Some(controller) = controller else {
        let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
        let (reason, message) = match clusters.get_opt(&topic.spec.cluster).await? {
            None => (
                "ClusterNotFound",
                format!(
                    "no Cluster '{}' in namespace {namespace}: create it, or correct spec.cluster",
                    topic.spec.cluster
                ),
            ),
            Some(_) => (
                "WaitingForCluster",
                format!(
                    "Cluster '{}' is not running yet (see its status)",
                    topic.spec.cluster
                ),
            ),
        };
        let conditions = not_ready(&topic, reason, message);
        write_conditions(&ctx, &topic, conditions, topic.metadata.generation).await?;
        return Ok(Action::requeue(RETRY));
    };
    add_finalizer(&ctx, &topic, &namespace).await?;
    let outcome = converge(&ctx, &topic, &controller).await;
    let conditions = match outcome {
        Ok(record) => ready_conditions(&topic, &record),
        Err(Refusal { reason, message }) => not_ready(&topic, reason, message),
    };
    let waiting = conditions
        .iter()
        .any(|c| c.type_ == condition::READY && c.status == "False");
    write_conditions(&ctx, &topic, conditions, topic.metadata.generation).await?;
    Ok(Action::requeue(if waiting { RETRY } else { RESYNC }))
}

/// A paused Topic changes nothing, and its deletion waits (its finalizer stays): the
/// conditions stay as they were, with `ReconciliationPaused` added.
fn paused_conditions(topic: &Topic) -> Vec<Condition> {
    let mut conditions: Vec<Condition> = topic
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != condition::RECONCILIATION_PAUSED);
    let deletion = if topic.metadata.deletion_timestamp.is_some() {
        "; its deletion waits until then"
    } else {
        ""
    };
    conditions.push(condition::condition(
        condition::RECONCILIATION_PAUSED,
        true,
        "PauseAnnotation",
        format!(
            "the annotation {}=true stops the operator changing this topic; remove it to resume{deletion}",
            crd::PAUSE_ANNOTATION
        ),
        topic.metadata.generation,
    ));
    conditions
}

/// Why the topic is not as the spec says, for the Ready condition.
struct Refusal {
    reason: &'static str,
    message: String,
}

impl From<ControllerError> for Refusal {
    fn from(error: ControllerError) -> Self {
        let reason = match &error {
            ControllerError::Store(_) | ControllerError::NoSession(_) => "ControllerError",
            _ => "InvalidSpec",
        };
        Self {
            reason,
            message: error.to_string(),
        }
    }
}

/// Whether `topic`'s status holds the controller's record of `record` (a topic of that name
/// may have been made outside Kubernetes). The status is read afresh when the copy at hand
/// does not show it: the controller may have written it since that copy was made.
async fn holds(ctx: &Context, topic: &Topic, record: &TopicRecord) -> Result<bool, Refusal> {
    let id = record.id.to_string();
    let shows = |t: &Topic| {
        t.status
            .as_ref()
            .and_then(|s| s.topic_id.as_ref())
            .is_some_and(|held| *held == id)
    };
    if shows(topic) {
        return Ok(true);
    }
    let namespace = topic.namespace().unwrap_or_default();
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    let fresh = api.get_opt(&topic.name_any()).await.map_err(|e| Refusal {
        reason: "ApiError",
        message: format!("cannot read the Topic: {e}"),
    })?;
    Ok(fresh.as_ref().is_some_and(shows))
}

/// The topic exists, and not as this Topic's.
fn topic_exists(name: &str) -> Refusal {
    Refusal {
        reason: "TopicExists",
        message: format!(
            "a topic named '{name}' already exists in the cluster, made outside Kubernetes or by another Topic object; delete it (tributary topic delete {name}, or that Topic) to let this Topic create it, or choose another name"
        ),
    }
}

/// Creates the topic, or grows it and applies its configuration; returns it as it is now.
async fn converge(
    ctx: &Context,
    topic: &Topic,
    controller: &Controller<KubeStore>,
) -> Result<TopicRecord, Refusal> {
    let name = topic.topic_name();
    let partitions = topic.spec.partitions.max(1) as u32;
    let config = crd::config_strings(&topic.spec.config);
    let Some(existing) = controller.snapshot().topics.get(&name).cloned() else {
        let new = NewTopic {
            name: name.clone(),
            partitions,
            replication_factor: topic.spec.replication_factor.map(|rf| rf.max(1) as u32),
            config,
        };
        let (record, _) = controller.create_topic(new, false).await?;
        tracing::info!(topic = %name, "topic created");
        // Another Topic object naming the same topic may be the one that holds it.
        if !holds(ctx, topic, &record).await? {
            return Err(topic_exists(&name));
        }
        return Ok(record);
    };
    if !holds(ctx, topic, &existing).await? {
        return Err(topic_exists(&name));
    }
    if let Some(rf) = topic.spec.replication_factor
        && rf as usize != existing.replication_factor()
    {
        return Err(Refusal {
            reason: "InvalidSpec",
            message: format!(
                "replicationFactor is {rf} but the topic has {}; it cannot change",
                existing.replication_factor()
            ),
        });
    }
    let mut record = existing;
    if partitions as usize > record.partitions.len() {
        record = controller.create_partitions(&name, partitions).await?.0;
    }
    if record.config != config {
        record = controller.alter_topic_config(&name, config).await?.0;
    }
    Ok(record)
}

fn not_ready(topic: &Topic, reason: &str, message: String) -> Vec<Condition> {
    vec![condition::condition(
        condition::READY,
        false,
        reason,
        message,
        topic.metadata.generation,
    )]
}

fn ready_conditions(topic: &Topic, record: &TopicRecord) -> Vec<Condition> {
    let generation = topic.metadata.generation;
    let total = record.partitions.len();
    let leaderless = record.partitions.iter().filter(|p| p.leader < 0).count();
    let under = record
        .partitions
        .iter()
        .filter(|p| p.isr.len() < p.replicas.len())
        .count();
    let mut conditions = vec![if leaderless == 0 {
        condition::condition(
            condition::READY,
            true,
            "AllPartitionsLed",
            format!("all {total} partitions have a leader"),
            generation,
        )
    } else {
        condition::condition(
            condition::READY,
            false,
            "LeaderNotAvailable",
            format!(
                "{leaderless} of {total} partitions have no leader: none of their in-sync replicas' brokers is up"
            ),
            generation,
        )
    }];
    conditions.push(if under == 0 {
        condition::condition(
            condition::DEGRADED,
            false,
            "AllReplicasInSync",
            "every partition has all its replicas in sync",
            generation,
        )
    } else {
        condition::condition(
            condition::DEGRADED,
            true,
            "UnderReplicated",
            format!("{under} of {total} partitions have replicas out of sync"),
            generation,
        )
    });
    conditions
}

/// Writes the conditions and observed generation with server-side apply: the partitions
/// the controller writes are left alone.
async fn write_conditions(
    ctx: &Context,
    topic: &Topic,
    conditions: Vec<Condition>,
    observed_generation: Option<i64>,
) -> Result<(), Error> {
    let old = topic.status.clone().unwrap_or_default().conditions;
    let conditions = condition::merge(&old, conditions);
    let status = TopicStatus {
        observed_generation,
        conditions: conditions.clone(),
        ..TopicStatus::default()
    };
    let patch = json!({
        "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
        "kind": "Topic",
        "status": status,
    });
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace_of(topic)?);
    api.patch_status(
        &topic.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.record_transitions(topic, &old, &conditions).await;
    Ok(())
}

/// Sets the finalizers to `finalizers`, provided the Topic is still at the version read.
async fn set_finalizers(
    ctx: &Context,
    topic: &Topic,
    namespace: &str,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": topic.resource_version(),
        }
    });
    api.patch(
        &topic.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn add_finalizer(ctx: &Context, topic: &Topic, namespace: &str) -> Result<(), Error> {
    if topic.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = topic.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(ctx, topic, namespace, finalizers).await
}

/// Deletes the topic through the controller (brokers delete its partitions when they apply
/// that), then lets the Topic go.
async fn delete(
    topic: &Topic,
    ctx: &Context,
    namespace: &str,
    controller: Option<Arc<Controller<KubeStore>>>,
) -> Result<Action, Error> {
    if !topic.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = topic.topic_name();
    match controller {
        Some(controller) => {
            let current = controller.snapshot().topics.get(&name).cloned();
            // A topic made outside Kubernetes under the same name is not this Topic's.
            let ours = match &current {
                Some(record) => holds(ctx, topic, record)
                    .await
                    .map_err(|r| Error::Invalid(r.message))?,
                None => false,
            };
            if ours {
                match controller.delete_topic(&name).await {
                    Ok(_) | Err(ControllerError::UnknownTopic(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                tracing::info!(topic = %name, %namespace, "topic deleted; brokers delete its partitions");
            }
        }
        None => {
            let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), namespace);
            if clusters.get_opt(&topic.spec.cluster).await?.is_some() {
                // The cluster exists but its controller is not running yet: wait for it,
                // or the brokers would keep the data.
                return Ok(Action::requeue(RETRY));
            }
            tracing::info!(topic = %name, %namespace, "the topic's Cluster is gone; nothing to delete");
        }
    }
    // Deleting the topic cleared its record from the status: take the finalizer off the
    // object as it is now.
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(current) = api.get_opt(&topic.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let finalizers = current
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, &current, namespace, finalizers).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
