//! `tributary-operator`: prints the CRDs (`crd`); running the operator has its own command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_operator::crd;

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
    }
}
