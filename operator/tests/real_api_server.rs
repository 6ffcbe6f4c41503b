//! The operator's resources against a real kube-apiserver over a real etcd (see
//! `common/control_plane.rs`), not the fake: the CRDs install and their schemas and CEL
//! rules refuse bad Clusters and Topics with the CRDs' messages, and every object the
//! operator makes for the example Cluster and for edge-case Clusters passes a server-side
//! dry-run apply (schema, defaulting and immutability checks a user would otherwise meet
//! first).

mod common;

use std::time::{Duration, Instant};

use common::control_plane::{ControlPlane, install, make_namespace, repository_file};
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tributary_operator::api::MANAGER;
use tributary_operator::cluster_reconciler::{Context, reconcile};
use tributary_operator::crd::{Cluster, Topic};
use tributary_operator::hosting::Controllers;
use tributary_operator::install::{self, Install};
use tributary_operator::resources::{self, Settings};
use tributary_operator::topic_reconciler::reconcile as topic_reconcile;

const NAMESPACE: &str = "streams";

fn cluster(name: &str, spec: Value) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }))
    .expect("a Cluster")
}

fn topic(name: &str, spec: Value) -> Topic {
    serde_json::from_value(json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }))
    .expect("a Topic")
}

/// The API server's refusal of `result`, which must be one.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Ok(object) => panic!("{what} was accepted: {object:?}"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn the_crds_refuse_bad_clusters_and_topics_with_their_messages() {
    let plane = ControlPlane::start().await;
    let client = plane.client();
    install(&client, NAMESPACE).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NAMESPACE);
    let topics: Api<Topic> = Api::namespaced(client.clone(), NAMESPACE);
    let create = PostParams::default();

    let error = refusal(
        clusters
            .create(&create, &cluster("none", json!({"replicas": 0})))
            .await,
        "a Cluster of no brokers",
    );
    assert!(
        error.contains("spec.replicas") && error.contains("greater than or equal to 1"),
        "{error}"
    );
    let long = "a".repeat(41);
    let error = refusal(
        clusters
            .create(&create, &cluster(&long, json!({"replicas": 1})))
            .await,
        "a Cluster name of 41 characters",
    );
    assert!(
        error.contains("a cluster name has at most 40 characters"),
        "{error}"
    );

    clusters
        .create(&create, &cluster("demo", json!({"replicas": 3})))
        .await
        .expect("a valid Cluster is stored");
    let error = refusal(
        clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storage": {"size": "20Gi"}}})),
            )
            .await,
        "a change of storage",
    );
    assert!(
        error.contains("storage cannot change after the cluster is created"),
        "{error}"
    );

    let topic = topic(
        "orders",
        json!({"cluster": "demo", "partitions": 6, "replicationFactor": 3}),
    );
    topics
        .create(&create, &topic)
        .await
        .expect("a valid Topic is stored");
    for (patch, message) in [
        (
            json!({"spec": {"partitions": 3}}),
            "partitions can only grow",
        ),
        (
            json!({"spec": {"replicationFactor": 2}}),
            "replicationFactor cannot change after the topic is created",
        ),
        (
            json!({"spec": {"cluster": "other"}}),
            "cluster cannot change",
        ),
    ] {
        let error = refusal(
            topics
                .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            &patch.to_string(),
        );
        assert!(error.contains(message), "{patch}: {error}");
    }
}

/// Applies `object` with server-side apply (or only a dry run of it) as `manager`.
async fn apply_json(
    client: &Client,
    object: &Value,
    manager: &str,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let (group, version) = match object["apiVersion"].as_str().expect("apiVersion") {
        api if api.contains('/') => api.split_once('/').expect("group/version"),
        api => ("", api),
    };
    let kind = object["kind"].as_str().expect("kind");
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply(manager);
    let params = if dry_run { params.dry_run() } else { params };
    let name = object["metadata"]["name"].as_str().expect("name");
    api.patch(name, &params, &Patch::Apply(object)).await?;
    Ok(())
}

/// Every object the operator makes of `cluster` (stored first, so that owner references
/// name a real object), applied with server-side dry-run as the operator's field manager.
async fn dry_run_owned(client: &Client, cluster: Cluster) -> Vec<String> {
    let name = cluster.name_any();
    let stored = Api::<Cluster>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap_or_else(|e| panic!("Cluster {name} is refused: {e}"));
    let settings = Settings {
        controller_address: "tributary-operator-controller.tributary-system.svc:9093".into(),
    };
    let mut refused = Vec::new();
    for object in resources::owned(&stored, &settings).to_json() {
        if let Err(error) = apply_json(client, &object, MANAGER, true).await {
            refused.push(format!(
                "{} {} of Cluster {name}: {error}",
                object["kind"], object["metadata"]["name"]
            ));
        }
    }
    refused
}

#[tokio::test]
async fn every_object_the_operator_makes_passes_a_server_side_dry_run() {
    let plane = ControlPlane::start().await;
    let client = plane.client();
    install(&client, NAMESPACE).await;
    let mut example: Cluster =
        serde_yaml::from_str(&repository_file("examples/cluster.yaml")).expect("the example");
    example.metadata.namespace = Some(NAMESPACE.into());
    let mut refused = dry_run_owned(&client, example).await;
    // Every optional setting at once.
    let edge = cluster(
        "edge",
        json!({
            "replicas": 1,
            "imagePullPolicy": "Always",
            "storage": {"size": "1Gi", "storageClassName": "fast"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            "rack": {"topologyKey": "topology.kubernetes.io/zone"},
            "config": {
                "defaultReplicationFactor": 1,
                "minInsyncReplicas": 1,
                "autoCreateTopics": false,
                "topicDefaults": {"cleanup.policy": "delete"},
            },
            "selfHealing": {"enabled": false, "after": "1h30m"},
            "podTemplate": {
                "labels": {"team": "streams"},
                "annotations": {"example.com/owner": "streams"},
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "streams", "effect": "NoSchedule"}],
                "priorityClassName": "high",
            },
        }),
    );
    refused.extend(dry_run_owned(&client, edge).await);
    assert!(
        refused.is_empty(),
        "refused by the API server:\n{}",
        refused.join("\n")
    );
}

fn settings() -> Settings {
    Settings {
        controller_address: "tributary-operator-controller.tributary-system.svc:9093".into(),
    }
}

/// The operator's RBAC rules (as `tributary-operator rbac` prints them, watching `watched`),
/// applied by the admin, with `edit` changing the rules first.
async fn install_rbac(client: &Client, watched: &str, edit: impl Fn(&mut Value)) {
    let rbac = install::rbac(&Install {
        namespace: "tributary-system".into(),
        watch: Some(watched.into()),
        image: install::default_image(),
    });
    for mut object in rbac {
        edit(&mut object);
        apply_json(client, &object, "tributary-test", false)
            .await
            .unwrap_or_else(|e| panic!("{object} does not apply: {e}"));
    }
}

/// The Cluster and Topic reconcilers run as the operator's ServiceAccount with exactly the
/// RBAC rules the operator ships: a call they do not allow fails the test (as a `patch`
/// without `create` did: a real API server checks `create` for an apply that creates its
/// object).
#[tokio::test]
async fn the_reconcilers_work_as_the_operators_service_account_and_no_more() {
    let plane = ControlPlane::start().await;
    let admin = plane.client();
    install(&admin, NAMESPACE).await;
    make_namespace(&admin, "tributary-system").await;
    install_rbac(&admin, NAMESPACE, |_| {}).await;
    let operator = plane.client_as_service_account("tributary-system", "tributary-operator");

    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let stored = clusters
        .create(
            &PostParams::default(),
            &cluster("demo", json!({"replicas": 3})),
        )
        .await
        .expect("a Cluster");
    let ctx = std::sync::Arc::new(Context::new(
        operator.clone(),
        settings(),
        Controllers::default(),
    ));
    reconcile(std::sync::Arc::new(stored), ctx.clone())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the reconcile as the operator's ServiceAccount failed: {e}\n{}",
                plane.logs()
            )
        });
    let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(admin.clone(), NAMESPACE);
    let statefulset = statefulsets
        .get("demo-broker")
        .await
        .expect("the brokers' StatefulSet");
    assert_eq!(statefulset.spec.and_then(|s| s.replicas), Some(3));
    let status = clusters.get("demo").await.expect("the Cluster").status;
    assert!(
        status.is_some_and(|s| !s.conditions.is_empty()),
        "the status is written"
    );

    // A Topic's life, as the same ServiceAccount: its finalizer and status are written,
    // and a deletion (the real server's deletionTimestamp) ends with the finalizer removed
    // and the object gone. No broker runs, so the topic itself waits for brokers.
    let topics: Api<Topic> = Api::namespaced(admin.clone(), NAMESPACE);
    let topic = topic(
        "orders",
        json!({"cluster": "demo", "partitions": 3, "replicationFactor": 1}),
    );
    let stored = topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("a Topic");
    topic_reconcile(std::sync::Arc::new(stored), ctx.clone())
        .await
        .unwrap_or_else(|e| panic!("the Topic reconcile as the ServiceAccount failed: {e}"));
    let stored = topics.get("orders").await.expect("the Topic");
    assert!(
        stored
            .finalizers()
            .iter()
            .any(|f| f.starts_with("tributary.dev/")),
        "the finalizer is set: {:?}",
        stored.finalizers()
    );
    let ready = stored
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned())
        .expect("a Ready condition");
    assert_eq!(ready.status, "False", "{ready:?}");
    topics
        .delete("orders", &Default::default())
        .await
        .expect("the deletion is accepted");
    let deleting = topics.get("orders").await.expect("held by its finalizer");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    topic_reconcile(std::sync::Arc::new(deleting), ctx.clone())
        .await
        .unwrap_or_else(|e| panic!("the Topic deletion as the ServiceAccount failed: {e}"));
    assert!(
        topics.get_opt("orders").await.expect("a lookup").is_none(),
        "the Topic is gone once its finalizer is removed"
    );
    ctx.controllers.stop_all();

    // The same rules without `create`: the first apply of each object is refused.
    make_namespace(&admin, "no-create").await;
    install_rbac(&admin, "no-create", |object| {
        let rules = object.get_mut("rules").and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten() {
            if let Some(verbs) = rule.get_mut("verbs").and_then(Value::as_array_mut) {
                verbs.retain(|v| v != "create");
            }
        }
    })
    .await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), "no-create");
    let mut other = cluster("other", json!({"replicas": 1}));
    other.metadata.namespace = Some("no-create".into());
    let stored = clusters
        .create(&PostParams::default(), &other)
        .await
        .expect("a Cluster");
    let ctx = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    let error = reconcile(std::sync::Arc::new(stored), ctx.clone())
        .await
        .expect_err("without create, the reconcile is refused")
        .to_string();
    ctx.controllers.stop_all();
    assert!(error.contains("forbidden"), "{error}");
}

/// Leader election as the operator's ServiceAccount, with the shipped rules for its own
/// namespace: one candidate holds the Lease, a released Lease is taken at once, one not
/// renewed is taken over after its duration, and only the leader's pod carries the label.
#[tokio::test]
async fn leader_election_works_as_the_operators_service_account() {
    use tributary_operator::leader::{LEADER_LABEL, LeaseConfig, LeaseLock, label_leader};
    const OWN: &str = "tributary-system";
    let plane = ControlPlane::start().await;
    let admin = plane.client();
    install(&admin, NAMESPACE).await;
    make_namespace(&admin, OWN).await;
    install_rbac(&admin, NAMESPACE, |_| {}).await;
    let operator = plane.client_as_service_account(OWN, "tributary-operator");
    let candidate = |identity: &str| {
        LeaseLock::new(
            operator.clone(),
            LeaseConfig {
                namespace: OWN.into(),
                name: "tributary-operator".into(),
                identity: identity.into(),
                duration: Duration::from_secs(2),
            },
        )
    };
    let (mut a, mut b) = (candidate("a"), candidate("b"));
    assert!(a.try_acquire_or_renew().await.expect("a asks"));
    assert!(!b.try_acquire_or_renew().await.expect("b asks"));
    a.release().await.expect("a releases");
    assert!(b.try_acquire_or_renew().await.expect("b asks again"));

    // b stops renewing: a waits one duration from when it last saw the Lease change.
    assert!(!a.try_acquire_or_renew().await.expect("a asks"));
    let asked = Instant::now();
    while !a.try_acquire_or_renew().await.expect("a asks") {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "a never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(!b.try_acquire_or_renew().await.expect("b asks"));

    // The leader's pod is labelled, the other's not (pods made by the admin: nothing
    // runs them here).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), OWN);
    for name in ["operator-a", "operator-b"] {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": OWN},
            "spec": {"containers": [{"name": "operator", "image": "operator:test"}]},
        }))
        .expect("a pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("a pod");
    }
    for leader in ["operator-b", "operator-a"] {
        label_leader(&operator, OWN, leader, "tributary-operator")
            .await
            .expect("labelling as the ServiceAccount");
        for name in ["operator-a", "operator-b"] {
            let label = pods
                .get(name)
                .await
                .expect("the pod")
                .labels()
                .get(LEADER_LABEL)
                .cloned();
            assert_eq!(
                label.as_deref(),
                (name == leader).then_some("tributary-operator"),
                "{name} with {leader} leading"
            );
        }
    }
}
