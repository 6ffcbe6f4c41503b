//! Checks of what runs the e2e suite, without Docker or a cluster: the two Dockerfiles
//! (read, not built) against the objects the operator makes, `.dockerignore`,
//! `e2e/kind.sh` (its help, its stop when tools are missing, the images and chart values
//! it uses), the kind cluster's configuration and the GitHub workflow.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use serde_json::Value;
use tributary_e2e::dockerfile::{Dockerfile, Stage, numeric_user};
use tributary_e2e::repo_root;
use tributary_operator::crd::{self, Cluster};
use tributary_operator::install::{self, Install};
use tributary_operator::resources::{self, Settings};

const BROKER_DOCKERFILE: &str = "docker/broker.Dockerfile";
const OPERATOR_DOCKERFILE: &str = "docker/operator.Dockerfile";
/// Where the images put their binaries; on the default PATH of the runtime base.
const BIN_DIR: &str = "/usr/local/bin/";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn dockerfile(path: &str) -> Dockerfile {
    Dockerfile::parse(&read(path))
}

/// The StatefulSet the operator makes of examples/cluster.yaml.
fn broker_statefulset() -> StatefulSet {
    let cluster: Cluster = serde_yaml::from_str(&read("examples/cluster.yaml")).unwrap();
    let settings = Settings {
        controller_address: "tributary-operator-controller.tributary-system.svc:9093".into(),
    };
    resources::owned(&cluster, &settings).statefulset
}

/// The operator's Deployment, as `tributary-operator install` makes it.
fn operator_deployment() -> Deployment {
    let objects = install::objects(&Install {
        namespace: "tributary-system".into(),
        watch: None,
        image: install::default_image(),
    });
    let deployment = objects
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("install makes a Deployment");
    serde_json::from_value(deployment).unwrap()
}

/// The build stage's RUN that runs cargo.
fn cargo_build(file: &Dockerfile) -> String {
    let build = &file.stages[0];
    build
        .all("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .unwrap_or_else(|| panic!("the build stage has no `cargo build`: {build:?}"))
        .to_string()
}

/// The image runs from a small base as the numeric user (and group) the pods run as,
/// built in a Rust stage with cached registry and target directories, with no
/// HEALTHCHECK (the pods' probes check health).
fn check_common(path: &str, uid: i64, gid: Option<i64>) -> Stage {
    let file = dockerfile(path);
    assert!(file.stages.len() >= 2, "{path}: not a multi-stage build");
    assert!(
        file.stages[0].image.starts_with("rust:"),
        "{path}: the build stage should use a rust image, not {}",
        file.stages[0].image
    );
    let run = cargo_build(&file);
    for needed in [
        "--release",
        "--locked",
        "type=cache,target=/usr/local/cargo/registry",
        "type=cache,target=/src/target",
    ] {
        assert!(
            run.contains(needed),
            "{path}: the cargo build step lacks {needed}: {run}"
        );
    }
    assert!(
        !file.instructions().any(|i| i.keyword == "HEALTHCHECK"),
        "{path}: has a HEALTHCHECK; Kubernetes probes check the pods"
    );
    let last = file.final_stage().unwrap().clone();
    assert!(
        last.image.contains("distroless") || last.image.contains("-slim"),
        "{path}: the runtime base {} is neither distroless nor slim",
        last.image
    );
    let user = last
        .user()
        .unwrap_or_else(|| panic!("{path}: the final stage sets no USER"));
    let (image_uid, image_gid) = numeric_user(user)
        .unwrap_or_else(|| panic!("{path}: USER {user} is not numeric (runAsNonRoot needs a uid)"));
    assert_ne!(image_uid, 0, "{path}: runs as root");
    assert_eq!(image_uid, uid, "{path}: USER {user}, the pods run as {uid}");
    if let Some(gid) = gid {
        assert_eq!(
            image_gid,
            Some(gid),
            "{path}: USER {user}, the pods' group is {gid}"
        );
    }
    let builder = file.stages[0]
        .name
        .clone()
        .expect("the build stage is named");
    assert!(
        last.all("COPY")
            .iter()
            .any(|c| c.starts_with(&format!("--from={builder} ")) && c.ends_with(BIN_DIR)),
        "{path}: the binaries are not copied from {builder} into {BIN_DIR}"
    );
    last
}

/// Each `--bin` is built and copied out of the cache.
fn check_builds(path: &str, binaries: &[&str]) {
    let run = cargo_build(&dockerfile(path));
    for binary in binaries {
        assert!(
            run.contains(&format!("--bin {binary}")),
            "{path}: does not build {binary}: {run}"
        );
        assert!(
            run.contains(&format!("target/release/{binary}")),
            "{path}: does not copy {binary} out of the target cache: {run}"
        );
    }
}

#[test]
fn the_broker_image_runs_what_the_statefulset_runs_as_its_user_and_has_the_cli() {
    let statefulset = broker_statefulset();
    let pod = statefulset.spec.unwrap().template.spec.unwrap();
    let security = pod.security_context.unwrap();
    let uid = security.run_as_user.expect("the brokers set runAsUser");
    assert_eq!(security.run_as_group, Some(uid));
    assert_eq!(security.fs_group, Some(uid));
    let last = check_common(BROKER_DOCKERFILE, uid, security.run_as_group);

    let container = &pod.containers[0];
    let command = container
        .command
        .clone()
        .expect("the StatefulSet sets a command");
    let program = command[0].as_str();
    assert!(
        !program.contains('/'),
        "the StatefulSet runs {program}; found through PATH"
    );
    check_builds(
        BROKER_DOCKERFILE,
        &[program, "tributary-controller", "tributary"],
    );
    assert_eq!(
        last.entrypoint(),
        Some(vec![format!("{BIN_DIR}{program}")]),
        "the broker image's ENTRYPOINT should be the broker"
    );
    if let Some(path) = last.all("ENV").iter().find_map(|e| e.strip_prefix("PATH=")) {
        assert!(
            path.split(':').any(|d| d == BIN_DIR.trim_end_matches('/')),
            "PATH={path} does not hold {BIN_DIR}"
        );
    }
    // The binaries named are the broker package's.
    let manifest = read("broker/Cargo.toml");
    for binary in [program, "tributary-controller", "tributary"] {
        assert!(
            manifest.contains(&format!("[[bin]]\nname = \"{binary}\"")),
            "broker/Cargo.toml has no binary {binary}"
        );
    }
}

#[test]
fn the_operator_image_runs_the_operator_as_the_deployments_user() {
    let deployment = operator_deployment();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let uid = pod
        .security_context
        .and_then(|s| s.run_as_user)
        .expect("the operator sets runAsUser");
    let last = check_common(OPERATOR_DOCKERFILE, uid, None);
    check_builds(OPERATOR_DOCKERFILE, &["tributary-operator"]);
    let container = &pod.containers[0];
    assert_eq!(
        container.command, None,
        "the Deployment relies on the image's ENTRYPOINT"
    );
    assert_eq!(container.args.as_deref(), Some(&["run".to_string()][..]));
    assert_eq!(
        last.entrypoint(),
        Some(vec![format!("{BIN_DIR}tributary-operator")])
    );
    // The Helm chart's Deployment, like install's, gives arguments and no command.
    let chart = read("charts/tributary-operator/templates/deployment.yaml");
    assert!(
        !chart.contains("command:"),
        "the chart's Deployment overrides the image's ENTRYPOINT"
    );
    assert!(
        chart.contains("- run"),
        "the chart's Deployment does not pass `run`"
    );
}

#[test]
fn every_workspace_member_is_in_the_build_context_and_target_and_git_are_not() {
    let manifest = read("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("the workspace lists its members");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.contains(&"broker") && members.contains(&"operator"));
    for path in [BROKER_DOCKERFILE, OPERATOR_DOCKERFILE] {
        let copies = dockerfile(path).stages[0].all("COPY").join("\n");
        assert!(copies.contains("Cargo.toml Cargo.lock"), "{path}");
        // A member is in the image when it, or a folder it is in, is copied to the same
        // place (`COPY e2e e2e` brings e2e/bind-shim too).
        let copied: Vec<&str> = copies
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let (from, to) = (words.next()?, words.next()?);
                (from == to && words.next().is_none()).then_some(from)
            })
            .collect();
        for member in &members {
            assert!(
                copied
                    .iter()
                    .any(|c| member == c || member.starts_with(&format!("{c}/"))),
                "{path} does not copy the workspace member {member}, so cargo cannot load the workspace"
            );
        }
    }
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for wanted in ["target", ".git"] {
        assert!(
            patterns
                .iter()
                .any(|p| p.trim_start_matches("**/").trim_end_matches('/') == wanted),
            ".dockerignore does not exclude {wanted}"
        );
    }
    for member in &members {
        assert!(
            !patterns.iter().any(|p| p.trim_end_matches('/') == *member),
            ".dockerignore excludes the workspace member {member}"
        );
    }
    for needed in ["Cargo.toml", "Cargo.lock"] {
        assert!(
            !patterns.contains(&needed),
            ".dockerignore excludes {needed}"
        );
    }
}

fn kind_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo_root().join("e2e/kind.sh"))
        .args(args)
        .output()
        .expect("bash runs")
}

#[test]
fn kind_sh_builds_the_images_the_operator_defaults_to() {
    let output = kind_sh(&["--print-images"]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let images: Vec<&str> = printed.lines().collect();
    assert_eq!(
        images,
        vec![crd::default_image(), install::default_image()],
        "the broker image Clusters default to, then the operator image install defaults to"
    );
}

#[test]
fn kind_sh_help_names_what_it_needs() {
    let output = kind_sh(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    for needed in ["docker", "kind", "kubectl", "helm", "cargo", "--keep"] {
        assert!(
            help.contains(needed),
            "--help does not mention {needed}:\n{help}"
        );
    }
}

/// Where `name` is on this machine's PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A directory holding bash and the usual coreutils, and nothing else.
fn bare_path() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tools = [
        "bash", "cat", "dirname", "basename", "mkdir", "rm", "ls", "env", "mktemp", "sleep", "tr",
        "head", "tail", "date", "grep", "sed",
    ];
    for tool in tools {
        if let Some(path) = which(tool) {
            symlink(&path, dir.path().join(tool)).unwrap();
        }
    }
    assert!(dir.path().join("bash").exists(), "no bash on PATH");
    dir
}

/// A stand-in for `name` that notes each call in `calls` and exits with `code`.
fn fake_tool(dir: &Path, name: &str, code: i32, calls: &Path) {
    let bash = which("bash").unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!{}\necho \"{name} $*\" >> '{}'\nexit {code}\n",
            bash.display(),
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs kind.sh with nothing but `dir` on PATH, at most 20 s.
fn kind_sh_with_path(dir: &Path) -> (Output, Duration) {
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = Command::new(dir.join("bash"))
        .arg(repo_root().join("e2e/kind.sh"))
        .env_clear()
        .env("PATH", dir)
        .env("HOME", home.path())
        .output()
        .expect("bash runs");
    (output, started.elapsed())
}

#[test]
fn kind_sh_without_docker_or_kind_stops_at_once_saying_so() {
    let dir = bare_path();
    let (output, took) = kind_sh_with_path(dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit 0 without docker and kind");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stderr.contains("missing: docker kind kubectl helm cargo"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "it did something: {output:?}");
}

#[test]
fn kind_sh_without_a_docker_daemon_stops_before_creating_anything() {
    let dir = bare_path();
    let calls = dir.path().join("calls");
    fake_tool(dir.path(), "docker", 1, &calls);
    for tool in ["kind", "kubectl", "helm", "cargo"] {
        fake_tool(dir.path(), tool, 0, &calls);
    }
    let (output, took) = kind_sh_with_path(dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stderr.contains("Docker daemon is not reachable"),
        "{stderr}"
    );
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(
        called.trim(),
        "docker info",
        "it ran more than `docker info`"
    );
}

/// The dotted keys of `--set key=value` in kind.sh.
fn set_keys(script: &str) -> Vec<String> {
    script
        .split("--set ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(key, _)| key.trim().to_string()))
        .collect()
}

#[test]
fn kind_sh_sets_only_values_the_chart_has_and_watches_all_namespaces() {
    let script = read("e2e/kind.sh");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/tributary-operator/values.yaml")).unwrap();
    let keys = set_keys(&script);
    assert!(
        keys.contains(&"watch.allNamespaces".to_string()),
        "{keys:?}"
    );
    for key in &keys {
        let mut node = &values;
        for part in key.split('.') {
            node = node
                .get(part)
                .unwrap_or_else(|| panic!("kind.sh sets {key}, which values.yaml does not have"));
        }
    }
    assert!(script.contains("charts/tributary-operator"));
    assert!(script.contains("set -euo pipefail"));
}

#[test]
fn the_kind_cluster_has_one_control_plane_and_three_workers_in_three_zones() {
    let config: serde_yaml::Value = serde_yaml::from_str(&read("e2e/kind-config.yaml")).unwrap();
    let roles: Vec<&str> = config["nodes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["control-plane", "worker", "worker", "worker"]);
    // The rack test needs each worker in a zone of its own.
    let zones: std::collections::BTreeSet<&str> = config["nodes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|n| n["labels"]["topology.kubernetes.io/zone"].as_str())
        .collect();
    assert_eq!(zones.len(), 3, "the workers' zones: {zones:?}");
}

#[test]
fn the_workflow_runs_kind_sh_on_pull_requests_and_uploads_the_logs_on_failure() {
    let workflow: Value = serde_yaml::from_str(&read(".github/workflows/e2e.yaml")).unwrap();
    assert!(
        workflow["on"].get("pull_request").is_some(),
        "not run on pull requests"
    );
    let steps: Vec<&Value> = workflow["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().unwrap())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s["run"].as_str().is_some_and(|r| r.contains("e2e/kind.sh"))),
        "no step runs e2e/kind.sh"
    );
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("no step uploads an artifact");
    assert!(
        upload["if"]
            .as_str()
            .is_some_and(|c| c.contains("failure()")),
        "the logs are uploaded only on failure: {upload}"
    );
    assert!(
        upload["with"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("target/e2e-logs")),
        "the upload is not kind.sh's logs directory: {upload}"
    );
}
