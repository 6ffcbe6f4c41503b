//! A running `tributary local up` on ephemeral ports, and ways to hurt it: kill -9,
//! SIGSTOP/SIGCONT of its brokers and controller through their pid files. Everything it
//! started is killed when the handle drops, also when a test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CLI, PATIENCE};

pub struct LocalCluster {
    child: Option<Child>,
    pub data_dir: PathBuf,
    /// Every broker's gRPC address, comma-separated.
    pub bootstrap: String,
    /// Every broker's Kafka protocol address, comma-separated (bootstrap.servers).
    pub kafka_bootstrap: String,
    /// Per broker id: its gRPC and HTTP addresses.
    pub brokers: Vec<(String, String)>,
    pub controller: String,
    /// Everything `local up` printed, shown when a test fails.
    output: Arc<Mutex<Vec<String>>>,
}

/// A process of the cluster, as named by its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Controller,
    Broker(i32),
}

impl LocalCluster {
    /// Starts `local up` with `args` on `data_dir` and waits until it is up. `env` reaches
    /// the brokers and the controller too (their flags' environment variables).
    pub fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(CLI)
            .args([
                "local",
                "up",
                "--port",
                "0",
                "--http-port",
                "0",
                "--kafka-port",
                "0",
            ])
            .args(["--controller-port", "0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tributary local up");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (stream, prefix) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(err), "stderr: "),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(format!("{prefix}{line}"));
                    let _ = tx.send(line);
                }
            });
        }
        let mut cluster = Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            bootstrap: String::new(),
            kafka_bootstrap: String::new(),
            brokers: Vec::new(),
            controller: String::new(),
            output,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                panic!("local up did not come up:\n{}", cluster.output());
            };
            let line = line.trim();
            if let Some(address) = line.strip_prefix("bootstrap:") {
                cluster.bootstrap = address.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("kafka:") {
                cluster.kafka_bootstrap = rest.split_whitespace().next().unwrap_or("").to_string();
            } else if let Some(rest) = line.strip_prefix("controller:") {
                cluster.controller = field(rest, "grpc ");
            } else if line.starts_with("broker ") && line.contains("metrics http://") {
                let grpc = field(line, "grpc ");
                let http = field(line, "metrics http://").replace("/metrics", "");
                cluster.brokers.push((grpc, http));
            } else if line.starts_with("Try:") {
                return cluster;
            }
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub fn dir_of(&self, member: Member) -> PathBuf {
        match member {
            Member::Controller => self.data_dir.join("controller"),
            Member::Broker(id) => self.data_dir.join(format!("broker-{id}")),
        }
    }

    /// The member's process id from its pid file; None while it is not running.
    pub fn pid(&self, member: Member) -> Option<u32> {
        std::fs::read_to_string(self.dir_of(member).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn running_pid(&self, member: Member) -> u32 {
        self.pid(member)
            .unwrap_or_else(|| panic!("{member:?} is not running:\n{}", self.output()))
    }

    /// kill -9 of the member; returns the pid it had. `local up` starts it again.
    pub fn kill9(&self, member: Member) -> u32 {
        let pid = self.running_pid(member);
        super::signal(pid, libc::SIGKILL);
        pid
    }

    /// Waits until `local up` has started the member again after `old_pid` died, and (a
    /// broker) it is ready.
    pub fn wait_restarted(&self, member: Member, old_pid: u32) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.pid(member).is_some_and(|pid| pid != old_pid) {
                match member {
                    Member::Controller => return,
                    Member::Broker(id) => {
                        let http = &self.brokers[id as usize].1;
                        if super::http_get_blocking(http, "/readyz").is_some_and(|(c, _)| c == 200)
                        {
                            return;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{member:?} was not started again:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays, silent, holding its sockets.
    pub fn pause(&self, member: Member) {
        super::signal(self.running_pid(member), libc::SIGSTOP);
    }

    pub fn resume(&self, member: Member) {
        super::signal(self.running_pid(member), libc::SIGCONT);
    }

    /// Ctrl-C, and waits for `local up` to exit; returns its exit code and output.
    pub fn stop(&mut self) -> (i32, String) {
        self.signal(libc::SIGINT);
        self.wait_exit()
    }

    /// Sends `signal` to `local up` itself.
    pub fn signal(&self, signal: i32) {
        super::signal(self.child.as_ref().expect("running").id(), signal);
    }

    /// Waits until `local up` has printed a line containing `text`.
    pub fn wait_for_output(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "local up never printed {text:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `local up` to exit; returns its exit code and output.
    pub fn wait_exit(&mut self) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let status = super::wait_with_patience(&mut child);
        // The output threads end with the process.
        std::thread::sleep(Duration::from_millis(50));
        (status.code().unwrap_or(-1), self.output())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The children stop with `local up`, but a paused one cannot: kill them all,
        // including brokers started later by `tributary cluster scale`.
        let brokers = std::fs::read_dir(&self.data_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_prefix("broker-")?
                    .parse()
                    .ok()
            });
        let members = brokers.map(Member::Broker).chain([Member::Controller]);
        for member in members {
            if let Some(pid) = self.pid(member) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// The text after `name` up to the next comma.
fn field(line: &str, name: &str) -> String {
    line.split(name)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no {name:?} in {line:?}"))
        .trim()
        .to_string()
}
