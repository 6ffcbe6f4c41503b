//! The local node agent's container isolation, as root (the test command runs as root; as
//! another user each test prints why it is skipped): the sandbox mounts a volume where the
//! machine has no such directory without making one, and the bind shim moves a bind to
//! every address onto the pod's own.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tributary_e2e::local::sandbox::{Mount, SandboxSpec};

fn root_or_skip() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        println!("skipped: needs root (mount namespaces)");
    }
    root
}

fn spec(program: &str, args: &[&str], mounts: Vec<Mount>, scratch: &Path) -> SandboxSpec {
    SandboxSpec {
        enter: None,
        mounts,
        scratch: scratch.to_path_buf(),
        uid: None,
        gid: None,
        groups: Vec::new(),
        working_dir: None,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn run_sandbox(spec: &SandboxSpec, dir: &Path) -> std::process::Output {
    let file = dir.join("spec.json");
    std::fs::write(&file, serde_json::to_vec(spec).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tributary-e2e-local"))
        .arg("sandbox")
        .arg(&file)
        .output()
        .expect("the sandbox runs")
}

#[test]
fn a_volume_is_mounted_where_the_machine_has_no_directory_without_making_one() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("token"), "secret-token").unwrap();
    let missing = PathBuf::from(format!(
        "/run/tributary-e2e-test-{}/kubernetes.io/serviceaccount",
        std::process::id()
    ));
    let mounts = vec![Mount {
        source: volume.clone(),
        target: missing.clone(),
        read_only: true,
    }];
    let output = run_sandbox(
        &spec(
            "/bin/cat",
            &[missing.join("token").to_str().unwrap()],
            mounts,
            &dir.path().join("scratch"),
        ),
        dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "secret-token");
    assert!(
        !missing.parent().unwrap().parent().unwrap().exists(),
        "the sandbox made {} on the machine",
        missing.display()
    );
}

#[test]
fn a_read_only_volume_refuses_writes_and_a_missing_source_is_named() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("config");
    std::fs::create_dir(&volume).unwrap();
    let target = dir.path().join("seen");
    std::fs::create_dir(&target).unwrap();
    let read_only = vec![Mount {
        source: volume.clone(),
        target: target.clone(),
        read_only: true,
    }];
    let output = run_sandbox(
        &spec(
            "/usr/bin/touch",
            &[target.join("x").to_str().unwrap()],
            read_only,
            &dir.path().join("s1"),
        ),
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!volume.join("x").exists());

    let gone = vec![Mount {
        source: dir.path().join("no-such-volume"),
        target,
        read_only: false,
    }];
    let output = run_sandbox(
        &spec("/bin/true", &[], gone, &dir.path().join("s2")),
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the volume source") && stderr.contains("no-such-volume"),
        "{stderr}"
    );
}

/// The shim library: built as this test's dev-dependency beside its binary
/// (target/<profile>/deps/), where it is always current.
fn shim() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let shim = exe.parent()?.join("libtributary_e2e_bind_shim.so");
    shim.is_file().then_some(shim)
}

#[test]
fn the_bind_shim_moves_a_bind_to_every_address_onto_the_pods_own() {
    let Some(shim) = shim() else {
        panic!(
            "no libtributary_e2e_bind_shim.so beside the tests: build the workspace (cargo build --workspace)"
        );
    };
    let script = "import socket\n\
        s = socket.socket(); s.bind(('0.0.0.0', 0)); print(s.getsockname()[0])\n\
        t = socket.socket(); t.bind(('127.0.0.1', 0)); print(t.getsockname()[0])\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .env("LD_PRELOAD", &shim)
        .env("TRIBUTARY_E2E_POD_IP", "127.0.0.9")
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // 0.0.0.0 became the pod's address; a given address stays as it was.
    assert_eq!(lines, ["127.0.0.9", "127.0.0.1"]);
}

#[test]
fn a_program_in_a_folder_a_volume_hides_still_runs() {
    if !root_or_skip() {
        return;
    }
    // The repository checked out under /tmp, and a pod with an emptyDir at /tmp: the
    // program's folder is hidden inside the sandbox.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/cat", bin.join("cat")).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("file"), "still here").unwrap();
    let seen = PathBuf::from("/run").join(format!("tributary-e2e-data-{}", std::process::id()));
    let mounts = vec![
        Mount {
            source: empty,
            target: bin.clone(),
            read_only: false,
        },
        Mount {
            source: data,
            target: seen.clone(),
            read_only: true,
        },
    ];
    let cat = bin.join("cat");
    let output = run_sandbox(
        &spec(
            cat.to_str().unwrap(),
            &[seen.join("file").to_str().unwrap()],
            mounts,
            &dir.path().join("scratch"),
        ),
        dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "still here");
}

#[test]
fn a_new_mount_point_is_made_even_inside_the_folder_that_holds_the_pods_directory() {
    if !root_or_skip() {
        return;
    }
    // A checkout under /tmp (the pod's directory, so the sandbox's scratch, is in /tmp)
    // and a volume at a new folder in /tmp.
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("records.txt"), "k:v\n").unwrap();
    let target = dir.path().join(format!("input-{}", std::process::id()));
    let mounts = vec![Mount {
        source: volume,
        target: target.clone(),
        read_only: true,
    }];
    let output = run_sandbox(
        &spec(
            "/bin/cat",
            &[target.join("records.txt").to_str().unwrap()],
            mounts,
            &dir.path().join("scratch"),
        ),
        dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "k:v\n");
    assert!(
        !target.exists(),
        "the sandbox made {} on the machine",
        target.display()
    );
}
