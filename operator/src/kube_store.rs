//! The controller's [`MetadataStore`] on Kubernetes. A topic that has a `Topic` object is
//! kept in that object's status (topic id, configuration in effect, and every partition's
//! replicas, leader, ISR and epochs in a compressed `assignment`, with counts and the
//! unhealthy partitions beside it for people). Everything else (the controller epoch, broker incarnations, the
//! producer-id block, and topics made outside Kubernetes such as `__consumer_offsets`) is
//! kept in one ConfigMap per cluster, owned by the Cluster, topics' partitions in the same
//! compact form. Both stay within Kubernetes' object size limits at 100,000 partitions.
//!
//! Every write carries the resourceVersion the store last saw as a precondition. When the
//! API server refuses it because the object changed, the store reads it again: if the
//! controller's part is still what it wrote last (someone else changed the spec or the
//! conditions), it writes again; if not, another controller wrote it and the write fails
//! with a conflict. Versions handed to the controller are this store's own numbers, so
//! nothing depends on resourceVersions being numeric.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::sync::Mutex;
use tributary_broker::controller::{Expected, MetadataStore, StoreError, Versioned};
use tributary_broker::metadata::{PartitionRecord, TopicRecord};

use crate::api::is_status;
use crate::crd::{Cluster, PartitionStatus, Topic, TopicStatus};
use crate::resources::{Names, owned_meta};

pub mod assignment;

const TOPIC_PREFIX: &str = "topics/";
/// The controller's own record (its epoch), as the controller core names it.
const CONTROLLER_KEY: &str = "controller";

/// The controller epoch in a `controller` record.
fn epoch_of(value: &Value) -> i64 {
    value.get("epoch").and_then(Value::as_i64).unwrap_or(0)
}

/// Where one key lives.
#[derive(Debug, Clone)]
enum Place {
    /// In this Topic's status; the object as last read or written.
    Topic(Box<Topic>),
    /// In the cluster's metadata ConfigMap.
    ConfigMap,
}

#[derive(Debug, Clone)]
struct Entry {
    version: u64,
    value: Value,
    place: Place,
}

#[derive(Default)]
struct Cache {
    /// The last version number handed out.
    last_version: u64,
    entries: BTreeMap<String, Entry>,
    /// The metadata ConfigMap as last read or written; None when it does not exist.
    config_map: Option<ConfigMap>,
    /// The epoch of the controller this store serves, once it has written it. Every record
    /// it writes carries it, and a record (or metadata) of a newer epoch fences it.
    epoch: i64,
}

impl Cache {
    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }
}

pub struct KubeStore {
    /// `namespace/cluster`, for messages.
    label: String,
    cluster: String,
    /// The metadata ConfigMap, as created when it does not exist yet.
    config_map_template: ConfigMap,
    topics: Api<Topic>,
    config_maps: Api<ConfigMap>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("cluster", &self.label)
            .finish()
    }
}

/// What holds (or would hold) a topic's record.
enum TopicObject {
    /// This cluster's Topic object of that name, with no record yet.
    Unclaimed(Box<Topic>),
    /// This cluster's Topic object of that name, which holds a record already.
    Claimed,
    /// No Topic object of this cluster has that name: the ConfigMap holds the record.
    None,
}

/// Why a write did not happen.
enum Refused {
    /// The object changed since it was read (a 409): read it again, and retry if the
    /// controller's part is unchanged.
    Stale,
    /// The controller's part changed underneath: another controller wrote it.
    Changed,
    /// The object is gone (deleted, or deleted and made again).
    Gone,
    Failed(StoreError),
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        Self::Failed(error)
    }
}

/// The store error for a write of `key` that did not happen.
fn refusal(refused: Refused, key: &str, expected: Expected, found: Option<&Entry>) -> StoreError {
    match refused {
        Refused::Failed(error) => error,
        Refused::Stale | Refused::Changed | Refused::Gone => {
            KubeStore::conflict(key, expected, found)
        }
    }
}

/// A ConfigMap data key for a store key: `/` is not allowed there, `.` is.
fn data_key_of(key: &str) -> String {
    key.replacen('/', ".", 1)
}

/// The store key of a ConfigMap data key. Store keys have at most one `/`, after a prefix
/// without dots (`topics/`, `brokers/`), and topic names may contain dots.
fn store_key(data_key: &str) -> String {
    match data_key.split_once('.') {
        Some((prefix, rest)) => format!("{prefix}/{rest}"),
        None => data_key.to_string(),
    }
}

/// How a record is written in the metadata ConfigMap: JSON, with a topic's partitions in
/// their compact form (see [`assignment`]) so that thousands of them fit in its 1 MiB.
fn to_data(key: &str, value: &Value) -> String {
    if key.starts_with(TOPIC_PREFIX)
        && let Some(Value::Array(partitions)) = value.get("partitions")
        && let Ok(partitions) =
            serde_json::from_value::<Vec<PartitionRecord>>(Value::Array(partitions.clone()))
    {
        let mut compact = value.clone();
        if let Some(object) = compact.as_object_mut() {
            object.remove("partitions");
            object.insert(
                "assignment".into(),
                Value::String(assignment::encode(&partitions)),
            );
        }
        return compact.to_string();
    }
    value.to_string()
}

/// A record as [`to_data`] wrote it (or, for a topic, as operators before the compact
/// form wrote it: its partitions listed in JSON).
fn from_data(key: &str, text: &str) -> Result<Value, String> {
    let mut value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if key.starts_with(TOPIC_PREFIX)
        && let Some(object) = value.as_object_mut()
        && let Some(encoded) = object.remove("assignment")
    {
        let encoded = encoded
            .as_str()
            .ok_or("the assignment is not a string")?
            .to_string();
        let partitions = assignment::decode(&encoded)?;
        object.insert(
            "partitions".into(),
            serde_json::to_value(partitions).map_err(|e| e.to_string())?,
        );
    }
    Ok(value)
}

/// The controller's record of a topic as it sits in a Topic's status, if it holds one:
/// the partitions in `assignment`, or (written by operators before it) in `partitions`.
fn record_in(topic: &Topic) -> Option<Result<Value, String>> {
    let status = topic.status.as_ref()?;
    let id = status.topic_id.as_ref()?;
    let record = (|| {
        let partitions = match &status.assignment {
            Some(assignment) => {
                assignment::decode(assignment).map_err(|e| format!("status.assignment: {e}"))?
            }
            None => legacy_partitions(&status.partitions)?,
        };
        let record = TopicRecord {
            name: topic.topic_name(),
            id: id
                .parse()
                .map_err(|e| format!("status.topicId '{id}': {e}"))?,
            config: status.config.clone(),
            partitions,
        };
        // Every topic has a partition: none means the API server dropped them, as one with
        // an older Topic CRD (no status.assignment in its schema) does.
        if record.partitions.is_empty() {
            return Err(format!(
                "status.topicId is {id} but no partitions are recorded (status.assignment is missing); if the Topic CRD is older than the operator, apply crds/ from the operator's release"
            ));
        }
        serde_json::to_value(record).map_err(|e| e.to_string())
    })();
    Some(record)
}

/// Partitions listed one by one in `status.partitions`, as operators before
/// `status.assignment` wrote them.
fn legacy_partitions(listed: &[PartitionStatus]) -> Result<Vec<PartitionRecord>, String> {
    listed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.id as usize != i {
                return Err(format!(
                    "status.partitions[{i}] has id {}; partitions are listed in order",
                    p.id
                ));
            }
            Ok(PartitionRecord {
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
            })
        })
        .collect()
}

/// The most a Topic is written with: etcd refuses requests above 1.5 MiB, and the API
/// server's own envelope needs some of that.
const MAX_TOPIC_BYTES: usize = 1_400_000;
/// What a ConfigMap's data may hold at most.
const MAX_CONFIG_MAP_BYTES: usize = 1024 * 1024;

/// The error for an object that would grow past what Kubernetes stores.
fn too_large(object: &str, bytes: usize, limit: usize) -> StoreError {
    StoreError::TooLarge {
        object: object.to_string(),
        bytes,
        limit,
        advice: "Kubernetes stores no larger object; use fewer partitions, or give large topics made outside Kubernetes a Topic object of their own".into(),
    }
}

/// How many partitions [`TopicStatus::unhealthy_partitions`] lists at most.
const UNHEALTHY_LISTED: usize = 20;

/// Puts the controller's record (or, with None, its absence) into a Topic's status, with
/// the partition counts and the first unhealthy partitions people read, leaving the
/// conditions and observed generation as they are.
fn write_record(topic: &mut Topic, record: Option<&TopicRecord>, epoch: i64) {
    let status = topic.status.get_or_insert_with(TopicStatus::default);
    status.controller_epoch = Some(epoch);
    status.topic_id = record.map(|r| r.id.to_string());
    status.config = record.map(|r| r.config.clone()).unwrap_or_default();
    status.partitions = Vec::new();
    let partitions = record.map_or(&[][..], |r| &r.partitions);
    status.assignment = record.map(|r| assignment::encode(&r.partitions));
    status.partition_count = record.map(|r| r.partitions.len() as i32);
    status.leaderless_partitions = partitions.iter().filter(|p| p.leader < 0).count() as i32;
    status.under_replicated_partitions = partitions
        .iter()
        .filter(|p| p.isr.len() < p.replicas.len())
        .count() as i32;
    status.unhealthy_partitions = partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.leader < 0 || p.isr.len() < p.replicas.len())
        .take(UNHEALTHY_LISTED)
        .map(|(i, p)| PartitionStatus {
            id: i as i32,
            replicas: p.replicas.clone(),
            leader: p.leader,
            isr: p.isr.clone(),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
        })
        .collect();
}

impl KubeStore {
    /// The store of `cluster`'s controller. `cluster` must have been read from the API
    /// server (its uid owns the metadata ConfigMap).
    pub fn new(client: Client, cluster: &Cluster) -> Result<Self, StoreError> {
        let name = cluster.name_any();
        let Some(namespace) = cluster.namespace() else {
            return Err(StoreError::Unavailable {
                store: name,
                reason: "the Cluster has no namespace".into(),
            });
        };
        Ok(Self {
            label: format!("{namespace}/{name}"),
            config_map_template: ConfigMap {
                metadata: owned_meta(cluster, &Names::of(cluster).metadata),
                ..ConfigMap::default()
            },
            cluster: name,
            topics: Api::namespaced(client.clone(), &namespace),
            config_maps: Api::namespaced(client, &namespace),
            cache: Mutex::new(Cache::default()),
        })
    }

    fn unavailable(&self, what: &str, error: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            store: format!("of cluster {}", self.label),
            reason: format!("{what}: {error}"),
        }
    }

    fn corrupt(&self, object: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: format!("{object} (cluster {})", self.label).into(),
            reason: reason.to_string(),
        }
    }

    fn conflict(key: &str, expected: Expected, found: Option<&Entry>) -> StoreError {
        StoreError::Conflict {
            key: key.to_string(),
            expected,
            found: found.map(|e| e.version),
        }
    }

    fn config_map_name(&self) -> String {
        self.config_map_template.name_any()
    }

    async fn read_config_map(&self) -> Result<Option<ConfigMap>, StoreError> {
        self.config_maps
            .get_opt(&self.config_map_name())
            .await
            .map_err(|e| self.unavailable("reading the metadata ConfigMap", e))
    }

    /// Writes `config_map` (created when `exists` is false) with its resourceVersion as the
    /// precondition.
    async fn write_config_map(
        &self,
        config_map: &ConfigMap,
        exists: bool,
    ) -> Result<ConfigMap, Refused> {
        let name = self.config_map_name();
        let written = if exists {
            self.config_maps
                .replace(&name, &PostParams::default(), config_map)
                .await
        } else {
            self.config_maps
                .create(&PostParams::default(), config_map)
                .await
        };
        written.map_err(|e| {
            if is_status(&e, 409) {
                Refused::Stale
            } else if is_status(&e, 404) {
                Refused::Gone
            } else {
                Refused::Failed(self.unavailable("writing the metadata ConfigMap", e))
            }
        })
    }

    /// Sets (or with None removes) `key` in the metadata ConfigMap, provided every entry
    /// the cache holds for it is still there as cached.
    async fn change_config_map(
        &self,
        cache: &mut Cache,
        key: &str,
        value: Option<&Value>,
    ) -> Result<(), Refused> {
        let data_key = data_key_of(key);
        let cached = cache.entries.get(key).map(|e| e.value.clone());
        let mut current = cache.config_map.clone();
        loop {
            let exists = current.is_some();
            let mut config_map = current.unwrap_or_else(|| self.config_map_template.clone());
            let data = config_map.data.get_or_insert_with(BTreeMap::new);
            match value {
                Some(value) => {
                    data.insert(data_key.clone(), to_data(key, value));
                }
                None => {
                    data.remove(&data_key);
                }
            }
            let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
            if bytes > MAX_CONFIG_MAP_BYTES {
                return Err(Refused::Failed(too_large(
                    &format!(
                        "ConfigMap {} (cluster {})",
                        self.config_map_name(),
                        self.label
                    ),
                    bytes,
                    MAX_CONFIG_MAP_BYTES,
                )));
            }
            match self.write_config_map(&config_map, exists).await {
                Ok(written) => {
                    cache.config_map = Some(written);
                    return Ok(());
                }
                Err(Refused::Stale) => {
                    current = self.read_config_map().await?;
                    let Some(config_map) = &current else {
                        // It existed when this write began: someone deleted it.
                        return Err(Refused::Gone);
                    };
                    let entry = |k: &str| {
                        config_map
                            .data
                            .as_ref()
                            .and_then(|d| d.get(&data_key_of(k)))
                            .map(|v| from_data(k, v).ok())
                    };
                    let newer = entry(CONTROLLER_KEY)
                        .flatten()
                        .is_some_and(|c| epoch_of(&c) > cache.epoch);
                    if (newer && key != CONTROLLER_KEY) || entry(key) != cached.clone().map(Some) {
                        tracing::warn!(cluster = %self.label, key, "metadata changed underneath this controller");
                        return Err(Refused::Changed);
                    }
                }
                Err(Refused::Gone) if exists => return Err(Refused::Gone),
                Err(refused) => return Err(refused),
            }
        }
    }

    /// Writes the controller's record of a topic (None: its absence) into `topic`'s status,
    /// provided the record there is still `cached`.
    async fn change_topic(
        &self,
        mut topic: Topic,
        cached: Option<&Value>,
        record: Option<&TopicRecord>,
        epoch: i64,
    ) -> Result<Topic, Refused> {
        let name = topic.name_any();
        loop {
            write_record(&mut topic, record, epoch);
            let bytes = serde_json::to_vec(&topic).map_or(0, |b| b.len());
            if bytes > MAX_TOPIC_BYTES {
                return Err(Refused::Failed(too_large(
                    &format!("Topic {name} (cluster {})", self.label),
                    bytes,
                    MAX_TOPIC_BYTES,
                )));
            }
            match self
                .topics
                .replace_status(&name, &PostParams::default(), &topic)
                .await
            {
                // An API server with an older Topic CRD drops fields its schema lacks
                // without an error: the record would be gone. Refuse instead.
                Ok(written)
                    if written.status.as_ref().and_then(|s| s.assignment.as_ref())
                        != topic.status.as_ref().and_then(|s| s.assignment.as_ref()) =>
                {
                    return Err(self
                        .unavailable(
                            &format!("writing Topic {name}"),
                            "the API server did not keep status.assignment: the Topic CRD is older than this operator; apply crds/ from the operator's release (helm upgrade does not update CRDs)",
                        )
                        .into());
                }
                Ok(written) => return Ok(written),
                Err(e) if is_status(&e, 409) => {}
                // Deleted: whoever deleted it took the record with it.
                Err(e) if is_status(&e, 404) => return Err(Refused::Gone),
                Err(e) => {
                    return Err(self.unavailable(&format!("writing Topic {name}"), e).into());
                }
            }
            let current = self
                .topics
                .get_opt(&name)
                .await
                .map_err(|e| self.unavailable(&format!("reading Topic {name}"), e))?;
            let Some(current) = current.filter(|c| c.uid() == topic.uid()) else {
                return Err(Refused::Gone);
            };
            let found = record_in(&current).and_then(Result::ok);
            let newer = current
                .status
                .as_ref()
                .and_then(|s| s.controller_epoch)
                .is_some_and(|e| e > epoch);
            if newer || found.as_ref() != cached {
                tracing::warn!(cluster = %self.label, topic = %name, "the topic's record changed underneath this controller");
                return Err(Refused::Changed);
            }
            topic = current;
        }
    }

    /// Where a new topic named `name` goes: into the status of this cluster's Topic object
    /// of that topic name (its `spec.topicName`, or its own name), if there is one; of
    /// several, the oldest.
    async fn topic_object(&self, name: &str) -> Result<TopicObject, StoreError> {
        let topics = self
            .topics
            .list(&ListParams::default())
            .await
            .map_err(|e| self.unavailable("listing Topics", e))?;
        let mut named: Vec<Topic> = topics
            .items
            .into_iter()
            // A Topic being deleted takes its record with it when it goes: never one for a
            // new topic.
            .filter(|t| {
                t.spec.cluster == self.cluster
                    && t.topic_name() == name
                    && t.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if named.iter().any(|t| record_in(t).is_some()) {
            return Ok(TopicObject::Claimed);
        }
        named.sort_by_key(|t| (t.metadata.creation_timestamp.clone(), t.name_any()));
        Ok(match named.into_iter().next() {
            Some(t) => TopicObject::Unclaimed(Box::new(t)),
            None => TopicObject::None,
        })
    }

    /// Stamps every topic record this store holds with the controller's new epoch, so that
    /// a controller of an older epoch can write none of them any more.
    async fn fence_topics(&self, cache: &mut Cache) -> Result<(), StoreError> {
        let held: Vec<(String, Entry)> = cache
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.place, Place::Topic(_)))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (key, entry) in held {
            let Place::Topic(topic) = entry.place else {
                continue;
            };
            let record: TopicRecord = serde_json::from_value(entry.value.clone())
                .map_err(|e| self.corrupt(&key, format!("not a topic record: {e}")))?;
            let written = self
                .change_topic(*topic, Some(&entry.value), Some(&record), cache.epoch)
                .await
                .map_err(|r| refusal(r, &key, Expected::Version(entry.version), None))?;
            if let Some(e) = cache.entries.get_mut(&key) {
                e.place = Place::Topic(Box::new(written));
            }
        }
        Ok(())
    }
}

impl MetadataStore for KubeStore {
    async fn load_all(&self) -> Result<BTreeMap<String, Versioned<Value>>, StoreError> {
        let mut cache = self.cache.lock().await;
        let topics = self
            .topics
            .list(&ListParams::default())
            .await
            .map_err(|e| self.unavailable("listing Topics", e))?;
        let config_map = self.read_config_map().await?;
        let mut entries = BTreeMap::new();
        for topic in topics {
            if topic.spec.cluster != self.cluster {
                continue;
            }
            let Some(record) = record_in(&topic) else {
                continue;
            };
            let object = format!("Topic {}", topic.name_any());
            let value = record.map_err(|e| self.corrupt(&object, e))?;
            let key = format!("{TOPIC_PREFIX}{}", topic.topic_name());
            if entries.contains_key(&key) {
                return Err(self.corrupt(
                    &object,
                    format!("another Topic object holds the record of topic {}; remove the status of one", topic.topic_name()),
                ));
            }
            let version = cache.next_version();
            entries.insert(
                key,
                Entry {
                    version,
                    value,
                    place: Place::Topic(Box::new(topic)),
                },
            );
        }
        let data = config_map.as_ref().and_then(|c| c.data.clone());
        for (data_key, text) in data.unwrap_or_default() {
            let key = store_key(&data_key);
            let object = format!("ConfigMap {}", self.config_map_name());
            let value = from_data(&key, &text)
                .map_err(|e| self.corrupt(&object, format!("entry {data_key}: {e}")))?;
            if entries.contains_key(&key) {
                return Err(self.corrupt(
                    &object,
                    format!("{key} is also recorded in a Topic's status; remove entry {data_key} from the ConfigMap"),
                ));
            }
            let version = cache.next_version();
            entries.insert(
                key,
                Entry {
                    version,
                    value,
                    place: Place::ConfigMap,
                },
            );
        }
        // Without its ConfigMap (deleted by hand), the controller epoch still continues
        // from the newest the Topics show: brokers ignore a controller of an older epoch.
        let newest = entries
            .values()
            .filter_map(|e| match &e.place {
                Place::Topic(t) => t.status.as_ref()?.controller_epoch,
                Place::ConfigMap => None,
            })
            .max();
        if let Some(epoch) = newest
            && !entries.contains_key(CONTROLLER_KEY)
        {
            tracing::warn!(cluster = %self.label, epoch, "the controller's metadata ConfigMap is missing; continuing from the Topics' controller epoch (broker incarnations and producer ids start afresh)");
            let version = cache.next_version();
            entries.insert(
                CONTROLLER_KEY.to_string(),
                Entry {
                    version,
                    value: serde_json::json!({ "epoch": epoch }),
                    place: Place::ConfigMap,
                },
            );
        }
        let loaded = entries
            .iter()
            .map(|(key, e)| {
                let value = Versioned {
                    version: e.version,
                    value: e.value.clone(),
                };
                (key.clone(), value)
            })
            .collect();
        cache.entries = entries;
        cache.config_map = config_map;
        Ok(loaded)
    }

    async fn put(&self, key: &str, value: Value, expected: Expected) -> Result<u64, StoreError> {
        let mut cache = self.cache.lock().await;
        let current = cache.entries.get(key).cloned();
        let place = match (expected, &current) {
            (Expected::Absent, None) => match key.strip_prefix(TOPIC_PREFIX) {
                Some(name) => match self.topic_object(name).await? {
                    TopicObject::Unclaimed(topic) => Place::Topic(topic),
                    // Another controller stored it there.
                    TopicObject::Claimed => return Err(Self::conflict(key, expected, None)),
                    TopicObject::None => Place::ConfigMap,
                },
                None => Place::ConfigMap,
            },
            (Expected::Version(v), Some(entry)) if entry.version == v => entry.place.clone(),
            _ => return Err(Self::conflict(key, expected, current.as_ref())),
        };
        let cached = current.as_ref().map(|e| &e.value);
        let written = match place {
            Place::Topic(topic) => {
                let record: TopicRecord = serde_json::from_value(value.clone())
                    .map_err(|e| self.corrupt(key, format!("not a topic record: {e}")))?;
                self.change_topic(*topic, cached, Some(&record), cache.epoch)
                    .await
                    .map(|written| Place::Topic(Box::new(written)))
            }
            Place::ConfigMap => self
                .change_config_map(&mut cache, key, Some(&value))
                .await
                .map(|()| Place::ConfigMap),
        };
        let place = written.map_err(|refused| refusal(refused, key, expected, current.as_ref()))?;
        if key == CONTROLLER_KEY {
            // A new controller: from now on its epoch fences the one before.
            cache.epoch = epoch_of(&value);
            self.fence_topics(&mut cache).await?;
        }
        let version = cache.next_version();
        cache.entries.insert(
            key.to_string(),
            Entry {
                version,
                value,
                place,
            },
        );
        Ok(version)
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<(), StoreError> {
        let mut cache = self.cache.lock().await;
        let Some(entry) = cache
            .entries
            .get(key)
            .filter(|e| e.version == expected)
            .cloned()
        else {
            let found = cache.entries.get(key);
            return Err(Self::conflict(key, Expected::Version(expected), found));
        };
        let written = match entry.place.clone() {
            // The Topic object stays: it is the user's. Without a record it describes a
            // topic still to be created (or, being deleted, one that is gone).
            Place::Topic(topic) => match self
                .change_topic(*topic, Some(&entry.value), None, cache.epoch)
                .await
            {
                // The Topic object went, and the record with it.
                Err(Refused::Gone) => Ok(()),
                other => other.map(drop),
            },
            Place::ConfigMap => self.change_config_map(&mut cache, key, None).await,
        };
        written
            .map_err(|refused| refusal(refused, key, Expected::Version(expected), Some(&entry)))?;
        cache.entries.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
