//! `tributary-operator`: prints the CRDs (`crd`) and the objects a Cluster becomes
//! (`manifests`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_operator::crd::{self, Cluster};
use tributary_operator::resources::{self, Settings};

/// Where brokers reach the controller the operator runs, unless told otherwise: the
/// Service the Helm chart creates.
const DEFAULT_CONTROLLER_ADDRESS: &str = "tributary-operator-controller.tributary-system.svc:9093";

#[derive(Debug, Parser)]
#[command(version, about = "The Tributary Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn manifests(file: &std::path::Path, settings: &Settings) -> Result<String, String> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| {
            format!(
                "{}, document {}: not valid YAML: {e}",
                file.display(),
                i + 1
            )
        })?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("Cluster") {
            continue;
        }
        let mut cluster: Cluster = serde_yaml::from_value(value)
            .map_err(|e| format!("{}, document {}: {e}", file.display(), i + 1))?;
        cluster
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        // What the API server would have given it, so owner references can be shown.
        cluster
            .metadata
            .uid
            .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
        for object in resources::owned(&cluster, settings).to_json() {
            out.push(serde_yaml::to_string(&object).expect("objects serialize"));
        }
    }
    if out.is_empty() {
        return Err(format!("{} has no Cluster resource", file.display()));
    }
    Ok(out.join("---\n"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
        } => match manifests(&file, &Settings { controller_address }) {
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
