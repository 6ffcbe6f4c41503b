//! A Node object for the agent: registered with its labels (zone and region for rack
//! tests), Ready, advertising WebSocket streaming (`ExtendWebSocketsToKubelet`, so the API
//! server hands `exec` straight to the agent's server), and kept alive with a Lease in
//! `kube-node-lease` every 10 s, as the kubelet does.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::runtime::now;

const FIELD_MANAGER: &str = "tributary-e2e-node";
const LEASE_SECONDS: i32 = 40;
const RENEW: Duration = Duration::from_secs(10);

pub struct Registration {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub port: u16,
}

impl Registration {
    pub async fn register(&self, client: &Client) -> anyhow::Result<()> {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert(
            "kubernetes.io/arch".into(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        );
        let nodes: Api<Node> = Api::all(client.clone());
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
        });
        nodes
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&node),
            )
            .await
            .with_context(|| format!("registering the node {}", self.name))?;
        self.report(client).await
    }

    /// The node's status: Ready now, its address and the agent's port.
    pub async fn report(&self, client: &Client) -> anyhow::Result<()> {
        let t = now();
        let condition = |kind: &str, status: &str, reason: &str| {
            json!({"type": kind, "status": status, "reason": reason,
                   "lastHeartbeatTime": t, "lastTransitionTime": t})
        };
        let capacity =
            json!({"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"});
        let status = json!({"status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "declaredFeatures": ["ExtendWebSocketsToKubelet"],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                "osImage": "tributary e2e node agent", "containerRuntimeVersion": "e2e://1",
                "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }});
        Api::<Node>::all(client.clone())
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(status),
            )
            .await
            .with_context(|| format!("reporting the status of the node {}", self.name))?;
        Ok(())
    }

    async fn renew(&self, client: &Client) -> anyhow::Result<()> {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
        });
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .with_context(|| format!("renewing the Lease of the node {}", self.name))?;
        Ok(())
    }

    /// Renews the Lease and re-reports the status until the task is dropped. A Node that
    /// was deleted (a test taking the node away) registers again at the next beat, as a
    /// kubelet does when its machine comes back.
    pub async fn heartbeat(&self, client: &Client) {
        let mut beats = 0u32;
        loop {
            if let Ok(None) = Api::<Node>::all(client.clone()).get_opt(&self.name).await {
                tracing::info!(node = %self.name, "the Node was deleted: registering it again");
                if let Err(error) = self.register(client).await {
                    tracing::warn!(node = %self.name, "{error:#}");
                }
            }
            if let Err(error) = self.renew(client).await {
                tracing::warn!(node = %self.name, "{error:#}");
            }
            if beats % 6 == 5
                && let Err(error) = self.report(client).await
            {
                tracing::debug!(node = %self.name, "{error:#}");
            }
            beats = beats.wrapping_add(1);
            tokio::time::sleep(RENEW).await;
        }
    }
}
