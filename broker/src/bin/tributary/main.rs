//! `tributary`: the command-line tool for Tributary clusters.

mod cluster;
mod consume;
mod group;
mod local;
mod output;
mod perf;
mod produce;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Output;

/// Work with a Tributary cluster: topics, producing, consuming, benchmarks, and a local
/// cluster for development.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, propagate_version = true)]
struct Cli {
    /// A broker to start from, as HOST:PORT (several may be given, comma-separated).
    #[arg(
        long,
        global = true,
        env = "TRIBUTARY_BOOTSTRAP",
        default_value = "127.0.0.1:9095"
    )]
    bootstrap: String,
    /// Output format of list and describe commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records from a topic.
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups; reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
    /// Run a cluster on this machine.
    #[command(subcommand)]
    Local(local::LocalCommand),
    /// Cluster status, rebalancing and cordoning brokers (through the controller).
    Cluster(cluster::ClusterArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topic(command) => topic::run(&cli.bootstrap, cli.output, command).await,
        Command::Produce(args) => produce::run(&cli.bootstrap, args).await,
        Command::Consume(args) => consume::run(&cli.bootstrap, args).await,
        Command::Group(command) => group::run(&cli.bootstrap, cli.output, command).await,
        Command::Perf(command) => perf::run(&cli.bootstrap, command).await,
        Command::Local(command) => local::run(command).await,
        Command::Cluster(args) => cluster::run(cli.output, args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tributary_broker::process::init_logging("warn");
    tributary_broker::process::keep_freed_memory();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
