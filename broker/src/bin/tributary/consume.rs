//! `tributary consume`: print records from a topic.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use tributary_broker::client::{
    Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset, TopicPartition,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The value only.
    Value,
    /// Key, separator, value.
    Kv,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the oldest record instead of waiting for new ones.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (of --partition, or of the topic's only partition).
    #[arg(long, allow_negative_numbers = true)]
    offset: Option<i64>,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record has arrived for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long, value_enum, default_value_t = Format::Value)]
    format: Format,
    /// Separator between key and value with --format kv.
    #[arg(long, default_value = "\t")]
    key_separator: String,
    /// Read as a member of this consumer group: the group's partitions are shared among
    /// its members, reading starts at the group's committed offsets, and offsets are
    /// committed every 5 s and on exit. Without a committed offset a partition starts at
    /// the end (at the beginning with --from-beginning).
    #[arg(long, conflicts_with_all = ["offset", "partition"])]
    group: Option<String>,
}

fn text(bytes: &Option<bytes::Bytes>) -> Option<String> {
    bytes
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn print(out: &mut impl Write, record: &ConsumerRecord, args: &ConsumeArgs) -> std::io::Result<()> {
    match args.format {
        Format::Value => writeln!(
            out,
            "{}",
            text(&record.value).unwrap_or_else(|| "null".into())
        ),
        Format::Kv => writeln!(
            out,
            "{}{}{}",
            text(&record.key).unwrap_or_else(|| "null".into()),
            args.key_separator,
            text(&record.value).unwrap_or_else(|| "null".into())
        ),
        Format::Json => {
            let line = JsonRecord {
                topic: &record.topic,
                partition: record.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: text(&record.key),
                value: text(&record.value),
            };
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)
        }
    }
}

/// One line of `--format json`, keys in this order.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
}

pub async fn run(bootstrap: &str, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(offset) = args.offset.filter(|&o| o < 0) {
        bail!(
            "--offset {offset} is negative: offsets start at 0 (use --from-beginning for the oldest record)"
        );
    }
    let mut config = ConsumerConfig::new(bootstrap);
    config.auto_offset_reset = match (args.from_beginning, args.offset) {
        (true, _) => OffsetReset::Earliest,
        (_, Some(_)) => OffsetReset::None,
        _ => OffsetReset::Latest,
    };
    if let Some(group) = &args.group {
        config.group_id = Some(group.clone());
        config.client_id = "tributary-cli".into();
        let mut consumer = Consumer::connect(config).await?;
        consumer.subscribe(&[args.topic.as_str()]).await?;
        let result = read(&mut consumer, &args).await;
        consumer.close().await?;
        return result;
    }
    let mut consumer = Consumer::connect(config).await?;
    let partitions = match args.partition {
        Some(p) => vec![TopicPartition::new(&args.topic, p)],
        None => consumer.partitions_of(&args.topic).await?,
    };
    consumer.assign(partitions.clone()).await?;
    if let Some(offset) = args.offset {
        if partitions.len() != 1 {
            bail!(
                "--offset needs --partition: topic '{}' has {} partitions",
                args.topic,
                partitions.len()
            );
        }
        consumer.seek(&partitions[0], Offset::At(offset)).await?;
    } else if args.from_beginning {
        for tp in &partitions {
            consumer.seek(tp, Offset::Beginning).await?;
        }
    }
    read(&mut consumer, &args).await
}

/// Prints records until --max-messages, --timeout-ms or Ctrl-C.
async fn read(consumer: &mut Consumer, args: &ConsumeArgs) -> anyhow::Result<()> {
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut count = 0u64;
    let stdout = std::io::stdout();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    'consume: loop {
        let wait = idle_limit.map_or(Duration::from_secs(1), |limit| {
            limit
                .saturating_sub(last_record.elapsed())
                .min(Duration::from_secs(1))
        });
        let records = tokio::select! {
            records = consumer.poll(wait) => records?,
            _ = &mut stop => break,
        };
        if records.is_empty() {
            if idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        let mut out = stdout.lock();
        for record in &records {
            print(&mut out, record, args)?;
            count += 1;
            if args.max_messages.is_some_and(|max| count >= max) {
                out.flush()?;
                break 'consume;
            }
        }
        out.flush()?;
    }
    eprintln!("Processed a total of {count} messages");
    Ok(())
}
