//! For tests of a cluster just made (this crate's and the operator's): one record written
//! to a new topic once a broker leads it, and read back.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    Consumer, ConsumerConfig, ConsumerRecord, Offset, Producer, ProducerConfig, ProducerRecord,
};
use crate::TopicPartition;

/// Sends `value` to partition 0 of `topic` through `bootstrap` until it is acknowledged (the
/// broker takes the partition when the controller's metadata reaches it), then reads the
/// partition from the beginning until a record comes; panics at `deadline`.
pub async fn write_and_read_back(
    bootstrap: &str,
    topic: &str,
    value: &str,
    deadline: Instant,
) -> Vec<ConsumerRecord> {
    let producer = Producer::connect(ProducerConfig::new(bootstrap))
        .await
        .expect("a producer");
    loop {
        let sent = producer
            .send(ProducerRecord::new(topic).value(value.to_string()))
            .await;
        match sent {
            Ok(delivery) => match delivery.await {
                Ok(_) => break,
                Err(error) => assert!(Instant::now() < deadline, "{error}"),
            },
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut consumer = Consumer::connect(ConsumerConfig::new(bootstrap))
        .await
        .expect("a consumer");
    let tp = TopicPartition::new(topic, 0);
    consumer
        .assign(vec![tp.clone()])
        .await
        .expect("an assignment");
    consumer.seek(&tp, Offset::Beginning).await.expect("a seek");
    loop {
        let records = consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("a poll");
        if !records.is_empty() {
            return records;
        }
        assert!(Instant::now() < deadline, "nothing to read");
    }
}
