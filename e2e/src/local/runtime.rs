//! How one container of a pod is launched: its program (from the image map), its
//! environment (the pod's env with the downward API, ConfigMap and Secret references and
//! `$(VAR)` expansion, as the kubelet makes it), and its process, which runs through the
//! sandbox in a process group of its own.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client, ResourceExt};

use super::sandbox::{Mount, SandboxSpec};

/// Maps image repositories (tag ignored) to the programs that stand in for them.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// Repository → (entrypoint program, default arguments).
    pub entrypoints: BTreeMap<String, (PathBuf, Vec<String>)>,
}

impl Images {
    /// `REPOSITORY=PROGRAM[,ARG...]`: the image's entrypoint is PROGRAM, its other
    /// programs are PROGRAM's siblings (the image's `/usr/local/bin`).
    pub fn add(&mut self, mapping: &str) -> anyhow::Result<()> {
        let (repository, rest) = mapping
            .split_once('=')
            .with_context(|| format!("--image {mapping}: expected REPOSITORY=PROGRAM[,ARG...]"))?;
        let mut parts = rest.split(',');
        let program = PathBuf::from(parts.next().unwrap_or_default());
        if !program.is_file() {
            bail!(
                "--image {mapping}: {} is not a file (build it first)",
                program.display()
            );
        }
        let program = program.canonicalize()?;
        self.entrypoints.insert(
            repository.to_string(),
            (program, parts.map(String::from).collect()),
        );
        Ok(())
    }

    fn of(&self, image: &str) -> anyhow::Result<&(PathBuf, Vec<String>)> {
        let repository = match image.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => repository,
            _ => image,
        };
        let repository = repository.split('@').next().unwrap_or(repository);
        self.entrypoints.get(repository).with_context(|| {
            format!(
                "no program for the image {image}: this node runs only {:?}",
                self.entrypoints.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The program that `name` (a command's first word) is in `image`.
    pub fn program(&self, image: &str, name: &str) -> anyhow::Result<PathBuf> {
        let (entrypoint, _) = self.of(image)?;
        let base = Path::new(name)
            .file_name()
            .with_context(|| format!("the command {name:?} names no program"))?;
        let dir = entrypoint.parent().expect("a file has a parent");
        let program = dir.join(base);
        if !program.is_file() {
            bail!(
                "the image {image} has no {name} (looked for {})",
                program.display()
            );
        }
        Ok(program)
    }

    /// The program and arguments a container runs: its command, else the image's
    /// entrypoint; its args, else (without a command) the image's default arguments.
    pub fn command(&self, container: &Container) -> anyhow::Result<(PathBuf, Vec<String>)> {
        let image = container.image.as_deref().unwrap_or_default();
        let (entrypoint, default_args) = self.of(image)?;
        match container.command.as_deref() {
            Some([first, rest @ ..]) => {
                let mut args = rest.to_vec();
                args.extend(container.args.clone().unwrap_or_default());
                Ok((self.program(image, first)?, args))
            }
            _ => Ok((
                entrypoint.clone(),
                container
                    .args
                    .clone()
                    .unwrap_or_else(|| default_args.clone()),
            )),
        }
    }

    /// The PATH inside a container of `image`.
    pub fn path(&self, image: &str) -> anyhow::Result<String> {
        let (entrypoint, _) = self.of(image)?;
        let dir = entrypoint.parent().expect("a file has a parent");
        Ok(format!("{}:/usr/bin:/bin", dir.display()))
    }
}

/// What the node knows about the machine, for environments.
#[derive(Debug, Clone)]
pub struct Environment {
    pub api_host: String,
    pub api_port: u16,
    pub host_ip: Ipv4Addr,
    /// Preloaded into every container (see the bind-shim crate).
    pub bind_shim: PathBuf,
}

/// The variable the bind shim reads.
pub const POD_IP_VARIABLE: &str = "TRIBUTARY_E2E_POD_IP";

/// Expands `$(NAME)` with earlier variables, as the kubelet does; `$$` is a `$`.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = vars.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward-API field of the pod.
pub fn field(pod: &Pod, path: &str, ip: Ipv4Addr, host_ip: Ipv4Addr) -> anyhow::Result<String> {
    let map_key = |prefix: &str, map: &BTreeMap<String, String>| {
        path.strip_prefix(prefix)
            .and_then(|k| k.strip_suffix("']"))
            .map(|k| map.get(k).cloned().unwrap_or_default())
    };
    let spec = pod.spec.clone().unwrap_or_default();
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => {
            if let Some(v) = map_key("metadata.labels['", pod.labels()) {
                v
            } else if let Some(v) = map_key("metadata.annotations['", pod.annotations()) {
                v
            } else {
                bail!("the downward-API field {path} is not served by this node agent")
            }
        }
    })
}

async fn config_map_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("the ConfigMap {namespace}/{name}"))?;
    Ok(map.data.unwrap_or_default())
}

async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("the Secret {namespace}/{name}"))?;
    let mut data: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.unwrap_or_default());
    Ok(data)
}

/// Decodes a Secret's base64 value (for files).
pub fn decode(value: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap_or_else(|_| value.as_bytes().to_vec())
}

/// A container's environment, in the kubelet's order: the service variables, `envFrom`,
/// then `env` (later wins), then what this agent adds.
pub async fn environment(
    client: &Client,
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
    machine: &Environment,
    path: String,
) -> anyhow::Result<Vec<(String, String)>> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut vars = BTreeMap::new();
    vars.insert("PATH".to_string(), path);
    vars.insert("HOSTNAME".to_string(), pod.name_any());
    vars.insert("KUBERNETES_SERVICE_HOST".into(), machine.api_host.clone());
    vars.insert(
        "KUBERNETES_SERVICE_PORT".into(),
        machine.api_port.to_string(),
    );
    vars.insert(
        "KUBERNETES_SERVICE_PORT_HTTPS".into(),
        machine.api_port.to_string(),
    );
    for source in container.env_from.clone().unwrap_or_default() {
        let prefix = source.prefix.unwrap_or_default();
        let data = if let Some(r) = &source.config_map_ref {
            config_map_data(client, &namespace, &r.name).await
        } else if let Some(r) = &source.secret_ref {
            secret_data(client, &namespace, &r.name).await
        } else {
            continue;
        };
        let optional = source
            .config_map_ref
            .as_ref()
            .and_then(|r| r.optional)
            .or(source.secret_ref.as_ref().and_then(|r| r.optional))
            .unwrap_or(false);
        match data {
            Ok(data) => vars.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
            Err(_) if optional => {}
            Err(error) => return Err(error),
        }
    }
    for var in container.env.clone().unwrap_or_default() {
        let value = env_value(client, pod, &namespace, &var, ip, machine.host_ip, &vars).await?;
        vars.insert(var.name, value);
    }
    vars.insert(POD_IP_VARIABLE.into(), ip.to_string());
    vars.insert("LD_PRELOAD".into(), machine.bind_shim.display().to_string());
    Ok(vars.into_iter().collect())
}

async fn env_value(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    var: &EnvVar,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let Some(from) = &var.value_from else {
        return Ok(expand(var.value.as_deref().unwrap_or_default(), vars));
    };
    if let Some(f) = &from.field_ref {
        return field(pod, &f.field_path, ip, host_ip);
    }
    let (data, key, optional) = if let Some(r) = &from.config_map_key_ref {
        (
            config_map_data(client, namespace, &r.name).await,
            &r.key,
            r.optional,
        )
    } else if let Some(r) = &from.secret_key_ref {
        (
            secret_data(client, namespace, &r.name).await,
            &r.key,
            r.optional,
        )
    } else {
        bail!(
            "the variable {} takes its value from a source this node agent does not serve",
            var.name
        );
    };
    match data.map(|d| d.get(key).cloned()) {
        Ok(Some(value)) => Ok(value),
        _ if optional == Some(true) => Ok(String::new()),
        Ok(None) => bail!("the variable {}: key {key} is missing", var.name),
        Err(error) => Err(error),
    }
}

/// How a container's run ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
    pub finished: Time,
}

/// One run of a container's process.
pub struct Process {
    pub pid: u32,
    pub started: Time,
    pub exit: Arc<Mutex<Option<Exit>>>,
}

impl Process {
    /// Starts the sandbox for `spec` with its output appended to `log`.
    pub fn start(
        sandbox: &Path,
        spec: &SandboxSpec,
        spec_file: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::write(spec_file, serde_json::to_vec(spec)?)
            .with_context(|| format!("writing {}", spec_file.display()))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("the container log {}", log.display()))?;
        let mut child = tokio::process::Command::new(sandbox)
            .arg("sandbox")
            .arg(spec_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {}", sandbox.display()))?;
        let pid = child.id().context("a started child has a pid")?;
        let exit = Arc::new(Mutex::new(None));
        let record = exit.clone();
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await;
            let (code, signal) = match status {
                Ok(s) => (
                    s.code().unwrap_or(128 + s.signal().unwrap_or(0)),
                    s.signal(),
                ),
                Err(_) => (-1, None),
            };
            *record.lock().expect("exit lock") = Some(Exit {
                code,
                signal,
                finished: now(),
            });
        });
        Ok(Self {
            pid,
            started: now(),
            exit,
        })
    }

    pub fn exited(&self) -> Option<Exit> {
        self.exit.lock().expect("exit lock").clone()
    }

    /// Signals the container's whole process group (also after its first process has
    /// ended: what it started may still run; a group that is gone is no error).
    pub fn signal(&self, signal: rustix::process::Signal) {
        signal_group(self.pid, signal);
    }
}

/// Signals the process group a container's process leads.
pub fn signal_group(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The mounts of one container: its volume mounts resolved to the pod's volume
/// directories, and the pod's hosts file over `/etc/hosts`.
pub fn mounts(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    hosts_file: &Path,
) -> anyhow::Result<Vec<Mount>> {
    let mut mounts = vec![Mount {
        source: hosts_file.to_path_buf(),
        target: "/etc/hosts".into(),
        read_only: true,
    }];
    for m in container.volume_mounts.clone().unwrap_or_default() {
        let source = volumes.get(&m.name).with_context(|| {
            format!(
                "the container {} mounts the volume {}, which the pod does not have",
                container.name, m.name
            )
        })?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => source.join(sub),
            None => source.clone(),
        };
        mounts.push(Mount {
            source,
            target: m.mount_path.into(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_as_the_kubelet_expands_them() {
        let vars = BTreeMap::from([
            ("POD_NAME".to_string(), "demo-broker-0".to_string()),
            ("NS".to_string(), "streams".to_string()),
        ]);
        assert_eq!(
            expand("$(POD_NAME).demo-brokers.$(NS).svc:9095", &vars),
            "demo-broker-0.demo-brokers.streams.svc:9095"
        );
        // Unknown names and a lone `$` stay as written; `$$` is a `$`.
        assert_eq!(expand("$(MISSING) $ $$(NS)", &vars), "$(MISSING) $ $(NS)");
        assert_eq!(expand("$(unclosed", &vars), "$(unclosed");
    }

    #[test]
    fn images_map_to_programs_and_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("tributary-broker");
        std::fs::write(&entry, "").unwrap();
        std::fs::write(dir.path().join("tributary"), "").unwrap();
        let mut images = Images::default();
        images
            .add(&format!("ghcr.io/x/tributary={},run", entry.display()))
            .unwrap();
        let container = |command: Option<Vec<&str>>, args: Option<Vec<&str>>| Container {
            name: "c".into(),
            image: Some("ghcr.io/x/tributary:1.2.3".into()),
            command: command.map(|c| c.into_iter().map(String::from).collect()),
            args: args.map(|a| a.into_iter().map(String::from).collect()),
            ..Container::default()
        };
        let entry = entry.canonicalize().unwrap();
        // No command: the entrypoint with the image's arguments, or the container's.
        assert_eq!(
            images.command(&container(None, None)).unwrap(),
            (entry.clone(), vec!["run".to_string()])
        );
        assert_eq!(
            images.command(&container(None, Some(vec!["x"]))).unwrap().1,
            vec!["x"]
        );
        // A command names a program of the image, by name or by its path in the image.
        let (program, args) = images
            .command(&container(
                Some(vec!["/usr/local/bin/tributary", "produce"]),
                Some(vec!["t"]),
            ))
            .unwrap();
        assert_eq!(program, entry.with_file_name("tributary"));
        assert_eq!(args, vec!["produce", "t"]);
        let missing = images
            .command(&container(Some(vec!["sh"]), None))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("has no sh"), "{missing}");
        let unknown = images
            .program("docker.io/library/busybox", "sh")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("no program for the image"), "{unknown}");
        assert!(images.add("no-equals-sign").is_err());
        assert!(
            images
                .add("repo=/does/not/exist")
                .unwrap_err()
                .to_string()
                .contains("build it first")
        );
    }
}
