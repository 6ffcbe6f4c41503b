//! `tributary cluster`: the cluster's status, rebalancing, and cordoning brokers, through
//! the cluster's controller.

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use tributary_broker::client::{ClusterAdmin, ClusterStatus};
use tributary_broker::controller::Plan;

use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster controller, as HOST:PORT (`tributary local up` runs it on 9094).
    #[arg(
        long,
        env = "TRIBUTARY_CONTROLLER",
        default_value = "127.0.0.1:9094",
        global = true
    )]
    controller: String,
    /// The cluster's name, for a controller that serves several (the operator's:
    /// NAMESPACE/NAME).
    #[arg(long, env = "TRIBUTARY_CLUSTER", global = true)]
    cluster: Option<String>,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers with their replica and leader counts, under-replicated partitions, and the
    /// rebalance in progress.
    Status,
    /// Move replicas so that every broker holds about as many replicas and leaderships as
    /// any other (rack-aware, moving as few as possible), and nothing stays on cordoned or
    /// absent brokers. Prints the plan.
    Rebalance {
        /// Print the plan without moving anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Set the brokers that take no new replicas; `rebalance` then drains them. Without
    /// ids, no broker is cordoned.
    Cordon { brokers: Vec<i32> },
}

fn print_plan(plan: &Plan, format: Output, started: bool) -> anyhow::Result<()> {
    if format == Output::Json {
        return output::json(plan);
    }
    if plan.moves.is_empty() && plan.total == 0 {
        println!("The cluster is balanced: nothing to move.");
        return Ok(());
    }
    let verb = if started { "Moving" } else { "Would move" };
    println!(
        "{verb} {} partition(s), at most {} at a time:",
        plan.total, plan.max_concurrent
    );
    output::table(
        &["TOPIC", "PARTITION", "FROM", "TO"],
        &plan
            .moves
            .iter()
            .map(|m| {
                vec![
                    m.topic.clone(),
                    m.partition.to_string(),
                    output::ids(&m.original),
                    output::ids(&m.target),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

fn print_status(status: &ClusterStatus, format: Output) -> anyhow::Result<()> {
    if format == Output::Json {
        return output::json(status);
    }
    output::table(
        &[
            "BROKER", "ADDRESS", "ALIVE", "CORDONED", "REPLICAS", "LEADERS",
        ],
        &status
            .brokers
            .iter()
            .map(|b| {
                vec![
                    b.id.to_string(),
                    if b.address.is_empty() {
                        "-".into()
                    } else {
                        b.address.clone()
                    },
                    b.alive.to_string(),
                    b.cordoned.to_string(),
                    b.replicas.to_string(),
                    b.leaders.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    )?;
    println!(
        "{} partition(s), {} under-replicated; controller epoch {}",
        status.partitions, status.under_replicated_partitions, status.controller_epoch
    );
    let plan = &status.rebalance;
    if plan.moves.is_empty() {
        println!("No rebalance in progress.");
    } else {
        let in_flight: Vec<String> = plan
            .moves
            .iter()
            .filter(|m| m.started)
            .map(|m| {
                format!(
                    "{}-{} {} -> {}",
                    m.topic,
                    m.partition,
                    output::ids(&m.original),
                    output::ids(&m.target)
                )
            })
            .collect();
        println!(
            "Rebalance: {} of {} moves done ({} rolled back); in flight: {}",
            plan.done,
            plan.total,
            plan.rolled_back,
            in_flight.join("; ")
        );
    }
    Ok(())
}

pub async fn run(format: Output, args: ClusterArgs) -> anyhow::Result<()> {
    let admin = ClusterAdmin::connect(&args.controller, args.cluster.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("the controller at {}: {e}", args.controller))?;
    match args.command {
        ClusterCommand::Status => print_status(&admin.status().await?, format),
        ClusterCommand::Rebalance { dry_run } => {
            let plan = admin.rebalance(dry_run).await?;
            print_plan(&plan, format, !dry_run)
        }
        ClusterCommand::Cordon { brokers } => {
            let brokers: BTreeSet<i32> = brokers.into_iter().collect();
            admin.cordon(&brokers).await?;
            if format == Output::Json {
                return output::json(&brokers);
            }
            if brokers.is_empty() {
                println!("No broker is cordoned.");
            } else {
                let ids: Vec<i32> = brokers.into_iter().collect();
                println!(
                    "Cordoned broker(s) {}: they take no new replicas; `tributary cluster rebalance` drains them.",
                    output::ids(&ids)
                );
            }
            Ok(())
        }
    }
}
