//! What a failed test leaves behind before its namespace goes: the namespace's Clusters,
//! Topics, StatefulSets, pods and claims as YAML, its events in order, and every pod's
//! log (and the log of its previous container, after a restart). They go to
//! `$TRIBUTARY_E2E_LOGS/<namespace>/` (default `target/e2e-logs/<namespace>/`), which
//! `e2e/kind.sh` keeps with the operator's logs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_operator::crd::{Cluster, Topic};

/// Where diagnostics go.
pub const LOGS_VARIABLE: &str = "TRIBUTARY_E2E_LOGS";

fn directory(namespace: &str) -> PathBuf {
    std::env::var_os(LOGS_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target").join("e2e-logs"))
        .join(namespace)
}

/// Writes everything it can read; what it cannot is noted in the files, not fatal.
pub async fn collect(client: &Client, namespace: &str) {
    let dir = directory(namespace);
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot write diagnostics to {}: {error}", dir.display());
        return;
    }
    let mut objects = String::new();
    objects += &yaml_of::<Cluster>(client, namespace).await;
    objects += &yaml_of::<Topic>(client, namespace).await;
    objects += &yaml_of::<StatefulSet>(client, namespace).await;
    objects += &yaml_of::<Pod>(client, namespace).await;
    objects += &yaml_of::<PersistentVolumeClaim>(client, namespace).await;
    write(&dir.join("objects.yaml"), &objects);
    write(&dir.join("events.txt"), &events(client, namespace).await);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let names = match pods.list(&ListParams::default()).await {
        Ok(list) => list.items.iter().map(ResourceExt::name_any).collect(),
        Err(_) => Vec::new(),
    };
    for pod in names {
        for previous in [false, true] {
            let params = LogParams {
                previous,
                timestamps: true,
                ..LogParams::default()
            };
            if let Ok(log) = pods.logs(&pod, &params).await {
                let suffix = if previous { ".previous.log" } else { ".log" };
                write(&dir.join(format!("{pod}{suffix}")), &log);
            }
        }
    }
    eprintln!("diagnostics of {namespace} are in {}", dir.display());
}

async fn yaml_of<K>(client: &Client, namespace: &str) -> String
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    match Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .map(|o| {
                let yaml = serde_yaml::to_string(o).unwrap_or_else(|e| format!("# {e}\n"));
                format!("# {kind} {}\n{yaml}---\n", o.name_any())
            })
            .collect(),
        Err(error) => format!("# cannot list {kind}: {error}\n---\n"),
    }
}

async fn events(client: &Client, namespace: &str) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut events = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(error) => return format!("cannot list events: {error}\n"),
    };
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default()
    };
    events.sort_by_key(when);
    let mut out = String::new();
    for event in &events {
        let _ = writeln!(
            out,
            "{} {} {} {}/{}: {}",
            when(event),
            event.type_.as_deref().unwrap_or("-"),
            event.reason.as_deref().unwrap_or("-"),
            event.involved_object.kind.as_deref().unwrap_or("-"),
            event.involved_object.name.as_deref().unwrap_or("-"),
            event.message.as_deref().unwrap_or("")
        );
    }
    out
}

fn write(path: &Path, text: &str) {
    if let Err(error) = std::fs::write(path, text) {
        eprintln!("cannot write {}: {error}", path.display());
    }
}
