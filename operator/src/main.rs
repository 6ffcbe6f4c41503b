//! `tributary-operator`: runs the operator (`run`), and prints the CRDs (`crd`), the
//! objects a Cluster becomes (`manifests`) and the RBAC rules it needs (`rbac`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tributary_operator::crd;
use tributary_operator::install::{self, Install};
use tributary_operator::leader::LeaseConfig;
use tributary_operator::manifests;
use tributary_operator::resources::Settings;
use tributary_operator::run::{self, RunConfig};

/// Where brokers reach the controller the operator runs, unless told otherwise: the
/// Service the Helm chart creates.
const DEFAULT_CONTROLLER_ADDRESS: &str = "tributary-operator-controller.tributary-system.svc:9093";

#[derive(Debug, Parser)]
#[command(version, about = "The Tributary Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Watch Clusters and Topics in this namespace only; without it, in all namespaces
    /// (which needs a ClusterRole).
    #[arg(long, env = "TRIBUTARY_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Where brokers reach the cluster controllers (gRPC).
    #[arg(long, env = "TRIBUTARY_GRPC_LISTEN", default_value = "0.0.0.0:9093")]
    grpc_listen: String,
    /// Health (/healthz, /readyz) and Prometheus metrics (/metrics).
    #[arg(long, env = "TRIBUTARY_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: String,
    /// The controller address brokers are given: the Service in front of the leader.
    #[arg(long, env = "TRIBUTARY_CONTROLLER_ADDRESS", default_value = DEFAULT_CONTROLLER_ADDRESS)]
    controller_address: String,
    /// The Lease that elects the leader among the operator's replicas.
    #[arg(long, default_value = "tributary-operator")]
    lease_name: String,
    /// Namespace of the Lease, and of this pod; defaults to the client's namespace (the
    /// pod's own in a cluster).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a leader that stops renewing keeps the Lease.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_duration_seconds: u64,
    /// This replica's pod name: its identity for the Lease, and the pod labelled as the
    /// leader's (the controller Service selects it). Set from the downward API.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    #[arg(long, value_enum, env = "TRIBUTARY_LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: reconcile Clusters and Topics and host their controllers (in a
    /// cluster, or against the cluster of the current kubeconfig context).
    Run(Box<RunArgs>),
    /// Print the RBAC the operator needs: a Role in the watched namespace (or, with
    /// --all-namespaces, a ClusterRole) and a Role for its Lease and leader label in its
    /// own namespace, each with its binding.
    Rbac(InstallArgs),
    /// Print everything that runs the operator, for `kubectl apply -f -`: the CRDs, its
    /// namespace, ServiceAccount, RBAC, a Deployment of two replicas and the controller
    /// Service.
    Install(InstallArgs),
    /// Print the CustomResourceDefinitions (Cluster, Topic) as YAML, for `kubectl apply -f -`.
    Crd {
        /// Write one file per CRD into this directory instead (as in the repository's crds/).
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Print the objects the operator makes of each Cluster in a manifest file (what it
    /// would apply), as YAML.
    Manifests {
        /// A file with Cluster resources (other kinds are skipped).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The controller address brokers are given.
        #[arg(long, env = "TRIBUTARY_CONTROLLER_ADDRESS", default_value = DEFAULT_CONTROLLER_ADDRESS)]
        controller_address: String,
    },
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// The operator's own namespace.
    #[arg(long, default_value = "tributary-system")]
    namespace: String,
    /// The namespace the operator watches (run --namespace); defaults to its own.
    #[arg(long, conflicts_with = "all_namespaces")]
    watch_namespace: Option<String>,
    /// Watch every namespace (a ClusterRole).
    #[arg(long)]
    all_namespaces: bool,
    /// The operator image.
    #[arg(long, default_value_t = install::default_image())]
    image: String,
}

impl InstallArgs {
    fn install(self) -> Install {
        let watch = match (self.all_namespaces, self.watch_namespace) {
            (true, _) => None,
            (false, watched) => Some(watched.unwrap_or_else(|| self.namespace.clone())),
        };
        Install {
            namespace: self.namespace,
            watch,
            image: self.image,
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run_operator(args: RunArgs) -> Result<(), String> {
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot find the Kubernetes API (in-cluster service account or kubeconfig): {e}")
    })?;
    let own_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = args.pod_name.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("tributary-operator-{}", std::process::id()))
    });
    let grpc = tokio::net::TcpListener::bind(&args.grpc_listen)
        .await
        .map_err(|e| format!("cannot listen on {} (--grpc-listen): {e}", args.grpc_listen))?;
    let http = tokio::net::TcpListener::bind(&args.http_listen)
        .await
        .map_err(|e| format!("cannot listen on {} (--http-listen): {e}", args.http_listen))?;
    let config = RunConfig {
        namespace: args.namespace,
        settings: Settings {
            controller_address: args.controller_address,
        },
        lease: LeaseConfig {
            namespace: own_namespace.clone(),
            name: args.lease_name,
            identity,
            duration: Duration::from_secs(args.lease_duration_seconds),
        },
        pod: args.pod_name.map(|pod| (own_namespace, pod)),
    };
    let shutdown = async {
        tributary_broker::process::stop_signal().await;
        tracing::info!("stop signal received; stopping");
    };
    run::run(client, config, grpc, http, shutdown).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            init_logging(args.log_format);
            tributary_broker::process::run_process("tributary-operator", run_operator(*args))
        }
        Command::Rbac(args) => {
            print!("{}", manifests::to_yaml(&install::rbac(&args.install())));
            ExitCode::SUCCESS
        }
        Command::Install(args) => {
            print!("{}", manifests::to_yaml(&install::objects(&args.install())));
            ExitCode::SUCCESS
        }
        Command::Crd { write: None } => {
            let documents: Vec<String> = crd::all().iter().map(|(_, c)| crd::to_yaml(c)).collect();
            print!("{}", documents.join("---\n"));
            ExitCode::SUCCESS
        }
        Command::Crd { write: Some(dir) } => {
            for (file, c) in crd::all() {
                let path = dir.join(file);
                if let Err(error) = std::fs::write(&path, crd::to_yaml(&c)) {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Command::Manifests {
            file,
            controller_address,
        } => match manifests::of_clusters(&file, &Settings { controller_address }) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
