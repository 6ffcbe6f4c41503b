//! The container "runtime": a pod's process starts as `tributary-e2e-local sandbox SPEC`,
//! which, still single-threaded, makes the pod's view of the filesystem and then becomes
//! the container's command. Each container gets a mount namespace of its own in which its
//! volumes are bind-mounted at their mount paths and the pod's hosts file over
//! `/etc/hosts`; nothing changes for the rest of the machine. A mount path whose parent
//! directories do not exist (say `/var/run/secrets/kubernetes.io/serviceaccount`) is made
//! in an overlay over its deepest existing ancestor, whose upper layer is a small tmpfs of
//! the sandbox's own, so the machine's directories stay untouched. An `exec` into a running
//! container enters that container's mount namespace instead.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// What to make and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Enter the mount namespace of this process (a running container) instead of making
    /// one.
    pub enter: Option<u32>,
    pub mounts: Vec<Mount>,
    /// Where the overlays' upper and work directories go (the pod's directory).
    pub scratch: PathBuf,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    pub working_dir: Option<PathBuf>,
    /// The whole environment of the command.
    pub env: Vec<(String, String)>,
    /// The program (a path on this machine) and its arguments.
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    /// A file or directory on this machine.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Makes the sandbox and replaces this process with the command; returns only on error.
///
/// The program and the preloaded library are opened before anything is mounted and run
/// through `/proc/self/fd`: a volume (an emptyDir at `/tmp`, say) may hide the folder
/// they live in on this machine.
pub fn run(spec: &SandboxSpec) -> anyhow::Error {
    let result = (|| {
        let program = open_path(&spec.program)
            .with_context(|| format!("the program {}", spec.program.display()))?;
        let mut env = spec.env.clone();
        let mut preloads = Vec::new();
        for (_, value) in env.iter_mut().filter(|(k, _)| k == "LD_PRELOAD") {
            let library = inherited(Path::new(value.as_str()))
                .with_context(|| format!("the preloaded library {value}"))?;
            *value = format!("/proc/self/fd/{}", library.as_raw_fd());
            preloads.push(library);
        }
        prepare(spec)?;
        Ok::<_, anyhow::Error>((program, env, preloads))
    })();
    let (program, env, _preloads) = match result {
        Ok(opened) => opened,
        Err(error) => return error,
    };
    let mut command = Command::new(format!("/proc/self/fd/{}", program.as_raw_fd()));
    if let Some(name) = spec.program.file_name() {
        command.arg0(name);
    }
    command.args(&spec.args).env_clear();
    command.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    let error = command.exec();
    anyhow::Error::new(error).context(format!("cannot run {}", spec.program.display()))
}

/// `path` opened for exec only (closed on exec, as an ELF program needs it no longer).
fn open_path(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
}

/// `path` opened so that the command inherits it (the dynamic loader opens the preloaded
/// library after the exec).
fn inherited(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty())?;
    Ok(file)
}

#[allow(unsafe_code)]
fn prepare(spec: &SandboxSpec) -> anyhow::Result<()> {
    match spec.enter {
        Some(pid) => enter(pid)?,
        None => {
            // SAFETY: plain syscalls on a single-threaded process.
            check(
                unsafe { libc::unshare(libc::CLONE_NEWNS) },
                "unshare(CLONE_NEWNS)",
            )?;
            mount(
                None,
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            )
            .context("making / private in the new mount namespace")?;
            let mut mounts = spec.mounts.clone();
            // Parents before what is mounted inside them.
            mounts.sort_by_key(|m| m.target.components().count());
            // Every source opened first: a mount (say an emptyDir at /tmp) may hide where
            // a later source lives (a claim's folder under /tmp).
            let sources = mounts
                .iter()
                .map(|m| {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH)
                        .open(&m.source)
                        .with_context(|| format!("the volume source {}", m.source.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (index, (m, source)) in mounts.iter().zip(&sources).enumerate() {
                let is_dir = source.metadata()?.is_dir();
                let via = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
                bind(
                    m,
                    is_dir,
                    &via,
                    &spec.scratch.join(format!("overlay-{index}")),
                )?;
            }
        }
    }
    // Groups, group, then user, by hand: `Command::uid` would clear the supplementary
    // groups (the fsGroup) again.
    if spec.uid.is_some() || !spec.groups.is_empty() {
        let groups: Vec<libc::gid_t> = spec.groups.clone();
        // SAFETY: a valid array of `groups.len()` group ids.
        check(
            unsafe { libc::setgroups(groups.len(), groups.as_ptr()) },
            "setgroups",
        )?;
    }
    if let Some(gid) = spec.gid {
        // SAFETY: a plain syscall on a single-threaded process.
        check(unsafe { libc::setgid(gid) }, "setgid")?;
    }
    if let Some(uid) = spec.uid {
        // SAFETY: a plain syscall on a single-threaded process.
        check(unsafe { libc::setuid(uid) }, "setuid")?;
    }
    Ok(())
}

#[allow(unsafe_code)]
fn enter(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/ns/mnt");
    let file = std::fs::File::open(&path).with_context(|| format!("the container's {path}"))?;
    // SAFETY: a valid namespace file descriptor; this process is single-threaded.
    check(
        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNS) },
        "setns into the container's mount namespace",
    )
}

/// Bind-mounts one volume (`source`, its opened path), making its mount point first when
/// needed.
fn bind(m: &Mount, is_dir: bool, source: &Path, scratch: &Path) -> anyhow::Result<()> {
    if !m.target.exists() {
        make_mount_point(&m.target, is_dir, scratch)?;
    }
    mount(
        Some(source),
        &m.target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .with_context(|| format!("mounting {} at {}", m.source.display(), m.target.display()))?;
    if m.read_only {
        mount(
            None,
            &m.target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )
        .with_context(|| format!("making {} read-only", m.target.display()))?;
    }
    Ok(())
}

/// Makes `target` inside an overlay over its deepest existing ancestor.
fn make_mount_point(target: &Path, is_dir: bool, scratch: &Path) -> anyhow::Result<()> {
    let mut existing = target.parent().context("a mount path has a parent")?;
    while !existing.exists() {
        existing = existing.parent().context("/ exists")?;
    }
    let missing = target.strip_prefix(existing).expect("an ancestor");
    let ancestor = existing
        .canonicalize()
        .with_context(|| format!("resolving {}", existing.display()))?;
    if ancestor == Path::new("/") {
        bail!(
            "cannot make the mount path {}: an overlay over / would hide the machine's \
             mounts; use a mount path under an existing directory",
            target.display()
        );
    }
    // The overlay's upper and work layers on a tmpfs of this sandbox's own, mounted at
    // `scratch`: they hold only the new mount points, go with the mount namespace, and
    // cannot overlap the overlaid folder even when `scratch` is inside it (a checkout under
    // /tmp, a volume at /tmp/input).
    std::fs::create_dir_all(scratch)?;
    mount(
        Some(Path::new("tmpfs")),
        scratch,
        Some("tmpfs"),
        0,
        Some("size=1m,mode=0755"),
    )
    .with_context(|| format!("a tmpfs at {}", scratch.display()))?;
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        ancestor.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some(Path::new("overlay")),
        &ancestor,
        Some("overlay"),
        0,
        Some(&options),
    )
    .with_context(|| format!("an overlay over {}", ancestor.display()))?;
    let inside = ancestor.join(missing);
    if is_dir {
        std::fs::create_dir_all(&inside)
    } else {
        std::fs::create_dir_all(inside.parent().unwrap_or(&ancestor))
            .and_then(|()| std::fs::File::create(&inside).map(drop))
    }
    .with_context(|| format!("making {} in the overlay", inside.display()))
}

#[allow(unsafe_code)]
fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> anyhow::Result<()> {
    let c = |s: &str| CString::new(s).context("a path without NUL");
    let source = source.map(|s| c(&s.to_string_lossy())).transpose()?;
    let target_c = c(&target.to_string_lossy())?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    // SAFETY: NUL-terminated strings or null pointers, as mount(2) takes them.
    let result = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check(result, "mount")
}

fn check(result: libc::c_int, what: &str) -> anyhow::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()).with_context(|| format!("{what} failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_path_that_would_need_an_overlay_over_root_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let error = make_mount_point(
            Path::new("/tributary-e2e-no-such-dir/data"),
            true,
            scratch.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("an overlay over / would hide"), "{error}");
        assert!(!Path::new("/tributary-e2e-no-such-dir").exists());
    }
}
