//! `tributary produce`: one record per line of standard input.

use anyhow::bail;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tributary_broker::client::{
    Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
};

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// 0: do not wait for the broker; 1: wait for the leader; all: wait for every in-sync replica.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Split each line into key and value at the first occurrence of SEP.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Print `PARTITION OFFSET` for each acknowledged record.
    #[arg(long)]
    print_offsets: bool,
    /// Send every record to this partition instead of choosing by key.
    #[arg(long)]
    partition: Option<u32>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// How long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Bytes per batch.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_size: usize,
}

pub fn parse_acks(value: &str) -> Result<Acks, String> {
    match value {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!("'{other}' is not 0, 1 or all")),
    }
}

pub async fn run(bootstrap: &str, args: ProduceArgs) -> anyhow::Result<()> {
    let mut config = ProducerConfig::new(bootstrap);
    config.acks = args.acks;
    config.compression = args.compression;
    config.linger = std::time::Duration::from_millis(args.linger_ms);
    config.batch_size = args.batch_size;
    let producer = Producer::connect(config).await?;

    // Acknowledgements are reported in the order records were sent, which within a
    // partition is the order the broker acknowledged them.
    let (deliveries, mut acknowledged) = mpsc::channel::<(u64, DeliveryFuture)>(65_536);
    let print_offsets = args.print_offsets;
    let reporter = tokio::spawn(async move {
        let mut failed = 0u64;
        while let Some((line, delivery)) = acknowledged.recv().await {
            match delivery.await {
                Ok(written) if print_offsets => {
                    println!("{} {}", written.partition, written.offset)
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("error: the record from line {line} was not written: {error}");
                    failed += 1;
                }
            }
        }
        failed
    });

    let mut input = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut bad_input = None;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let mut record = ProducerRecord::new(&args.topic);
        match &args.key_separator {
            Some(separator) => match find(text, separator.as_bytes()) {
                Some(at) => {
                    record.key = Some(Bytes::copy_from_slice(&text[..at]));
                    record.value = Some(Bytes::copy_from_slice(&text[at + separator.len()..]));
                }
                None => {
                    bad_input = Some(format!(
                        "line {number} has no key separator {separator:?}: write KEY{separator}VALUE, or leave out --key-separator"
                    ));
                    break;
                }
            },
            None => record.value = Some(Bytes::copy_from_slice(text)),
        }
        record.partition = args.partition;
        match producer.send(record).await {
            Ok(delivery) => {
                if deliveries.send((number, delivery)).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                bad_input = Some(format!("line {number} could not be sent: {error}"));
                break;
            }
        }
    }
    drop(deliveries);
    producer.close().await;
    let failed = reporter.await?;
    if let Some(problem) = bad_input {
        bail!(
            "{problem} ({} earlier line(s) were sent)",
            number.saturating_sub(1)
        );
    }
    if failed > 0 {
        bail!("{failed} of {number} records were not written");
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
