//! The `tributary` CLI, run inside a broker pod (`kubectl exec`, through the API server).
//!
//! Why this and not the Rust client over a port-forward: after its first metadata request
//! the client connects to the brokers' advertised addresses, which are pod DNS names
//! (`demo-broker-0.demo-brokers.<namespace>.svc:9095`) that resolve only inside the
//! cluster, and it has no way to map them to forwarded local ports. And not a Job: the
//! broker image has no shell, so a Job could not feed `tributary produce` its standard
//! input. The CLI in the broker image runs where those names resolve, its standard input
//! and output travel over the exec stream, and it uses the same client library, so the
//! tests still exercise the Rust client (idempotent producer, leader changes) end to end.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream, WriteHalf};
use tokio::task::JoinHandle;

/// The broker pods' container, which has the CLI.
const CONTAINER: &str = "broker";
/// Bytes the exec stream buffers in each direction.
const BUFFER: usize = 1 << 20;
/// How long one write to a command's standard input may take: it blocks once the exec
/// stream's buffer is full and the command reads no more (say, a producer stuck on a full
/// send buffer).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `tributary` in the broker pods of one namespace, bootstrapping from `bootstrap`.
#[derive(Clone)]
pub struct Cli {
    pods: Api<Pod>,
    bootstrap: String,
}

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit code; None when the command did not run (say, the pod went away).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Itself if the command exited 0, else an error with what it printed.
    pub fn expect_success(self) -> anyhow::Result<Self> {
        if !self.success() {
            bail!(
                "`{}` failed (exit code {:?}): {}",
                self.command,
                self.code,
                self.stderr.trim()
            );
        }
        Ok(self)
    }
}

/// A command still running: write its standard input, then [`Running::finish`].
pub struct Running {
    command: String,
    process: AttachedProcess,
    stdin: Option<WriteHalf<SimplexStream>>,
    stdout: JoinHandle<std::io::Result<String>>,
    stderr: JoinHandle<std::io::Result<String>>,
    status: Pin<Box<dyn Future<Output = Option<Status>> + Send>>,
}

impl Cli {
    pub fn new(client: &Client, namespace: &str, bootstrap: &str) -> Self {
        Self {
            pods: Api::namespaced(client.clone(), namespace),
            bootstrap: bootstrap.to_string(),
        }
    }

    /// Starts `tributary ARGS --bootstrap ADDRESS` in `pod`.
    pub async fn start(&self, pod: &str, args: &[&str]) -> anyhow::Result<Running> {
        let mut command = vec!["tributary".to_string()];
        command.extend(args.iter().map(|a| a.to_string()));
        command.extend(["--bootstrap".to_string(), self.bootstrap.clone()]);
        let line = format!("{} (in {pod})", command.join(" "));
        let params = AttachParams {
            container: Some(CONTAINER.into()),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
            max_stdin_buf_size: Some(BUFFER),
            max_stdout_buf_size: Some(BUFFER),
            max_stderr_buf_size: Some(BUFFER),
        };
        let mut process = self
            .pods
            .exec(pod, command, &params)
            .await
            .with_context(|| format!("starting `{line}`"))?;
        let stdout = read_all(process.stdout());
        let stderr = read_all(process.stderr());
        let status = process
            .take_status()
            .context("the exec stream has no status channel")?;
        Ok(Running {
            command: line,
            stdin: process.stdin(),
            process,
            stdout,
            stderr,
            status: Box::pin(status),
        })
    }

    /// Runs `tributary ARGS` in `pod` with `input` as its standard input, for at most
    /// `timeout`.
    pub async fn run(
        &self,
        pod: &str,
        args: &[&str],
        input: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let mut running = self.start(pod, args).await?;
        running.write(input).await?;
        running.finish(timeout).await
    }
}

impl Running {
    /// Writes `bytes` to the command's standard input, failing if that takes longer than
    /// a minute.
    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("standard input is already closed")?;
        tokio::time::timeout(WRITE_TIMEOUT, stdin.write_all(bytes))
            .await
            .with_context(|| {
                format!(
                    "`{}` took no input for {WRITE_TIMEOUT:?}: it reads its standard input no more",
                    self.command
                )
            })?
            .with_context(|| format!("writing to `{}`", self.command))
    }

    /// Closes standard input and waits, at most `timeout`, for the command to exit.
    pub async fn finish(mut self, timeout: Duration) -> anyhow::Result<Output> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let command = self.command.clone();
        let outcome = tokio::time::timeout(timeout, async {
            let status = self.status.await;
            let stdout = self.stdout.await??;
            let stderr = self.stderr.await??;
            let _ = self.process.join().await;
            anyhow::Ok((status, stdout, stderr))
        })
        .await
        .with_context(|| format!("`{command}` did not finish within {timeout:?}"))?;
        let (status, stdout, stderr) = outcome.with_context(|| format!("running `{command}`"))?;
        Ok(Output {
            code: status.as_ref().and_then(exit_code),
            command,
            stdout,
            stderr,
        })
    }
}

fn read_all(reader: Option<ReadHalf<SimplexStream>>) -> JoinHandle<std::io::Result<String>> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut reader) = reader {
            reader.read_to_end(&mut bytes).await?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// 0 for Success; the code a NonZeroExitCode failure carries; None otherwise.
fn exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_the_exec_status() {
        let failed: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command [tributary topic describe orders], exit code 1",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "1"}]}
        }))
        .unwrap();
        assert_eq!(exit_code(&failed), Some(1));
        let success: Status =
            serde_json::from_value(serde_json::json!({"status": "Success"})).unwrap();
        assert_eq!(exit_code(&success), Some(0));
        let gone: Status =
            serde_json::from_value(serde_json::json!({"status": "Failure", "reason": "NotFound"}))
                .unwrap();
        assert_eq!(exit_code(&gone), None);
    }
}
