//! Times raw Fetch round trips at several sizes against a running broker: a diagnostic for
//! the consume path (no record decoding). Usage: fetch_rtt HOST:PORT TOPIC
use std::time::Instant;

use tributary_broker::protocol::grpc::proto::{self, broker_client::BrokerClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (address, topic) = (&args[1], &args[2]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(64 << 20)
        .max_frame_size(1 << 20)
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = BrokerClient::new(channel).max_decoding_message_size(128 << 20);
    for size in [256 << 10, 1 << 20, 4 << 20, 16 << 20] {
        let started = Instant::now();
        let (mut bytes, mut offset, rounds) = (0usize, 0i64, 200);
        for _ in 0..rounds {
            let request = proto::FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: size,
                partitions: vec![proto::FetchPartition {
                    topic: topic.clone(),
                    partition: 0,
                    fetch_offset: offset,
                    max_bytes: size,
                }],
            };
            let response = client.fetch(request).await?.into_inner();
            let records = &response.partitions[0].records;
            bytes += records.len();
            let last = tributary_broker::record::batches(records)
                .last()
                .map(|(_, h)| h.next_offset());
            offset = match last {
                Some(next) if next < response.partitions[0].high_watermark => next,
                _ => 0,
            };
        }
        let elapsed = started.elapsed();
        println!(
            "max {:>6} KiB: {:>7.3} ms per fetch, {:>7.1} MB/s",
            size >> 10,
            elapsed.as_secs_f64() * 1000.0 / rounds as f64,
            bytes as f64 / 1048576.0 / elapsed.as_secs_f64()
        );
    }
    Ok(())
}
