//! `tributary topic ...`

use anyhow::Context;
use clap::Subcommand;
use tributary_broker::client::{Admin, NewTopic};
use tributary_broker::config::TopicConfig;

use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p')]
        partitions: u32,
        /// Copies of each partition [default: the cluster's default].
        #[arg(long, short = 'r')]
        replication_factor: Option<u32>,
        /// Topic configuration, as KEY=VALUE (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Check the request without creating anything.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics.
    List {
        /// Include internal topics (names starting with __).
        #[arg(long)]
        include_internal: bool,
    },
    /// Show a topic's partitions: replicas, leader, in-sync replicas and offsets.
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete { name: String },
}

pub async fn run(bootstrap: &str, output: Output, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
            validate_only,
        } => {
            let config = TopicConfig::parse_pairs(&config).context("--config")?;
            let topic = NewTopic {
                name,
                partitions,
                replication_factor,
                config,
            };
            let created = if validate_only {
                admin.validate_topic(topic).await?
            } else {
                admin.create_topic(topic).await?
            };
            let verb = if validate_only {
                "Would create"
            } else {
                "Created"
            };
            println!(
                "{verb} topic {} with {} partition{} and replication factor {}.",
                created.name,
                created.partitions.len(),
                if created.partitions.len() == 1 {
                    ""
                } else {
                    "s"
                },
                created.partitions.first().map_or(0, |p| p.replicas.len())
            );
        }
        TopicCommand::List { include_internal } => {
            let topics = admin.list_topics(include_internal).await?;
            match output {
                Output::Json => output::json(&topics)?,
                Output::Text => output::table(
                    &["TOPIC", "PARTITIONS", "REPLICATION"],
                    &topics
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.partitions.to_string(),
                                t.replication_factor.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        TopicCommand::Describe { name } => {
            let topic = admin.describe_topic(&name).await?;
            match output {
                Output::Json => output::json(&topic.partitions)?,
                Output::Text => {
                    let config: Vec<String> = topic
                        .config
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!(
                        "Topic: {}  Id: {}  Partitions: {}  Configs: {}",
                        topic.name,
                        topic.id,
                        topic.partitions.len(),
                        if config.is_empty() {
                            "(defaults)".to_string()
                        } else {
                            config.join(",")
                        }
                    );
                    output::table(
                        &[
                            "PARTITION",
                            "LEADER",
                            "REPLICAS",
                            "ISR",
                            "LEADER_EPOCH",
                            "LOG_START",
                            "HIGH_WATERMARK",
                        ],
                        &topic
                            .partitions
                            .iter()
                            .map(|p| {
                                vec![
                                    p.partition.to_string(),
                                    p.leader.to_string(),
                                    output::ids(&p.replicas),
                                    output::ids(&p.isr),
                                    p.leader_epoch.to_string(),
                                    p.log_start_offset.to_string(),
                                    p.high_watermark.to_string(),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    )?;
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(())
}
