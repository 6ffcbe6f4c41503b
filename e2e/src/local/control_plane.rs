//! A local Kubernetes control plane for the e2e suite without kind: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, as `scripts/install-control-plane` builds
//! them, started on 127.0.0.1 with a state directory of their own.
//!
//! It differs from the operator's test control plane
//! (`operator/tests/common/control_plane.rs`) where pods must really run, on the node
//! agents:
//!
//! - the API server's serving certificate comes from a CA of ours, which clients verify
//!   and which also signs the node agents' serving certificates
//!   ([`ControlPlane::issue_serving_cert`]);
//! - ServiceAccount admission is on, so pods get their token and `kube-root-ca.crt`
//!   volumes as on a real cluster;
//! - the controller manager runs (ServiceAccounts, `kube-root-ca.crt`, Deployments,
//!   StatefulSets, garbage collection, and volumes of the default StorageClass
//!   [`STORAGE_CLASS`], provisioned by its built-in host-path provisioner in folders under
//!   `/tmp/hostpath_pv`), and so does the scheduler.
//!
//! Every process stops when the handle drops, also when [`ControlPlane::start`] fails
//! half way.

use std::fmt::Display;
use std::fs::{self, File};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The default StorageClass `start` makes: the controller manager's host-path provisioner
/// (`kubernetes.io/host-path`) makes a folder under `/tmp/hostpath_pv` for each claim.
pub const STORAGE_CLASS: &str = "local-folder";

/// The field manager of what `start` applies.
const FIELD_MANAGER: &str = "tributary-e2e-local";

/// How long each stage of `start` may take: the API server becoming ready, the
/// controller manager publishing `kube-root-ca.crt`.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// How often `start` looks again while it waits.
const POLL: Duration = Duration::from_millis(100);

/// How long one look may take: a request to a hung API server must not outlast the
/// deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the scheduler must stay up for `start` to trust it: a bad flag or kubeconfig
/// makes it exit at once.
const SCHEDULER_SETTLE: Duration = Duration::from_secs(1);

/// How long a process may take to stop after SIGTERM before it gets SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Lines of the failing component's log in `start`'s errors.
const ERROR_TAIL_LINES: usize = 40;

/// How long the certificates are valid: longer than any test run.
const CERT_DAYS: &str = "3650";

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";
const CONTROLLER_MANAGER: &str = "kube-controller-manager";
const SCHEDULER: &str = "kube-scheduler";

/// Every component, in start order; their binaries have these names.
const COMPONENTS: [&str; 4] = [ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER];

/// The names the API server's serving certificate is valid for besides 127.0.0.1: what
/// clients inside pods call it (the `kubernetes` Service, 10.0.0.1 in the service range).
const APISERVER_SANS: [&str; 7] = [
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:10.0.0.1",
];

/// The CA: rustls (kube-rs) only trusts a CA certificate that says it is one.
const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tributary-e2e-ca
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

/// Where the control plane keeps its state and finds its binaries.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// The state directory (made if missing): certificates, etcd's data, logs, kubeconfig.
    pub dir: PathBuf,
    /// The directory holding etcd, kube-apiserver, kube-controller-manager and
    /// kube-scheduler (`scripts/install-control-plane` prints it).
    pub bin: PathBuf,
}

/// A running control plane. Dropping it stops every process: SIGTERM, then SIGKILL after
/// 10 s; the API server, controller manager and scheduler first, etcd last.
pub struct ControlPlane {
    /// The state directory, absolute.
    dir: PathBuf,
    bin: PathBuf,
    api_port: u16,
    /// The admin's bearer token (group system:masters).
    token: String,
    /// The CA certificate, DER, for clients to verify the API server.
    ca_der: Vec<u8>,
    /// The processes started so far, in start order.
    processes: Vec<Process>,
}

struct Process {
    name: &'static str,
    child: Child,
}

/// The ports the components listen on, all on 127.0.0.1.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    api: u16,
    controller_manager: u16,
    scheduler: u16,
}

impl ControlPlane {
    /// Makes the certificates, keys and kubeconfig, starts etcd and the API server, waits
    /// until the API server is ready, makes the default StorageClass, then starts the
    /// controller manager and the scheduler and waits until the controller manager works
    /// (it has published `kube-root-ca.crt` and made the `default` ServiceAccount in
    /// namespace `default`) and the scheduler stays up. A cluster is always new: etcd data
    /// left in the state directory by an earlier run is removed.
    ///
    /// Call it inside a Tokio runtime (kube's client spawns a task).
    pub async fn start(config: ControlPlaneConfig) -> Result<ControlPlane> {
        check_binaries(&config.bin)?;
        let dir = prepare_dir(&config.dir)?;
        let ports = Ports::pick()?;
        let mut plane = ControlPlane {
            dir,
            bin: config.bin,
            api_port: ports.api,
            token: uuid::Uuid::new_v4().simple().to_string(),
            ca_der: Vec::new(),
            processes: Vec::new(),
        };
        plane.make_credentials()?;
        plane.write_kubeconfig()?;

        plane.spawn(ETCD, plane.etcd_args(&ports))?;
        plane.spawn(APISERVER, plane.apiserver_args(&ports))?;
        let client = plane.client()?;
        plane
            .wait_for(APISERVER, "kube-apiserver to be ready (/readyz)", || {
                api_ready(&client)
            })
            .await?;
        plane.apply_storage_class(&client).await?;

        plane.spawn(CONTROLLER_MANAGER, plane.controller_manager_args(&ports))?;
        plane.spawn(SCHEDULER, plane.scheduler_args(&ports))?;
        let scheduler_started = Instant::now();
        plane
            .wait_for(
                CONTROLLER_MANAGER,
                "kube-controller-manager to publish ConfigMap default/kube-root-ca.crt and \
                 make ServiceAccount default/default",
                || controller_manager_works(&client),
            )
            .await?;
        plane.check_scheduler_settled(scheduler_started).await?;
        Ok(plane)
    }

    /// A client with the admin token (group system:masters) that verifies the API server's
    /// certificate against our CA. Call it inside a Tokio runtime.
    pub fn client(&self) -> Result<Client> {
        let url = self
            .api_url()
            .parse()
            .with_context(|| format!("the API server's URL {} does not parse", self.api_url()))?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(self.token.clone().into());
        Client::try_from(config).context(
            "cannot make a client for the local API server (is this inside a Tokio runtime?)",
        )
    }

    /// The kubeconfig `start` wrote: the admin's token, the CA, the API server on
    /// 127.0.0.1, its context selected; `kube::Client::try_default()` and kubectl read it
    /// through `KUBECONFIG`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's port on 127.0.0.1.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The CA certificate (PEM) that signed the API server's serving certificate and
    /// every one [`issue_serving_cert`](Self::issue_serving_cert) issues.
    pub fn ca_path(&self) -> PathBuf {
        self.certs_dir().join("ca.crt")
    }

    /// Issues a serving certificate for a node agent's HTTPS server, signed by the CA of
    /// [`ca_path`](Self::ca_path), valid for `ips` and the DNS name `name`. Returns the
    /// certificate and its key (EC P-256, PKCS #8), both PEM; a second call for the same
    /// name replaces them.
    pub fn issue_serving_cert(&self, name: &str, ips: &[IpAddr]) -> Result<(PathBuf, PathBuf)> {
        check_cert_name(name)?;
        let issued = self.certs_dir().join("issued");
        fs::create_dir_all(&issued)
            .with_context(|| format!("cannot make the directory {}", issued.display()))?;
        let sans: Vec<String> = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain([format!("DNS:{name}")])
            .collect();
        self.sign_serving_cert(&issued, name, &sans)
            .with_context(|| format!("cannot issue a serving certificate for {name}"))
    }

    /// The last `lines` lines of each component's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        COMPONENTS
            .iter()
            .filter(|name| self.log_path(name).exists())
            .map(|name| self.log_tail(name, lines))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where the components' logs are: `<component>.log`.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    fn cert_path(&self, name: &str) -> PathBuf {
        self.certs_dir().join(name)
    }

    fn log_path(&self, component: &str) -> PathBuf {
        self.log_dir().join(format!("{component}.log"))
    }

    /// A path as a flag value. Paths under the state directory are the caller's, so they
    /// are shown lossily if they are not UTF-8 (the components would not accept them
    /// either).
    fn flag(name: &str, path: &Path) -> String {
        format!("--{name}={}", path.display())
    }

    // --- credentials ----------------------------------------------------------------------

    /// The CA, the API server's serving certificate, the service-account signing keys, the
    /// admin token file, and the CA in DER for our clients.
    fn make_credentials(&mut self) -> Result<()> {
        let certs = self.certs_dir();
        self.make_ca()
            .context("cannot make the control plane's CA")?;
        let sans: Vec<String> = APISERVER_SANS.iter().map(|s| (*s).to_owned()).collect();
        self.sign_serving_cert(&certs, APISERVER, &sans)
            .context("cannot make the API server's serving certificate")?;
        make_service_account_keys(&certs)?;

        let tokens = self.cert_path("tokens.csv");
        let line = format!("{},admin,admin-uid,system:masters\n", self.token);
        fs::write(&tokens, line)
            .with_context(|| format!("cannot write the token file {}", tokens.display()))?;

        let der = self.cert_path("ca.der");
        run_openssl(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(self.ca_path())
                .arg("-out")
                .arg(&der),
        )?;
        self.ca_der = fs::read(&der)
            .with_context(|| format!("cannot read the CA certificate {}", der.display()))?;
        Ok(())
    }

    /// A self-signed CA (`ca.crt`, `ca.key`), CN tributary-e2e-ca, for 10 years.
    fn make_ca(&self) -> Result<()> {
        let config = self.cert_path("ca.cnf");
        write_file(&config, CA_CONFIG)?;
        let key = self.cert_path("ca.key");
        make_key(&key)?;
        run_openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-new", "-sha256", "-days", CERT_DAYS])
                .args(["-extensions", "ca", "-config"])
                .arg(&config)
                .arg("-key")
                .arg(&key)
                .arg("-out")
                .arg(self.ca_path()),
        )
    }

    /// `<dir>/<name>.crt` and `<dir>/<name>.key`: a serving certificate signed by our CA
    /// for `sans` (`IP:...`, `DNS:...`), with the extensions rustls insists on.
    fn sign_serving_cert(
        &self,
        dir: &Path,
        name: &str,
        sans: &[String],
    ) -> Result<(PathBuf, PathBuf)> {
        let config = dir.join(format!("{name}.cnf"));
        let key = dir.join(format!("{name}.key"));
        let request = dir.join(format!("{name}.csr"));
        let cert = dir.join(format!("{name}.crt"));
        write_file(&config, &serving_config(name, sans))?;
        make_key(&key)?;
        run_openssl(
            Command::new("openssl")
                .args(["req", "-new", "-config"])
                .arg(&config)
                .arg("-key")
                .arg(&key)
                .arg("-out")
                .arg(&request),
        )?;
        // A random serial rather than -CAcreateserial: certificates may be issued
        // concurrently, and a serial file would be shared.
        let serial = format!("0x{}", uuid::Uuid::new_v4().simple());
        run_openssl(
            Command::new("openssl")
                .args([
                    "x509",
                    "-req",
                    "-sha256",
                    "-days",
                    CERT_DAYS,
                    "-set_serial",
                    &serial,
                ])
                .arg("-in")
                .arg(&request)
                .arg("-CA")
                .arg(self.ca_path())
                .arg("-CAkey")
                .arg(self.cert_path("ca.key"))
                .args(["-extensions", "serving", "-extfile"])
                .arg(&config)
                .arg("-out")
                .arg(&cert),
        )?;
        // Only an intermediate step; a leftover would do no harm.
        let _ = fs::remove_file(&request);
        Ok((cert, key))
    }

    /// The admin's kubeconfig, for the controller manager, the scheduler and the tests.
    fn write_kubeconfig(&self) -> Result<()> {
        let ca = fs::read(self.ca_path())
            .with_context(|| format!("cannot read {}", self.ca_path().display()))?;
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "tributary-e2e",
                "cluster": {
                    "server": self.api_url(),
                    "certificate-authority-data": base64(&ca),
                },
            }],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{
                "name": "tributary-e2e",
                "context": {"cluster": "tributary-e2e", "user": "admin", "namespace": "default"},
            }],
            "current-context": "tributary-e2e",
            "preferences": {},
        });
        let text =
            serde_yaml::to_string(&kubeconfig).context("cannot write the kubeconfig as YAML")?;
        write_file(&self.kubeconfig_path(), &text)
    }

    // --- the components' flags --------------------------------------------------------------

    fn etcd_args(&self, ports: &Ports) -> Vec<String> {
        let client_url = format!("http://127.0.0.1:{}", ports.etcd_client);
        let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
        vec![
            "--name=tributary-e2e".into(),
            Self::flag("data-dir", &self.dir.join("etcd")),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=tributary-e2e={peer_url}"),
            // A throw-away cluster: speed over durability.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]
    }

    fn apiserver_args(&self, ports: &Ports) -> Vec<String> {
        let cert = |name: &str| self.cert_path(name);
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.api),
            Self::flag("tls-cert-file", &cert("kube-apiserver.crt")),
            Self::flag("tls-private-key-file", &cert("kube-apiserver.key")),
            Self::flag("client-ca-file", &self.ca_path()),
            Self::flag("token-auth-file", &cert("tokens.csv")),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            Self::flag("service-account-key-file", &cert("sa.pub")),
            Self::flag("service-account-signing-key-file", &cert("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            // No endpoints for the `kubernetes` Service: a loopback address may not be one.
            "--endpoint-reconciler-type=none".into(),
            // Logs, exec and port-forward go to the node agents at their InternalIP. Their
            // certificates are not checked (no --kubelet-certificate-authority).
            "--kubelet-preferred-address-types=InternalIP".into(),
        ]
    }

    fn controller_manager_args(&self, ports: &Ports) -> Vec<String> {
        vec![
            Self::flag("kubeconfig", &self.kubeconfig_path()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.controller_manager),
            "--leader-elect=false".into(),
            // Published in every namespace as ConfigMap kube-root-ca.crt.
            Self::flag("root-ca-file", &self.ca_path()),
            Self::flag(
                "service-account-private-key-file",
                &self.cert_path("sa.key"),
            ),
            "--use-service-account-credentials=false".into(),
            // Volumes of the StorageClass local-folder: folders under /tmp/hostpath_pv.
            "--enable-hostpath-provisioner=true".into(),
            "--controllers=*".into(),
            "--cluster-name=tributary-e2e".into(),
            "--allocate-node-cidrs=false".into(),
            // CertificateSigningRequests are signed by our CA, which the API server trusts
            // for client certificates.
            Self::flag("cluster-signing-cert-file", &self.ca_path()),
            Self::flag("cluster-signing-key-file", &self.cert_path("ca.key")),
            // Its default is under /usr/libexec, which it would make.
            Self::flag("flex-volume-plugin-dir", &self.dir.join("flexvolume")),
        ]
    }

    fn scheduler_args(&self, ports: &Ports) -> Vec<String> {
        vec![
            Self::flag("kubeconfig", &self.kubeconfig_path()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.scheduler),
            "--leader-elect=false".into(),
        ]
    }

    // --- processes --------------------------------------------------------------------------

    /// Starts `name` from the bin directory, its output to `logs/<name>.log`, and keeps it
    /// in `self.processes` at once, so that a later failure stops it too.
    fn spawn(&mut self, name: &'static str, args: Vec<String>) -> Result<()> {
        let binary = self.bin.join(name);
        let log_path = self.log_path(name);
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create the log file {}", log_path.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("cannot share the log file {}", log_path.display()))?;
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {name} ({}): run scripts/install-control-plane to build it",
                    binary.display()
                )
            })?;
        self.processes.push(Process { name, child });
        Ok(())
    }

    /// The first started process that has exited, and how.
    fn exited(&mut self) -> Option<(&'static str, String)> {
        self.processes.iter_mut().find_map(|process| {
            let status = process.child.try_wait().ok().flatten()?;
            Some((process.name, status.to_string()))
        })
    }

    /// Polls `attempt` every 100 ms until it succeeds, for at most [`START_PATIENCE`].
    /// Fails at once when a process exits (naming it), or at the deadline blaming
    /// `component`; either way with that component's log tail and the last reason
    /// `attempt` gave.
    async fn wait_for<F, Fut>(&mut self, component: &str, what: &str, mut attempt: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<(), String>>,
    {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()).await;
            let last = match answer {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(reason)) => reason,
                Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            };
            if let Some((name, status)) = self.exited() {
                return Err(self.failure(
                    name,
                    format!("{name} exited ({status}) while waiting for {what}"),
                ));
            }
            if Instant::now() >= deadline {
                return Err(self.failure(
                    component,
                    format!("waited {START_PATIENCE:?} for {what}; the last answer: {last}"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails unless the scheduler (and everything else) is still running
    /// [`SCHEDULER_SETTLE`] after the scheduler started.
    async fn check_scheduler_settled(&mut self, started: Instant) -> Result<()> {
        let settled = started + SCHEDULER_SETTLE;
        let now = Instant::now();
        if settled > now {
            tokio::time::sleep(settled - now).await;
        }
        if let Some((name, status)) = self.exited() {
            return Err(self.failure(name, format!("{name} exited ({status}) after it started")));
        }
        Ok(())
    }

    /// An error saying what failed, with `component`'s log tail and where all logs are.
    fn failure(&self, component: &str, what: impl Display) -> anyhow::Error {
        anyhow!(
            "the local control plane did not start: {what}\n{}\n(all logs: {})",
            self.log_tail(component, ERROR_TAIL_LINES),
            self.log_dir().display()
        )
    }

    fn log_tail(&self, component: &str, lines: usize) -> String {
        let path = self.log_path(component);
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                format!(
                    "--- {component} ({}):\n{}",
                    path.display(),
                    last_lines(&text, lines)
                )
            }
            Err(error) => format!("--- {component}: cannot read {}: {error}", path.display()),
        }
    }

    // --- objects --------------------------------------------------------------------------

    /// The default StorageClass [`STORAGE_CLASS`], provisioned by the controller manager's
    /// host-path provisioner: a claim is bound as soon as it is made (Immediate), its
    /// folder deleted with it (Delete).
    async fn apply_storage_class(&self, client: &Client) -> Result<()> {
        let class = StorageClass {
            metadata: ObjectMeta {
                name: Some(STORAGE_CLASS.into()),
                annotations: Some(
                    [(
                        "storageclass.kubernetes.io/is-default-class".to_owned(),
                        "true".to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            provisioner: "kubernetes.io/host-path".into(),
            reclaim_policy: Some("Delete".into()),
            volume_binding_mode: Some("Immediate".into()),
            ..StorageClass::default()
        };
        let result = Api::<StorageClass>::all(client.clone())
            .patch(
                STORAGE_CLASS,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&class),
            )
            .await;
        if let Err(error) = result {
            return Err(self.failure(
                APISERVER,
                format!("cannot apply the default StorageClass {STORAGE_CLASS}: {error}"),
            ));
        }
        Ok(())
    }
}

impl Drop for ControlPlane {
    /// Stops the API server, controller manager and scheduler, then etcd, which they
    /// would otherwise lose mid-request.
    fn drop(&mut self) {
        let (etcd, others): (Vec<Process>, Vec<Process>) = self
            .processes
            .drain(..)
            .partition(|process| process.name == ETCD);
        stop(others);
        stop(etcd);
    }
}

/// SIGTERM to each process, SIGKILL to those still running after [`STOP_PATIENCE`].
fn stop(mut processes: Vec<Process>) {
    for process in &mut processes {
        // Only a running child: an exited one was reaped, and its pid may be another's.
        if matches!(process.child.try_wait(), Ok(None)) {
            terminate(&process.child);
        }
    }
    let deadline = Instant::now() + STOP_PATIENCE;
    while Instant::now() < deadline
        && processes
            .iter_mut()
            .any(|process| matches!(process.child.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for process in &mut processes {
        // Either fails only when the process is gone already.
        let _ = process.child.kill();
        let _ = process.child.wait();
    }
}

/// Sends SIGTERM, which the components answer by shutting down cleanly.
#[allow(unsafe_code)]
fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes no pointers; the pid is that of our own child, not yet reaped,
    // so it names no other process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

impl Ports {
    /// Five distinct ports nothing listens on now: all bound at once, then released.
    fn pick() -> Result<Ports> {
        let listeners = (0..5)
            .map(|_| TcpListener::bind(("127.0.0.1", 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot bind a port on 127.0.0.1 to find free ports")?;
        let ports = listeners
            .iter()
            .map(|listener| listener.local_addr().map(|address| address.port()))
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot read the port of a socket bound on 127.0.0.1")?;
        let [etcd_client, etcd_peer, api, controller_manager, scheduler] = ports[..] else {
            bail!("expected 5 ports, got {ports:?}");
        };
        Ok(Ports {
            etcd_client,
            etcd_peer,
            api,
            controller_manager,
            scheduler,
        })
    }
}

/// Fails, saying how to get them, unless all four binaries are in `bin`.
fn check_binaries(bin: &Path) -> Result<()> {
    let missing: Vec<&str> = COMPONENTS
        .iter()
        .copied()
        .filter(|name| !bin.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} missing from {}: run scripts/install-control-plane, which builds them and \
             prints their directory",
            missing.join(", "),
            bin.display()
        );
    }
    Ok(())
}

/// Makes the state directory with `certs/` and `logs/`, and removes etcd data of an earlier
/// run, which the new CA and keys would not match. Returns the directory, absolute: the
/// components get paths in it as flags.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} absolute", dir.display()))?;
    for sub in ["certs", "logs"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path)
            .with_context(|| format!("cannot make the directory {}", path.display()))?;
    }
    let etcd = dir.join("etcd");
    if etcd.exists() {
        fs::remove_dir_all(&etcd).with_context(|| {
            format!(
                "cannot remove the old etcd data {}: remove it by hand",
                etcd.display()
            )
        })?;
    }
    Ok(dir)
}

/// The service-account token signing key pair `sa.key` (RSA) and `sa.pub`.
fn make_service_account_keys(certs: &Path) -> Result<()> {
    let key = certs.join("sa.key");
    run_openssl(
        Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"),
    )?;
    run_openssl(
        Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(certs.join("sa.pub")),
    )
}

/// An EC P-256 private key, PKCS #8 PEM, which Go and rustls both read.
fn make_key(path: &Path) -> Result<()> {
    run_openssl(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(path),
    )
}

/// The openssl config of a serving certificate for `sans`: CA:FALSE, digitalSignature and
/// keyEncipherment, serverAuth, the SANs; rustls rejects a certificate without them.
fn serving_config(name: &str, sans: &[String]) -> String {
    format!(
        "[req]
distinguished_name = dn
prompt = no
[dn]
CN = {name}
[serving]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = {}
",
        sans.join(", ")
    )
}

/// A certificate's name must be a DNS name (it is a SAN, the CN and a file name) of at
/// most 64 characters (the longest CN).
fn check_cert_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let valid_ends = !name.starts_with(['-', '.']) && !name.ends_with(['-', '.']);
    if name.is_empty() || name.len() > 64 || !valid_chars || !valid_ends {
        bail!(
            "{name:?} cannot name a certificate: use a DNS name of at most 64 characters \
             (a-z, 0-9, '-', '.')"
        );
    }
    Ok(())
}

/// Runs an openssl command; its stderr is the error when it fails.
fn run_openssl(command: &mut Command) -> Result<()> {
    let output = command.output().with_context(|| {
        format!(
            "cannot run {command:?}: openssl makes the control plane's certificates \
             (Debian and Ubuntu: apt-get install openssl)"
        )
    })?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether the API server says it is ready.
async fn api_ready(client: &Client) -> std::result::Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|error| error.to_string())?;
    match client.request_text(request).await {
        Ok(text) if text.trim() == "ok" => Ok(()),
        Ok(text) => Err(text),
        Err(error) => Err(error.to_string()),
    }
}

/// Whether the controller manager has done what pods need first: the CA bundle every pod
/// mounts, and the ServiceAccount a pod of namespace `default` runs as (ServiceAccount
/// admission rejects pods until it exists).
async fn controller_manager_works(client: &Client) -> std::result::Result<(), String> {
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    match config_maps.get_opt("kube-root-ca.crt").await {
        Ok(Some(_)) => {}
        Ok(None) => return Err("no ConfigMap default/kube-root-ca.crt yet".into()),
        Err(error) => return Err(error.to_string()),
    }
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
    match accounts.get_opt("default").await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("no ServiceAccount default/default yet".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// The last `count` lines of `text`.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Standard base64 with padding, for the kubeconfig's certificate-authority-data.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn certificate_names_are_dns_names() {
        assert!(check_cert_name("node-1").is_ok());
        assert!(check_cert_name("node-1.local").is_ok());
        for bad in [
            "",
            "Node",
            "-node",
            "node.",
            "a/b",
            "../ca",
            &"a".repeat(65),
        ] {
            assert!(check_cert_name(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
