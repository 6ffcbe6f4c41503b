//! A broker's wiring: its listeners, logs, line to the controller, replicas, group
//! coordinator and gRPC services, the tasks that keep them (sessions, ISR proposals, lag
//! checks, flushes, retention, checkpoints), and the order they stop in.

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

use super::kafka::{self, KafkaService, KafkaSettings};
use super::offsets_topic::OffsetsTopic;
use super::producer_ids::ProducerIds;
use super::{
    ControllerLink, Metrics, admin, data_plane, group_service, grpc_only, http, identity,
    replication_service,
};
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

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub broker_id: i32,
    pub data_dir: PathBuf,
    /// `host:port` clients should use to reach this broker; defaults to the listen address
    /// (127.0.0.1 when listening on all interfaces).
    pub advertised_address: Option<String>,
    /// The port Kafka clients should use, on the advertised host; defaults to the Kafka
    /// listener's port.
    pub kafka_advertised_port: Option<u16>,
    /// The Kafka protocol listener's behaviour.
    pub kafka: KafkaSettings,
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
            kafka_advertised_port: None,
            kafka: KafkaSettings::default(),
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

/// A broker's listeners, bound by the caller (tests bind port 0 and read the address).
#[derive(Debug)]
pub struct Listeners {
    /// Tributary's gRPC API: its client and CLI, other brokers.
    pub grpc: TcpListener,
    /// Health, readiness and metrics.
    pub http: TcpListener,
    /// The Kafka protocol, for Kafka's clients and tools.
    pub kafka: TcpListener,
}

/// Runs a broker on already bound listeners until `shutdown` completes, then moves its
/// leaderships away (in a cluster), stops accepting, finishes in-flight requests, flushes,
/// and marks the logs cleanly closed.
pub async fn run(
    config: BrokerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BrokerError> {
    let Listeners { grpc, http, kafka } = listeners;
    let grpc_addr = grpc.local_addr().map_err(|source| BrokerError::Io {
        what: "gRPC listener".into(),
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| BrokerError::Io {
        what: "HTTP listener".into(),
        source,
    })?;
    let kafka_addr = kafka.local_addr().map_err(|source| BrokerError::Io {
        what: "Kafka listener".into(),
        source,
    })?;
    let (host, port) = advertised(&config, grpc_addr)?;
    let kafka_port = config.kafka_advertised_port.unwrap_or(kafka_addr.port());
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
            kafka_port,
            rack: config.rack.clone(),
        },
        incarnation,
    };
    // A session that ends with an error (the controller runs another cluster than the one
    // whose logs are here) stops the broker with that error.
    let (refused_tx, mut refused) = tokio::sync::oneshot::channel::<BrokerError>();
    let session = tokio::spawn({
        let session = link.clone().run_session(
            registration,
            replicas.clone(),
            config.heartbeat_interval,
            tasks.clone(),
        );
        async move {
            if let Err(error) = session.await {
                let _ = refused_tx.send(error);
            }
        }
    });
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

    let producer_ids = Arc::new(ProducerIds::new(link.clone(), config.broker_id));
    let offsets_topic = OffsetsTopic::new(link.clone());
    let kafka_stop = CancellationToken::new();
    let kafka_service = Arc::new(KafkaService {
        replicas: replicas.clone(),
        link: link.clone(),
        metrics: metrics.clone(),
        producer_ids: producer_ids.clone(),
        groups: groups.clone(),
        offsets_topic: offsets_topic.clone(),
        topic_defaults: config.topic_config.clone(),
        settings: config.kafka.clone(),
    });
    let kafka_task = tokio::spawn({
        let (replicas, stop, own_id) = (replicas.clone(), kafka_stop.clone(), config.broker_id);
        async move {
            // As Kafka's brokers do, take Kafka requests only once the cluster metadata has
            // arrived: before it every topic would be answered as unknown (and auto-created
            // again). Connections wait in the listener's backlog until then.
            tokio::select! {
                _ = replicas.wait_for_metadata(Duration::MAX, |m| m.brokers.contains_key(&own_id)) => {}
                () = stop.cancelled() => return,
            }
            kafka::serve(kafka, kafka_service, stop).await
        }
    });

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
                producer_ids: producer_ids.clone(),
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
            coordinator: groups.clone(),
            replicas: replicas.clone(),
            offsets_topic: offsets_topic.clone(),
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
    let mut refusal = None;
    let server_failed = tokio::select! {
        _ = replicas.wait_for_metadata(Duration::MAX, |m| m.brokers.contains_key(&own_id)) => {
            ready.store(true, Ordering::Release);
            tracing::info!(broker = config.broker_id, grpc = %grpc_addr, kafka = %kafka_addr, advertised = %format!("{host}:{port}"), kafka_advertised = %format!("{host}:{kafka_port}"), http = %http_addr, "broker ready");
            tokio::select! {
                () = &mut shutdown => None,
                result = &mut server_task => Some(result),
                Ok(error) = &mut refused => {
                    refusal = Some(error);
                    None
                }
            }
        }
        () = &mut shutdown => None,
        result = &mut server_task => Some(result),
        Ok(error) = &mut refused => {
            refusal = Some(error);
            None
        }
    };
    ready.store(false, Ordering::Release);
    if let Some(error) = &refusal {
        tracing::error!(%error, "stopping");
    }
    if server_failed.is_none() && refusal.is_none() && config.controller.is_some() {
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
    kafka_stop.cancel();
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
    if tokio::time::timeout(config.shutdown_timeout, kafka_task)
        .await
        .is_err()
    {
        tracing::warn!("Kafka requests still running at the shutdown timeout; stopping anyway");
    }
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
    if let Some(error) = refusal {
        return Err(error);
    }
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
