//! `tributary local up`: a whole cluster on this machine, in the foreground: the controller
//! and N `tributary-broker` processes, kept running by a supervisor.

mod follow;
mod supervisor;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_broker::client::{Admin, ClusterAdmin, Error as ClientError, ErrorCode, NewTopic};
use tributary_broker::config::TopicConfig;
use tributary_broker::manifest::{self, Manifest, TopicManifest};

use supervisor::{Event, Listen, Spec, Started, Stopped};

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start a local cluster in the foreground (a controller and N brokers, each its own
    /// process, started again if it exits) and create the topics of the given manifests;
    /// Ctrl-C stops it cleanly.
    Up {
        /// Number of brokers; their ids are 0 to N-1 [default: the count the cluster in
        /// --data-dir was last scaled to with `tributary cluster scale`, else 3].
        #[arg(long)]
        brokers: Option<u32>,
        /// Where the cluster keeps its data: broker-<id>/ for each broker and controller/
        /// for the cluster metadata, each with its pid file and log.
        #[arg(long, default_value = "./.tributary")]
        data_dir: PathBuf,
        /// Topic manifests (the YAML given to `kubectl apply`) to create.
        #[arg(short = 'f', long = "file", value_name = "MANIFEST")]
        files: Vec<PathBuf>,
        /// gRPC port of broker 0; broker N listens on this port + N (0 picks free ports).
        #[arg(long, default_value_t = 9095)]
        port: u16,
        /// Health and metrics port of broker 0; broker N uses this port + N (0 picks free
        /// ports).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Kafka protocol port of broker 0, for Kafka's clients and tools; broker N listens
        /// on this port + N (0 picks free ports).
        #[arg(long, default_value_t = 19092)]
        kafka_port: u16,
        /// Whether a topic a Kafka client asks for by name is created when missing (Kafka's
        /// auto.create.topics.enable).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        auto_create_topics: bool,
        /// The controller's gRPC port (0 picks a free port).
        #[arg(long, default_value_t = 9094)]
        controller_port: u16,
        /// Replication factor of topics created without one [default: 3, or the number of
        /// brokers if smaller].
        #[arg(long)]
        default_replication_factor: Option<u32>,
        /// Cluster default for a topic configuration key, as KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
}

/// Everything `local up` needs, checked before anything starts.
struct Plan {
    brokers: u32,
    /// Whether --brokers was given: it then sets the cluster's broker count.
    brokers_given: bool,
    data_dir: PathBuf,
    topics: Vec<TopicManifest>,
    port: u16,
    http_port: u16,
    kafka_port: u16,
    auto_create_topics: bool,
    controller_port: u16,
    replication_factor: u32,
    config: Vec<String>,
    broker_program: PathBuf,
    controller_program: PathBuf,
}

pub async fn run(command: LocalCommand) -> anyhow::Result<()> {
    let LocalCommand::Up {
        brokers,
        data_dir,
        files,
        port,
        http_port,
        kafka_port,
        auto_create_topics,
        controller_port,
        default_replication_factor,
        config,
    } = command;
    let brokers_given = brokers.is_some();
    let brokers = brokers.unwrap_or(3);
    if !(1..=100).contains(&brokers) {
        bail!("--brokers {brokers}: a local cluster has between 1 and 100 brokers");
    }
    let replication_factor = default_replication_factor.unwrap_or(brokers.min(3));
    if replication_factor == 0 || replication_factor > brokers {
        bail!(
            "--default-replication-factor {replication_factor}: it must be between 1 and the number of brokers ({brokers})"
        );
    }
    let topics = read_manifests(&files)?;
    TopicConfig::parse_pairs(&config).context("--config")?;
    check_ports(brokers, port, http_port, kafka_port, controller_port)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let plan = Plan {
        brokers,
        brokers_given,
        data_dir,
        topics,
        port,
        http_port,
        kafka_port,
        auto_create_topics,
        controller_port,
        replication_factor,
        config,
        broker_program: program("tributary-broker")?,
        controller_program: program("tributary-controller")?,
    };

    let mut signals = StopSignals::new()?;
    let (events, mut event_rx) = mpsc::unbounded_channel();
    let mut cluster = Processes::new(events);
    let started = tokio::select! {
        started = cluster.start(&plan) => Some(started),
        () = signals.next() => None,
    };
    match started {
        Some(Ok(summary)) => println!("{summary}"),
        Some(Err(error)) => {
            cluster.stop(&mut signals).await;
            return Err(error);
        }
        None => {
            cluster.stop(&mut signals).await;
            bail!("stopped before the cluster was up");
        }
    }

    // `tributary cluster scale` asks the controller for another broker count; follow it.
    let controller = cluster
        .controller_address
        .context("the controller has not started")?;
    let admin = ClusterAdmin::connect(&controller.to_string(), None).await;
    match &admin {
        Ok(admin) => {
            if let Some(note) = cluster.ask_for_brokers(&plan, admin).await {
                println!("{note}");
            }
        }
        Err(error) => {
            println!("warning: `tributary cluster scale` will not start or stop brokers: {error}")
        }
    }
    let mut follow = tokio::time::interval(FOLLOW_SCALE_EVERY);
    follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = signals.next() => break,
            Some(event) = event_rx.recv() => report(event),
            _ = follow.tick() => {
                let Ok(admin) = &admin else { continue };
                tokio::select! {
                    () = signals.next() => break,
                    step = cluster.follow_scale(&plan, admin) => match step {
                        Ok(Some(done)) => println!("{done}"),
                        Ok(None) => {}
                        // The controller restarting: it is supervised, ask again later.
                        Err(error) if is_unreachable(&error) => {}
                        Err(error) => println!("{error:#}"),
                    },
                }
            }
        }
    }
    let failures = cluster.stop(&mut signals).await;
    if failures.is_empty() {
        println!("Tributary stopped cleanly.");
        Ok(())
    } else {
        bail!(
            "the cluster did not stop cleanly:\n  {}",
            failures.join("\n  ")
        )
    }
}

/// How often `local up` asks the controller how many brokers should run.
const FOLLOW_SCALE_EVERY: Duration = Duration::from_millis(500);

/// True when the controller could not be reached (it is being restarted).
fn is_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<ClientError>().is_some_and(|e| {
            matches!(
                e,
                ClientError::Connection { .. }
                    | ClientError::Broker {
                        code: ErrorCode::BrokerNotAvailable,
                        ..
                    }
            )
        })
    })
}

/// What stops `local up`: Ctrl-C, SIGTERM, or SIGHUP (its terminal was closed). Listened
/// for from the start, so a signal that comes between two waits is not missed.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        let listen = |kind: SignalKind| signal(kind).context("cannot listen for signals");
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

fn read_manifests(files: &[PathBuf]) -> anyhow::Result<Vec<TopicManifest>> {
    let mut topics = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read manifest {}", file.display()))?;
        for document in
            manifest::parse(&text, &file.display().to_string()).map_err(anyhow::Error::msg)?
        {
            match document {
                Manifest::Topic(topic) => topics.push(topic),
                Manifest::Cluster { name } => {
                    eprintln!(
                        "note: {}: Cluster '{name}' is for Kubernetes; a local cluster takes --brokers",
                        file.display()
                    )
                }
            }
        }
    }
    Ok(topics)
}

/// Fails early, naming the flag to change, when a port the cluster needs is taken.
fn check_ports(
    brokers: u32,
    port: u16,
    http_port: u16,
    kafka_port: u16,
    controller_port: u16,
) -> anyhow::Result<()> {
    let mut wanted = vec![(
        controller_port,
        "the controller".to_string(),
        "--controller-port",
    )];
    for id in 0..brokers {
        for (base, what, flag) in [
            (port, "gRPC", "--port"),
            (http_port, "metrics", "--http-port"),
            (kafka_port, "Kafka", "--kafka-port"),
        ] {
            if base == 0 {
                continue;
            }
            let Some(p) = u16::try_from(id).ok().and_then(|id| base.checked_add(id)) else {
                bail!(
                    "{flag} {base}: broker {id} would need port {base} + {id}, above 65535; choose a lower {flag}"
                );
            };
            wanted.push((p, format!("broker {id} ({what})"), flag));
        }
    }
    let mut seen = std::collections::HashMap::new();
    for (p, who, flag) in &wanted {
        if *p == 0 {
            continue;
        }
        if let Some(other) = seen.insert(*p, who.clone()) {
            bail!("port {p} is wanted by both {other} and {who}; choose another port with {flag}");
        }
        let address = format!("127.0.0.1:{p}");
        std::net::TcpListener::bind(&address).with_context(|| {
            let shift = if who.starts_with("broker 0") || !who.starts_with("broker") {
                String::new()
            } else {
                format!(" (broker N listens on {flag} + N)")
            };
            format!("cannot listen on {address} for {who} (is another cluster or program using it?); choose another port with {flag}{shift}")
        })?;
    }
    Ok(())
}

/// The path of a program installed with the `tributary` CLI: next to it, else on PATH.
fn program(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find where tributary itself is")?;
    let beside = exe.parent().map(|dir| dir.join(name));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "cannot find {name} next to {} or on PATH; it is built and installed with the tributary CLI (cargo build --release puts both in target/release)",
                exe.display()
            )
        })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `--config KEY=VALUE` for each cluster default, for the controller and every broker.
fn config_args(plan: &Plan) -> Vec<String> {
    plan.config
        .iter()
        .flat_map(|pair| ["--config".to_string(), pair.clone()])
        .collect()
}

/// Broker `id`: data in `DIR/broker-<id>/`, ports `--port + id`, `--http-port + id` and
/// `--kafka-port + id`.
fn broker_spec(plan: &Plan, id: u32, controller: SocketAddr) -> Spec {
    let dir = plan.data_dir.join(format!("broker-{id}"));
    let shift = |base: u16| {
        if base == 0 {
            0
        } else {
            base.saturating_add(id as u16)
        }
    };
    let mut args = vec![
        "--id".to_string(),
        id.to_string(),
        "--data-dir".to_string(),
        dir.display().to_string(),
        "--controller".to_string(),
        controller.to_string(),
        "--auto-create-topics".to_string(),
        plan.auto_create_topics.to_string(),
    ];
    args.extend(config_args(plan));
    Spec {
        name: format!("broker {id}"),
        program: plan.broker_program.clone(),
        args,
        dir,
        listen: vec![
            Listen {
                flag: "--listen",
                field: "grpc",
                address: loopback(shift(plan.port)),
            },
            Listen {
                flag: "--http-listen",
                field: "http",
                address: loopback(shift(plan.http_port)),
            },
            Listen {
                flag: "--kafka-listen",
                field: "kafka",
                address: loopback(shift(plan.kafka_port)),
            },
        ],
        ready_field: Some("http"),
    }
}

struct Supervised {
    stop: CancellationToken,
    task: JoinHandle<Stopped>,
}

/// The supervised processes of a running local cluster.
struct Processes {
    controller: Option<Supervised>,
    /// Broker `id` is `brokers[id]`.
    brokers: Vec<Supervised>,
    controller_address: Option<SocketAddr>,
    /// When starting a broker for `tributary cluster scale` last failed.
    start_failed_at: Option<tokio::time::Instant>,
    events: mpsc::UnboundedSender<Event>,
    /// Cancelled to kill every process at once instead of waiting for it to stop.
    kill: CancellationToken,
}

impl Processes {
    fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            controller: None,
            brokers: Vec::new(),
            controller_address: None,
            start_failed_at: None,
            events,
            kill: CancellationToken::new(),
        }
    }

    fn supervise(&self, spec: Spec) -> (Supervised, oneshot::Receiver<anyhow::Result<Started>>) {
        let stop = CancellationToken::new();
        let (first, started) = oneshot::channel();
        let task = tokio::spawn(supervisor::supervise(
            spec,
            stop.clone(),
            self.kill.clone(),
            first,
            self.events.clone(),
        ));
        (Supervised { stop, task }, started)
    }

    /// Starts the controller, then the brokers, waits until every broker is ready, and
    /// creates the manifests' topics. Returns what to tell the user.
    async fn start(&mut self, plan: &Plan) -> anyhow::Result<String> {
        let controller_dir = plan.data_dir.join("controller");
        let mut args = vec![
            "--data-dir".to_string(),
            controller_dir.display().to_string(),
            "--default-replication-factor".to_string(),
            plan.replication_factor.to_string(),
        ];
        args.extend(config_args(plan));
        let spec = Spec {
            name: "controller".into(),
            program: plan.controller_program.clone(),
            args,
            dir: controller_dir.clone(),
            listen: vec![Listen {
                flag: "--listen",
                field: "grpc",
                address: loopback(plan.controller_port),
            }],
            ready_field: None,
        };
        let (controller_log, controller_pid) = (spec.log_file(), spec.pid_file());
        let (supervised, started) = self.supervise(spec);
        self.controller = Some(supervised);
        let controller = started
            .await
            .context("the controller's supervisor stopped")??;
        let controller_address = controller.addresses["grpc"];

        self.controller_address = Some(controller_address);
        let mut pending = Vec::new();
        for id in 0..plan.brokers {
            let spec = broker_spec(plan, id, controller_address);
            let paths = (spec.dir.clone(), spec.log_file(), spec.pid_file());
            let (supervised, started) = self.supervise(spec);
            self.brokers.push(supervised);
            pending.push((id, paths, started));
        }
        let mut brokers = Vec::new();
        for (id, paths, started) in pending {
            let started = started
                .await
                .with_context(|| format!("the supervisor of broker {id} stopped"))??;
            brokers.push((id, paths, started));
        }

        let bootstrap = brokers
            .iter()
            .map(|(_, _, s)| s.addresses["grpc"].to_string())
            .collect::<Vec<_>>()
            .join(",");
        let admin = Admin::connect(&bootstrap)
            .await
            .context("the brokers are up but do not answer")?;
        let mut created = Vec::new();
        for topic in &plan.topics {
            created.push(apply_topic(&admin, topic).await?);
        }

        let plural = if plan.brokers == 1 { "" } else { "s" };
        let mut summary = created;
        summary.push(format!(
            "Tributary is up: {} broker{plural} and a controller. Press Ctrl-C to stop.",
            plan.brokers
        ));
        let kafka_bootstrap = brokers
            .iter()
            .map(|(_, _, s)| s.addresses["kafka"].to_string())
            .collect::<Vec<_>>()
            .join(",");
        summary.push(format!("  bootstrap:   {bootstrap}"));
        summary.push(format!(
            "  kafka:       {kafka_bootstrap}  (bootstrap.servers for Kafka clients)"
        ));
        summary.push(format!(
            "  controller:  grpc {controller_address}, pid {}, data {}",
            controller.pid,
            controller_dir.display()
        ));
        for (id, (dir, _, _), started) in &brokers {
            summary.push(format!(
                "  broker {id}:    grpc {}, kafka {}, metrics http://{}/metrics, pid {}, data {}",
                started.addresses["grpc"],
                started.addresses["kafka"],
                started.addresses["http"],
                started.pid,
                dir.display()
            ));
        }
        summary.push(format!(
            "Each process keeps its log and pid file in its data directory (like {} and {}); one that exits is started again.",
            display(&controller_log),
            display(&controller_pid),
        ));
        summary.push(format!(
            "Try:  tributary --bootstrap {} topic list",
            brokers[0].2.addresses["grpc"]
        ));
        Ok(summary.join("\n"))
    }

    /// Stops the brokers (each hands its leaderships over first), then the controller; a
    /// second stop request (Ctrl-C again) kills them all at once. Returns what did not stop
    /// cleanly.
    async fn stop(self, signals: &mut StopSignals) -> Vec<String> {
        println!("stopping... (press Ctrl-C again to kill the processes at once)");
        let kill = self.kill.clone();
        let stopping = self.stop_in_order();
        tokio::pin!(stopping);
        tokio::select! {
            failures = &mut stopping => return failures,
            () = signals.next() => {}
        }
        println!("killing the processes...");
        kill.cancel();
        stopping.await
    }

    async fn stop_in_order(self) -> Vec<String> {
        let mut failures = Vec::new();
        for broker in &self.brokers {
            broker.stop.cancel();
        }
        for broker in self.brokers {
            collect(broker.task.await, &mut failures);
        }
        if let Some(controller) = self.controller {
            controller.stop.cancel();
            collect(controller.task.await, &mut failures);
        }
        failures
    }
}

fn collect(stopped: Result<Stopped, tokio::task::JoinError>, failures: &mut Vec<String>) {
    match stopped {
        Ok(Stopped::Cleanly) => {}
        Ok(Stopped::Failed(why)) => failures.push(why),
        Err(error) => failures.push(format!("a supervisor failed: {error}")),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Tells the user what happened to a process after the cluster came up.
fn report(event: Event) {
    match event {
        Event::Exited {
            name,
            pid,
            status,
            restart_in,
        } => println!(
            "{name} (pid {pid}) exited with {}; starting it again in {:.1}s",
            supervisor::describe(&status),
            restart_in.as_secs_f64()
        ),
        Event::Restarted { name, pid } => println!("{name} is running again (pid {pid})"),
        Event::RestartFailed {
            name,
            error,
            retry_in,
        } => println!(
            "{name} could not be started: {error:#}; trying again in {:.1}s",
            retry_in.as_secs_f64()
        ),
    }
}

async fn apply_topic(admin: &Admin, topic: &TopicManifest) -> anyhow::Result<String> {
    let new = NewTopic {
        name: topic.name.clone(),
        partitions: topic.partitions,
        replication_factor: topic.replication_factor,
        config: topic.config.clone(),
    };
    match admin.create_topic(new).await {
        Ok(created) => Ok(format!(
            "Created topic {} ({} partitions, replication factor {}).",
            created.name,
            created.partitions.len(),
            created.partitions.first().map_or(0, |p| p.replicas.len())
        )),
        Err(ClientError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            ..
        }) => {
            let existing = admin.describe_topic(&topic.name).await?;
            if existing.partitions.len() as u32 == topic.partitions {
                Ok(format!("Topic {} already exists.", topic.name))
            } else {
                Ok(format!(
                    "warning: topic {} exists with {} partitions; the manifest asks for {} and it was left as it is",
                    topic.name,
                    existing.partitions.len(),
                    topic.partitions
                ))
            }
        }
        Err(error) => Err(error)
            .with_context(|| format!("cannot create topic {} from its manifest", topic.name)),
    }
}
