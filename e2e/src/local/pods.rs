//! The pods bound to one node: started when they appear, their containers restarted per
//! `restartPolicy` (1 s back-off doubling to 30 s, shorter than the kubelet's 10 s to
//! 5 min so tests do not wait minutes), probed, stopped with their preStop hook, SIGTERM
//! and SIGKILL after the grace period when deleted, and their status written back.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::names::Names;
use super::probes;
use super::runtime::{self, Environment, Images, Process, now};
use super::sandbox::SandboxSpec;
use super::volumes::{NotYet, PodVolumes};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the exec and log server needs of a running container.
#[derive(Clone)]
pub struct ExecTarget {
    pub pid: Option<u32>,
    /// The container's sandbox, for a command run inside it.
    pub template: SandboxSpec,
    pub image: String,
    pub log: PathBuf,
    pub previous_log: PathBuf,
}

/// (namespace, pod, container) → what exec and logs use.
pub type Targets = Arc<Mutex<HashMap<(String, String, String), ExecTarget>>>;

pub struct Settings {
    pub node: String,
    pub dir: PathBuf,
    /// The pods' addresses are 10.244.N.x (see [`super::POD_NETWORK`]).
    pub network: u8,
    pub images: Images,
    pub machine: Environment,
    /// This program, which runs the sandbox.
    pub sandbox: PathBuf,
}

struct ContainerRun {
    container: Container,
    template: SandboxSpec,
    process: Option<Process>,
    last_exit: Option<(runtime::Exit, Time)>,
    restarts: i32,
    backoff: Duration,
    next_start: Option<Instant>,
    ready: Arc<AtomicBool>,
    probes: Vec<JoinHandle<()>>,
    log: PathBuf,
    waiting: Option<(String, String)>,
}

struct PodRun {
    uid: String,
    namespace: String,
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    hosts_file: PathBuf,
    containers: Vec<ContainerRun>,
    started: Time,
    terminating: Option<Instant>,
    ready_since: Option<Time>,
    last_status: Value,
    /// Why the pod could not start, shown in its status.
    failing: Option<String>,
}

pub struct Pods {
    settings: Arc<Settings>,
    client: Client,
    runs: HashMap<String, PodRun>,
    /// Pods that could not start yet: when to try again.
    waiting: HashMap<String, (Instant, String)>,
    next_ip: u32,
    pub targets: Targets,
}

impl Pods {
    pub fn new(settings: Arc<Settings>, client: Client) -> Self {
        Self {
            settings,
            client,
            runs: HashMap::new(),
            waiting: HashMap::new(),
            next_ip: 2,
            targets: Targets::default(),
        }
    }

    fn allocate_ip(&mut self) -> Ipv4Addr {
        loop {
            let n = self.next_ip;
            self.next_ip = if n >= 254 { 2 } else { n + 1 };
            let ip = Ipv4Addr::new(10, 244, self.settings.network, n as u8);
            if self.runs.values().all(|r| r.ip != ip) {
                return ip;
            }
        }
    }

    /// One pass over the node's pods (as the watch last saw them).
    pub async fn sync(&mut self, pods: &[Arc<Pod>], names: &Names) {
        let present: HashMap<String, &Arc<Pod>> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        // Gone from the API (force-deleted, or the node's pods garbage-collected): stop at
        // once, as the kubelet does with orphaned pods.
        let gone: Vec<String> = self
            .runs
            .keys()
            .filter(|uid| !present.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(run) = self.runs.remove(&uid) {
                self.stop_now(&run);
                self.forget(run);
            }
        }
        self.waiting.retain(|uid, _| present.contains_key(uid));
        for (uid, pod) in present {
            if let Err(error) = self.sync_pod(&uid, pod, names).await {
                tracing::warn!(pod = %pod.name_any(), "{error:#}");
            }
        }
    }

    async fn sync_pod(&mut self, uid: &str, pod: &Pod, names: &Names) -> anyhow::Result<()> {
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if !self.runs.contains_key(uid) {
            if pod.metadata.deletion_timestamp.is_some() {
                // Never started here (or its processes are gone): nothing to stop.
                return self.delete_finally(pod).await;
            }
            if finished {
                return Ok(());
            }
            if let Some((at, _)) = self.waiting.get(uid)
                && Instant::now() < *at
            {
                return Ok(());
            }
            match self.start_pod(pod, names).await {
                Ok(run) => {
                    self.waiting.remove(uid);
                    self.runs.insert(uid.to_string(), run);
                }
                Err(error) => {
                    let retry = Instant::now() + Duration::from_secs(1);
                    let message = format!("{error:#}");
                    if error.downcast_ref::<NotYet>().is_none() {
                        tracing::warn!(pod = %pod.name_any(), "cannot start: {message}");
                    }
                    self.waiting
                        .insert(uid.to_string(), (retry, message.clone()));
                    self.write_pending(pod, &message).await?;
                    return Ok(());
                }
            }
        }
        let settings = self.settings.clone();
        let run = self.runs.get_mut(uid).expect("started above");
        names.write_hosts(&run.hosts_file, &run.namespace, pod, run.ip)?;
        if let Some(deleted) = &pod.metadata.deletion_timestamp {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64;
            // A second deletion with a shorter grace period shortens the wait.
            if let Some(deadline) = run.terminating.as_mut() {
                *deadline = (*deadline).min(Instant::now() + Duration::from_secs(grace));
            }
            if run.terminating.is_none() {
                tracing::info!(pod = %run.name, "stopping (deleted at {:?}, grace {grace} s)", deleted.0);
                run.terminating = Some(Instant::now() + Duration::from_secs(grace));
                for c in &mut run.containers {
                    stop_probes(c);
                    let pre_stop = c
                        .container
                        .lifecycle
                        .as_ref()
                        .and_then(|l| l.pre_stop.clone());
                    let pid = c
                        .process
                        .as_ref()
                        .filter(|p| p.exited().is_none())
                        .map(|p| p.pid);
                    let Some(pid) = pid else { continue };
                    let ip = run.ip;
                    let container = c.container.clone();
                    tokio::spawn(async move {
                        if let Some(hook) = pre_stop {
                            let limit = Duration::from_secs(grace);
                            if let Err(error) = probes::handler(&hook, &container, ip, limit).await
                            {
                                tracing::info!("preStop hook of {}: {error:#}", container.name);
                            }
                        }
                        runtime::signal_group(pid, rustix::process::Signal::TERM);
                    });
                }
            }
            let deadline = run.terminating.expect("set above");
            let running = run
                .containers
                .iter()
                .filter(|c| c.process.as_ref().is_some_and(|p| p.exited().is_none()))
                .count();
            if running > 0 && Instant::now() >= deadline {
                for c in &run.containers {
                    if let Some(p) = &c.process {
                        p.signal(rustix::process::Signal::KILL);
                    }
                }
            }
            if running == 0 {
                let mut run = self.runs.remove(uid).expect("present");
                for c in &mut run.containers {
                    record_exit(c);
                    c.next_start = None;
                    c.waiting = None;
                }
                let all_zero = run
                    .containers
                    .iter()
                    .all(|c| c.last_exit.as_ref().is_none_or(|(e, _)| e.code == 0));
                let phase = if all_zero { "Succeeded" } else { "Failed" };
                let terminal = matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
                if !terminal {
                    let host_ip = self.settings.machine.host_ip.to_string();
                    let status = status_of(&run, phase, &host_ip);
                    patch_status(&self.client, &run, status).await.ok();
                }
                self.forget(run);
                return self.delete_finally(pod).await;
            }
            return Ok(());
        }
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        for c in &mut run.containers {
            restart_if_due(&settings, run.ip, &run.dir, c, &policy);
        }
        let phase = phase_of(run, &policy);
        if pod_ready(run, &phase) {
            run.ready_since.get_or_insert_with(now);
        } else {
            run.ready_since = None;
        }
        let status = status_of(run, &phase, &settings.machine.host_ip.to_string());
        // Also when the API says otherwise (the node controller marks a lost node's pods
        // not ready; the kubelet's status manager puts them right again).
        let api_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True");
        let mine = status["status"]["conditions"][3]["status"] == json!("True");
        if status != run.last_status || api_ready != Some(mine) {
            patch_status(&self.client, run, status.clone()).await?;
            run.last_status = status;
        }
        self.publish(uid);
        Ok(())
    }

    async fn start_pod(&mut self, pod: &Pod, names: &Names) -> anyhow::Result<PodRun> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            anyhow::bail!("this node agent does not run init containers");
        }
        let ip = self.allocate_ip();
        let dir = self.settings.dir.join("pods").join(&uid);
        std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
        // Logs outlive the pod (those of killed and rolled pods are the ones a failed test
        // needs): beside the pods, in a folder named as the kubelet names its log folders.
        let logs = self
            .settings
            .dir
            .join("logs")
            .join(format!("{namespace}_{}_{uid}", pod.name_any()));
        std::fs::create_dir_all(&logs).with_context(|| format!("making {}", logs.display()))?;
        let volumes = PodVolumes {
            client: &self.client,
            pod,
            dir: &dir,
            ip,
            host_ip: self.settings.machine.host_ip,
        }
        .prepare()
        .await?;
        let hosts_file = dir.join("hosts");
        names.write_hosts(&hosts_file, &namespace, pod, ip)?;
        let security = spec.security_context.clone().unwrap_or_default();
        let mut containers = Vec::new();
        for container in &spec.containers {
            let (program, args) = self.settings.images.command(container)?;
            let image = container.image.clone().unwrap_or_default();
            let path = self.settings.images.path(&image)?;
            let env = runtime::environment(
                &self.client,
                pod,
                container,
                ip,
                &self.settings.machine,
                path,
            )
            .await?;
            let vars: BTreeMap<String, String> = env.iter().cloned().collect();
            let args = args.iter().map(|a| runtime::expand(a, &vars)).collect();
            let own = container.security_context.clone().unwrap_or_default();
            let uid = own.run_as_user.or(security.run_as_user).map(|u| u as u32);
            let gid = own.run_as_group.or(security.run_as_group).map(|g| g as u32);
            let mut groups: Vec<u32> = security
                .supplemental_groups
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g as u32)
                .collect();
            groups.extend(security.fs_group.map(|g| g as u32));
            let template = SandboxSpec {
                enter: None,
                mounts: runtime::mounts(container, &volumes, &hosts_file)?,
                scratch: dir.join("sandbox").join(&container.name),
                uid,
                gid: gid.or(uid),
                groups,
                working_dir: container.working_dir.clone().map(PathBuf::from),
                env,
                program,
                args,
            };
            containers.push(ContainerRun {
                log: logs.join(format!("{}.log", container.name)),
                container: container.clone(),
                template,
                process: None,
                last_exit: None,
                restarts: 0,
                backoff: FIRST_BACKOFF,
                next_start: Some(Instant::now()),
                ready: Arc::new(AtomicBool::new(false)),
                probes: Vec::new(),
                waiting: None,
            });
        }
        tracing::info!(pod = %pod.name_any(), %namespace, %ip, "starting");
        let mut run = PodRun {
            uid,
            namespace,
            name: pod.name_any(),
            ip,
            dir,
            hosts_file,
            containers,
            started: now(),
            terminating: None,
            ready_since: None,
            last_status: Value::Null,
            failing: None,
        };
        for c in &mut run.containers {
            restart_if_due(&self.settings, run.ip, &run.dir, c, "Always");
        }
        Ok(run)
    }

    /// What the exec and log server sees of a pod.
    fn publish(&self, uid: &str) {
        let Some(run) = self.runs.get(uid) else {
            return;
        };
        let mut targets = self.targets.lock().expect("targets lock");
        for c in &run.containers {
            let pid = c
                .process
                .as_ref()
                .filter(|p| p.exited().is_none())
                .map(|p| p.pid);
            targets.insert(
                (
                    run.namespace.clone(),
                    run.name.clone(),
                    c.container.name.clone(),
                ),
                ExecTarget {
                    pid,
                    template: c.template.clone(),
                    image: c.container.image.clone().unwrap_or_default(),
                    log: c.log.clone(),
                    previous_log: previous_log(&c.log),
                },
            );
        }
    }

    fn stop_now(&self, run: &PodRun) {
        for c in &run.containers {
            if let Some(p) = &c.process {
                p.signal(rustix::process::Signal::KILL);
            }
        }
    }

    fn forget(&mut self, mut run: PodRun) {
        for c in &mut run.containers {
            stop_probes(c);
        }
        self.targets
            .lock()
            .expect("targets lock")
            .retain(|(ns, name, _), _| !(ns == &run.namespace && name == &run.name));
        // The pod's own directory goes; claims' volumes live elsewhere and stay.
        let _ = std::fs::remove_dir_all(&run.dir);
    }

    /// Every process of every pod, killed: the agent is stopping.
    /// Waits (up to 10 s) until each has been reaped.
    pub async fn kill_all(&mut self) {
        for run in self.runs.values() {
            self.stop_now(run);
        }
        let running = |runs: &HashMap<String, PodRun>| {
            runs.values().any(|r| {
                r.containers
                    .iter()
                    .any(|c| c.process.as_ref().is_some_and(|p| p.exited().is_none()))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(&self.runs) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last step of a deletion, the kubelet's: remove the object for good.
    async fn delete_finally(&self, pod: &Pod) -> anyhow::Result<()> {
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(error) => Err(error).context("deleting the stopped pod"),
        }
    }

    async fn write_pending(&self, pod: &Pod, message: &str) -> anyhow::Result<()> {
        let containers: Vec<Value> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "image": c.image, "imageID": "", "ready": false,
                    "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ContainerCreating", "message": message}},
                })
            })
            .collect();
        let status = json!({"metadata": {"uid": pod.metadata.uid}, "status": {
            "phase": "Pending",
            "hostIP": self.settings.machine.host_ip.to_string(),
            "containerStatuses": containers,
        }});
        Api::<Pod>::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(status),
            )
            .await
            .map(drop)
            .context("writing the pod's pending status")
    }
}

fn stop_probes(c: &mut ContainerRun) {
    for task in c.probes.drain(..) {
        task.abort();
    }
    c.ready.store(false, Ordering::SeqCst);
}

/// Where a container's log goes when it starts again (`kubectl logs --previous`).
fn previous_log(log: &std::path::Path) -> PathBuf {
    log.with_extension("previous.log")
}

/// Moves an ended run into `last_exit`; returns how it ended.
fn record_exit(c: &mut ContainerRun) -> Option<runtime::Exit> {
    let process = c.process.as_ref()?;
    let exit = process.exited()?;
    let started = process.started.clone();
    stop_probes(c);
    tracing::info!(container = %c.container.name, "exited with {} (signal {:?})", exit.code, exit.signal);
    c.last_exit = Some((exit.clone(), started));
    c.process = None;
    Some(exit)
}

/// Starts the container when it is not running and its back-off has passed; records how
/// its last run ended.
fn restart_if_due(
    settings: &Settings,
    ip: Ipv4Addr,
    dir: &std::path::Path,
    c: &mut ContainerRun,
    policy: &str,
) {
    if c.process.is_some() {
        match record_exit(c) {
            None => return,
            Some(exit) => {
                let again = match policy {
                    "Never" => false,
                    "OnFailure" => exit.code != 0,
                    _ => true,
                };
                if !again {
                    c.next_start = None;
                    return;
                }
                c.restarts += 1;
                c.next_start = Some(Instant::now() + c.backoff);
                c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                c.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!("back-off restarting, exit code {}", exit.code),
                ));
            }
        }
    }
    let Some(at) = c.next_start else { return };
    if Instant::now() < at {
        return;
    }
    if c.log.exists() {
        let _ = std::fs::rename(&c.log, previous_log(&c.log));
    }
    let spec_file = dir.join(format!("{}.sandbox.json", c.container.name));
    match Process::start(&settings.sandbox, &c.template, &spec_file, &c.log) {
        Ok(process) => {
            c.process = Some(process);
            c.next_start = None;
            c.waiting = None;
            c.probes = probes::start(
                &c.container,
                ip,
                c.ready.clone(),
                c.process.as_ref().map(|p| p.pid),
            );
        }
        Err(error) => {
            c.waiting = Some(("RunContainerError".into(), format!("{error:#}")));
            c.next_start = Some(Instant::now() + c.backoff);
        }
    }
}

fn phase_of(run: &PodRun, policy: &str) -> String {
    let exits: Vec<Option<i32>> = run
        .containers
        .iter()
        .map(|c| {
            if c.process.is_some() || c.next_start.is_some() {
                None
            } else {
                c.last_exit.as_ref().map(|(e, _)| e.code)
            }
        })
        .collect();
    if policy != "Always" && exits.iter().all(Option::is_some) {
        if exits.iter().all(|e| *e == Some(0)) {
            "Succeeded".into()
        } else {
            "Failed".into()
        }
    } else if run.containers.iter().any(|c| c.process.is_some())
        || run.containers.iter().any(|c| c.last_exit.is_some())
    {
        "Running".into()
    } else {
        "Pending".into()
    }
}

fn time(t: &Time) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// Running, every container ready, and not being stopped.
fn pod_ready(run: &PodRun, phase: &str) -> bool {
    phase == "Running"
        && run.terminating.is_none()
        && run.containers.iter().all(|c| {
            c.process.as_ref().is_some_and(|p| p.exited().is_none())
                && c.ready.load(Ordering::SeqCst)
        })
}

fn status_of(run: &PodRun, phase: &str, host_ip: &str) -> Value {
    let mut statuses = Vec::new();
    for c in &run.containers {
        let id = format!("e2e://{}-{}-{}", run.uid, c.container.name, c.restarts);
        let state = match (&c.process, &c.waiting) {
            (Some(p), _) if p.exited().is_none() => {
                json!({"running": {"startedAt": time(&p.started)}})
            }
            (_, Some((reason, message))) => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            _ => match &c.last_exit {
                Some((exit, started)) => terminated(exit, started, &id),
                None => json!({"waiting": {"reason": "ContainerCreating"}}),
            },
        };
        let last = c
            .last_exit
            .as_ref()
            .map(|(e, s)| terminated(e, s, &id))
            .unwrap_or(json!({}));
        let running = c.process.as_ref().is_some_and(|p| p.exited().is_none());
        statuses.push(json!({
            "name": c.container.name,
            "image": c.container.image,
            "imageID": c.container.image,
            "containerID": id,
            "ready": running && c.ready.load(Ordering::SeqCst),
            "started": running,
            "restartCount": c.restarts,
            "state": state,
            "lastState": last,
        }));
    }
    let ready = pod_ready(run, phase);
    let transition = run
        .ready_since
        .as_ref()
        .filter(|_| ready)
        .map(time)
        .unwrap_or(Value::Null);
    let flag = |b: bool| if b { "True" } else { "False" };
    json!({"status": {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": run.ip.to_string(),
        "podIPs": [{"ip": run.ip.to_string()}],
        "startTime": time(&run.started),
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag(ready), "lastTransitionTime": transition},
            {"type": "Ready", "status": flag(ready), "lastTransitionTime": transition},
        ],
        "containerStatuses": statuses,
        "message": run.failing,
    }})
}

fn terminated(exit: &runtime::Exit, started: &Time, id: &str) -> Value {
    json!({"terminated": {
        "exitCode": exit.code,
        "signal": exit.signal,
        "reason": if exit.code == 0 { "Completed" } else { "Error" },
        "startedAt": time(started),
        "finishedAt": time(&exit.finished),
        "containerID": id,
    }})
}

async fn patch_status(client: &Client, run: &PodRun, mut status: Value) -> anyhow::Result<()> {
    // The uid as a precondition: a pod of the same name made since (a StatefulSet's
    // replacement) is refused the old pod's status.
    status["metadata"] = json!({"uid": run.uid});
    Api::<Pod>::namespaced(client.clone(), &run.namespace)
        .patch_status(
            &run.name,
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await
        .map(drop)
        .with_context(|| format!("writing the status of {}/{}", run.namespace, run.name))
}
