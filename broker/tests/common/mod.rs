//! Starting and stopping real broker processes on 127.0.0.1 ephemeral ports for tests.
//! Every process is killed when its handle drops, also when a test fails.

#![allow(dead_code)]

pub mod local;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BROKER: &str = env!("CARGO_BIN_EXE_tributary-broker");
pub const CLI: &str = env!("CARGO_BIN_EXE_tributary");
pub const CONTROLLER: &str = env!("CARGO_BIN_EXE_tributary-controller");

/// How long anything in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns Ok, failing the test after PATIENCE with `what` and the
/// last thing `check` saw (its Err).
pub async fn eventually_with<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}{}{seen}",
                if seen.is_empty() { "" } else { ": " }
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns Some, failing the test after PATIENCE.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_with(what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// Every listener of a broker on an ephemeral port of 127.0.0.1.
pub const EPHEMERAL_LISTENERS: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--http-listen",
    "127.0.0.1:0",
    "--kafka-listen",
    "127.0.0.1:0",
];

pub struct Broker {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub grpc: String,
    pub http: String,
    /// The Kafka protocol listener's address.
    pub kafka: String,
    args: Vec<String>,
    /// The stderr of each process started on this handle, shown when a test fails.
    stderr: Vec<tempfile::TempPath>,
}

impl Broker {
    /// Starts a broker on `data_dir` with extra arguments and waits until it is ready.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut broker = Self::spawn(data_dir, args);
        broker.wait_ready();
        broker
    }

    /// Starts a broker and returns once it listens, without waiting until it is ready.
    pub fn start_listening(data_dir: &Path, args: &[&str]) -> Self {
        Self::spawn(data_dir, args.iter().map(|s| s.to_string()).collect())
    }

    fn spawn(data_dir: &Path, args: Vec<String>) -> Self {
        let stderr = tempfile::Builder::new()
            .prefix("broker-stderr-")
            .tempfile()
            .expect("stderr file")
            .into_temp_path();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&stderr)
            .expect("stderr file");
        let mut child = Command::new(BROKER)
            .arg("--data-dir")
            .arg(data_dir)
            .args(EPHEMERAL_LISTENERS)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tributary-broker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut broker = Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            grpc: String::new(),
            kafka: String::new(),
            http: String::new(),
            args,
            stderr: vec![stderr],
        };
        let line = match rx.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(_) => panic!(
                "the broker printed no listening line; stderr:\n{}",
                broker.stderr()
            ),
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        broker.grpc = field("grpc");
        broker.http = field("http");
        broker.kafka = field("kafka");
        broker
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the broker exited with {status} before it was ready; stderr:\n{}",
                    self.stderr()
                );
            }
            if http_get_blocking(&self.http, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broker was not ready in time; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// kill -9: no flush, no clean-shutdown marker.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGTERM);
        wait_with_patience(&mut child)
    }

    /// Starts the broker again on the same data directory (new ports).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        let mut fresh = Self::spawn(&self.data_dir, self.args.clone());
        self.child = fresh.child.take();
        self.grpc = std::mem::take(&mut fresh.grpc);
        self.http = std::mem::take(&mut fresh.http);
        self.kafka = std::mem::take(&mut fresh.kafka);
        self.stderr.append(&mut fresh.stderr);
        self.wait_ready();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

pub fn wait_with_patience(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process {} did not exit in time", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bare HTTP/1.1 GET; returns the status code and body.
pub fn http_get_blocking(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// Sends raw bytes to `address` and returns whatever comes back before the peer closes.
pub async fn send_raw(address: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    response
}

/// Runs the CLI with `args` (and `stdin`), returning (exit code, stdout, stderr).
pub fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(CLI)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tributary");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("tributary output"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("tributary {args:?} did not finish in time");
        }
    };
    let _ = writer.join();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Creates a topic through the admin API, with `config` overrides.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: u32, config: &[(&str, &str)]) {
    let admin = tributary_broker::client::Admin::connect(bootstrap)
        .await
        .expect("connect");
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let topic = tributary_broker::client::NewTopic {
        name: name.into(),
        partitions,
        replication_factor: None,
        config,
    };
    admin.create_topic(topic).await.expect("create topic");
}

/// A temporary directory readable by every user (tests may run a broker as another uid).
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}
