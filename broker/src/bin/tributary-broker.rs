//! `tributary-broker`: one Tributary broker process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tributary_broker::config::TopicConfig;
use tributary_broker::process;
use tributary_broker::replication::ReplicationConfig;
use tributary_broker::server::{self, BrokerConfig, KafkaSettings, Listeners};

/// Huge allocations are mapped lazily, so that a request declaring billions of elements
/// cannot abort the broker (see `process::Allocator`).
#[global_allocator]
static ALLOCATOR: process::Allocator = process::Allocator;

/// A Tributary broker: stores partitioned, replicated logs and serves producers and
/// consumers over gRPC. Without a controller address it runs standalone, as its own
/// single-broker cluster.
#[derive(Debug, Parser)]
#[command(name = "tributary-broker", version, about)]
struct Args {
    /// This broker's id, unique in the cluster.
    #[arg(long, env = "TRIBUTARY_BROKER_ID", default_value_t = 0)]
    id: i32,
    /// Where the logs live. Created if missing; one broker per directory.
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = "./tributary-data")]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "TRIBUTARY_LISTEN", default_value = "0.0.0.0:9095")]
    listen: String,
    /// host:port clients use to reach this broker [default: the listen address, with
    /// 127.0.0.1 for all interfaces].
    #[arg(long, env = "TRIBUTARY_ADVERTISE")]
    advertise: Option<String>,
    /// Kafka protocol listen address, for Kafka's clients and tools.
    #[arg(long, env = "TRIBUTARY_KAFKA_LISTEN", default_value = "0.0.0.0:9092")]
    kafka_listen: String,
    /// The port Kafka clients are told to use, on the advertised host [default: the Kafka
    /// listener's port].
    #[arg(long, env = "TRIBUTARY_KAFKA_ADVERTISED_PORT")]
    kafka_advertised_port: Option<u16>,
    /// Create a topic that a Kafka client asks for by name when it does not exist (Kafka's
    /// auto.create.topics.enable), with --default-partitions partitions.
    #[arg(long, env = "TRIBUTARY_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of topics created without a count (Kafka's num.partitions).
    #[arg(long, env = "TRIBUTARY_DEFAULT_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    default_partitions: u32,
    /// Kafka requests larger than this are refused and their connection closed (Kafka's
    /// socket.request.max.bytes).
    #[arg(
        long,
        env = "TRIBUTARY_KAFKA_MAX_REQUEST_BYTES",
        default_value_t = 104_857_600
    )]
    kafka_max_request_bytes: usize,
    /// How long a member of a consumer group on the Kafka consumer protocol
    /// (`group.protocol=consumer`, KIP-848) may go without a heartbeat before its
    /// partitions go to the others (Kafka's group.consumer.session.timeout.ms).
    #[arg(
        long,
        env = "TRIBUTARY_KAFKA_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    kafka_consumer_session_timeout_ms: u64,
    /// Listen address of /healthz, /readyz and /metrics.
    #[arg(long, env = "TRIBUTARY_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: String,
    /// Rack (or zone) of this broker, for rack-aware replica placement.
    #[arg(long, env = "TRIBUTARY_RACK")]
    rack: Option<String>,
    /// Default for a topic configuration key, as KEY=VALUE (repeat it, or separate with
    /// commas in the environment variable). Topics override these.
    #[arg(
        long = "config",
        value_name = "KEY=VALUE",
        env = "TRIBUTARY_TOPIC_DEFAULTS",
        value_delimiter = ','
    )]
    config: Vec<String>,
    /// Replication factor of topics created without one.
    #[arg(
        long,
        env = "TRIBUTARY_DEFAULT_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    default_replication_factor: u32,
    /// How often retention looks for segments to delete.
    #[arg(
        long,
        env = "TRIBUTARY_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    retention_check_interval_ms: u64,
    /// How often recovery points and log start offsets are checkpointed.
    #[arg(
        long,
        env = "TRIBUTARY_CHECKPOINT_INTERVAL_MS",
        default_value_t = 60_000
    )]
    checkpoint_interval_ms: u64,
    /// How long a shutdown waits for leaderships to move and requests in flight.
    #[arg(long, env = "TRIBUTARY_SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    shutdown_timeout_ms: u64,
    /// Bytes per second this broker fetches for replicas that are catching up (not in
    /// the ISR: new replicas of a partition being moved, or after a long absence); 0 does
    /// not limit them. In-sync followers are never throttled.
    #[arg(
        long,
        env = "TRIBUTARY_REPLICATION_THROTTLE_BYTES_PER_SEC",
        default_value_t = 0
    )]
    replication_throttle_bytes_per_sec: u64,
    /// The cluster controller, as HOST:PORT. Without it the broker runs standalone, as its
    /// own single-broker cluster.
    #[arg(long, env = "TRIBUTARY_CONTROLLER")]
    controller: Option<String>,
    /// The cluster this broker belongs to, as the controller knows it (`namespace/name` on
    /// Kubernetes, where the operator's controller serves every cluster).
    #[arg(long, env = "TRIBUTARY_CLUSTER", requires = "controller")]
    cluster: Option<String>,
    /// How often the broker heartbeats to the controller.
    #[arg(long, env = "TRIBUTARY_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    heartbeat_interval_ms: u64,
    /// A standalone broker's own controller fences a silent broker after this long.
    #[arg(long, env = "TRIBUTARY_SESSION_TIMEOUT_MS", default_value_t = 6000)]
    session_timeout_ms: u64,
    /// A follower that has not caught up with its leader for this long leaves the ISR.
    #[arg(
        long,
        env = "TRIBUTARY_REPLICA_LAG_TIME_MAX_MS",
        default_value_t = 30_000
    )]
    replica_lag_time_max_ms: u64,
    /// How long a follower's fetch waits at the leader for new records.
    #[arg(
        long,
        env = "TRIBUTARY_REPLICA_FETCH_WAIT_MAX_MS",
        default_value_t = 500
    )]
    replica_fetch_wait_max_ms: u64,
    /// Stop (as on SIGTERM) when the parent process, whose id this is, exits; for
    /// supervisors.
    #[arg(long, hide = true, value_name = "PARENT_PID")]
    stop_with_parent: Option<u32>,
}

async fn bind(what: &str, address: &str, flag: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (another broker may be running there)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        format!(
            "cannot listen for {what} on {address}: {e}{hint}; choose another address with {flag}"
        )
    })
}

async fn start(args: Args) -> Result<(), String> {
    let topic_config =
        TopicConfig::parse_pairs(&args.config).map_err(|e| format!("--config: {e}"))?;
    let grpc = bind("gRPC", &args.listen, "--listen").await?;
    let http = bind("health and metrics", &args.http_listen, "--http-listen").await?;
    let kafka = bind("Kafka clients", &args.kafka_listen, "--kafka-listen").await?;
    let (grpc_addr, http_addr, kafka_addr) = (
        grpc.local_addr().map_err(|e| e.to_string())?,
        http.local_addr().map_err(|e| e.to_string())?,
        kafka.local_addr().map_err(|e| e.to_string())?,
    );
    // One line on stdout for scripts and tests that bind port 0; logs go to stderr.
    println!(
        "listening: broker={} grpc={grpc_addr} http={http_addr} kafka={kafka_addr}",
        args.id
    );
    let config = BrokerConfig {
        broker_id: args.id,
        data_dir: args.data_dir,
        advertised_address: args.advertise,
        kafka_advertised_port: args.kafka_advertised_port,
        kafka: KafkaSettings {
            max_request_bytes: args.kafka_max_request_bytes,
            auto_create_topics: args.auto_create_topics,
            default_partitions: args.default_partitions,
            consumer_session_timeout: Duration::from_millis(args.kafka_consumer_session_timeout_ms),
        },
        rack: args.rack,
        topic_config,
        default_replication_factor: args.default_replication_factor,
        retention_check_interval: Duration::from_millis(args.retention_check_interval_ms.max(1)),
        flush_check_interval: Duration::from_secs(1),
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(1)),
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        controller: args.controller,
        cluster: args.cluster,
        session_timeout: Duration::from_millis(args.session_timeout_ms.max(1)),
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms.max(1)),
        replication: ReplicationConfig {
            replica_lag_max: Duration::from_millis(args.replica_lag_time_max_ms.max(1)),
            fetch_max_wait: Duration::from_millis(args.replica_fetch_wait_max_ms),
            catch_up_throttle: (args.replication_throttle_bytes_per_sec > 0)
                .then_some(args.replication_throttle_bytes_per_sec),
            ..ReplicationConfig::default()
        },
    };
    let shutdown = async {
        process::stop_signal().await;
        tracing::info!("stop signal received; shutting down (send it again to exit at once)");
        tokio::spawn(async {
            process::stop_signal().await;
            eprintln!("second stop signal: exiting without a clean shutdown");
            std::process::exit(130);
        });
    };
    server::run(config, Listeners { grpc, http, kafka }, shutdown)
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    process::init_logging("info");
    process::raise_open_file_limit();
    process::keep_freed_memory();
    if let Some(parent) = args.stop_with_parent {
        process::stop_with_parent(parent);
    }
    process::run_process("tributary-broker", start(args))
}
