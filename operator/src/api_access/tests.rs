use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tributary_broker::controller::ControllerConfig;

use super::*;
use crate::context::Context;
use crate::crd::{Cluster, Topic};
use crate::fake_api::FakeApi;
use crate::hosting::Controllers;
use crate::leader::LeaseConfig;
use crate::resources::Settings;
use crate::run::{RunConfig, run};
use crate::topic_reconciler;

const CLUSTER: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/clusters/demo";
const TOPIC: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/topics/orders";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/streams/statefulsets/demo-broker";

fn settings() -> Settings {
    Settings {
        controller_address: "controller:9093".into(),
    }
}

/// Runs the operator (leader election, pod label, watches, Cluster reconcile, shutdown)
/// and a Topic's whole life through a hosted controller, all against one fake API server.
async fn everything_the_operator_does(api: &FakeApi) {
    api.put(
        "/api/v1/namespaces/tributary-system/pods/op-a",
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "op-a", "namespace": "tributary-system"}}),
    );
    api.put(
        CLUSTER,
        json!({"apiVersion": "tributary.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "streams"},
            "spec": {"replicas": 1, "rack": {"topologyKey": "topology.kubernetes.io/zone"}}}),
    );
    // A scheduled broker pod, whose node gives its rack.
    api.put(
        "/api/v1/namespaces/streams/pods/demo-broker-0",
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "demo-broker-0", "namespace": "streams",
                "labels": {"app.kubernetes.io/name": "tributary", "app.kubernetes.io/instance": "demo",
                    "app.kubernetes.io/component": "broker"}},
            "spec": {"nodeName": "node-a", "containers": []}}),
    );
    api.put(
        "/api/v1/nodes/node-a",
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}),
    );
    let config = RunConfig {
        namespace: Some("streams".into()),
        settings: settings(),
        lease: LeaseConfig {
            namespace: "tributary-system".into(),
            name: "tributary-operator".into(),
            identity: "op-a".into(),
            duration: Duration::from_secs(3),
        },
        pod: Some(("tributary-system".into(), "op-a".into())),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(run(api.client(), config, grpc, http, async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Until the StatefulSet is applied and the Lease renewed at least once.
    while api.get(STATEFULSET).is_none()
        || !api
            .calls()
            .iter()
            .any(|c| c.method == "PUT" && c.path.contains("/leases/"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator did not reconcile"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // A Topic through a hosted controller: create, grow, delete.
    let ctx = Arc::new(Context::new(
        api.client(),
        settings(),
        Controllers::default(),
    ));
    api.put(
        TOPIC,
        json!({"apiVersion": "tributary.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "streams"},
            "spec": {"cluster": "demo", "partitions": 1}}),
    );
    let reconcile = async || {
        let topic: Topic = serde_json::from_value(api.get(TOPIC).unwrap()).unwrap();
        topic_reconciler::reconcile(Arc::new(topic), ctx.clone())
            .await
            .unwrap();
    };
    // Before the Cluster's controller runs: the Topic waits for it. The same Event again
    // (its condition was cleared in between) is a patch of the first.
    reconcile().await;
    let mut object = api.get(TOPIC).unwrap();
    object["status"] = json!({});
    api.put(TOPIC, object);
    reconcile().await;
    let cluster: Cluster = serde_json::from_value(api.get(CLUSTER).unwrap()).unwrap();
    let controller = ctx
        .controllers
        .ensure(&ctx.client, &cluster, ControllerConfig::default())
        .await
        .unwrap();
    let registration = crate::test_support::registration(0, "demo-broker-0", 9095, "disk");
    controller.register_broker(registration).await.unwrap();
    reconcile().await;
    let mut object = api.get(TOPIC).unwrap();
    object["spec"]["partitions"] = 2.into();
    api.put(TOPIC, object);
    reconcile().await;
    api.delete(TOPIC);
    reconcile().await;
    assert!(controller.snapshot().topics.is_empty());
}

#[tokio::test]
async fn every_api_call_the_operator_makes_is_declared() {
    let api = FakeApi::new();
    everything_the_operator_does(&api).await;
    let all: Vec<Access> = WATCHED_NAMESPACES
        .iter()
        .chain(OWN_NAMESPACE)
        .chain(CLUSTER_WIDE)
        .copied()
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for call in api.calls() {
        let (group, resource, verbs) = verbs_checked(&call.method, &call.path, call.created)
            .unwrap_or_else(|| panic!("unrecognized request {call:?}"));
        for verb in verbs {
            assert!(
                allows(&all, &group, &resource, verb),
                "{verb} {group}/{resource} ({} {}) is not declared in api_access",
                call.method,
                call.path
            );
            used.insert((group.clone(), resource.clone(), verb));
        }
    }
    // Declared and never used would be more than the operator needs. `watch` is a GET
    // of a collection, which the fake server sees as a list.
    for access in &all {
        for verb in access.verbs {
            let verb = if *verb == "watch" { "list" } else { verb };
            assert!(
                used.contains(&(access.group.to_string(), access.resource.to_string(), verb)),
                "{verb} {}/{} is declared but the operator never used it",
                access.group,
                access.resource
            );
        }
    }
}

#[tokio::test]
async fn an_apply_that_creates_its_object_needs_create_as_well_as_patch() {
    let api = FakeApi::new();
    let client = api.client();
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "streams");
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "demo"}, "spec": {"clusterIP": "None"}});
    let params = kube::api::PatchParams::apply("test");
    for _ in 0..2 {
        services
            .patch("demo", &params, &kube::api::Patch::Apply(&service))
            .await
            .unwrap();
    }
    let checked: Vec<_> = api
        .calls()
        .iter()
        .map(|c| verbs_checked(&c.method, &c.path, c.created).unwrap().2)
        .collect();
    assert_eq!(checked, [vec!["patch", "create"], vec!["patch"]]);
}

#[test]
fn requests_are_classified_by_group_resource_and_verb() {
    let cases = [
        (
            "GET",
            "/api/v1/namespaces/ns/configmaps/x",
            ("", "configmaps", "get"),
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/ns/statefulsets",
            ("apps", "statefulsets", "list"),
        ),
        (
            "GET",
            "/apis/tributary.dev/v1alpha1/clusters",
            ("tributary.dev", "clusters", "list"),
        ),
        (
            "PUT",
            "/apis/tributary.dev/v1alpha1/namespaces/ns/topics/t/status",
            ("tributary.dev", "topics/status", "update"),
        ),
        (
            "POST",
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            ("events.k8s.io", "events", "create"),
        ),
    ];
    for (method, path, (group, resource, verb)) in cases {
        assert_eq!(
            classify(method, path),
            Some((group.to_string(), resource.to_string(), verb)),
            "{method} {path}"
        );
    }
}
