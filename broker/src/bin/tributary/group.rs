//! `tributary group`: list and describe consumer groups, and reset their offsets.

use anyhow::bail;
use clap::Subcommand;
use tributary_broker::client::{Admin, ResetTo};

use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups, with their state and member count.
    List,
    /// Show a group's members and, per partition, its member, committed offset, log end
    /// offset and lag.
    Describe { group: String },
    /// Set a group's committed offsets for a topic; the group must have no members.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// To each partition's oldest record.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To each partition's end: only new records are read.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To this offset in every partition.
        #[arg(long, group = "to", value_name = "N", allow_negative_numbers = true)]
        to_offset: Option<i64>,
    },
}

pub async fn run(bootstrap: &str, format: Output, command: GroupCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match command {
        GroupCommand::List => {
            let groups = admin.list_groups().await?;
            match format {
                Output::Json => output::json(&groups),
                Output::Text => output::table(
                    &["GROUP", "STATE", "MEMBERS", "COORDINATOR"],
                    &groups
                        .iter()
                        .map(|g| {
                            vec![
                                g.group.clone(),
                                g.state.clone(),
                                g.members.to_string(),
                                g.coordinator.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        GroupCommand::Describe { group } => {
            let described = admin.describe_group(&group).await?;
            match format {
                Output::Json => output::json(&described.partitions),
                Output::Text => {
                    println!(
                        "Group {} is {} with {} member(s); coordinator: broker {}",
                        described.group,
                        described.state,
                        described.members.len(),
                        described.coordinator
                    );
                    let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
                    output::table(
                        &[
                            "TOPIC",
                            "PARTITION",
                            "MEMBER",
                            "COMMITTED",
                            "LOG-END",
                            "LAG",
                        ],
                        &described
                            .partitions
                            .iter()
                            .map(|p| {
                                vec![
                                    p.topic.clone(),
                                    p.partition.to_string(),
                                    p.member.clone().unwrap_or_else(|| "-".into()),
                                    dash(p.committed_offset),
                                    dash(p.log_end_offset),
                                    dash(p.lag),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    )
                }
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
        } => {
            let to = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => ResetTo::Earliest,
                (_, true, _) => ResetTo::Latest,
                (_, _, Some(n)) => ResetTo::Offset(n),
                _ => bail!("say where to: --to-earliest, --to-latest or --to-offset N"),
            };
            let offsets = admin.reset_group_offsets(&group, &topic, to).await?;
            match format {
                Output::Json => output::json(
                    &offsets
                        .iter()
                        .map(|(tp, offset)| {
                            serde_json::json!({"topic": tp.topic, "partition": tp.partition, "offset": offset})
                        })
                        .collect::<Vec<_>>(),
                ),
                Output::Text => {
                    for (tp, offset) in &offsets {
                        println!("{tp}: {offset}");
                    }
                    Ok(())
                }
            }
        }
    }
}
