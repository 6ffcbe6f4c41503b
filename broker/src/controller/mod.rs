//! The cluster controller: the single writer of cluster metadata. It keeps topics and their
//! partition assignments in a [`MetadataStore`], places replicas on brokers, and publishes
//! every change as a new [`MetadataSnapshot`] that brokers apply.
//!
//! The same controller runs inside a single standalone broker, inside `tributary local up`,
//! and (hosted by the operator) in Kubernetes; only the store differs.

mod metadata;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::config::{ConfigError, TopicConfig};
use crate::validate_topic_name;
pub use metadata::{BrokerInfo, MetadataSnapshot, PartitionRecord, TopicRecord};
pub use store::{Expected, FileStore, MetadataStore, StoreError, Versioned};

const TOPIC_PREFIX: &str = "topics/";
const CONTROLLER_KEY: &str = "controller";
/// No topic may have more partitions than this.
pub const MAX_PARTITIONS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("topic '{0}' already exists; delete it first or choose another name")]
    TopicExists(String),
    #[error("unknown topic '{0}'; `tributary topic list` shows the topics that exist")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid topic config: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A topic to create.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    /// None takes the cluster default.
    pub replication_factor: Option<u32>,
    pub config: BTreeMap<String, String>,
}

/// Cluster-wide defaults the controller applies.
#[derive(Debug, Clone)]
pub struct ControllerDefaults {
    pub replication_factor: u32,
    /// Broker defaults that topic overrides apply on top of (to check them).
    pub topic_config: TopicConfig,
}

impl Default for ControllerDefaults {
    fn default() -> Self {
        Self {
            replication_factor: 1,
            topic_config: TopicConfig::default(),
        }
    }
}

struct State {
    snapshot: MetadataSnapshot,
    /// Store version of each topic record, for compare-and-set.
    topic_versions: BTreeMap<String, u64>,
}

pub struct Controller<S> {
    id: i32,
    store: S,
    defaults: ControllerDefaults,
    state: Mutex<State>,
    updates: watch::Sender<Arc<MetadataSnapshot>>,
}

impl<S> std::fmt::Debug for Controller<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("id", &self.id).finish()
    }
}

fn topic_key(name: &str) -> String {
    format!("{TOPIC_PREFIX}{name}")
}

impl<S: MetadataStore> Controller<S> {
    /// Loads the cluster metadata from `store` and takes over as controller, bumping the
    /// controller epoch so that brokers can ignore any older controller.
    pub async fn start(
        id: i32,
        store: S,
        defaults: ControllerDefaults,
    ) -> Result<Self, ControllerError> {
        let records = store.load_all().await?;
        let mut snapshot = MetadataSnapshot {
            controller_id: id,
            ..Default::default()
        };
        let mut topic_versions = BTreeMap::new();
        for (key, record) in &records {
            if let Some(name) = key.strip_prefix(TOPIC_PREFIX) {
                let topic: TopicRecord =
                    serde_json::from_value(record.value.clone()).map_err(|e| {
                        StoreError::Corrupt {
                            path: key.into(),
                            reason: format!("topic record does not parse: {e}"),
                        }
                    })?;
                topic_versions.insert(name.to_string(), record.version);
                snapshot.topics.insert(name.to_string(), topic);
            }
        }
        let previous = records.get(CONTROLLER_KEY);
        let epoch = previous
            .and_then(|r| r.value.get("epoch"))
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32
            + 1;
        let expected = previous.map_or(Expected::Absent, |r| Expected::Version(r.version));
        store
            .put(
                CONTROLLER_KEY,
                serde_json::json!({ "epoch": epoch, "id": id }),
                expected,
            )
            .await?;
        snapshot.controller_epoch = epoch;
        snapshot.version = 1;
        tracing::info!(
            controller = id,
            epoch,
            topics = snapshot.topics.len(),
            "controller started"
        );
        let (updates, _) = watch::channel(Arc::new(snapshot.clone()));
        Ok(Self {
            id,
            store,
            defaults,
            state: Mutex::new(State {
                snapshot,
                topic_versions,
            }),
            updates,
        })
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// Receives every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataSnapshot>> {
        self.updates.subscribe()
    }

    pub fn snapshot(&self) -> Arc<MetadataSnapshot> {
        self.updates.borrow().clone()
    }

    fn publish(&self, state: &mut State) -> u64 {
        state.snapshot.version += 1;
        self.updates.send_replace(Arc::new(state.snapshot.clone()));
        state.snapshot.version
    }

    /// Adds or updates a live broker.
    pub async fn register_broker(&self, broker: BrokerInfo) -> u64 {
        let mut state = self.state.lock().await;
        if state.snapshot.brokers.get(&broker.id) == Some(&broker) {
            return state.snapshot.version;
        }
        tracing::info!(broker = broker.id, address = %broker.address(), "broker registered");
        state.snapshot.brokers.insert(broker.id, broker);
        self.publish(&mut state)
    }

    /// Creates a topic, placing its replicas on the registered brokers. With `validate_only`
    /// nothing is stored, but the answer is the same. Returns the topic and the metadata
    /// version that holds it.
    pub async fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopic)?;
        if topic.name.starts_with("__") {
            return Err(ControllerError::InvalidTopic(format!(
                "'{}' starts with '__', which is reserved for internal topics",
                topic.name
            )));
        }
        if topic.partitions == 0 || topic.partitions > MAX_PARTITIONS {
            return Err(ControllerError::InvalidPartitions(format!(
                "{} requested; a topic has from 1 to {MAX_PARTITIONS} partitions",
                topic.partitions
            )));
        }
        TopicConfig::resolve(&self.defaults.topic_config, &topic.config)?;
        let mut state = self.state.lock().await;
        if state.snapshot.topics.contains_key(&topic.name) {
            return Err(ControllerError::TopicExists(topic.name));
        }
        let brokers: Vec<i32> = state.snapshot.brokers.keys().copied().collect();
        let replication_factor = topic
            .replication_factor
            .unwrap_or(self.defaults.replication_factor);
        if replication_factor == 0 || replication_factor as usize > brokers.len() {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "{replication_factor} requested, but {} broker{} available; use a replication factor from 1 to {}",
                brokers.len(),
                if brokers.len() == 1 { " is" } else { "s are" },
                brokers.len().max(1)
            )));
        }
        let partitions = assign_replicas(&brokers, topic.partitions, replication_factor as usize)
            .into_iter()
            .map(|replicas| PartitionRecord {
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect();
        let record = TopicRecord {
            name: topic.name.clone(),
            id: Uuid::new_v4(),
            config: topic.config,
            partitions,
        };
        if validate_only {
            return Ok((record, state.snapshot.version));
        }
        let value = serde_json::to_value(&record).map_err(|e| StoreError::Corrupt {
            path: topic_key(&record.name).into(),
            reason: e.to_string(),
        })?;
        let version = self
            .store
            .put(&topic_key(&record.name), value, Expected::Absent)
            .await?;
        state.topic_versions.insert(record.name.clone(), version);
        state
            .snapshot
            .topics
            .insert(record.name.clone(), record.clone());
        let published = self.publish(&mut state);
        tracing::info!(topic = %record.name, partitions = record.partitions.len(), replication_factor, "topic created");
        Ok((record, published))
    }

    /// Deletes a topic; brokers delete its partitions when they apply the change. Returns the
    /// metadata version without it.
    pub async fn delete_topic(&self, name: &str) -> Result<u64, ControllerError> {
        let mut state = self.state.lock().await;
        let Some(&version) = state.topic_versions.get(name) else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        self.store.delete(&topic_key(name), version).await?;
        state.topic_versions.remove(name);
        state.snapshot.topics.remove(name);
        tracing::info!(topic = name, "topic deleted");
        Ok(self.publish(&mut state))
    }
}

/// Round-robin placement: partition p's replicas are consecutive brokers starting at broker
/// p, so replicas and preferred leaders are spread evenly (counts within one of each other).
fn assign_replicas(brokers: &[i32], partitions: u32, replication_factor: usize) -> Vec<Vec<i32>> {
    (0..partitions as usize)
        .map(|p| {
            (0..replication_factor)
                .map(|r| brokers[(p + r) % brokers.len()])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: 9095 + id as u16,
            rack: None,
        }
    }

    async fn controller(dir: &std::path::Path) -> Controller<FileStore> {
        let store = FileStore::open(&dir.join("metadata.json")).unwrap();
        Controller::start(0, store, ControllerDefaults::default())
            .await
            .unwrap()
    }

    fn topic(name: &str, partitions: u32, rf: Option<u32>) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn topics_are_stored_published_and_survive_a_controller_restart() {
        let dir = tempfile::tempdir().unwrap();
        let created = {
            let controller = controller(dir.path()).await;
            controller.register_broker(broker(0)).await;
            let mut updates = controller.subscribe();
            updates.borrow_and_update();
            let (record, version) = controller
                .create_topic(topic("orders", 3, None), false)
                .await
                .unwrap();
            assert!(updates.has_changed().unwrap());
            assert_eq!(updates.borrow().version, version);
            assert_eq!(updates.borrow().topics["orders"], record);
            assert!(
                record
                    .partitions
                    .iter()
                    .all(|p| p.leader == 0 && p.isr == vec![0])
            );
            record
        };
        let controller = controller(dir.path()).await;
        let snapshot = controller.snapshot();
        assert_eq!(snapshot.topics["orders"], created);
        assert_eq!(
            snapshot.controller_epoch, 2,
            "each controller start takes a new epoch"
        );
    }

    #[tokio::test]
    async fn bad_topics_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let controller = controller(dir.path()).await;
        controller.register_broker(broker(0)).await;
        controller
            .create_topic(topic("t", 1, None), false)
            .await
            .unwrap();
        let cases = [
            (topic("t", 1, None), "already exists"),
            (topic("bad/name", 1, None), "'/'"),
            (topic("__internal", 1, None), "reserved"),
            (topic("z", 0, None), "from 1 to"),
            (
                topic("z", 1, Some(3)),
                "3 requested, but 1 broker is available",
            ),
            (
                NewTopic {
                    config: BTreeMap::from([("retention.ms".into(), "x".into())]),
                    ..topic("z", 1, None)
                },
                "invalid value 'x' for retention.ms",
            ),
        ];
        for (bad, expected) in cases {
            let err = controller.create_topic(bad, false).await.unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{err} should contain {expected}"
            );
        }
        let err = controller.delete_topic("nope").await.unwrap_err();
        assert!(err.to_string().contains("unknown topic 'nope'"), "{err}");
    }

    #[tokio::test]
    async fn validate_only_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let controller = controller(dir.path()).await;
        controller.register_broker(broker(0)).await;
        controller
            .create_topic(topic("t", 2, None), true)
            .await
            .unwrap();
        assert!(controller.snapshot().topics.is_empty());
    }

    #[tokio::test]
    async fn deleted_topics_are_gone_and_can_be_created_again_with_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let controller = controller(dir.path()).await;
        controller.register_broker(broker(0)).await;
        let (first, _) = controller
            .create_topic(topic("t", 1, None), false)
            .await
            .unwrap();
        controller.delete_topic("t").await.unwrap();
        assert!(!controller.snapshot().topics.contains_key("t"));
        let (second, _) = controller
            .create_topic(topic("t", 1, None), false)
            .await
            .unwrap();
        assert_ne!(first.id, second.id);
    }

    #[test]
    fn round_robin_placement_balances_replicas_and_leaders() {
        let brokers = [1, 2, 3];
        let assignment = assign_replicas(&brokers, 7, 2);
        let count = |f: &dyn Fn(&Vec<i32>, i32) -> bool| -> Vec<usize> {
            brokers
                .iter()
                .map(|&b| assignment.iter().filter(|r| f(r, b)).count())
                .collect()
        };
        let replicas = count(&|r, b| r.contains(&b));
        let leaders = count(&|r, b| r[0] == b);
        for counts in [replicas, leaders] {
            assert!(
                counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
                "{counts:?}"
            );
        }
        assert!(assignment.iter().all(|r| r[0] != r[1]));
    }
}
