//! Keeping the processes of a local cluster running: each child is started, watched, and
//! started again with the same arguments, ports and data directory when it exits on its
//! own (the local form of replacing a failed replica). Its process id is kept in
//! `DIR/pid` and its log in `DIR/<name>.log`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a child may take to print its addresses and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The first restart waits this long; a child that keeps exiting soon after starting
/// waits twice as long each time, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A child that ran at least this long starts again after `FIRST_BACKOFF`.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// One process to keep running.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How messages name it: "controller", "broker 1".
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Its data directory: the pid file and the log are kept here too.
    pub dir: PathBuf,
    /// Listen flags, each with the field of the child's `listening:` line that reports the
    /// bound address. Port 0 becomes the port the first start got, so restarts keep it.
    pub listen: Vec<Listen>,
    /// A field of the `listening:` line holding an HTTP address whose /readyz says 200 once
    /// the child is ready; without one, the child is ready once it listens.
    pub ready_field: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub flag: &'static str,
    pub field: &'static str,
    pub address: SocketAddr,
}

impl Spec {
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    pub fn log_file(&self) -> PathBuf {
        let base = self.name.split_whitespace().next().unwrap_or("process");
        self.dir.join(format!("{base}.log"))
    }
}

/// A child that has started: its process id and the addresses it listens on.
#[derive(Debug, Clone)]
pub struct Started {
    pub pid: u32,
    pub addresses: BTreeMap<&'static str, SocketAddr>,
}

/// What happened to a child after its first start, for `local up` to print.
#[derive(Debug)]
pub enum Event {
    Exited {
        name: String,
        pid: u32,
        status: ExitStatus,
        restart_in: Duration,
    },
    Restarted {
        name: String,
        pid: u32,
    },
    RestartFailed {
        name: String,
        error: anyhow::Error,
        retry_in: Duration,
    },
}

/// How a supervised child ended when `local up` stopped it.
#[derive(Debug)]
pub enum Stopped {
    Cleanly,
    Failed(String),
}

/// Keeps `spec` running until `stop` is cancelled, then stops it with SIGTERM (SIGKILL
/// after `STOP_TIMEOUT`, or as soon as `kill` is cancelled). The first start's outcome goes
/// to `first`; when it fails the supervisor gives up, since the same arguments would fail
/// again.
pub async fn supervise(
    mut spec: Spec,
    stop: CancellationToken,
    kill: CancellationToken,
    first: oneshot::Sender<anyhow::Result<Started>>,
    events: mpsc::UnboundedSender<Event>,
) -> Stopped {
    let mut running = match start(&mut spec, &stop, &kill).await {
        Ok(running) => {
            let _ = first.send(Ok(running.started.clone()));
            running
        }
        Err(error) => {
            let _ = first.send(Err(error));
            return Stopped::Cleanly;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let status = tokio::select! {
            status = running.child.wait() => status,
            () = stop.cancelled() => return running.stop(&spec, &kill).await,
        };
        let pid = running.started.pid;
        let _ = std::fs::remove_file(spec.pid_file());
        if running.since.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        match status {
            Ok(status) => {
                let _ = events.send(Event::Exited {
                    name: spec.name.clone(),
                    pid,
                    status,
                    restart_in: backoff,
                });
            }
            Err(error) => {
                let _ = events.send(Event::RestartFailed {
                    name: spec.name.clone(),
                    error: anyhow::Error::new(error).context("lost track of the process"),
                    retry_in: backoff,
                });
            }
        }
        running = loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return Stopped::Cleanly,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match start(&mut spec, &stop, &kill).await {
                Ok(running) => {
                    let _ = events.send(Event::Restarted {
                        name: spec.name.clone(),
                        pid: running.started.pid,
                    });
                    break running;
                }
                Err(_) if stop.is_cancelled() => return Stopped::Cleanly,
                Err(error) => {
                    let _ = events.send(Event::RestartFailed {
                        name: spec.name.clone(),
                        error,
                        retry_in: backoff,
                    });
                }
            }
        };
    }
}

struct Running {
    child: Child,
    started: Started,
    since: Instant,
}

impl Running {
    async fn stop(mut self, spec: &Spec, kill: &CancellationToken) -> Stopped {
        let pid = self.started.pid;
        let _ = rustix::process::kill_process(pid_of(pid), rustix::process::Signal::TERM);
        let waited = tokio::select! {
            waited = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()) => waited.ok(),
            () = kill.cancelled() => None,
        };
        let outcome = match waited {
            Some(Ok(status)) if status.success() => Stopped::Cleanly,
            Some(Ok(status)) => Stopped::Failed(format!(
                "{} stopped with {}; see {}",
                spec.name,
                describe(&status),
                spec.log_file().display()
            )),
            Some(Err(error)) => Stopped::Failed(format!("{}: {error}", spec.name)),
            None => {
                let _ = self.child.kill().await;
                Stopped::Failed(if kill.is_cancelled() {
                    format!("{} was killed while it stopped", spec.name)
                } else {
                    format!(
                        "{} did not stop within {}s and was killed; see {}",
                        spec.name,
                        STOP_TIMEOUT.as_secs(),
                        spec.log_file().display()
                    )
                })
            }
        };
        let _ = std::fs::remove_file(spec.pid_file());
        outcome
    }
}

fn pid_of(pid: u32) -> rustix::process::Pid {
    rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive")
}

/// Starts the child and waits until it listens (and is ready, when it says how).
async fn start(
    spec: &mut Spec,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> anyhow::Result<Running> {
    let started = start_once(spec, stop, kill).await;
    if started.is_err() {
        let _ = std::fs::remove_file(spec.pid_file());
    }
    started
}

async fn start_once(
    spec: &mut Spec,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&spec.dir)
        .with_context(|| format!("cannot create {}", spec.dir.display()))?;
    let log_path = spec.log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    for listen in &spec.listen {
        command.arg(listen.flag).arg(listen.address.to_string());
    }
    command
        .arg("--stop-with-parent")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: Ctrl-C in the terminal reaches `local up` only, which
        // then stops the brokers before the controller.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", spec.program.display()))?;
    let pid = child.id().context("the child exited at once")?;
    let failed = |what: String| {
        let tail = log_tail(&log_path, log_start);
        anyhow::anyhow!(
            "{} {what}{}",
            spec.name,
            if tail.is_empty() {
                format!(" (its log: {})", log_path.display())
            } else {
                format!(":\n{tail}")
            }
        )
    };

    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    let deadline = Instant::now() + START_TIMEOUT;
    let read = tokio::select! {
        read = tokio::time::timeout_at(deadline, stdout.read_line(&mut line)) => read,
        status = child.wait() => return Err(failed(format!("exited with {}", describe(&status?)))),
        () = stop.cancelled() => return Err(terminate(child, kill).await),
    };
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let _ = child.kill().await;
        return Err(failed("printed no listening line".into()));
    }
    // Later output is not needed; keep the pipe drained so the child never blocks on it.
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink).await;
    });
    let mut addresses = BTreeMap::new();
    for field in line.split_whitespace().filter_map(|f| f.split_once('=')) {
        if let Ok(address) = field.1.parse::<SocketAddr>()
            && let Some(name) = spec.listen.iter().map(|l| l.field).find(|&n| n == field.0)
        {
            addresses.insert(name, address);
        }
    }
    for listen in &mut spec.listen {
        match addresses.get(listen.field) {
            Some(address) => listen.address = *address,
            None => {
                let _ = child.kill().await;
                return Err(failed(format!(
                    "printed no {}= address in {line:?}",
                    listen.field
                )));
            }
        }
    }
    write_pid_file(&spec.pid_file(), pid)?;

    if let Some(field) = spec.ready_field {
        let http = addresses[field];
        loop {
            if ready(http).await {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(failed(format!(
                    "was not ready within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::select! {
                status = child.wait() => return Err(failed(format!("exited with {}", describe(&status?)))),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = stop.cancelled() => return Err(terminate(child, kill).await),
            }
        }
    }
    Ok(Running {
        child,
        started: Started { pid, addresses },
        since: Instant::now(),
    })
}

/// Stops a child that was still starting when `local up` was asked to stop.
async fn terminate(mut child: Child, kill: &CancellationToken) -> anyhow::Error {
    if let Some(pid) = child.id() {
        let _ = rustix::process::kill_process(pid_of(pid), rustix::process::Signal::TERM);
    }
    let stopped = tokio::select! {
        waited = tokio::time::timeout(STOP_TIMEOUT, child.wait()) => waited.is_ok(),
        () = kill.cancelled() => false,
    };
    if !stopped {
        let _ = child.kill().await;
    }
    anyhow::anyhow!("stopped while starting")
}

/// Writes the pid file through a temporary file, so a reader never sees half a number.
fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// Whether `GET /readyz` answers 200.
async fn ready(address: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        Some(response.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The last lines a child wrote to its log since `from`, to show why it failed. Reads at
/// most the last 64 KiB: the log of a long-running broker can be large.
fn log_tail(path: &Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX_TAIL_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(
            from.max(len.saturating_sub(MAX_TAIL_BYTES)),
        ))?;
        let mut bytes = Vec::new();
        file.take(MAX_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let Ok(bytes) = read() else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// "exit code 1", "signal 9 (killed)".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "signal 9 (killed)".into(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}
