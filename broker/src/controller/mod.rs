//! The cluster controller: the single writer of cluster metadata. It keeps topics, their
//! partition assignments, leaders and in-sync replicas in a [`MetadataStore`]; holds a
//! session with every broker and fences those that go quiet; elects leaders from the ISR;
//! commits ISR changes that leaders propose; and publishes every change as a new
//! [`MetadataSnapshot`] that brokers apply. A change is persisted before it is published.
//!
//! The same controller runs inside a standalone broker, as the `tributary-controller`
//! process of `tributary local up`, and (hosted by the operator) in Kubernetes; only the store
//! differs.
//!
//! This file holds the controller's state, start-up, lock and publishing; each concern adds
//! its own `impl Controller` in a file of its own: `sessions`, `isr`, `topics`,
//! `producer_ids` and `rebalance` (plans, cordons, scaling and the periodic tick).

mod balancer;
mod election;
mod isr;
mod placement;
mod producer_ids;
mod reassignment;
mod rebalance;
pub mod scaling;
mod sessions;
mod store;
mod topics;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::TopicPartition;
use crate::config::{ConfigError, TopicConfig};
use crate::metadata::{MetadataSnapshot, PartitionRecord, Plan, TopicRecord};
pub use isr::{IsrOutcome, IsrProposal, IsrRejection};
pub use scaling::{Balance, ScaleDecision, ScalePhase};
pub use sessions::Registration;
pub use store::{Expected, FileStore, MetadataStore, StoreError, Versioned};

const TOPIC_PREFIX: &str = "topics/";
const BROKER_PREFIX: &str = "brokers/";
const CONTROLLER_KEY: &str = "controller";
const PRODUCER_IDS_KEY: &str = "producer_ids";
const REASSIGNMENT_KEY: &str = "reassignment";
const CORDONED_KEY: &str = "cordoned";
const BROKER_COUNT_KEY: &str = "broker_count";
/// How a user asks for a broker count, for the advice when a shrink is refused.
const SCALE_ADVICE: &str = "scale to";
/// Producer ids handed to a broker at a time.
pub const PRODUCER_ID_BLOCK: u32 = 1000;
/// No topic may have more partitions than this.
pub const MAX_PARTITIONS: u32 = 100_000;
/// How often the host of a controller calls [`Controller::expire_sessions`].
pub const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(250);

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
    #[error("broker {0} has no session with this controller; it must register again")]
    NoSession(i32),
    #[error(
        "this controller has stopped (another took over, or its metadata changed underneath it); retry, and the request reaches the current one"
    )]
    Closed,
    #[error(
        "a rebalance is in progress ({done} of {total} moves done); wait for it to finish (`tributary cluster status` shows it)"
    )]
    RebalanceInProgress { done: usize, total: usize },
    #[error("{0}")]
    ScaleRefused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub default_replication_factor: u32,
    /// Broker defaults that topic overrides apply on top of (to check them).
    pub topic_config: TopicConfig,
    /// A broker that has not heartbeated for this long is fenced.
    pub session_timeout: Duration,
    /// Partitions of `__consumer_offsets`, created when a consumer group is first used.
    pub offsets_topic_partitions: u32,
    /// Partition moves of a rebalance in flight at once.
    pub max_concurrent_moves: usize,
    /// A broker out of session for this long has its replicas re-created on the others;
    /// None leaves them where they are until it returns.
    pub self_healing_after: Option<Duration>,
    /// How often leadership goes back to preferred leaders that are in sync (Kafka's
    /// leader imbalance check); None never.
    pub preferred_leader_interval: Option<Duration>,
    /// Where the broker count is set when something other than [`Controller::scale`] sets
    /// it (a Cluster's `spec.replicas`): `scale` is refused with this advice.
    pub broker_count_set_by: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            default_replication_factor: 1,
            topic_config: TopicConfig::default(),
            session_timeout: Duration::from_secs(6),
            offsets_topic_partitions: 16,
            max_concurrent_moves: 2,
            self_healing_after: None,
            preferred_leader_interval: Some(Duration::from_secs(300)),
            broker_count_set_by: None,
        }
    }
}

struct Session {
    id: u64,
    last_seen: Instant,
    shutting_down: bool,
}

struct State {
    snapshot: MetadataSnapshot,
    /// Store version of each topic record, for compare-and-set.
    topic_versions: BTreeMap<String, u64>,
    sessions: BTreeMap<i32, Session>,
    /// Last known incarnation of every broker, persisted, with its store version.
    incarnations: BTreeMap<i32, (String, u64)>,
    /// Next unallocated producer id and the store version of that record.
    next_producer_id: (i64, Option<u64>),
    next_session: u64,
    /// When sessions were last checked, to notice the controller itself was stalled.
    last_expiry_check: Option<Instant>,
    /// The rebalance in progress (empty when none) and its store version.
    plan: (Plan, Option<u64>),
    /// Brokers that take no new replicas (being drained), and the store version.
    cordoned: (BTreeSet<i32>, Option<u64>),
    /// The broker count asked for with [`Controller::scale`] (None: never asked), and the
    /// store version.
    broker_count: (Option<i32>, Option<u64>),
    /// The bytes of each replica, as its broker last reported.
    replica_sizes: BTreeMap<i32, HashMap<TopicPartition, u64>>,
    /// Since when each broker holding replicas has been out of session.
    gone_since: BTreeMap<i32, Instant>,
    /// Brokers that have registered with this controller since it started.
    registered: BTreeSet<i32>,
    /// Racks the controller's host knows for brokers (see [`Controller::set_racks`]).
    host_racks: BTreeMap<i32, String>,
    /// Brokers that registered with a rack of their own, which the host's does not replace.
    own_racks: BTreeSet<i32>,
    /// When leadership last went back to preferred leaders.
    last_preferred_election: Instant,
}

impl State {
    /// Brokers that may take new replicas: in session, not shutting down, not cordoned.
    fn placeable(&self) -> Vec<placement::Candidate> {
        self.eligible()
            .into_iter()
            .filter(|id| !self.cordoned.0.contains(id))
            .map(|id| placement::Candidate {
                id,
                rack: self.snapshot.brokers.get(&id).and_then(|b| b.rack.clone()),
            })
            .collect()
    }

    /// Every partition's replicas.
    fn assignment(&self) -> balancer::Assignment {
        self.snapshot
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ((t.name.clone(), i as u32), p.replicas.clone()))
            })
            .collect()
    }

    /// Brokers that may lead or join an ISR: in session and not shutting down.
    fn eligible(&self) -> BTreeSet<i32> {
        self.sessions
            .iter()
            .filter(|(_, s)| !s.shutting_down)
            .map(|(id, _)| *id)
            .collect()
    }
}

pub struct Controller<S> {
    id: i32,
    store: S,
    config: parking_lot::RwLock<ControllerConfig>,
    started: Instant,
    state: Mutex<State>,
    updates: watch::Sender<Arc<MetadataSnapshot>>,
    /// Cancelled when the controller stops: it answers nothing any more.
    closed: CancellationToken,
}

impl<S> std::fmt::Debug for Controller<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("id", &self.id).finish()
    }
}

fn topic_key(name: &str) -> String {
    format!("{TOPIC_PREFIX}{name}")
}

fn corrupt(key: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: key.into(),
        reason: reason.to_string(),
    }
}

/// A new cluster id in Kafka's form: a random UUID in URL-safe base64 without padding.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    // 22 characters of 6 bits cover the 128 bits (the last holds the lowest 2, shifted up).
    (0..22)
        .map(|i| {
            let shift = 128i32 - 6 * (i + 1);
            let six = if shift >= 0 {
                (bits >> shift) & 0x3f
            } else {
                (bits << -shift) & 0x3f
            };
            ALPHABET[six as usize] as char
        })
        .collect()
}

impl<S: MetadataStore> Controller<S> {
    /// Loads the cluster metadata from `store` and takes over as controller, bumping the
    /// controller epoch so that brokers can ignore any older controller. Brokers get one
    /// session timeout to reconnect before the partitions they lead are moved.
    pub async fn start(
        id: i32,
        store: S,
        config: ControllerConfig,
    ) -> Result<Self, ControllerError> {
        let records = store.load_all().await?;
        let mut snapshot = MetadataSnapshot {
            controller_id: id,
            ..Default::default()
        };
        let mut topic_versions = BTreeMap::new();
        let mut incarnations = BTreeMap::new();
        for (key, record) in &records {
            if let Some(name) = key.strip_prefix(TOPIC_PREFIX) {
                let topic: TopicRecord = serde_json::from_value(record.value.clone())
                    .map_err(|e| corrupt(key, format!("topic record does not parse: {e}")))?;
                topic_versions.insert(name.to_string(), record.version);
                snapshot.topics.insert(name.to_string(), topic);
            } else if let Some(broker) = key.strip_prefix(BROKER_PREFIX) {
                let broker: i32 = broker.parse().map_err(|e| corrupt(key, e))?;
                let incarnation = record
                    .value
                    .get("incarnation")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                incarnations.insert(broker, (incarnation.to_string(), record.version));
            }
        }
        let next_producer_id = match records.get(PRODUCER_IDS_KEY) {
            Some(r) => (
                r.value.get("next").and_then(Value::as_i64).unwrap_or(0),
                Some(r.version),
            ),
            None => (0, None),
        };
        let plan = match records.get(REASSIGNMENT_KEY) {
            Some(r) => (
                serde_json::from_value(r.value.clone()).map_err(|e| {
                    corrupt(
                        REASSIGNMENT_KEY,
                        format!("the rebalance plan does not parse: {e}"),
                    )
                })?,
                Some(r.version),
            ),
            None => (Plan::default(), None),
        };
        let cordoned = match records.get(CORDONED_KEY) {
            Some(r) => (
                serde_json::from_value(r.value.clone()).map_err(|e| {
                    corrupt(
                        CORDONED_KEY,
                        format!("the cordoned brokers do not parse: {e}"),
                    )
                })?,
                Some(r.version),
            ),
            None => (BTreeSet::new(), None),
        };
        let broker_count = match records.get(BROKER_COUNT_KEY) {
            Some(r) => (
                Some(serde_json::from_value(r.value.clone()).map_err(|e| {
                    corrupt(
                        BROKER_COUNT_KEY,
                        format!("the broker count does not parse: {e}"),
                    )
                })?),
                Some(r.version),
            ),
            None => (None, None),
        };
        let previous = records.get(CONTROLLER_KEY);
        let epoch = previous
            .and_then(|r| r.value.get("epoch"))
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32
            + 1;
        // The cluster id is made by the first controller and kept with the epoch.
        let cluster_id = previous
            .and_then(|r| r.value.get("cluster_id"))
            .and_then(Value::as_str)
            .map_or_else(new_cluster_id, str::to_string);
        let expected = previous.map_or(Expected::Absent, |r| Expected::Version(r.version));
        store
            .put(
                CONTROLLER_KEY,
                serde_json::json!({ "epoch": epoch, "id": id, "cluster_id": cluster_id }),
                expected,
            )
            .await?;
        snapshot.controller_epoch = epoch;
        snapshot.cluster_id = cluster_id;
        snapshot.version = 1;
        tracing::info!(
            controller = id,
            epoch,
            topics = snapshot.topics.len(),
            "controller started"
        );
        let (updates, _) = watch::channel(Arc::new(snapshot.clone()));
        let state = State {
            snapshot,
            topic_versions,
            sessions: BTreeMap::new(),
            incarnations,
            next_producer_id,
            next_session: 1,
            last_expiry_check: None,
            plan,
            cordoned,
            broker_count,
            replica_sizes: BTreeMap::new(),
            gone_since: BTreeMap::new(),
            registered: BTreeSet::new(),
            host_racks: BTreeMap::new(),
            own_racks: BTreeSet::new(),
            last_preferred_election: Instant::now(),
        };
        Ok(Self {
            id,
            store,
            config: parking_lot::RwLock::new(config),
            started: Instant::now(),
            state: Mutex::new(state),
            updates,
            closed: CancellationToken::new(),
        })
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    pub fn session_timeout(&self) -> Duration {
        self.config.read().session_timeout
    }

    /// The configuration the controller runs with now.
    pub fn config(&self) -> ControllerConfig {
        self.config.read().clone()
    }

    /// Changes the cluster defaults (replication factor, topic configuration) and timeouts;
    /// topics created from now on, and checks made from now on, use the new ones.
    pub fn reconfigure(&self, config: ControllerConfig) {
        *self.config.write() = config;
    }

    /// Stops the controller: every later call fails with [`ControllerError::Closed`], and
    /// [`Controller::closed`] completes, so broker sessions end and brokers reconnect to
    /// whichever controller is current. A controller closes itself when its store refuses
    /// a write because the metadata changed underneath it: its view can no longer be
    /// trusted, and its host starts a new one from the store.
    pub fn close(&self) {
        if !self.closed.is_cancelled() {
            tracing::info!(controller = self.id, "controller stopped");
        }
        self.closed.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Completes when the controller stops.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// The state, unless the controller has stopped.
    async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, State>, ControllerError> {
        let state = self.state.lock().await;
        if self.is_closed() {
            return Err(ControllerError::Closed);
        }
        Ok(state)
    }

    /// Closes the controller when `result` says the store changed underneath it.
    fn check_store<T>(&self, result: Result<T, StoreError>) -> Result<T, ControllerError> {
        if let Err(StoreError::Conflict { key, .. }) = &result {
            tracing::error!(controller = self.id, %key, "metadata changed underneath this controller; stopping it");
            self.close();
        }
        Ok(result?)
    }

    /// Stores `value` under `key` over the version last read or written (None: the key
    /// must not exist yet), stopping the controller when the store says the metadata
    /// changed underneath it. Returns the new version.
    async fn store_put(
        &self,
        key: &str,
        value: &impl serde::Serialize,
        version: Option<u64>,
    ) -> Result<u64, ControllerError> {
        let value = serde_json::to_value(value).map_err(|e| corrupt(key, e))?;
        let expected = version.map_or(Expected::Absent, Expected::Version);
        self.check_store(self.store.put(key, value, expected).await)
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

    /// Topics that allow unclean leader election.
    fn unclean_topics(&self, state: &State) -> BTreeSet<String> {
        state
            .snapshot
            .topics
            .values()
            .filter(|t| {
                TopicConfig::resolve(&self.config.read().topic_config, &t.config)
                    .is_ok_and(|c| c.unclean_leader_election)
            })
            .map(|t| t.name.clone())
            .collect()
    }

    /// Applies `change` to every partition, persists the topics it changed and swaps them
    /// into the snapshot. Returns whether anything changed.
    async fn change_partitions(
        &self,
        state: &mut State,
        mut change: impl FnMut(&TopicRecord, u32, &mut PartitionRecord) -> bool,
    ) -> Result<bool, ControllerError> {
        let mut changed = Vec::new();
        for topic in state.snapshot.topics.values() {
            let mut copy = topic.clone();
            let mut any = false;
            for p in 0..copy.partitions.len() {
                let mut partition = copy.partitions[p].clone();
                if change(topic, p as u32, &mut partition) {
                    copy.partitions[p] = partition;
                    any = true;
                }
            }
            if any {
                changed.push(copy);
            }
        }
        for topic in &changed {
            let version = state.topic_versions.get(&topic.name).copied();
            let new_version = self
                .store_put(&topic_key(&topic.name), topic, version)
                .await?;
            // Each topic joins the snapshot once stored, so that a failed write of the next
            // leaves the snapshot as the store has it.
            state.topic_versions.insert(topic.name.clone(), new_version);
            state
                .snapshot
                .topics
                .insert(topic.name.clone(), topic.clone());
        }
        Ok(!changed.is_empty())
    }
}
