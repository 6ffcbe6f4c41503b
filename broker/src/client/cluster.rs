//! Connections to brokers and the client's view of the cluster: who leads each partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tonic::transport::Channel;

use super::error::{Error, Result};
use crate::TopicPartition;
use crate::protocol::grpc::proto::admin_client::AdminClient;
use crate::protocol::grpc::proto::broker_client::BrokerClient;
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::protocol::grpc::transport::{self, MAX_MESSAGE_BYTES};

/// A partition's leadership as of the last metadata refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    pub id: String,
    pub internal: bool,
    pub partitions: Vec<PartitionView>,
}

/// The cluster as one Metadata call described it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub brokers: HashMap<i32, String>,
    pub controller_id: i32,
    pub topics: HashMap<String, TopicView>,
}

impl ClusterView {
    fn from_proto(response: proto::MetadataResponse) -> Self {
        Self {
            brokers: response
                .brokers
                .into_iter()
                .map(|b| (b.id, format!("{}:{}", b.host, b.port)))
                .collect(),
            controller_id: response.controller_id,
            topics: response
                .topics
                .into_iter()
                .filter(|t| t.error_code == i32::from(ErrorCode::None))
                .map(|t| {
                    let mut partitions = t.partitions;
                    partitions.sort_by_key(|p| p.partition);
                    let partitions = partitions
                        .into_iter()
                        .map(|p| PartitionView {
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas,
                            isr: p.isr,
                        })
                        .collect();
                    (
                        t.name,
                        TopicView {
                            id: t.topic_id,
                            internal: t.internal,
                            partitions,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<&PartitionView> {
        self.topics
            .get(&tp.topic)?
            .partitions
            .get(tp.partition as usize)
    }

    /// The address of the partition's leader in this view.
    pub fn leader(&self, tp: &TopicPartition) -> Result<String> {
        let Some(topic) = self.topics.get(&tp.topic) else {
            return Err(unknown_topic(&tp.topic));
        };
        let Some(partition) = topic.partitions.get(tp.partition as usize) else {
            return Err(Error::broker(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "topic '{}' has no partition {}: it has partitions 0 to {}",
                    tp.topic,
                    tp.partition,
                    topic.partitions.len().saturating_sub(1)
                ),
            ));
        };
        self.brokers.get(&partition.leader).cloned().ok_or_else(|| {
            Error::broker(
                ErrorCode::LeaderNotAvailable,
                format!("{tp} has no leader available right now"),
            )
        })
    }
}

/// Parses `host:port[,host:port...]`.
pub fn parse_bootstrap(bootstrap: &str) -> Result<Vec<String>> {
    let addresses: Vec<String> = bootstrap
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if addresses.is_empty() {
        return Err(Error::Invalid(
            "no bootstrap address given: pass --bootstrap HOST:PORT".into(),
        ));
    }
    for address in &addresses {
        let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(Error::Invalid(format!(
                "invalid bootstrap address '{address}': expected HOST:PORT, like 127.0.0.1:9095"
            )));
        }
    }
    Ok(addresses)
}

struct Inner {
    bootstrap: Vec<String>,
    request_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    view: RwLock<Option<Arc<ClusterView>>>,
    refreshing: tokio::sync::Mutex<()>,
    /// The broker that answered the last request any broker could answer: asked first next
    /// time, so one that hangs (paused, overloaded) costs a timeout once, not every time.
    answered: Mutex<Option<String>>,
}

/// Shared by a client's producer, consumer and admin parts: cloning is cheap.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.inner.bootstrap)
            .finish()
    }
}

impl Cluster {
    pub fn new(bootstrap: &str, request_timeout: Duration) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                bootstrap: parse_bootstrap(bootstrap)?,
                request_timeout,
                channels: Mutex::new(HashMap::new()),
                view: RwLock::new(None),
                refreshing: tokio::sync::Mutex::new(()),
                answered: Mutex::new(None),
            }),
        })
    }

    /// How long one request may take.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// A multiplexed HTTP/2 channel to `address`, created on first use and kept.
    pub fn channel(&self, address: &str) -> Result<Channel> {
        if let Some(channel) = self.inner.channels.lock().get(address) {
            return Ok(channel.clone());
        }
        let endpoint = transport::endpoint(address)
            .map_err(|e| Error::Invalid(format!("invalid broker address '{address}': {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let channel = endpoint.connect_lazy();
        self.inner
            .channels
            .lock()
            .insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forgets the connection to `address`, so the next call reconnects.
    pub fn reset(&self, address: &str) {
        self.inner.channels.lock().remove(address);
    }

    pub fn broker_client(&self, address: &str) -> Result<BrokerClient<Channel>> {
        Ok(BrokerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn group_client(
        &self,
        address: &str,
    ) -> Result<crate::protocol::grpc::proto::group_client::GroupClient<Channel>> {
        Ok(crate::protocol::grpc::proto::group_client::GroupClient::new(self.channel(address)?))
    }

    pub fn admin_client(&self, address: &str) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Addresses to try for a request any broker can answer: the one that answered last,
    /// known brokers, then bootstrap.
    pub fn candidates(&self) -> Vec<String> {
        let mut known: Vec<String> = self
            .inner
            .view
            .read()
            .as_ref()
            .map(|v| v.brokers.values().cloned().collect())
            .unwrap_or_default();
        known.sort();
        let answered = self.inner.answered.lock().clone();
        let mut addresses: Vec<String> = Vec::new();
        for address in answered
            .into_iter()
            .chain(known)
            .chain(self.inner.bootstrap.iter().cloned())
        {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        addresses
    }

    /// Runs `call` against one broker after another until one answers; the last
    /// connection error is returned when none does.
    pub async fn with_any_broker<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = None;
        for address in self.candidates() {
            match tokio::time::timeout(self.inner.request_timeout, call(address.clone())).await {
                Ok(Err(error @ Error::Connection { .. })) => {
                    self.reset(&address);
                    last = Some(error);
                }
                Ok(result) => {
                    *self.inner.answered.lock() = Some(address);
                    return result;
                }
                Err(_) => {
                    last = Some(Error::Timeout {
                        what: format!("no answer from {address}"),
                        waited_ms: self.inner.request_timeout.as_millis() as u64,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Invalid("no brokers to ask".into())))
    }

    /// Asks the cluster for fresh metadata.
    pub async fn refresh(&self) -> Result<Arc<ClusterView>> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let response = self
            .with_any_broker(|address| async move {
                let mut client = self.broker_client(&address)?;
                client
                    .metadata(proto::MetadataRequest { topics: Vec::new() })
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| Error::from_status(s, &address))
            })
            .await?;
        let view = Arc::new(ClusterView::from_proto(response));
        *self.inner.view.write() = Some(view.clone());
        Ok(view)
    }

    /// The cached metadata, fetched if there is none yet.
    pub async fn view(&self) -> Result<Arc<ClusterView>> {
        if let Some(view) = self.inner.view.read().clone() {
            return Ok(view);
        }
        self.refresh().await
    }

    /// The topic's partition count, refreshing once if the topic is not known yet.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(topic) = self.view().await?.topics.get(topic) {
            return Ok(topic.partitions.len() as u32);
        }
        match self.refresh().await?.topics.get(topic) {
            Some(t) => Ok(t.partitions.len() as u32),
            None => Err(unknown_topic(topic)),
        }
    }

    /// The address of the partition's leader, per the cached metadata.
    pub async fn leader(&self, tp: &TopicPartition) -> Result<String> {
        self.view().await?.leader(tp)
    }
}

pub(crate) fn unknown_topic(topic: &str) -> Error {
    Error::broker(
        ErrorCode::UnknownTopicOrPartition,
        format!(
            "unknown topic '{topic}'; create it with `tributary topic create {topic} --partitions N`"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(parse_bootstrap("a:1, b:2").unwrap(), ["a:1", "b:2"]);
        for bad in [
            "",
            "localhost",
            "host:",
            ":9095",
            "host:port",
            "host:0",
            "host:70000",
        ] {
            let err = parse_bootstrap(bad).unwrap_err();
            assert!(err.to_string().contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
