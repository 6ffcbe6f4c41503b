//! Every Kubernetes API call the operator makes, in one place: what RBAC must grant it.
//! A test runs the reconcilers, the metadata store, leader election and the leader label
//! against the fake API server and fails on any call not listed here; the Helm chart's
//! Role is checked against this list, and `tributary-operator rbac` prints it.

use serde_json::{Value, json};

/// Verbs on one resource, and why the operator needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The API group; "" for the core group.
    pub group: &'static str,
    /// The resource, with `/status` for the status subresource.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

/// What the operator does in the namespaces it watches.
pub const WATCHED_NAMESPACES: &[Access] = &[
    Access {
        group: "tributary.dev",
        resource: "clusters",
        verbs: &["get", "list", "watch"],
        why: "reconcile Clusters",
    },
    Access {
        group: "tributary.dev",
        resource: "clusters/status",
        verbs: &["patch"],
        why: "report phase, conditions and brokers",
    },
    Access {
        group: "tributary.dev",
        resource: "topics",
        verbs: &["get", "list", "watch", "patch"],
        why: "reconcile Topics; add and remove the finalizer",
    },
    Access {
        group: "tributary.dev",
        resource: "topics/status",
        verbs: &["update", "patch"],
        why: "the controller's partition records (update, with resourceVersion); conditions (patch)",
    },
    Access {
        group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "apply each Cluster's brokers; watch their rollout",
    },
    Access {
        group: "",
        resource: "services",
        verbs: &["create", "patch"],
        why: "apply each Cluster's headless and client Services",
    },
    Access {
        group: "",
        resource: "serviceaccounts",
        verbs: &["create", "patch"],
        why: "apply each Cluster's ServiceAccount",
    },
    Access {
        group: "",
        resource: "configmaps",
        verbs: &["get", "create", "update", "patch"],
        why: "apply the brokers' configuration; keep the controller's metadata",
    },
    Access {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["create", "patch"],
        why: "apply each Cluster's PodDisruptionBudget",
    },
    Access {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        why: "record transitions on Clusters and Topics",
    },
    Access {
        group: "",
        resource: "pods",
        verbs: &["list"],
        why: "find the nodes a Cluster's brokers run on, for their racks",
    },
];

/// What the operator reads outside any namespace, whatever namespaces it watches.
pub const CLUSTER_WIDE: &[Access] = &[Access {
    group: "",
    resource: "nodes",
    verbs: &["get"],
    why: "read the rack label (spec.rack.topologyKey) of the nodes brokers run on",
}];

/// What the operator does in its own namespace.
pub const OWN_NAMESPACE: &[Access] = &[
    Access {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        why: "leader election",
    },
    Access {
        group: "",
        resource: "pods",
        verbs: &["list", "patch"],
        why: "label the leader's pod, which the controller Service selects",
    },
];

/// Whether `verb` on `group`/`resource` is in `accesses`.
pub fn allows(accesses: &[Access], group: &str, resource: &str, verb: &str) -> bool {
    accesses
        .iter()
        .any(|a| a.group == group && a.resource == resource && a.verbs.contains(&verb))
}

/// RBAC rules granting `accesses`, one per resource.
pub fn rules(accesses: &[Access]) -> Vec<Value> {
    accesses
        .iter()
        .map(|a| {
            json!({
                "apiGroups": [a.group],
                "resources": [a.resource],
                "verbs": a.verbs,
            })
        })
        .collect()
}

/// The verbs a Kubernetes API server authorizes for a request: the one its method maps to
/// (see [`classify`]), and `create` too for a PATCH that creates its object, since
/// server-side apply of an absent object is a create and is authorized as one.
pub fn verbs_checked(
    method: &str,
    path: &str,
    creates: bool,
) -> Option<(String, String, Vec<&'static str>)> {
    let (group, resource, verb) = classify(method, path)?;
    let mut verbs = vec![verb];
    if verb == "patch" && creates {
        verbs.push("create");
    }
    Some((group, resource, verbs))
}

/// The group, resource (with subresource) and verb of a request, from its method and path
/// (`/api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]]` or `/apis/GROUP/VERSION/...`).
pub fn classify(method: &str, path: &str) -> Option<(String, String, &'static str)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_string(), resource, verb))
}

#[cfg(test)]
mod tests;
