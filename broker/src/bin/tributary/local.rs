//! `tributary local up`: a cluster on this machine, in the foreground.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use tokio::net::TcpListener;
use tributary_broker::client::{Admin, Error as ClientError, ErrorCode, NewTopic};
use tributary_broker::config::TopicConfig;
use tributary_broker::manifest::{self, Manifest, TopicManifest};
use tributary_broker::server::{self, BrokerConfig};

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start a local cluster in the foreground and create the topics of the given
    /// manifests; Ctrl-C stops it cleanly.
    Up {
        /// Number of brokers.
        #[arg(long, default_value_t = 1)]
        brokers: u32,
        /// Where the brokers keep their data (broker-<id>/ below it).
        #[arg(long, default_value = "./.tributary")]
        data_dir: PathBuf,
        /// Topic manifests (the YAML given to `kubectl apply`) to create.
        #[arg(short = 'f', long = "file", value_name = "MANIFEST")]
        files: Vec<PathBuf>,
        /// gRPC port of the first broker (0 picks a free port).
        #[arg(long, default_value_t = 9095)]
        port: u16,
        /// Health and metrics port of the first broker (0 picks a free port).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Broker default for a topic configuration key, as KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
}

pub async fn run(command: LocalCommand) -> anyhow::Result<()> {
    let LocalCommand::Up {
        brokers,
        data_dir,
        files,
        port,
        http_port,
        config,
    } = command;
    if brokers != 1 {
        bail!(
            "--brokers {brokers}: a local cluster has a single broker until replication lands; use --brokers 1"
        );
    }
    let mut topics = Vec::new();
    for file in &files {
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
    let topic_config = TopicConfig::parse_pairs(&config).context("--config")?;
    let grpc = bind(port, "--port").await?;
    let http = bind(http_port, "--http-port").await?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let broker_dir = data_dir.join("broker-0");
    let mut broker_config = BrokerConfig::new(0, &broker_dir);
    broker_config.topic_config = topic_config;
    let mut broker = tokio::spawn(server::run(broker_config, grpc, http, async {
        server::stop_signal().await;
        eprintln!("stopping...");
    }));

    let bootstrap = grpc_addr.to_string();
    let admin = tokio::select! {
        admin = connect(&bootstrap) => admin?,
        result = &mut broker => {
            result??;
            bail!("the broker stopped before it was ready");
        }
    };
    for topic in &topics {
        apply_topic(&admin, topic).await?;
    }
    println!("Tributary is up with 1 broker. Press Ctrl-C to stop.");
    println!("  bootstrap:  {bootstrap}");
    println!(
        "  broker 0:   grpc {grpc_addr}, metrics http://{http_addr}/metrics, data {}",
        broker_dir.display()
    );
    println!("Try:  tributary --bootstrap {bootstrap} topic list");
    broker.await??;
    println!("Tributary stopped cleanly.");
    Ok(())
}

async fn bind(port: u16, flag: &str) -> anyhow::Result<TcpListener> {
    let address = format!("127.0.0.1:{port}");
    TcpListener::bind(&address).await.with_context(|| {
        format!("cannot listen on {address} (is another cluster or program using it?); choose another port with {flag}")
    })
}

/// Waits for the broker to answer.
async fn connect(bootstrap: &str) -> anyhow::Result<Admin> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Admin::connect(bootstrap).await {
            Ok(admin) => return Ok(admin),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error).context("the broker did not come up");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn apply_topic(admin: &Admin, topic: &TopicManifest) -> anyhow::Result<()> {
    let new = NewTopic {
        name: topic.name.clone(),
        partitions: topic.partitions,
        replication_factor: topic.replication_factor,
        config: topic.config.clone(),
    };
    match admin.create_topic(new).await {
        Ok(created) => println!(
            "Created topic {} ({} partitions).",
            created.name,
            created.partitions.len()
        ),
        Err(ClientError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            ..
        }) => {
            let existing = admin.describe_topic(&topic.name).await?;
            if existing.partitions.len() as u32 == topic.partitions {
                println!("Topic {} already exists.", topic.name);
            } else {
                eprintln!(
                    "warning: topic {} exists with {} partitions; the manifest asks for {} and it was left as it is",
                    topic.name,
                    existing.partitions.len(),
                    topic.partitions
                );
            }
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot create topic {} from its manifest", topic.name));
        }
    }
    Ok(())
}
