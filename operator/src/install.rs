//! Everything that runs the operator, as `tributary-operator install` prints it for
//! `kubectl apply -f -`: the CRDs, its namespace, ServiceAccount, the RBAC rules of
//! [`crate::api_access`], a Deployment of two replicas (one leads, by Lease; they prefer
//! different nodes) with a PodDisruptionBudget, and the controller Service, which selects
//! only the leader's pod. The Helm chart makes the same objects from values.

use serde_json::{Value, json};

use crate::api_access;
use crate::crd;
use crate::leader::LEADER_LABEL;

/// How the operator is installed.
#[derive(Debug, Clone)]
pub struct Install {
    /// The operator's own namespace.
    pub namespace: String,
    /// The namespace it watches; None watches all (a ClusterRole).
    pub watch: Option<String>,
    pub image: String,
}

/// The operator image this build belongs to.
pub fn default_image() -> String {
    format!(
        "ghcr.io/tributary-dev/tributary-operator:{}",
        env!("CARGO_PKG_VERSION")
    )
}

const NAME: &str = "tributary-operator";
/// The gRPC port brokers reach their controllers on.
pub const CONTROLLER_PORT: i32 = 9093;
/// Health and metrics.
pub const HTTP_PORT: i32 = 8080;

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "operator"})
}

/// The RBAC objects: the rules for the watched namespaces (a Role there, or a ClusterRole),
/// for the operator's own namespace (Lease, leader label) and for Nodes (a ClusterRole
/// `tributary-operator-<namespace>-nodes`, for racks), each with its binding.
pub fn rbac(install: &Install) -> Vec<Value> {
    let subject = json!([{"kind": "ServiceAccount", "name": NAME, "namespace": install.namespace}]);
    let role_ref = |kind: &str, name: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name});
    let watched_rules = api_access::rules(api_access::WATCHED_NAMESPACES);
    let (watched, watched_binding) = match &install.watch {
        Some(ns) => (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
                "rules": watched_rules}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
                "roleRef": role_ref("Role", NAME), "subjects": subject}),
        ),
        None => (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": NAME, "labels": labels()},
                "rules": watched_rules}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": NAME, "labels": labels()},
                "roleRef": role_ref("ClusterRole", NAME), "subjects": subject}),
        ),
    };
    let own_name = format!("{NAME}-leader-election");
    // Cluster-scoped: named after the install's namespace, so installs do not collide.
    let nodes_name = format!("{NAME}-{}-nodes", install.namespace);
    vec![
        watched,
        watched_binding,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": own_name, "namespace": install.namespace, "labels": labels()},
            "rules": api_access::rules(api_access::OWN_NAMESPACE)}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": own_name, "namespace": install.namespace, "labels": labels()},
            "roleRef": role_ref("Role", &own_name), "subjects": subject}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": nodes_name, "labels": labels()},
            "rules": api_access::rules(api_access::CLUSTER_WIDE)}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": nodes_name, "labels": labels()},
            "roleRef": role_ref("ClusterRole", &nodes_name), "subjects": subject}),
    ]
}

/// Every object, CRDs first.
pub fn objects(install: &Install) -> Vec<Value> {
    let ns = &install.namespace;
    let mut objects: Vec<Value> = crd::all()
        .into_iter()
        .map(|(_, c)| serde_json::to_value(c).expect("CRDs serialize"))
        .collect();
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels()}}));
    objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels()}}));
    objects.extend(rbac(install));
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "TRIBUTARY_CONTROLLER_ADDRESS",
            "value": format!("{NAME}-controller.{ns}.svc:{CONTROLLER_PORT}")}),
    ];
    if let Some(watch) = &install.watch {
        env.push(json!({"name": "TRIBUTARY_WATCH_NAMESPACE", "value": watch}));
    }
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 10});
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels()},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": NAME,
                    // It hosts the cluster controllers: replicas prefer different nodes.
                    "affinity": {"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": labels()}},
                        }],
                    }},
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "operator",
                        "image": install.image,
                        "args": ["run"],
                        "env": env,
                        "ports": [
                            {"name": "controller", "containerPort": CONTROLLER_PORT},
                            {"name": "http", "containerPort": HTTP_PORT},
                        ],
                        "readinessProbe": probe("/readyz"),
                        "livenessProbe": probe("/healthz"),
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }));
    // A drain evicts one replica at a time: another keeps (or takes) the Lease.
    objects.push(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels()}},
    }));
    let mut selector = labels();
    // The leader's pod is labelled with the Lease's name, the default one here.
    selector[LEADER_LABEL] = NAME.into();
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{NAME}-controller"), "namespace": ns, "labels": labels()},
        "spec": {
            "selector": selector,
            "ports": [{"name": "controller", "port": CONTROLLER_PORT, "targetPort": "controller"}],
        },
    }));
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(watch: Option<&str>) -> Install {
        Install {
            namespace: "tributary-system".into(),
            watch: watch.map(str::to_string),
            image: default_image(),
        }
    }

    fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
        objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    #[test]
    fn the_controller_service_reaches_only_the_leader_and_brokers_are_told_its_address() {
        let objects = objects(&install(None));
        let service = kind(&objects, "Service")[0];
        assert_eq!(service["spec"]["selector"][LEADER_LABEL], NAME);
        let deployment = kind(&objects, "Deployment")[0];
        assert_eq!(deployment["spec"]["replicas"], 2);
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"POD_NAME") && names.contains(&"POD_NAMESPACE"));
        let address = env
            .iter()
            .find(|e| e["name"] == "TRIBUTARY_CONTROLLER_ADDRESS")
            .unwrap();
        assert_eq!(
            address["value"],
            format!(
                "{}.tributary-system.svc:{CONTROLLER_PORT}",
                service["metadata"]["name"].as_str().unwrap()
            )
        );
        // The pod template carries every label the Service selects but the leader's,
        // which the leader adds to its own pod.
        let template = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            if key != LEADER_LABEL {
                assert_eq!(&template[key], value, "{key}");
            }
        }
        assert_eq!(kind(&objects, "CustomResourceDefinition").len(), 2);
    }

    #[test]
    fn watching_one_namespace_needs_cluster_wide_access_only_to_read_nodes() {
        let objects = objects(&install(Some("streams")));
        let cluster_roles = kind(&objects, "ClusterRole");
        assert_eq!(cluster_roles.len(), 1);
        assert_eq!(
            cluster_roles[0]["rules"],
            json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
        );
        assert_eq!(kind(&objects, "ClusterRoleBinding").len(), 1);
        let roles = kind(&objects, "Role");
        assert!(
            roles
                .iter()
                .any(|r| r["metadata"]["namespace"] == "streams")
        );
        let deployment = kind(&objects, "Deployment")[0];
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "TRIBUTARY_WATCH_NAMESPACE" && e["value"] == "streams")
        );
    }
}
