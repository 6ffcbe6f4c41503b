//! A local Kubernetes cluster for the e2e suite (see `tributary_e2e::local`), and the
//! sandbox its node agents start containers through. `e2e/local.sh` drives it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::{Api, Client, ResourceExt};
use tributary_e2e::local::control_plane::{ControlPlane, ControlPlaneConfig};
use tributary_e2e::local::pods::Settings;
use tributary_e2e::local::runtime::{Environment, Images};
use tributary_e2e::local::{NodeAgent, sandbox, volumes};

#[derive(Parser)]
#[command(
    about = "A local Kubernetes control plane whose pods run as processes, for Tributary's e2e tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts the control plane and the node agents; runs until SIGTERM or SIGINT, then
    /// stops every pod and the control plane.
    Up {
        /// State directory (certificates, etcd, logs, pods, kubeconfig); made if missing.
        #[arg(long)]
        dir: PathBuf,
        /// Where kube-apiserver, kube-controller-manager, kube-scheduler and etcd are.
        #[arg(long)]
        bin: PathBuf,
        /// Nodes to register, each in a zone of its own (zone-a, zone-b, ...).
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// REPOSITORY=PROGRAM[,ARG...]: the program standing in for an image's
        /// entrypoint; its siblings are the image's other programs.
        #[arg(long = "image", required = true)]
        images: Vec<String>,
        /// The bind shim library preloaded into every container.
        #[arg(long)]
        bind_shim: PathBuf,
        /// Written (with the kubeconfig's path) once every node is ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Server-side applies every object of the YAML files, CRDs first, then waits (as
    /// `helm install --wait`) until each Deployment among them has an available replica.
    Apply {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// How long the Deployments may take to become available.
        #[arg(long, default_value_t = 300)]
        wait_seconds: u64,
    },
    /// Internal: runs a container as the spec file says (see `local::sandbox`).
    Sandbox { spec: PathBuf },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Sandbox { spec } = &cli.command {
        // Before any thread exists: unshare and setns need a single-threaded process.
        let text = std::fs::read(spec).with_context(|| format!("reading {}", spec.display()))?;
        let spec: sandbox::SandboxSpec = serde_json::from_slice(&text)?;
        return Err(sandbox::run(&spec));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=off,kube_runtime=warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up {
                dir,
                bin,
                nodes,
                images,
                bind_shim,
                ready_file,
            } => up(dir, bin, nodes, images, bind_shim, ready_file).await,
            Command::Apply {
                files,
                wait_seconds,
            } => {
                let client = Client::try_default().await?;
                let deployments = apply(&client, &files).await?;
                wait_available(&client, &deployments, wait_seconds).await
            }
            Command::Sandbox { .. } => unreachable!("handled above"),
        }
    })
}

async fn up(
    dir: PathBuf,
    bin: PathBuf,
    nodes: u8,
    image_maps: Vec<String>,
    bind_shim: PathBuf,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !(1..=26).contains(&nodes) {
        bail!("--nodes {nodes}: between 1 and 26");
    }
    let mut images = Images::default();
    for mapping in &image_maps {
        images.add(mapping)?;
    }
    let bind_shim = bind_shim
        .canonicalize()
        .with_context(|| format!("the bind shim {}", bind_shim.display()))?;
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    // From the start: a stop asked for while starting still stops what has started (the
    // control plane's Drop and the agents' kill_all).
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let config = ControlPlaneConfig {
        dir: dir.clone(),
        bin,
    };
    let plane = tokio::select! {
        plane = ControlPlane::start(config) => plane?,
        _ = terminate.recv() => bail!("stopped while the control plane started"),
        _ = interrupt.recv() => bail!("interrupted while the control plane started"),
    };
    let client = plane.client()?;
    let sandbox = std::env::current_exe()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    for index in 0..nodes {
        let zone = (b'a' + index) as char;
        let name = format!("node-{zone}");
        let (cert, key) = plane.issue_serving_cert(&name, &[IpAddr::V4(Ipv4Addr::LOCALHOST)])?;
        let agent = NodeAgent {
            labels: BTreeMap::from([
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{zone}"),
                ),
                (
                    "topology.kubernetes.io/region".to_string(),
                    "local".to_string(),
                ),
            ]),
            settings: Settings {
                node: name.clone(),
                dir: dir.join("nodes").join(&name),
                network: index + 1,
                images: images.clone(),
                machine: Environment {
                    api_host: "127.0.0.1".into(),
                    api_port: plane.api_port(),
                    host_ip: Ipv4Addr::LOCALHOST,
                    bind_shim: bind_shim.clone(),
                },
                sandbox: sandbox.clone(),
            },
            name,
            cert,
            key,
        };
        let (client, stop) = (client.clone(), stop_rx.clone());
        agents.push(tokio::spawn(async move { agent.run(client, stop).await }));
    }
    let stopped = tokio::select! {
        ready = wait_nodes_ready(&client, nodes) => {
            ready?;
            false
        }
        _ = terminate.recv() => true,
        _ = interrupt.recv() => true,
    };
    if stopped {
        let _ = stop_tx.send(true);
        for agent in agents {
            let _ = agent.await;
        }
        bail!("stopped while the nodes registered");
    }
    let kubeconfig = plane.kubeconfig_path();
    if let Some(file) = &ready_file {
        std::fs::write(file, format!("{}\n", kubeconfig.display()))?;
    }
    eprintln!("local cluster ready: KUBECONFIG={}", kubeconfig.display());
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping the pods and the control plane");
    let _ = stop_tx.send(true);
    for agent in agents {
        if let Ok(Err(error)) = agent.await {
            eprintln!("node agent: {error:#}");
        }
    }
    remove_volumes(&client).await;
    drop(plane);
    Ok(())
}

/// The folders of the volumes still provisioned (the provisioner removes a volume's folder
/// only when its claim is deleted, and the cluster goes away with claims left).
async fn remove_volumes(client: &Client) {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let Ok(volumes) = Api::<PersistentVolume>::all(client.clone())
        .list(&Default::default())
        .await
    else {
        return;
    };
    for volume in volumes {
        let path = volume
            .spec
            .and_then(|s| s.host_path)
            .map(|h| PathBuf::from(h.path));
        // Only what the test provisioner made.
        if let Some(path) = path.filter(|p| p.starts_with(volumes::PROVISIONER_ROOT)) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

async fn wait_nodes_ready(client: &Client, nodes: u8) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let api: Api<Node> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = api.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                    && n.spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_none_or(|t| t.is_empty())
            })
            .count();
        if ready >= nodes as usize {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{ready} of {nodes} nodes ready and untainted after 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Waits until each (namespace, name) Deployment has an available replica.
async fn wait_available(
    client: &Client,
    deployments: &[(String, String)],
    seconds: u64,
) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    for (namespace, name) in deployments {
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        loop {
            let deployment = api.get(name).await?;
            let available = deployment
                .status
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            if available >= 1 {
                eprintln!("Deployment {namespace}/{name}: {available} available");
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the Deployment {namespace}/{name} has no available replica after {seconds} s"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// Server-side apply of every document, CRDs first (and established before the rest);
/// returns the Deployments applied.
async fn apply(client: &Client, files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut objects = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml::from_value(value)
                .with_context(|| format!("an object of {}", file.display()))?;
            objects.push(object);
        }
    }
    objects.sort_by_key(|o| {
        let kind = o
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default();
        match kind {
            "CustomResourceDefinition" => 0,
            "Namespace" => 1,
            _ => 2,
        }
    });
    let params = PatchParams::apply("tributary-e2e-local").force();
    let mut discovery = Discovery::new(client.clone()).run().await?;
    let mut crds_applied = false;
    let mut deployments = Vec::new();
    for object in objects {
        let types = object
            .types
            .clone()
            .context("an object without apiVersion and kind")?;
        let is_crd = types.kind == "CustomResourceDefinition";
        if !is_crd && crds_applied {
            // The new kinds are served once established; discover them again.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            discovery = Discovery::new(client.clone()).run().await?;
            crds_applied = false;
        }
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &types.kind);
        let (resource, capabilities): (ApiResource, ApiCapabilities) =
            discovery.resolve_gvk(&gvk).with_context(|| {
                format!(
                    "the API server does not serve {}/{}",
                    types.api_version, types.kind
                )
            })?;
        let api: Api<DynamicObject> = match (capabilities.scope, object.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        api.patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {}", types.kind, object.name_any()))?;
        eprintln!("applied {} {}", types.kind, object.name_any());
        crds_applied |= is_crd;
        if types.kind == "Deployment" {
            deployments.push((
                object.namespace().unwrap_or_else(|| "default".into()),
                object.name_any(),
            ));
        }
    }
    Ok(deployments)
}

use serde::Deserialize as _;
