//! Readiness, liveness and startup probes, and lifecycle hooks, over HTTP GET or TCP
//! against the pod's address, each probe a task of its own. `exec` probes are not served
//! (no Tributary pod uses one): such a probe fails and says so.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A named or numbered port of the container.
fn port(container: &Container, port: &IntOrString) -> anyhow::Result<u16> {
    match port {
        IntOrString::Int(n) => Ok(*n as u16),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16)
            .with_context(|| format!("the container has no port named {name}")),
    }
}

/// An HTTP GET: success is a status from 200 to 399, as the kubelet counts it.
async fn http_get(
    action: &HTTPGetAction,
    container: &Container,
    ip: Ipv4Addr,
) -> anyhow::Result<()> {
    let port = port(container, &action.port)?;
    let path = action.path.as_deref().unwrap_or("/");
    let mut stream = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connecting to {ip}:{port}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/e2e\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            bail!("GET {path}: the connection closed before a status line");
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {path}: no status in {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        bail!("GET {path}: status {code}")
    }
}

async fn check(probe: &Probe, container: &Container, ip: Ipv4Addr) -> anyhow::Result<()> {
    let limit = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(action) = &probe.http_get {
            http_get(action, container, ip).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = port(container, &tcp.port)?;
            TcpStream::connect((ip, port))
                .await
                .map(drop)
                .with_context(|| format!("connecting to {ip}:{port}"))
        } else {
            bail!("this node agent serves only httpGet and tcpSocket probes")
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .context("timed out")?
}

/// Runs a lifecycle hook (preStop, postStart) within `limit`.
pub async fn handler(
    hook: &LifecycleHandler,
    container: &Container,
    ip: Ipv4Addr,
    limit: Duration,
) -> anyhow::Result<()> {
    let attempt = async {
        if let Some(action) = &hook.http_get {
            http_get(action, container, ip).await
        } else if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            Ok(())
        } else {
            bail!("this node agent serves only httpGet and sleep hooks")
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .context("timed out")?
}

/// Starts the container's probes: readiness sets `ready`; liveness (after startup, if
/// any) kills the process group after `failureThreshold` failures in a row.
pub fn start(
    container: &Container,
    ip: Ipv4Addr,
    ready: Arc<AtomicBool>,
    pid: Option<u32>,
) -> Vec<JoinHandle<()>> {
    let started = Arc::new(AtomicBool::new(container.startup_probe.is_none()));
    let mut tasks = Vec::new();
    if let Some(probe) = container.startup_probe.clone() {
        let (container, started) = (container.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let threshold = probe.failure_threshold.unwrap_or(3).max(1);
            let mut failures = 0;
            run(&probe, &container, ip, false, |ok| {
                if ok {
                    started.store(true, Ordering::SeqCst);
                    return true;
                }
                // Not started within failureThreshold periods: restarted, as the kubelet
                // does.
                failures += 1;
                if let Some(pid) = pid
                    && failures >= threshold
                {
                    tracing::warn!(container = %container.name, "startup probe failed {failures} times: restarting");
                    super::runtime::signal_group(pid, rustix::process::Signal::KILL);
                    return true;
                }
                false
            })
            .await;
        }));
    }
    match container.readiness_probe.clone() {
        Some(probe) => {
            let (container, ready, started) = (container.clone(), ready.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                run(&probe, &container, ip, false, |ok| {
                    let ok = ok && started.load(Ordering::SeqCst);
                    ready.store(ok, Ordering::SeqCst);
                    false
                })
                .await;
            }));
        }
        None => ready.store(true, Ordering::SeqCst),
    }
    if let (Some(probe), Some(pid)) = (container.liveness_probe.clone(), pid) {
        let (container, started) = (container.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            // Liveness starts counting once the startup probe (if any) has passed.
            while !started.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            run(&probe, &container, ip, true, |alive| {
                if alive || !started.load(Ordering::SeqCst) {
                    return false;
                }
                tracing::warn!(container = %container.name, "liveness probe failed: restarting");
                super::runtime::signal_group(pid, rustix::process::Signal::KILL);
                true
            })
            .await;
        }));
    }
    tasks
}

/// Probes every period until `outcome` says to stop; readiness counts success and failure
/// thresholds as the kubelet does.
async fn run(
    probe: &Probe,
    container: &Container,
    ip: Ipv4Addr,
    initial: bool,
    mut outcome: impl FnMut(bool) -> bool,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let successes_needed = probe.success_threshold.unwrap_or(1).max(1);
    let failures_allowed = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut successes, mut failures, mut state) = (0, 0, initial);
    loop {
        match check(probe, container, ip).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if successes >= successes_needed {
                    state = true;
                }
            }
            Err(error) => {
                tracing::debug!(container = %container.name, "probe: {error:#}");
                failures += 1;
                successes = 0;
                if failures >= failures_allowed {
                    state = false;
                }
            }
        }
        if outcome(state) {
            return;
        }
        tokio::time::sleep(period).await;
    }
}
