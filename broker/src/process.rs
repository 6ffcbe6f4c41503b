//! What every Tributary process (the broker, the controller, the CLI and the operator) sets
//! up the same way: logging, the async runtime, stop signals, stopping with its parent,
//! malloc tuning and the open-file limit; and the broker's allocator (`allocator.rs`). The
//! only unsafe code outside the log's mmap.

mod allocator;

pub use allocator::Allocator;

use std::future::Future;

/// Logs to stderr, at the level `TRIBUTARY_LOG` says (`default` without it), in colour
/// on a terminal.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs a server process's `main` future on a multi-threaded runtime; a failure is
/// printed as `program: message` with a failing exit code.
pub fn run_process(
    program: &str,
    main: impl Future<Output = Result<(), String>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{program}: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT): what stops a broker or a local cluster.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Asks for SIGTERM when the parent process dies (the children of `tributary local up`
/// stop with it), and sends it now if the parent, `parent` (its process id, as the parent
/// passed it), is already gone: it may have died before this process could ask.
pub fn stop_with_parent(parent: u32) {
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .is_err()
    {
        tracing::warn!("cannot ask to stop with the parent process");
    }
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(parent) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM);
    }
}

/// Keeps the memory the process frees for its next requests instead of handing it back to
/// the kernel at once. glibc's malloc gives back the top of a heap once more than a few
/// megabytes are free there and maps its own pages for large allocations, so a broker
/// allocating megabyte request and fetch buffers faults fresh pages in, zeroed, for each:
/// on a VM that hands freed memory back to its host, that cost the replication benchmark
/// 7 to 15% of its RF=3 throughput. With this, up to 64 MiB stays free at the top of each
/// heap, and only allocations above 32 MiB get their own mapping. An environment that
/// tunes malloc itself (`GLIBC_TUNABLES=glibc.malloc...` or a `MALLOC_..._` variable) is
/// left as it is.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::vars_os().any(|(name, value)| {
            let name = name.to_string_lossy();
            (name.starts_with("MALLOC_") && name.ends_with('_'))
                || (name == "GLIBC_TUNABLES" && value.to_string_lossy().contains("glibc.malloc."))
        });
        if tuned {
            return;
        }
        // SAFETY: mallopt only sets malloc's parameters, under malloc's own locks; it
        // touches no memory of the caller.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
}

/// Raises the soft limit on open files to the hard limit: a broker keeps a file open per
/// segment and a socket per client.
#[allow(unsafe_code)]
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer,
    // which lives on this stack frame for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!("could not raise the open file limit");
            }
        }
    }
}
