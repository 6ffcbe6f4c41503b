use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::*;

fn example(file: &str) -> Cluster {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let mut cluster: Cluster =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cluster.metadata.namespace = Some("streams".into());
    cluster.metadata.uid = Some("5c6e4f8a-0000-4000-8000-000000000001".into());
    cluster
}

fn settings() -> Settings {
    Settings {
        controller_address: "controller.tributary-system.svc:9093".into(),
    }
}

fn pod(owned: &Owned) -> &PodSpec {
    owned
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn broker(owned: &Owned) -> &Container {
    &pod(owned).containers[0]
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    container.env.as_ref()?.iter().find(|e| e.name == name)
}

/// The topology key the brokers' anti-affinity spreads them across.
fn spread_key(owned: &Owned) -> String {
    let anti = pod(owned)
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    let terms = anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    terms[0].pod_affinity_term.topology_key.clone()
}

#[test]
fn a_cluster_becomes_exactly_these_objects_all_owned_by_it() {
    let cluster = example("cluster.yaml");
    let objects = owned(&cluster, &settings()).to_json();
    let kinds: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("ServiceAccount", "demo-broker"),
        ("Service", "demo-brokers"),
        ("Service", "demo"),
        ("ConfigMap", "demo-broker-config"),
        ("StatefulSet", "demo-broker"),
        ("PodDisruptionBudget", "demo-broker"),
    ];
    assert_eq!(
        kinds,
        expected
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .to_vec()
    );
    for object in &objects {
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Cluster", "{object}");
        assert_eq!(owner["name"], "demo");
        assert_eq!(owner["controller"], true);
        assert_eq!(object["metadata"]["namespace"], "streams");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "tributary-operator"
        );
    }
}

#[test]
fn volumes_are_kept_when_the_cluster_is_deleted_and_removed_with_a_drained_broker() {
    let cluster = example("cluster.yaml");
    let spec = owned(&cluster, &settings()).statefulset.spec.unwrap();
    let policy = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            policy.when_deleted.as_deref(),
            policy.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Delete"))
    );
    let security = spec.template.spec.unwrap().security_context.unwrap();
    assert_eq!(
        security.fs_group_change_policy.as_deref(),
        Some("OnRootMismatch")
    );

    let mut cluster = example("cluster.yaml");
    cluster.spec.persistent_volume_claim_retention_policy = serde_json::from_value(
        serde_json::json!({"whenDeleted": "Delete", "whenScaled": "Retain"}),
    )
    .unwrap();
    let policy = owned(&cluster, &settings())
        .statefulset
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(
        (
            policy.when_deleted.as_deref(),
            policy.when_scaled.as_deref()
        ),
        (Some("Delete"), Some("Retain"))
    );
}

#[test]
fn the_statefulset_runs_one_broker_per_replica_with_its_own_volume() {
    let cluster = example("cluster.yaml");
    let owned = owned(&cluster, &settings());
    let spec = owned.statefulset.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("demo-brokers"));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    let requests = claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["storage"].0, "10Gi");

    let container = broker(&owned);
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    assert_eq!(probe_path(&container.readiness_probe), "/in-sync");
    // A roll moves on only after a broker has been back in sync for a while.
    assert_eq!(
        owned.statefulset.spec.as_ref().unwrap().min_ready_seconds,
        Some(10)
    );
    assert_eq!(probe_path(&container.liveness_probe), "/healthz");
    let pre_stop = container
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap();
    assert_eq!(
        pre_stop.http_get.as_ref().unwrap().path.as_deref(),
        Some("/prestop")
    );
    let pod = pod(&owned);
    assert!(pod.termination_grace_period_seconds.unwrap() > 2 * SHUTDOWN_TIMEOUT_SECONDS);
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));

    // The broker id is the pod's ordinal; it advertises its stable DNS name.
    let id = env(container, "TRIBUTARY_BROKER_ID").unwrap();
    let field = id.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(
        field.field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    assert_eq!(
        env(container, "TRIBUTARY_ADVERTISE")
            .unwrap()
            .value
            .as_deref(),
        Some("$(POD_NAME).demo-brokers.$(POD_NAMESPACE).svc:9095")
    );
    assert!(env(container, "TRIBUTARY_RACK").is_none());
    assert_eq!(spread_key(&owned), "kubernetes.io/hostname");
}

#[test]
fn racks_overrides_and_storage_class_reach_the_pods() {
    let cluster = example("cluster-zones.yaml");
    let owned = owned(&cluster, &settings());
    let spec = owned.statefulset.spec.as_ref().unwrap();
    let pod = pod(&owned);
    let container = broker(&owned);
    // Pods do not carry their node's labels: the operator tells the controller the racks
    // (crate::racks), and the pods only spread over the topology key.
    assert!(env(container, "TRIBUTARY_RACK").is_none());
    assert_eq!(spread_key(&owned), "topology.kubernetes.io/zone");
    assert_eq!(pod.node_selector.as_ref().unwrap()["workload"], "streaming");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("streaming-critical")
    );
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert!(annotations.contains_key("tributary.dev/config-hash"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(
        claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("fast-ssd")
    );
}

#[test]
fn the_config_map_carries_the_cluster_defaults_and_a_change_rolls_the_pods() {
    let mut cluster = example("cluster-zones.yaml");
    let before = owned(&cluster, &settings());
    let data = before.config_map.data.as_ref().unwrap();
    assert_eq!(data["TRIBUTARY_DEFAULT_REPLICATION_FACTOR"], "3");
    assert_eq!(
        data["TRIBUTARY_CONTROLLER"],
        "controller.tributary-system.svc:9093"
    );
    let cluster_key = format!("{}/{}", cluster.namespace().unwrap(), cluster.name_any());
    assert_eq!(data["TRIBUTARY_CLUSTER"], cluster_key);
    assert_eq!(
        data["TRIBUTARY_TOPIC_DEFAULTS"],
        "min.insync.replicas=2,retention.ms=259200000,segment.bytes=536870912,unclean.leader.election.enable=false"
    );
    assert_eq!(data["TRIBUTARY_KAFKA_LISTEN"], "0.0.0.0:9092");
    assert_eq!(data["TRIBUTARY_AUTO_CREATE_TOPICS"], "true");
    let mut closed = cluster.clone();
    closed.spec.config.auto_create_topics = Some(false);
    let data = owned(&closed, &settings()).config_map.data.unwrap();
    assert_eq!(data["TRIBUTARY_AUTO_CREATE_TOPICS"], "false");
    let hash = |o: &Owned| {
        o.statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["tributary.dev/config-hash"]
            .clone()
    };
    assert_eq!(hash(&before), hash(&owned(&cluster, &settings())), "stable");
    cluster.spec.config.retention_ms = Some(1000);
    assert_ne!(hash(&before), hash(&owned(&cluster, &settings())));
}

#[test]
fn without_a_default_the_replication_factor_is_three_or_the_broker_count() {
    let mut cluster = example("cluster.yaml");
    cluster.spec.config.default_replication_factor = None;
    assert_eq!(cluster.default_replication_factor(), 3);
    cluster.spec.replicas = 1;
    assert_eq!(cluster.default_replication_factor(), 1);
}

#[test]
fn the_services_give_pods_stable_names_and_clients_one_address() {
    let cluster = example("cluster.yaml");
    let owned = owned(&cluster, &settings());
    let headless = owned.headless_service.spec.as_ref().unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let client = owned.client_service.spec.as_ref().unwrap();
    assert_eq!(client.ports.as_ref().unwrap()[0].port, GRPC_PORT);
    assert_eq!(client.selector, Some(selector(&cluster)));
    let pdb = owned.pod_disruption_budget.spec.as_ref().unwrap();
    assert_eq!(
        pdb.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}
