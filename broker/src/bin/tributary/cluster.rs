//! `tributary cluster`: the cluster's status, rebalancing, cordoning brokers, and the
//! broker count, through the cluster's controller.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use tributary_broker::client::{ClusterAdmin, ClusterStatus, ScaleState};
use tributary_broker::metadata::Plan;

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
    /// Ask for N brokers, ids 0 to N-1. Growing: `tributary local up` starts the new
    /// brokers and, once they registered, replicas move onto them. Shrinking: the brokers
    /// that go (the highest ids) are cordoned and drained, and `local up` stops them only
    /// when they hold nothing. Refused when a topic keeps more replicas than N. (On
    /// Kubernetes, set the Cluster's spec.replicas instead.)
    Scale {
        brokers: u32,
        /// Wait until exactly N brokers run and nothing is moving.
        #[arg(long)]
        wait: bool,
        /// With --wait, give up after this many seconds.
        #[arg(long, default_value_t = 600, requires = "wait")]
        timeout_secs: u64,
    },
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
    if let Some(scale) = &status.scale {
        println!(
            "Broker count: {} asked for, {} to run now ({}: {})",
            scale.brokers, scale.run, scale.phase, scale.message
        );
    }
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
            "Rebalance: {} ({} rolled back); in flight: {}",
            plan.progress(),
            plan.rolled_back,
            in_flight.join("; ")
        );
    }
    Ok(())
}

/// True once exactly brokers 0 to N-1 are in session and nothing moves.
fn scaled(status: &ClusterStatus, brokers: u32) -> bool {
    let alive: Vec<i32> = status
        .brokers
        .iter()
        .filter(|b| b.alive)
        .map(|b| b.id)
        .collect();
    let wanted: Vec<i32> = (0..brokers as i32).collect();
    alive == wanted
        && status.rebalance.moves.is_empty()
        && status
            .scale
            .as_ref()
            .is_some_and(|s| s.run == brokers && s.phase == "Balanced")
}

async fn scale(
    admin: &ClusterAdmin,
    format: Output,
    brokers: u32,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let state = admin.scale(brokers).await?;
    if format == Output::Text {
        println!("Scaling to {brokers} brokers: {}.", state.message);
        println!(
            "`tributary local up` starts and stops the broker processes; `tributary cluster status` shows the progress."
        );
    }
    let Some(limit) = wait else {
        return if format == Output::Json {
            output::json(&state)
        } else {
            Ok(())
        };
    };
    let deadline = Instant::now() + limit;
    let mut last: Option<ScaleState> = Some(state);
    loop {
        let status = admin.status().await?;
        if scaled(&status, brokers) {
            if format == Output::Json {
                return output::json(&status);
            }
            println!("{brokers} brokers run and nothing is moving.");
            return Ok(());
        }
        if status.scale != last
            && format == Output::Text
            && let Some(scale) = &status.scale
        {
            println!("{}: {}", scale.phase, scale.message);
        }
        last = status.scale;
        if Instant::now() >= deadline {
            bail!(
                "still not at {brokers} brokers after {}s; `tributary cluster status` shows where it stands",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
        ClusterCommand::Scale {
            brokers,
            wait,
            timeout_secs,
        } => {
            let wait = wait.then(|| Duration::from_secs(timeout_secs));
            scale(&admin, format, brokers, wait).await
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
