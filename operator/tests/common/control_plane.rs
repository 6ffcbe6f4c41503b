//! A real control plane for a test: etcd and kube-apiserver, built from the Go module proxy
//! by `scripts/install-control-plane`, started on 127.0.0.1 with a throw-away data
//! directory, service-account keys and an admin token, RBAC authorization on, as
//! controller-runtime's envtest starts them. Both processes end when the handle drops, even
//! when the test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// How long the control plane may take to come up.
const START_PATIENCE: Duration = Duration::from_secs(60);

pub struct ControlPlane {
    etcd: Option<Child>,
    apiserver: Option<Child>,
    dir: tempfile::TempDir,
    pub url: String,
    token: String,
}

/// Where `scripts/install-control-plane` put the binaries.
fn bin_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/control-plane");
    let found = std::fs::read_dir(&root).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("kube-apiserver").is_file() && bin.join("etcd").is_file())
            .max()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no kube-apiserver and etcd under {}: run scripts/install-control-plane",
            root.display()
        )
    })
}

/// A port nothing listens on right now, below the kernel's ephemeral range: a port that
/// binding port 0 hands out is in that range, where the outgoing connections of the many
/// tests running beside this one may take it before etcd or the API server binds it
/// (seen: `bind: address already in use`). Below it, only another test picking a port the
/// same way could, and each picks at random from some thousands.
fn free_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_start.saturating_sub(1).max(2048);
    let low = high.saturating_sub(12_000).max(1024);
    for _ in 0..10_000 {
        let random = u128::from_le_bytes(*uuid::Uuid::new_v4().as_bytes());
        let port = low + (random % u128::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {low} and {high}");
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?}: {e} (openssl is needed for the test keys)")
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn spawn(binary: &Path, args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    pub async fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("control-plane-")
            .tempdir()
            .expect("temp dir");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        run(Command::new("openssl").args(["genrsa", "-out", &path("sa.key"), "2048"]));
        run(Command::new("openssl").args([
            "rsa",
            "-in",
            &path("sa.key"),
            "-pubout",
            "-out",
            &path("sa.pub"),
        ]));
        let token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            path("tokens.csv"),
            format!("{token},admin,admin-uid,system:masters\n"),
        )
        .expect("token file");

        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = spawn(
            &bin.join("etcd"),
            &[
                "--name=test".into(),
                format!("--data-dir={}", path("etcd")),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=test={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &dir.path().join("etcd.log"),
        );
        let url = format!("https://127.0.0.1:{api_port}");
        let apiserver = spawn(
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                // A self-signed serving certificate, made in the cert dir.
                format!("--cert-dir={}", path("certs")),
                format!("--token-auth-file={}", path("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={url}/"),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--allow-privileged=true".into(),
                // No endpoints for the `kubernetes` Service: a loopback address may not be one.
                "--endpoint-reconciler-type=none".into(),
            ],
            &dir.path().join("kube-apiserver.log"),
        );
        let mut plane = Self {
            etcd: Some(etcd),
            apiserver: Some(apiserver),
            dir,
            url,
            token,
        };
        plane.wait_ready().await;
        plane
    }

    async fn wait_ready(&mut self) {
        let client = self.client();
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if let Ok(text) = client.request_text(request).await
                && text.trim() == "ok"
            {
                return;
            }
            let exited = [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ]
            .into_iter()
            .find_map(|(name, child)| {
                let status = child.as_mut()?.try_wait().ok().flatten()?;
                Some(format!("{name} exited with {status}"))
            });
            if let Some(exited) = exited {
                panic!("{exited}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the API server was not ready within {START_PATIENCE:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of both logs, for a failure message.
    pub fn logs(&self) -> String {
        ["etcd.log", "kube-apiserver.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!("--- {name}\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().expect("the API server's URL"));
        // The serving certificate is the API server's own self-signed one.
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        config
    }

    /// A client with the admin token (group system:masters).
    pub fn client(&self) -> Client {
        Client::try_from(self.config()).expect("a client")
    }

    /// A client that acts as the ServiceAccount `namespace/name` (impersonated by the
    /// admin): what its RBAC rules do not allow is refused, as for a pod running as it.
    pub fn client_as_service_account(&self, namespace: &str, name: &str) -> Client {
        let mut config = self.config();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]);
        Client::try_from(config).expect("a client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            // SIGTERM, then SIGKILL if it does not stop in time.
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::TERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn repository_file(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Installs `crds/` with server-side apply and waits until both are established; makes
/// `namespace`.
pub async fn install(client: &Client, namespace: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in ["clusters.tributary.dev.yaml", "topics.tributary.dev.yaml"] {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&repository_file(&format!("crds/{file}"))).expect("a CRD");
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("tributary-test"),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("{file} does not install on a real API server: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in ["clusters.tributary.dev", "topics.tributary.dev"] {
        loop {
            let crd = crds.get(name).await.expect("the CRD");
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "{name} was not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    make_namespace(client, namespace).await;
}

pub async fn make_namespace(client: &Client, name: &str) {
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("a namespace");
}
