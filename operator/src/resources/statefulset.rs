use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    DATA_DIR, GRPC_PORT, HTTP_PORT, KAFKA_PORT, Names, POD_INDEX_LABEL, SHUTDOWN_TIMEOUT_SECONDS,
    owned_meta, selector,
};
use crate::crd::{Cluster, RESTART_ANNOTATION};

/// How long a broker stays ready before a rolling restart moves on to the next.
const MIN_READY_SECONDS: i32 = 10;
/// The user id the broker runs as (the image's non-root user).
const BROKER_UID: i64 = 65532;

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_get(path: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.to_string()),
        port: IntOrString::String("http".into()),
        ..HTTPGetAction::default()
    }
}

/// Per-pod settings: the broker id is the pod's ordinal, the advertised address its DNS
/// name. (Pods do not carry their node's labels: the operator gives the controller each
/// broker's rack, see `crate::racks`.)
fn pod_env(cluster: &Cluster) -> Vec<EnvVar> {
    let names = Names::of(cluster);
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env(
            "TRIBUTARY_BROKER_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
        EnvVar {
            name: "TRIBUTARY_ADVERTISE".into(),
            value: Some(format!(
                "$(POD_NAME).{}.$(POD_NAMESPACE).svc:{GRPC_PORT}",
                names.headless
            )),
            ..EnvVar::default()
        },
    ]
}

/// Brokers prefer different nodes (or racks): losing one takes one replica of a partition.
fn spread(cluster: &Cluster) -> Affinity {
    let topology_key = cluster
        .spec
        .rack
        .as_ref()
        .map_or("kubernetes.io/hostname".to_string(), |r| {
            r.topology_key.clone()
        });
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key,
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector(cluster)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn broker_container(cluster: &Cluster) -> Container {
    let spec = &cluster.spec;
    Container {
        name: "broker".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec!["tributary-broker".into()]),
        env: Some(pod_env(cluster)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: Names::of(cluster).config_map,
                ..ConfigMapEnvSource::default()
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("kafka".into()),
                container_port: KAFKA_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            },
        ]),
        // Ready once back in the in-sync set of every partition the broker follows: a
        // rolling restart and a drain (through the PodDisruptionBudget) wait for that
        // before they stop the next broker, so no partition drops below min.insync.
        readiness_probe: Some(Probe {
            http_get: Some(http_get("/in-sync")),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // /healthz answers from the start, while logs are still being recovered.
        liveness_probe: Some(Probe {
            http_get: Some(http_get("/healthz")),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                http_get: Some(http_get("/prestop")),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn volume_claim(cluster: &Cluster) -> PersistentVolumeClaim {
    let storage = &cluster.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector(cluster)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The brokers: one pod per broker id, each with its own volume, started in parallel.
/// Config changes roll the pods (the ConfigMap's hash is a pod annotation).
pub fn statefulset(cluster: &Cluster, config_hash: &str) -> StatefulSet {
    let names = Names::of(cluster);
    let retention = &cluster.spec.persistent_volume_claim_retention_policy;
    let overrides = cluster.spec.pod_template.clone().unwrap_or_default();
    let mut labels = overrides.labels.clone();
    labels.extend(selector(cluster));
    let mut annotations = overrides.annotations.clone();
    annotations.insert("tributary.dev/config-hash".into(), config_hash.to_string());
    // A new value of the Cluster's restart annotation changes the template: a rolling restart.
    if let Some(restart) = cluster.annotations().get(RESTART_ANNOTATION) {
        annotations.insert(RESTART_ANNOTATION.into(), restart.clone());
    }
    StatefulSet {
        metadata: owned_meta(cluster, &names.statefulset),
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.spec.replicas),
            service_name: Some(names.headless.clone()),
            pod_management_policy: Some("Parallel".into()),
            // A broker counts as available (for the roll's next step) only once it has been
            // back in sync for this long, not at the first probe that says so.
            min_ready_seconds: Some(MIN_READY_SECONDS),
            selector: LabelSelector {
                match_labels: Some(selector(cluster)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.statefulset.clone()),
                    automount_service_account_token: Some(false),
                    // The preStop handover and the broker's own shutdown, with room to spare.
                    termination_grace_period_seconds: Some(2 * SHUTDOWN_TIMEOUT_SECONDS + 15),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(BROKER_UID),
                        run_as_group: Some(BROKER_UID),
                        fs_group: Some(BROKER_UID),
                        // Ownership is fixed once, not walked over every log file at
                        // each start.
                        fs_group_change_policy: Some("OnRootMismatch".into()),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![broker_container(cluster)],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    affinity: Some(
                        overrides
                            .affinity
                            .clone()
                            .unwrap_or_else(|| spread(cluster)),
                    ),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then(|| overrides.tolerations.clone()),
                    priority_class_name: overrides.priority_class_name.clone(),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(cluster)]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.when_deleted.as_str().into()),
                    when_scaled: Some(retention.when_scaled.as_str().into()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
