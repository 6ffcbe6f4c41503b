//! The Rust client: [`Producer`], [`Consumer`] and [`Admin`].
//!
//! ```no_run
//! # async fn example() -> Result<(), tributary_broker::client::Error> {
//! use tributary_broker::client::*;
//!
//! let admin = Admin::connect("127.0.0.1:9095").await?;
//! admin.create_topic(NewTopic { name: "orders".into(), partitions: 3, ..Default::default() }).await?;
//!
//! let producer = Producer::connect(ProducerConfig::new("127.0.0.1:9095")).await?;
//! let delivery = producer.send(ProducerRecord::new("orders").key("user-1").value("hello")).await?;
//! let written = delivery.await?;
//! println!("partition {} offset {}", written.partition, written.offset);
//! producer.close().await;
//!
//! let mut consumer = Consumer::connect(ConsumerConfig::new("127.0.0.1:9095")).await?;
//! let partitions = consumer.partitions_of("orders").await?;
//! consumer.assign(partitions.clone()).await?;
//! for tp in &partitions {
//!     consumer.seek(tp, Offset::Beginning).await?;
//! }
//! for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
//!     println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod cluster;
mod consumer;
mod controller_admin;
mod error;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
mod group;
mod membership;
mod offsets;
mod producer;

pub use crate::TopicPartition;
pub use crate::metadata::{murmur2, partition_for_key};
pub use crate::protocol::grpc::proto::ErrorCode;
pub use crate::record::{Compression, Header};
pub use admin::{
    Admin, GroupDescription, GroupListing, GroupMemberDescription, GroupPartition, NewTopic,
    PartitionDescription, ResetTo, TopicDescription, TopicSummary,
};
pub use cluster::{ClusterView, PartitionView, TopicView, parse_bootstrap};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset};
pub use controller_admin::{BrokerState, ClusterAdmin, ClusterStatus, ScaleState};
pub use error::{Error, Result};
pub use offsets::{Found, OffsetQuery};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
