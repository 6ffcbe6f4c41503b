//! The broker process: loads the logs, joins the controller (a standalone broker runs its
//! own), serves the gRPC API and the health and metrics endpoints, runs the maintenance
//! tasks, and shuts down cleanly. Also the controller process of a local cluster.

mod admin;
mod controller_link;
mod controller_service;
mod data_plane;
mod errors;
mod group_service;
mod grpc_only;
mod http;
mod identity;
mod metrics;
mod replication_service;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::TopicConfig;
use crate::controller::{
    Controller, ControllerConfig, ControllerError, FileStore, Registration, StoreError,
};
use crate::group::{GroupConfig, GroupCoordinator};
use crate::log::{LogManager, LogManagerError};
use crate::metadata::BrokerInfo;
use crate::protocol::grpc::proto::admin_server::AdminServer;
use crate::protocol::grpc::proto::broker_server::BrokerServer;
use crate::protocol::grpc::proto::group_server::GroupServer;
use crate::protocol::grpc::proto::replication_server::ReplicationServer;
use crate::protocol::grpc::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use crate::replication::{ReplicaManager, ReplicationConfig};
pub use controller_link::ControllerLink;
pub use controller_service::{ControllerDirectory, ControllerService, controller_server};
pub use data_plane::{
    DEFAULT_FETCH_MAX_BYTES, DEFAULT_PARTITION_MAX_BYTES, DEFAULT_PRODUCE_TIMEOUT, MAX_FETCH_WAIT,
};
pub use metrics::Metrics;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub broker_id: i32,
    pub data_dir: PathBuf,
    /// `host:port` clients should use to reach this broker; defaults to the listen address
    /// (127.0.0.1 when listening on all interfaces).
    pub advertised_address: Option<String>,
    pub rack: Option<String>,
    /// Broker-wide defaults for topic configuration keys.
    pub topic_config: BTreeMap<String, String>,
    pub default_replication_factor: u32,
    /// The controller's `host:port`; None runs a standalone broker with its own controller.
    pub controller: Option<String>,
    /// The cluster this broker belongs to, named to a controller that serves several (the
    /// operator's); sent with every controller request.
    pub cluster: Option<String>,
    /// How long the standalone broker's own controller waits for a silent broker.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub replication: ReplicationConfig,
    pub retention_check_interval: Duration,
    pub flush_check_interval: Duration,
    pub checkpoint_interval: Duration,
    /// How long a shutdown waits for leaderships to move and requests in flight.
    pub shutdown_timeout: Duration,
}

impl BrokerConfig {
    pub fn new(broker_id: i32, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            broker_id,
            data_dir: data_dir.into(),
            advertised_address: None,
            rack: None,
            topic_config: BTreeMap::new(),
            default_replication_factor: 1,
            controller: None,
            cluster: None,
            session_timeout: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            replication: ReplicationConfig::default(),
            retention_check_interval: Duration::from_secs(300),
            flush_check_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid broker configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Logs(#[from] LogManagerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// The address to advertise for a listener bound to `bound`.
fn advertised(config: &BrokerConfig, bound: SocketAddr) -> Result<(String, u16), BrokerError> {
    match &config.advertised_address {
        Some(address) => {
            let (host, port) = address.rsplit_once(':').ok_or_else(|| {
                BrokerError::Config(format!("advertised address '{address}' must be host:port"))
            })?;
            let port = port.parse().map_err(|_| {
                BrokerError::Config(format!(
                    "advertised address '{address}' has an invalid port"
                ))
            })?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        None if bound.ip().is_unspecified() => Ok(("127.0.0.1".to_string(), bound.port())),
        None => Ok((bound.ip().to_string(), bound.port())),
    }
}

fn panicked(what: &str) -> impl FnOnce(tokio::task::JoinError) -> BrokerError + '_ {
    move |e| BrokerError::Config(format!("{what} panicked: {e}"))
}

/// Runs a broker on already bound listeners until `shutdown` completes, then moves its
/// leaderships away (in a cluster), stops accepting, finishes in-flight requests, flushes,
/// and marks the logs cleanly closed.
pub async fn run(
    config: BrokerConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BrokerError> {
    let grpc_addr = grpc.local_addr().map_err(|source| BrokerError::Io {
        what: "gRPC listener".into(),
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| BrokerError::Io {
        what: "HTTP listener".into(),
        source,
    })?;
    let (host, port) = advertised(&config, grpc_addr)?;
    let topic_defaults = TopicConfig::resolve(&TopicConfig::default(), &config.topic_config)
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    if config.default_replication_factor == 0 {
        return Err(BrokerError::Config(
            "the default replication factor must be at least 1".into(),
        ));
    }
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());

    // The HTTP endpoints come up first, so /healthz answers while logs load.
    let http_stop = CancellationToken::new();
    let http_state = http::HttpState::new(ready.clone(), metrics.clone());
    let http_task = tokio::spawn(http::serve(http, http_state.clone(), http_stop.clone()));

    let data_dir = config.data_dir.clone();
    let log_defaults = topic_defaults.log.clone();
    let logs =
        tokio::task::spawn_blocking(move || LogManager::open(&data_dir, |_| log_defaults.clone()))
            .await
            .map_err(panicked("log loading"))??;
    let logs = Arc::new(logs);
    let incarnation = identity::incarnation(&config.data_dir, config.broker_id)?;

    let link = match &config.controller {
        Some(address) => ControllerLink::remote(address, config.cluster.as_deref())
            .map_err(BrokerError::Config)?,
        None => {
            let store = FileStore::open(&config.data_dir.join("controller").join("metadata.json"))?;
            let controller_config = ControllerConfig {
                default_replication_factor: config.default_replication_factor,
                topic_config: topic_defaults.clone(),
                session_timeout: config.session_timeout,
                ..ControllerConfig::default()
            };
            ControllerLink::Local(Arc::new(
                Controller::start(config.broker_id, store, controller_config).await?,
            ))
        }
    };
    let replicas = Arc::new(ReplicaManager::new(
        config.broker_id,
        logs.clone(),
        topic_defaults,
        config.replication.clone(),
    ));
    http_state.attach(replicas.clone());
    http_state.attach_prestop({
        let (link, replicas, ready) = (link.clone(), replicas.clone(), ready.clone());
        let (broker, wait, remote) = (
            config.broker_id,
            config.shutdown_timeout / 2,
            config.controller.is_some(),
        );
        Arc::new(move || {
            let (link, replicas, ready) = (link.clone(), replicas.clone(), ready.clone());
            Box::pin(async move {
                ready.store(false, Ordering::Release);
                if remote {
                    controlled_shutdown(&link, &replicas, broker, wait).await;
                }
            })
        })
    });

    let tasks = CancellationToken::new();
    let registration = Registration {
        broker: BrokerInfo {
            id: config.broker_id,
            host: host.clone(),
            port,
            rack: config.rack.clone(),
        },
        incarnation,
    };
    let session = tokio::spawn(link.clone().run_session(
        registration,
        replicas.clone(),
        config.heartbeat_interval,
        tasks.clone(),
    ));
    let proposals = tokio::spawn(forward_isr_proposals(
        link.clone(),
        replicas.clone(),
        config.broker_id,
        tasks.clone(),
    ));
    let maintenance = tokio::spawn(maintain(replicas.clone(), config.clone(), tasks.clone()));
    let groups = Arc::new(GroupCoordinator::new(
        replicas.clone(),
        GroupConfig::default(),
    ));
    let group_ticks = tokio::spawn(groups.clone().run(tasks.clone()));
    let lag_checks = tokio::spawn(check_isr_lag(
        replicas.clone(),
        config.replication.lag_check_interval(),
        tasks.clone(),
    ));

    let grpc_stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .accept_http1(true)
        .layer(grpc_only::GrpcOnlyLayer)
        .add_service(
            BrokerServer::new(data_plane::BrokerService {
                replicas: replicas.clone(),
                metrics: metrics.clone(),
                producer_ids: data_plane::ProducerIds::new(link.clone(), config.broker_id),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServer::new(admin::AdminService {
                controller: link.clone(),
                replicas: replicas.clone(),
                metrics: metrics.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(GroupServer::new(group_service::GroupService {
            coordinator: groups,
            replicas: replicas.clone(),
            link: link.clone(),
            creating: Arc::new(AtomicBool::new(false)),
        }))
        .add_service(
            ReplicationServer::new(replication_service::ReplicationService {
                replicas: replicas.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc),
            grpc_stop.clone().cancelled_owned(),
        );
    let mut server_task = tokio::spawn(server);

    // Ready once the cluster metadata has arrived: before that the broker knows nothing.
    let own_id = config.broker_id;
    tokio::pin!(shutdown);
    let server_failed = tokio::select! {
        _ = replicas.wait_for_metadata(Duration::MAX, |m| m.brokers.contains_key(&own_id)) => {
            ready.store(true, Ordering::Release);
            tracing::info!(broker = config.broker_id, grpc = %grpc_addr, advertised = %format!("{host}:{port}"), http = %http_addr, "broker ready");
            tokio::select! {
                () = &mut shutdown => None,
                result = &mut server_task => Some(result),
            }
        }
        () = &mut shutdown => None,
        result = &mut server_task => Some(result),
    };
    ready.store(false, Ordering::Release);
    if server_failed.is_none() && config.controller.is_some() {
        controlled_shutdown(
            &link,
            &replicas,
            config.broker_id,
            config.shutdown_timeout / 2,
        )
        .await;
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    replicas.begin_shutdown();
    grpc_stop.cancel();
    let served = match server_failed {
        Some(result) => result,
        None => match tokio::time::timeout(config.shutdown_timeout, &mut server_task).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(timeout = ?config.shutdown_timeout, "requests still running at the shutdown timeout; stopping anyway");
                server_task.abort();
                Ok(Ok(()))
            }
        },
    };
    tasks.cancel();
    let _ = tokio::join!(session, proposals, maintenance, lag_checks, group_ticks);
    let closing = replicas.clone();
    tokio::task::spawn_blocking(move || {
        closing.checkpoint();
        closing.logs().shutdown()
    })
    .await
    .map_err(panicked("closing the logs"))??;
    http_stop.cancel();
    let _ = http_task.await;
    match served {
        Ok(result) => result.map_err(BrokerError::Serve),
        Err(e) => Err(panicked("the gRPC server")(e)),
    }
}

/// Asks the controller to move this broker's leaderships to other in-sync replicas, and
/// waits (up to `wait`) until this broker leads nothing it could hand over.
async fn controlled_shutdown(
    link: &ControllerLink,
    replicas: &Arc<ReplicaManager>,
    broker: i32,
    wait: Duration,
) {
    // Without a controller nothing can move; two seconds of tries cover a controller
    // restarting.
    const UNREACHABLE_TRIES: u32 = 10;
    let deadline = tokio::time::Instant::now() + wait;
    let mut unreachable = 0;
    loop {
        match link.controlled_shutdown(broker).await {
            Ok(remaining) => {
                unreachable = 0;
                let leading = replicas.leader_count();
                if leading as u32 <= remaining {
                    tracing::info!(remaining, "leaderships handed over");
                    return;
                }
            }
            Err(error) if error.code() == tonic::Code::Unavailable => {
                unreachable += 1;
                if unreachable >= UNREACHABLE_TRIES {
                    tracing::warn!(error = %error.message(), "the controller is unreachable; stopping without handing over leaderships");
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(error = %error.message(), "controlled shutdown failed; retrying")
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("leaderships not all handed over in time; stopping anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends this broker's ISR proposals to the controller, a batch at a time, and hands the
/// answers back to the replicas.
async fn forward_isr_proposals(
    link: ControllerLink,
    replicas: Arc<ReplicaManager>,
    broker: i32,
    stop: CancellationToken,
) {
    let Some(mut proposals) = replicas.take_isr_proposals() else {
        return;
    };
    loop {
        let first = tokio::select! {
            change = proposals.recv() => match change { Some(change) => change, None => return },
            () = stop.cancelled() => return,
        };
        let mut batch = vec![first];
        while let Ok(more) = proposals.try_recv() {
            batch.push(more);
        }
        match link.alter_isr(broker, batch.clone()).await {
            Ok(answers) => {
                for (change, verdict, state) in answers {
                    if let Err(why) = &verdict {
                        tracing::info!(partition = %change.tp, %why, "the controller refused an ISR change");
                    }
                    replicas.isr_answered(&change, state.as_ref());
                }
            }
            Err(error) => {
                tracing::warn!(error = %error.message(), "could not send ISR changes to the controller; they will be proposed again");
                for change in &batch {
                    replicas.isr_answered(change, None);
                }
                tokio::select! { () = tokio::time::sleep(Duration::from_millis(500)) => {}, () = stop.cancelled() => return }
            }
        }
    }
}

/// Checks followers' lag on a timer of its own, so a slow flush or retention run never
/// delays it (or looks like a stall of the broker).
async fn check_isr_lag(replicas: Arc<ReplicaManager>, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = ticker.tick() => {}, () = stop.cancelled() => return }
        replicas.check_isr_lag();
    }
}

/// Flushes, retention and checkpoints on their intervals, off the async threads.
async fn maintain(replicas: Arc<ReplicaManager>, config: BrokerConfig, stop: CancellationToken) {
    let mut flush = tokio::time::interval(config.flush_check_interval);
    let mut retention = tokio::time::interval(config.retention_check_interval);
    let mut checkpoint = tokio::time::interval(config.checkpoint_interval);
    for timer in [&mut flush, &mut retention, &mut checkpoint] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.reset();
    }
    loop {
        let replicas = replicas.clone();
        let work: Box<dyn FnOnce() + Send> = tokio::select! {
            _ = flush.tick() => Box::new(move || replicas.logs().flush_due(crate::now_ms())),
            _ = retention.tick() => Box::new(move || replicas.apply_retention(crate::now_ms())),
            _ = checkpoint.tick() => Box::new(move || replicas.checkpoint()),
            () = stop.cancelled() => return,
        };
        if tokio::task::spawn_blocking(work).await.is_err() {
            tracing::error!("a maintenance task panicked");
        }
    }
}

/// How the controller process runs.
#[derive(Debug, Clone)]
pub struct ControllerProcessConfig {
    pub id: i32,
    /// Where the metadata store lives (`metadata.json`).
    pub data_dir: PathBuf,
    pub controller: ControllerConfig,
}

/// Runs the cluster controller on an already bound listener until `shutdown` completes.
/// `started` is called once the metadata store is open (and locked) and the controller has
/// taken its epoch, just before it serves.
pub async fn run_controller(
    config: ControllerProcessConfig,
    listener: TcpListener,
    started: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BrokerError> {
    let store = FileStore::open(&config.data_dir.join("metadata.json"))?;
    let controller = Arc::new(Controller::start(config.id, store, config.controller).await?);
    started();
    let stop = CancellationToken::new();
    let expiry = {
        let controller = controller.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(crate::controller::SESSION_CHECK_INTERVAL);
            loop {
                tokio::select! { _ = ticker.tick() => {}, () = stop.cancelled() => return }
                if let Err(error) = controller.tick().await {
                    tracing::error!(%error, "the controller's periodic work (sessions, rebalance) failed");
                }
            }
        })
    };
    let service = controller_server(controller);
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    stop.cancel();
    let _ = expiry.await;
    served.map_err(BrokerError::Serve)
}

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
