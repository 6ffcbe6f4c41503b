//! The broker process: loads the logs, starts the controller (a standalone broker runs its
//! own), serves the gRPC API and the health and metrics endpoints, runs the maintenance
//! tasks, and shuts down cleanly.

mod admin;
mod data_plane;
mod grpc_only;
mod http;
mod metrics;
pub mod status;

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
    BrokerInfo, Controller, ControllerDefaults, ControllerError, FileStore, StoreError,
};
use crate::log::{LogManager, LogManagerError};
use crate::proto::admin_server::AdminServer;
use crate::proto::broker_server::BrokerServer;
use crate::replication::ReplicaManager;
pub use data_plane::{
    DEFAULT_FETCH_MAX_BYTES, DEFAULT_PARTITION_MAX_BYTES, DEFAULT_PRODUCE_TIMEOUT, MAX_FETCH_WAIT,
};
pub use metrics::Metrics;

/// Largest gRPC message either way: well above the largest batch and fetch response.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// HTTP/2 flow-control windows sized so a 1 MB batch never waits for a window update.
pub const STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

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
    pub retention_check_interval: Duration,
    pub flush_check_interval: Duration,
    pub checkpoint_interval: Duration,
    /// How long a shutdown waits for in-flight requests.
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

/// Runs a standalone broker (with its own controller) on already bound listeners until
/// `shutdown` completes, then stops accepting, finishes in-flight requests, flushes, and
/// marks the logs cleanly closed.
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
            .map_err(|e| BrokerError::Config(format!("log loading panicked: {e}")))??;
    let logs = Arc::new(logs);
    let store = FileStore::open(&config.data_dir.join("controller").join("metadata.json"))?;
    let controller = Arc::new(
        Controller::start(
            config.broker_id,
            store,
            ControllerDefaults {
                replication_factor: config.default_replication_factor,
                topic_config: topic_defaults.clone(),
            },
        )
        .await?,
    );
    controller
        .register_broker(BrokerInfo {
            id: config.broker_id,
            host: host.clone(),
            port,
            rack: config.rack.clone(),
        })
        .await;
    let replicas = Arc::new(ReplicaManager::new(
        config.broker_id,
        logs.clone(),
        topic_defaults,
    ));
    http_state.attach(replicas.clone());

    // Apply metadata now and on every change, off the async threads (it touches disks).
    let mut updates = controller.subscribe();
    let first = updates.borrow_and_update().clone();
    let applier = replicas.clone();
    tokio::task::spawn_blocking(move || applier.apply_metadata(first))
        .await
        .map_err(|e| BrokerError::Config(format!("applying metadata panicked: {e}")))?;
    let applier = replicas.clone();
    let apply_task = tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let snapshot = updates.borrow_and_update().clone();
            let replicas = applier.clone();
            if tokio::task::spawn_blocking(move || replicas.apply_metadata(snapshot))
                .await
                .is_err()
            {
                tracing::error!("applying metadata panicked");
            }
        }
    });

    let maintenance_stop = CancellationToken::new();
    let maintenance = tokio::spawn(maintain(
        replicas.clone(),
        config.clone(),
        maintenance_stop.clone(),
    ));

    let grpc_stop = CancellationToken::new();
    let broker_service = BrokerServer::new(data_plane::BrokerService {
        replicas: replicas.clone(),
        metrics: metrics.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin_service = AdminServer::new(admin::AdminService {
        controller: controller.clone(),
        replicas: replicas.clone(),
        metrics: metrics.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .accept_http1(true)
        .layer(grpc_only::GrpcOnlyLayer)
        .add_service(broker_service)
        .add_service(admin_service)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc),
            grpc_stop.clone().cancelled_owned(),
        );
    let mut server_task = tokio::spawn(server);
    ready.store(true, Ordering::Release);
    tracing::info!(
        broker = config.broker_id,
        grpc = %grpc_addr,
        advertised = %format!("{host}:{port}"),
        http = %http_addr,
        "broker ready"
    );

    let server_failed = tokio::select! {
        () = shutdown => None,
        result = &mut server_task => Some(result),
    };
    ready.store(false, Ordering::Release);
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
    maintenance_stop.cancel();
    let _ = maintenance.await;
    apply_task.abort();
    let closing = logs.clone();
    tokio::task::spawn_blocking(move || closing.shutdown())
        .await
        .map_err(|e| BrokerError::Config(format!("closing the logs panicked: {e}")))??;
    http_stop.cancel();
    let _ = http_task.await;
    match served {
        Ok(result) => result.map_err(BrokerError::Serve),
        Err(e) => Err(BrokerError::Config(format!(
            "the gRPC server panicked: {e}"
        ))),
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
            _ = checkpoint.tick() => Box::new(move || {
                if let Err(error) = replicas.logs().checkpoint() {
                    tracing::error!(%error, "writing checkpoints failed");
                }
            }),
            () = stop.cancelled() => return,
        };
        if tokio::task::spawn_blocking(work).await.is_err() {
            tracing::error!("a maintenance task panicked");
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
