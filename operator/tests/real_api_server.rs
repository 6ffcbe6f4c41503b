//! The operator's resources against a real kube-apiserver over a real etcd (see
//! `common/control_plane.rs`), not the fake: the CRDs install and their schemas and CEL
//! rules refuse bad Clusters and Topics with the CRDs' messages, and every object the
//! operator makes for the example Cluster and for edge-case Clusters passes a server-side
//! dry-run apply (schema, defaulting and immutability checks a user would otherwise meet
//! first).

mod common;

use std::time::{Duration, Instant};

use common::brokers;
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

    let orders = topic(
        "orders",
        json!({"cluster": "demo", "partitions": 6, "replicationFactor": 3}),
    );
    topics
        .create(&create, &orders)
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
        (
            json!({"spec": {"topicName": "Orders"}}),
            "topicName cannot be added or removed",
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

    // A topic name Kubernetes does not allow, through spec.topicName: Kafka's rules apply,
    // and it never changes.
    let named = topic(
        "orders-v2",
        json!({"cluster": "demo", "partitions": 1, "topicName": "Orders_V2"}),
    );
    topics
        .create(&create, &named)
        .await
        .expect("a Topic with a topicName is stored");
    let error = refusal(
        topics
            .patch(
                "orders-v2",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"topicName": "Orders_V3"}})),
            )
            .await,
        "a change of topicName",
    );
    assert!(error.contains("topicName cannot change"), "{error}");
    for (bad, message) in [("has space", "should match"), ("..", "cannot be named")] {
        let error = refusal(
            topics
                .create(
                    &create,
                    &topic(
                        "bad-name",
                        json!({"cluster": "demo", "partitions": 1, "topicName": bad}),
                    ),
                )
                .await,
            bad,
        );
        assert!(error.contains(message), "{bad}: {error}");
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

/// A control plane with the CRDs and the operator's RBAC rules for NAMESPACE installed;
/// an admin client, and a client as the operator's ServiceAccount.
async fn with_the_operators_rbac() -> (ControlPlane, Client, Client) {
    let plane = ControlPlane::start().await;
    let admin = plane.client();
    install(&admin, NAMESPACE).await;
    make_namespace(&admin, "tributary-system").await;
    install_rbac(&admin, NAMESPACE, |_| {}).await;
    let operator = plane.client_as_service_account("tributary-system", "tributary-operator");
    (plane, admin, operator)
}

/// The Cluster and Topic reconcilers run as the operator's ServiceAccount with exactly the
/// RBAC rules the operator ships: a call they do not allow fails the test (as a `patch`
/// without `create` did: a real API server checks `create` for an apply that creates its
/// object).
#[tokio::test]
async fn the_reconcilers_work_as_the_operators_service_account_and_no_more() {
    let (plane, admin, operator) = with_the_operators_rbac().await;

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

/// A Pod of `cluster`'s brokers, already bound to `node` (no scheduler runs here).
fn broker_pod(cluster: &Cluster, id: i32, node: &str) -> k8s_openapi::api::core::v1::Pod {
    let mut labels = resources::selector(cluster);
    labels.insert(resources::POD_INDEX_LABEL.into(), id.to_string());
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{}-broker-{id}", cluster.name_any()), "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "broker", "image": "tributary"}]},
    }))
    .expect("a Pod")
}

/// Racks come from the nodes the broker pods run on (pods do not carry node labels), read
/// as the operator's ServiceAccount and handed to the cluster's controller; a node without
/// the label is a warning condition, not a silent single rack.
#[tokio::test]
async fn racks_come_from_the_nodes_brokers_run_on_and_a_missing_label_is_a_warning() {
    use k8s_openapi::api::core::v1::{Node, Pod};

    let (plane, admin, operator) = with_the_operators_rbac().await;
    let nodes: Api<Node> = Api::all(admin.clone());
    for (name, zone) in [
        ("node-a", Some("zone-a")),
        ("node-b", Some("zone-b")),
        ("node-c", None),
    ] {
        let labels = zone.map_or(json!({}), |z| json!({"topology.kubernetes.io/zone": z}));
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}
        }))
        .expect("a Node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("the Node is created");
    }
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let racked = cluster(
        "racked",
        json!({"replicas": 3, "rack": {"topologyKey": "topology.kubernetes.io/zone"}}),
    );
    clusters
        .create(&PostParams::default(), &racked)
        .await
        .expect("a Cluster");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    for (id, node) in [(0, "node-a"), (1, "node-b")] {
        pods.create(&PostParams::default(), &broker_pod(&racked, id, node))
            .await
            .expect("a broker Pod");
    }
    let ctx = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    let reconcile_and_get = async || {
        let stored = clusters.get("racked").await.expect("the Cluster");
        reconcile(std::sync::Arc::new(stored), ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("the reconcile failed: {e}\n{}", plane.logs()));
        let status = clusters.get("racked").await.expect("the Cluster").status;
        status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "RackAware"))
            .expect("a RackAware condition")
    };
    let rack_aware = reconcile_and_get().await;
    assert_eq!(rack_aware.status, "True", "{rack_aware:?}");
    assert!(
        rack_aware.message.contains("zone-a, zone-b"),
        "{rack_aware:?}"
    );

    // Brokers registering without a rack of their own get their node's.
    let controller = ctx
        .controllers
        .get(&racked.key())
        .expect("a hosted controller");
    brokers::register(&controller, 0..3).await;
    let rack = |id: i32| controller.snapshot().brokers[&id].rack.clone();
    assert_eq!(rack(0).as_deref(), Some("zone-a"));
    assert_eq!(rack(1).as_deref(), Some("zone-b"));
    assert_eq!(rack(2), None, "broker 2 is not scheduled yet");

    // A broker on a node without the label: a warning that names the node and the label.
    pods.create(&PostParams::default(), &broker_pod(&racked, 2, "node-c"))
        .await
        .expect("a broker Pod");
    let rack_aware = reconcile_and_get().await;
    assert_eq!(rack_aware.status, "False", "{rack_aware:?}");
    assert_eq!(rack_aware.reason, "NodeLabelMissing");
    for part in ["node-c", "broker(s) 2", "topology.kubernetes.io/zone"] {
        assert!(rack_aware.message.contains(part), "{part}: {rack_aware:?}");
    }
    assert_eq!(rack(2), None);
    ctx.controllers.stop_all();
}

/// What users do to a Cluster besides editing its spec, as kubectl does it: `kubectl scale`
/// (the scale subresource), a restart annotation that rolls the brokers, and a pause
/// annotation that stops every change until it goes. The status names the bootstrap
/// addresses of both listeners.
#[tokio::test]
async fn a_cluster_scales_rolls_and_pauses_as_kubectl_asks() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use tributary_operator::crd::{PAUSE_ANNOTATION, RESTART_ANNOTATION};

    let (plane, admin, operator) = with_the_operators_rbac().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    clusters
        .create(
            &PostParams::default(),
            &cluster("demo", json!({"replicas": 3})),
        )
        .await
        .expect("a Cluster");
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), NAMESPACE);
    let ctx = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    let reconciled = async || {
        let stored = clusters.get("demo").await.expect("the Cluster");
        reconcile(std::sync::Arc::new(stored), ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("the reconcile failed: {e}\n{}", plane.logs()));
        let statefulset = statefulsets
            .get("demo-broker")
            .await
            .expect("the StatefulSet");
        let status = clusters.get("demo").await.expect("the Cluster").status;
        (statefulset, status.expect("a status"))
    };
    let replicas = |s: &StatefulSet| s.spec.as_ref().and_then(|s| s.replicas);
    let restart = |s: &StatefulSet| {
        let template = s.spec.as_ref().and_then(|s| s.template.metadata.clone());
        template.and_then(|m| m.annotations?.get(RESTART_ANNOTATION).cloned())
    };
    let (_, status) = reconciled().await;
    let bootstrap: Vec<(String, String)> = status
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.bootstrap_servers.clone()))
        .collect();
    assert_eq!(
        bootstrap,
        [
            ("kafka".to_string(), "demo.streams.svc:9092".to_string()),
            ("grpc".to_string(), "demo.streams.svc:9095".to_string())
        ]
    );

    // `kubectl scale clusters/demo --replicas=5`.
    clusters
        .patch_scale(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("the scale subresource");
    let (statefulset, _) = reconciled().await;
    assert_eq!(replicas(&statefulset), Some(5));
    let scale = clusters.get_scale("demo").await.expect("the scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));

    // `kubectl annotate cluster demo tributary.dev/restart=1`: the pod template changes.
    let annotate = async |key: &str, value: Option<&str>| {
        clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("an annotation");
    };
    annotate(RESTART_ANNOTATION, Some("1")).await;
    let (statefulset, _) = reconciled().await;
    assert_eq!(restart(&statefulset).as_deref(), Some("1"));

    // Paused: neither a restart nor anything else reaches the StatefulSet.
    annotate(PAUSE_ANNOTATION, Some("true")).await;
    annotate(RESTART_ANNOTATION, Some("2")).await;
    let (statefulset, status) = reconciled().await;
    assert_eq!(restart(&statefulset).as_deref(), Some("1"));
    let paused = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ReconciliationPaused")
        .expect("a ReconciliationPaused condition");
    assert_eq!(paused.status, "True");
    assert!(
        ctx.controllers
            .get(&cluster("demo", json!({"replicas": 1})).key())
            .is_some(),
        "the controller keeps running"
    );

    annotate(PAUSE_ANNOTATION, None).await;
    let (statefulset, status) = reconciled().await;
    assert_eq!(restart(&statefulset).as_deref(), Some("2"));
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "ReconciliationPaused"),
        "{:?}",
        status.conditions
    );
    ctx.controllers.stop_all();
}

/// `spec.topicName` manages a topic whose name Kubernetes does not allow as an object name:
/// the topic is made, grown and deleted under that name, its record sits in the object's
/// status, and a second object naming the same topic is refused.
#[tokio::test]
async fn a_topic_named_as_kubernetes_does_not_allow_lives_under_its_topic_name() {
    let (plane, admin, operator) = with_the_operators_rbac().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let stored = clusters
        .create(
            &PostParams::default(),
            &cluster("demo", json!({"replicas": 1})),
        )
        .await
        .expect("a Cluster");
    let ctx = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    reconcile(std::sync::Arc::new(stored.clone()), ctx.clone())
        .await
        .unwrap_or_else(|e| panic!("the Cluster reconcile failed: {e}\n{}", plane.logs()));
    let controller = ctx
        .controllers
        .get(&stored.key())
        .expect("a hosted controller");
    brokers::register(&controller, 0..1).await;

    let topics: Api<Topic> = Api::namespaced(admin.clone(), NAMESPACE);
    let reconciled = async |name: &str| {
        let stored = topics.get(name).await.expect("the Topic");
        topic_reconcile(std::sync::Arc::new(stored), ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("the Topic reconcile failed: {e}"));
        topics.get_opt(name).await.expect("a lookup")
    };
    let spec = json!({"cluster": "demo", "partitions": 2, "topicName": "Orders_V2"});
    let create = async |name: &str| {
        topics
            .create(&PostParams::default(), &topic(name, spec.clone()))
            .await
            .expect("a Topic");
    };
    create("orders-v2").await;
    let made = reconciled("orders-v2").await.expect("the Topic");
    let record = controller.snapshot().topics["Orders_V2"].clone();
    let status = made.status.expect("a status");
    assert_eq!(status.topic_id, Some(record.id.to_string()));
    assert_eq!(status.partition_count, Some(2));
    assert!(!controller.snapshot().topics.contains_key("orders-v2"));

    // Grown and reconfigured through its spec.
    topics
        .patch(
            "orders-v2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"partitions": 4, "config": {"retention.ms": "60000"}}})),
        )
        .await
        .expect("a spec change");
    let grown = reconciled("orders-v2").await.expect("the Topic");
    let record = controller.snapshot().topics["Orders_V2"].clone();
    assert_eq!(record.partitions.len(), 4);
    assert_eq!(
        record.config.get("retention.ms").map(String::as_str),
        Some("60000")
    );
    let status = grown.status.expect("a status");
    assert_eq!(status.partition_count, Some(4));
    assert_eq!(status.observed_generation, grown.metadata.generation);

    create("orders-copy").await;
    let copy = reconciled("orders-copy").await.expect("the Topic");
    let ready = copy
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TopicExists"),
        "{ready:?}"
    );

    topics
        .delete("orders-v2", &Default::default())
        .await
        .expect("the deletion is accepted");
    assert!(reconciled("orders-v2").await.is_none(), "the Topic is gone");
    assert!(!controller.snapshot().topics.contains_key("Orders_V2"));
    ctx.controllers.stop_all();
}

/// The whole path on the real server, as the operator's ServiceAccount: the Cluster's
/// reconcile hosts its controller, a real broker (in this process) registers with it over
/// gRPC, a Topic object becomes a topic that broker serves, and a record produced to it is
/// read back; the Topic's status holds the controller's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_broker_of_a_hosted_cluster_serves_a_topic_made_from_a_topic_object() {
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tributary_broker::client::fixtures::write_and_read_back;
    use tributary_broker::server::{self, BrokerConfig, controller_server};
    use tributary_operator::kube_store::assignment;

    let deadline = Instant::now() + Duration::from_secs(60);
    let (plane, admin, operator) = with_the_operators_rbac().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let stored = clusters
        .create(
            &PostParams::default(),
            &cluster("demo", json!({"replicas": 1})),
        )
        .await
        .expect("a Cluster");
    let ctx = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    reconcile(std::sync::Arc::new(stored.clone()), ctx.clone())
        .await
        .unwrap_or_else(|e| panic!("the Cluster reconcile failed: {e}\n{}", plane.logs()));
    let controller = ctx
        .controllers
        .get(&stored.key())
        .expect("a hosted controller");

    // The operator's controller endpoint, as its controller Service would reach it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let controller_address = listener.local_addr().expect("an address").to_string();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(controller_server(ctx.controllers.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().expect("a data dir");
    let mut config = BrokerConfig::new(0, dir.path());
    config.controller = Some(controller_address);
    config.cluster = Some(format!("{NAMESPACE}/demo"));
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let kafka = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let bootstrap = grpc.local_addr().expect("an address").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = server::Listeners { grpc, http, kafka };
    let broker = tokio::spawn(server::run(config, listeners, async {
        let _ = stopped.await;
    }));
    while !controller.snapshot().brokers.contains_key(&0) {
        assert!(Instant::now() < deadline, "the broker never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let topics: Api<Topic> = Api::namespaced(admin.clone(), NAMESPACE);
    topics
        .create(
            &PostParams::default(),
            &topic(
                "orders",
                json!({"cluster": "demo", "partitions": 1, "replicationFactor": 1}),
            ),
        )
        .await
        .expect("a Topic");
    let stored = topics.get("orders").await.expect("the Topic");
    topic_reconcile(std::sync::Arc::new(stored), ctx.clone())
        .await
        .unwrap_or_else(|e| panic!("the Topic reconcile failed: {e}"));
    let status = topics.get("orders").await.expect("the Topic").status;
    let encoded = status
        .and_then(|s| s.assignment)
        .expect("the controller's record");
    assert_eq!(assignment::decode(&encoded).expect("a record")[0].leader, 0);

    let records = write_and_read_back(&bootstrap, "orders", "hello", deadline.into()).await;
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));

    stop.send(()).expect("the broker is running");
    tokio::time::timeout(Duration::from_secs(30), broker)
        .await
        .expect("the broker stops")
        .expect("the broker task")
        .expect("a clean stop");
    serving.abort();
    ctx.controllers.stop_all();
}

/// Defect 2 on the real server: a Topic the Cluster cannot hold makes the spec invalid,
/// and an operator that restarts then (nothing hosted) still starts the cluster's
/// controller, which its brokers and the other Topics' finalizers need, and leaves the
/// brokers' objects as they are.
#[tokio::test]
async fn an_operator_restarted_with_an_invalid_topic_still_hosts_the_clusters_controller() {
    use k8s_openapi::api::apps::v1::StatefulSet;

    let (plane, admin, operator) = with_the_operators_rbac().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    clusters
        .create(
            &PostParams::default(),
            &cluster(
                "demo",
                json!({"replicas": 2, "config": {"defaultReplicationFactor": 1}}),
            ),
        )
        .await
        .expect("a Cluster");
    let reconciled = async |ctx: &std::sync::Arc<Context>| {
        let stored = clusters.get("demo").await.expect("the Cluster");
        reconcile(std::sync::Arc::new(stored), ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("the reconcile failed: {e}\n{}", plane.logs()));
        let status = clusters.get("demo").await.expect("the Cluster").status;
        let ready = status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .expect("a Ready condition");
        ready.reason
    };
    let running = std::sync::Arc::new(Context::new(
        operator.clone(),
        settings(),
        Controllers::default(),
    ));
    reconciled(&running).await;
    Api::<Topic>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &topic(
                "orders",
                json!({"cluster": "demo", "partitions": 3, "replicationFactor": 3}),
            ),
        )
        .await
        .expect("a Topic");
    assert_eq!(reconciled(&running).await, "InvalidSpec");
    running.controllers.stop_all();

    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), NAMESPACE);
    let before = statefulsets
        .get("demo-broker")
        .await
        .expect("the StatefulSet");
    let restarted = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    assert_eq!(reconciled(&restarted).await, "InvalidSpec");
    let key = clusters.get("demo").await.expect("the Cluster").key();
    assert!(
        restarted.controllers.get(&key).is_some(),
        "the controller is hosted whatever state one Topic is in"
    );
    let after = statefulsets
        .get("demo-broker")
        .await
        .expect("the StatefulSet");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the brokers are left as they are"
    );
    restarted.controllers.stop_all();
}

/// A scale-down on the real server, as the operator's ServiceAccount: the brokers that go
/// are cordoned and drained through the controller, and the StatefulSet shrinks only once
/// they hold nothing.
#[tokio::test]
async fn a_scale_down_shrinks_the_statefulset_only_after_the_drain_finished() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use tributary_broker::metadata::NewTopic;

    let (plane, admin, operator) = with_the_operators_rbac().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let spec = json!({"replicas": 5, "config": {"defaultReplicationFactor": 1}});
    clusters
        .create(&PostParams::default(), &cluster("demo", spec))
        .await
        .expect("a Cluster");
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), NAMESPACE);
    let ctx = std::sync::Arc::new(Context::new(operator, settings(), Controllers::default()));
    let reconciled = async || {
        let stored = clusters.get("demo").await.expect("the Cluster");
        reconcile(std::sync::Arc::new(stored), ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("the reconcile failed: {e}\n{}", plane.logs()));
        let statefulset = statefulsets
            .get("demo-broker")
            .await
            .expect("the StatefulSet");
        statefulset.spec.and_then(|s| s.replicas)
    };
    assert_eq!(reconciled().await, Some(5));
    let key = clusters.get("demo").await.expect("the Cluster").key();
    let controller = ctx.controllers.get(&key).expect("a hosted controller");
    brokers::register(&controller, 0..5).await;
    let topic = NewTopic {
        name: "events".into(),
        partitions: 10,
        replication_factor: Some(2),
        config: Default::default(),
    };
    controller
        .create_topic(topic, false)
        .await
        .expect("a topic");

    clusters
        .patch_scale(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("kubectl scale");
    assert_eq!(reconciled().await, Some(5), "not before the drain");
    assert_eq!(
        controller.cordoned().await.expect("the cordoned brokers"),
        [3, 4].into()
    );
    for _ in 0..100 {
        let moves = controller.rebalance_status().await.expect("a status").moves;
        if moves.is_empty() {
            break;
        }
        tributary_store_suite::catch_up(&controller).await;
        controller
            .advance_reassignments()
            .await
            .expect("the moves advance");
        let replicas = reconciled().await;
        if !controller
            .rebalance_status()
            .await
            .expect("a status")
            .moves
            .is_empty()
        {
            assert_eq!(replicas, Some(5), "the drain is not finished");
        }
    }
    assert_eq!(reconciled().await, Some(3));
    for p in controller
        .snapshot()
        .topics
        .values()
        .flat_map(|t| &t.partitions)
    {
        assert!(p.replicas.iter().all(|r| *r < 3), "{p:?}");
    }
    ctx.controllers.stop_all();
}
