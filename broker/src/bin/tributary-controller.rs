//! `tributary-controller`: the cluster controller of a Tributary cluster run outside
//! Kubernetes (`tributary local up` starts one).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tributary_broker::config::TopicConfig;
use tributary_broker::controller::ControllerConfig;
use tributary_broker::process;
use tributary_broker::server::{self, ControllerProcessConfig};

/// The Tributary cluster controller: keeps cluster metadata (topics, leaders, in-sync
/// replicas) in a file, holds a session with every broker, elects leaders when brokers fail
/// and commits ISR changes. Brokers point at it with --controller.
#[derive(Debug, Parser)]
#[command(name = "tributary-controller", version, about)]
struct Args {
    /// This controller's id.
    #[arg(long, env = "TRIBUTARY_CONTROLLER_ID", default_value_t = 0)]
    id: i32,
    /// Where the cluster metadata lives (metadata.json). One controller per directory.
    #[arg(
        long,
        env = "TRIBUTARY_DATA_DIR",
        default_value = "./tributary-controller"
    )]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "TRIBUTARY_LISTEN", default_value = "0.0.0.0:9093")]
    listen: String,
    /// A broker that has not heartbeated for this long is fenced: its leaderships move to
    /// other in-sync replicas.
    #[arg(long, env = "TRIBUTARY_SESSION_TIMEOUT_MS", default_value_t = 6000)]
    session_timeout_ms: u64,
    /// Replication factor of topics created without one.
    #[arg(
        long,
        env = "TRIBUTARY_DEFAULT_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    default_replication_factor: u32,
    /// Partitions of __consumer_offsets (committed offsets of consumer groups), created
    /// when a group is first used.
    #[arg(
        long,
        env = "TRIBUTARY_OFFSETS_TOPIC_PARTITIONS",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    offsets_topic_partitions: u32,
    /// Cluster default for a topic configuration key, as KEY=VALUE (repeatable).
    #[arg(
        long = "config",
        value_name = "KEY=VALUE",
        env = "TRIBUTARY_TOPIC_DEFAULTS",
        value_delimiter = ','
    )]
    config: Vec<String>,
    /// Partition moves of a rebalance in flight at once.
    #[arg(
        long,
        env = "TRIBUTARY_MAX_CONCURRENT_MOVES",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    max_concurrent_moves: u32,
    /// Re-create the replicas of a broker out of session for this long on the others
    /// (self-healing); 0 leaves them until it returns.
    #[arg(long, env = "TRIBUTARY_SELF_HEALING_AFTER_MS", default_value_t = 0)]
    self_healing_after_ms: u64,
    /// How often leadership goes back to preferred leaders that are in sync again; 0 never.
    #[arg(
        long,
        env = "TRIBUTARY_PREFERRED_LEADER_INTERVAL_MS",
        default_value_t = 300_000
    )]
    preferred_leader_interval_ms: u64,
    /// Stop (as on SIGTERM) when the parent process, whose id this is, exits; for
    /// supervisors.
    #[arg(long, hide = true, value_name = "PARENT_PID")]
    stop_with_parent: Option<u32>,
}

async fn start(args: Args) -> Result<(), String> {
    let overrides = TopicConfig::parse_pairs(&args.config).map_err(|e| format!("--config: {e}"))?;
    let topic_config = TopicConfig::resolve(&TopicConfig::default(), &overrides)
        .map_err(|e| format!("--config: {e}"))?;
    if args.default_replication_factor == 0 {
        return Err("--default-replication-factor must be at least 1".into());
    }
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e}; choose another address with --listen",
            args.listen
        )
    })?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let id = args.id;
    let config = ControllerProcessConfig {
        id,
        data_dir: args.data_dir,
        controller: ControllerConfig {
            default_replication_factor: args.default_replication_factor,
            topic_config,
            session_timeout: Duration::from_millis(args.session_timeout_ms.max(1)),
            offsets_topic_partitions: args.offsets_topic_partitions,
            max_concurrent_moves: args.max_concurrent_moves as usize,
            self_healing_after: (args.self_healing_after_ms > 0)
                .then(|| Duration::from_millis(args.self_healing_after_ms)),
            preferred_leader_interval: (args.preferred_leader_interval_ms > 0)
                .then(|| Duration::from_millis(args.preferred_leader_interval_ms)),
            broker_count_set_by: None,
        },
    };
    let shutdown = async {
        process::stop_signal().await;
        tracing::info!("stop signal received; stopping the controller");
    };
    // One line on stdout for supervisors and scripts, once the metadata is open: a second
    // controller on the same directory fails before it says it listens.
    let started = || println!("listening: controller={id} grpc={address}");
    server::run_controller(config, listener, started, shutdown)
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    process::init_logging("info");
    if let Some(parent) = args.stop_with_parent {
        process::stop_with_parent(parent);
    }
    process::run_process("tributary-controller", start(args))
}
