//! The cluster controller: the single writer of cluster metadata. It keeps topics, their
//! partition assignments, leaders and in-sync replicas in a [`MetadataStore`]; holds a
//! session with every broker and fences those that go quiet; elects leaders from the ISR;
//! commits ISR changes that leaders propose; and publishes every change as a new
//! [`MetadataSnapshot`] that brokers apply. A change is persisted before it is published.
//!
//! The same controller runs inside a standalone broker, as the `tributary-controller`
//! process of `tributary local up`, and (hosted by the operator) in Kubernetes; only the store
//! differs.

mod balancer;
mod election;
mod placement;
mod reassignment;
pub mod scaling;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::TopicPartition;
use crate::config::{ConfigError, TopicConfig};
use crate::metadata::{
    BrokerInfo, MetadataSnapshot, Move, NewTopic, OFFSETS_TOPIC, PartitionRecord, Plan, TopicRecord,
};
use crate::validate_topic_name;
pub use scaling::{Balance, ScaleDecision, ScalePhase};
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

/// A broker asking for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub broker: BrokerInfo,
    /// Identifies the broker's data directory; a new one means the broker lost its data.
    pub incarnation: String,
}

/// Why a leader's ISR proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrRejection {
    #[error("no such partition")]
    UnknownPartition,
    #[error("broker {0} does not lead this partition")]
    NotLeader(i32),
    #[error(
        "the proposal was made at leader epoch {proposed_leader} / partition epoch {proposed_partition}, but the partition is at {leader_epoch} / {partition_epoch}"
    )]
    Stale {
        proposed_leader: i32,
        proposed_partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A leader's proposed ISR for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic: String,
    pub partition: u32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// What became of a proposal, with the partition as it is now (when it exists).
pub type IsrOutcome = (Result<(), IsrRejection>, Option<PartitionRecord>);

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

    /// How many brokers there are: one more than the highest id in session or holding
    /// replicas.
    fn running_brokers(&self) -> i32 {
        self.present_brokers().last().map_or(0, |b| b + 1)
    }

    /// The decision for the broker count asked for with `scale`.
    fn scale_decision(&self, desired: i32) -> ScaleDecision {
        self.decide_scale(desired, self.running_brokers(), true, SCALE_ADVICE)
    }

    /// [`scaling::decide`] on this metadata; a rebalance is asked for only when the
    /// balancer would move something.
    fn decide_scale(
        &self,
        desired: i32,
        running: i32,
        auto_rebalance: bool,
        ask: &str,
    ) -> ScaleDecision {
        let plan = self.plan_with_progress();
        let decide = |balance| {
            scaling::decide(
                desired,
                running,
                &self.snapshot,
                &plan,
                auto_rebalance,
                ask,
                balance,
            )
        };
        let decision = decide(Balance::Unknown);
        if decision.rebalance && self.rebalance_moves().is_empty() {
            return decide(Balance::Balanced);
        }
        decision
    }

    /// The moves a rebalance would make now.
    fn rebalance_moves(&self) -> Vec<Move> {
        let current = self.assignment();
        balancer::balance(&self.placeable(), &current)
            .into_iter()
            .filter(|(key, replicas)| current.get(key) != Some(replicas))
            .map(|((topic, partition), target)| Move {
                original: current[&(topic.clone(), partition)].clone(),
                topic,
                partition,
                target,
                started: false,
            })
            .collect()
    }

    /// Brokers in session or holding replicas.
    fn present_brokers(&self) -> BTreeSet<i32> {
        let holding = self.snapshot.load().into_keys();
        holding
            .chain(self.snapshot.brokers.keys().copied())
            .collect()
    }

    /// The plan with what its new replicas still have to copy: for each one, what its
    /// partition's leader holds less what it holds already.
    fn plan_with_progress(&self) -> Plan {
        let mut plan = self.plan.0.clone();
        let size = |broker: i32, topic: &str, partition: u32| {
            let tp = TopicPartition::new(topic, partition);
            self.replica_sizes.get(&broker)?.get(&tp).copied()
        };
        plan.bytes_remaining = plan
            .moves
            .iter()
            .flat_map(|m| {
                let leader = self
                    .snapshot
                    .topics
                    .get(&m.topic)
                    .and_then(|t| t.partitions.get(m.partition as usize))
                    .map_or(-1, |p| p.leader);
                let full = size(leader, &m.topic, m.partition)
                    .or_else(|| {
                        m.original
                            .iter()
                            .find_map(|r| size(*r, &m.topic, m.partition))
                    })
                    .unwrap_or(0);
                m.target
                    .iter()
                    .filter(|r| !m.original.contains(r))
                    .map(move |r| full.saturating_sub(size(*r, &m.topic, m.partition).unwrap_or(0)))
                    .collect::<Vec<_>>()
            })
            .sum();
        plan
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

    /// Starts (or restarts) a broker's session. A broker whose incarnation changed lost its
    /// data: it leaves every ISR. Leaderless partitions it may lead get it as leader.
    /// Returns the session id, for heartbeats.
    pub async fn register_broker(
        &self,
        registration: Registration,
    ) -> Result<u64, ControllerError> {
        let mut state = self.lock().await?;
        let id = registration.broker.id;
        let known = state.incarnations.get(&id).cloned();
        let lost_data = known
            .as_ref()
            .is_some_and(|(incarnation, _)| *incarnation != registration.incarnation);
        if known
            .as_ref()
            .is_none_or(|(incarnation, _)| *incarnation != registration.incarnation)
        {
            let value = serde_json::json!({ "incarnation": registration.incarnation });
            let version = self
                .store_put(
                    &format!("{BROKER_PREFIX}{id}"),
                    &value,
                    known.as_ref().map(|(_, v)| *v),
                )
                .await?;
            state
                .incarnations
                .insert(id, (registration.incarnation.clone(), version));
        }
        if lost_data {
            tracing::warn!(
                broker = id,
                "broker came back with a new data directory: out of sync everywhere"
            );
            let eligible: BTreeSet<i32> =
                state.eligible().into_iter().filter(|b| *b != id).collect();
            self.change_partitions(&mut state, |_, _, p| {
                election::remove_broker(p, id, &|r| eligible.contains(&r), false)
            })
            .await?;
        }
        let session_id = state.next_session;
        state.next_session += 1;
        state.registered.insert(id);
        state.sessions.insert(
            id,
            Session {
                id: session_id,
                last_seen: Instant::now(),
                shutting_down: false,
            },
        );
        state
            .snapshot
            .brokers
            .insert(id, registration.broker.clone());
        let eligible = state.eligible();
        let unclean = self.unclean_topics(&state);
        self.change_partitions(&mut state, |topic, _, p| {
            election::elect_if_leaderless(
                p,
                &|r| eligible.contains(&r),
                unclean.contains(&topic.name),
            )
        })
        .await?;
        self.publish(&mut state);
        tracing::info!(broker = id, address = %registration.broker.address(), session = session_id, "broker registered");
        Ok(session_id)
    }

    /// Keeps a session alive.
    pub async fn heartbeat(&self, broker: i32, session: u64) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        match state.sessions.get_mut(&broker) {
            Some(s) if s.id == session => {
                s.last_seen = Instant::now();
                Ok(())
            }
            _ => Err(ControllerError::NoSession(broker)),
        }
    }

    /// A session's connection closed: the broker is fenced at once (unless a newer session
    /// already replaced it).
    pub async fn end_session(&self, broker: i32, session: u64) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        if state.sessions.get(&broker).is_some_and(|s| s.id == session) {
            tracing::info!(broker, "broker session closed");
            self.fence(&mut state, broker).await?;
        }
        Ok(())
    }

    /// Fences brokers whose sessions timed out, and (one session timeout after this
    /// controller started) brokers named as leaders or in-sync replicas that never connected.
    pub async fn expire_sessions(&self) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        let timeout = self.session_timeout();
        // Checks run every SESSION_CHECK_INTERVAL. A long gap means this controller was
        // stalled (paused, starved of CPU), not that the brokers were: their heartbeats are
        // waiting unread. The time the controller could not see does not count against any
        // session (instead of fencing them all), but a broker silent before it still is.
        let now = Instant::now();
        let stalled = state
            .last_expiry_check
            .replace(now)
            .map(|last| now - last)
            .filter(|&gap| gap > (timeout / 2).max(SESSION_CHECK_INTERVAL * 4));
        if let Some(gap) = stalled {
            tracing::warn!(
                ?gap,
                "the controller was stalled; the stall does not count against broker sessions"
            );
            let unseen = gap.saturating_sub(SESSION_CHECK_INTERVAL);
            for session in state.sessions.values_mut() {
                session.last_seen = (session.last_seen + unseen).min(now);
            }
            return Ok(());
        }
        let mut dead: BTreeSet<i32> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        if self.started.elapsed() > timeout {
            for topic in state.snapshot.topics.values() {
                for p in &topic.partitions {
                    for broker in std::iter::once(p.leader).chain(p.isr.iter().copied()) {
                        if broker >= 0
                            && !state.sessions.contains_key(&broker)
                            && (p.leader == broker || p.isr.len() > 1)
                        {
                            dead.insert(broker);
                        }
                    }
                }
            }
        }
        for broker in dead {
            tracing::warn!(broker, timeout = ?timeout, "broker session expired; fencing it");
            self.fence(&mut state, broker).await?;
        }
        Ok(())
    }

    /// Takes a broker out of service: out of every ISR it shares, and leaderships it held go
    /// to other in-sync replicas (or, where the topic allows it, to any live replica).
    async fn fence(&self, state: &mut State, broker: i32) -> Result<(), ControllerError> {
        state.sessions.remove(&broker);
        state.snapshot.brokers.remove(&broker);
        let eligible = state.eligible();
        let unclean = self.unclean_topics(state);
        self.change_partitions(state, |topic, _, p| {
            election::remove_broker(
                p,
                broker,
                &|r| eligible.contains(&r),
                unclean.contains(&topic.name),
            )
        })
        .await?;
        self.publish(state);
        Ok(())
    }

    /// A broker about to stop: its leaderships move to other in-sync replicas and it leaves
    /// the ISRs it shares. Returns how many partitions it still leads (no other in-sync
    /// replica could take them); it may call again.
    pub async fn controlled_shutdown(&self, broker: i32) -> Result<u32, ControllerError> {
        let mut state = self.lock().await?;
        let Some(session) = state.sessions.get_mut(&broker) else {
            return Err(ControllerError::NoSession(broker));
        };
        session.shutting_down = true;
        let eligible = state.eligible();
        let changed = self
            .change_partitions(&mut state, |_, _, p| {
                election::retire_broker(p, broker, &|r| eligible.contains(&r))
            })
            .await?;
        if changed {
            self.publish(&mut state);
        }
        let remaining = state
            .snapshot
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == broker)
            .count();
        tracing::info!(broker, remaining, "controlled shutdown: leaderships moved");
        Ok(remaining as u32)
    }

    /// Commits the ISRs a leader proposes, each only if the leader still leads at the epochs
    /// it saw, the ISR keeps the leader, and every member is a live replica.
    pub async fn alter_isr(
        &self,
        broker: i32,
        proposals: Vec<IsrProposal>,
    ) -> Result<Vec<IsrOutcome>, ControllerError> {
        let mut state = self.lock().await?;
        let eligible = state.eligible();
        let mut outcomes: BTreeMap<(String, u32), Result<(), IsrRejection>> = BTreeMap::new();
        for proposal in &proposals {
            let current = state
                .snapshot
                .topics
                .get(&proposal.topic)
                .and_then(|t| t.partitions.get(proposal.partition as usize));
            let verdict = match current {
                None => Err(IsrRejection::UnknownPartition),
                Some(p) if p.leader != broker => Err(IsrRejection::NotLeader(broker)),
                Some(p)
                    if p.leader_epoch != proposal.leader_epoch
                        || p.partition_epoch != proposal.partition_epoch =>
                {
                    Err(IsrRejection::Stale {
                        proposed_leader: proposal.leader_epoch,
                        proposed_partition: proposal.partition_epoch,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                    })
                }
                Some(p) => validate_isr(p, &proposal.new_isr, broker, &eligible),
            };
            outcomes.insert((proposal.topic.clone(), proposal.partition), verdict);
        }
        let accepted: BTreeMap<(String, u32), Vec<i32>> = proposals
            .iter()
            .filter(|p| {
                outcomes
                    .get(&(p.topic.clone(), p.partition))
                    .is_some_and(Result::is_ok)
            })
            .map(|p| ((p.topic.clone(), p.partition), p.new_isr.clone()))
            .collect();
        if !accepted.is_empty() {
            self.change_partitions(&mut state, |topic, i, p| {
                match accepted.get(&(topic.name.clone(), i)) {
                    Some(isr) => {
                        p.isr = isr.clone();
                        p.partition_epoch += 1;
                        true
                    }
                    None => false,
                }
            })
            .await?;
            self.publish(&mut state);
        }
        Ok(proposals
            .iter()
            .map(|proposal| {
                let key = (proposal.topic.clone(), proposal.partition);
                let current = state
                    .snapshot
                    .topics
                    .get(&proposal.topic)
                    .and_then(|t| t.partitions.get(proposal.partition as usize))
                    .cloned();
                (
                    outcomes
                        .remove(&key)
                        .unwrap_or(Err(IsrRejection::UnknownPartition)),
                    current,
                )
            })
            .collect())
    }

    /// A block of producer ids no other broker will hand out.
    pub async fn allocate_producer_ids(&self, broker: i32) -> Result<(i64, u32), ControllerError> {
        let mut state = self.lock().await?;
        let (first, version) = state.next_producer_id;
        let next = first + i64::from(PRODUCER_ID_BLOCK);
        let version = self
            .store_put(
                PRODUCER_IDS_KEY,
                &serde_json::json!({ "next": next }),
                version,
            )
            .await?;
        state.next_producer_id = (next, Some(version));
        tracing::debug!(broker, first, "allocated producer ids");
        Ok((first, PRODUCER_ID_BLOCK))
    }

    /// Creates a topic, placing its replicas on live brokers so that replica and leader
    /// counts stay even across the cluster. With `validate_only` nothing is stored, but the
    /// answer is the same. Returns the topic and the metadata version that holds it.
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
        self.create(topic, validate_only, false).await
    }

    /// Creates `__consumer_offsets`, the topic of committed offsets, unless it exists:
    /// replication factor 3 (or the number of brokers, if smaller), acks=all commits
    /// needing two in-sync replicas when there are three, and no retention (the group
    /// coordinators keep it small).
    pub async fn create_offsets_topic(&self) -> Result<TopicRecord, ControllerError> {
        if let Some(existing) = self.snapshot().topics.get(OFFSETS_TOPIC) {
            return Ok(existing.clone());
        }
        let topic = NewTopic {
            name: OFFSETS_TOPIC.into(),
            partitions: self.config.read().offsets_topic_partitions,
            replication_factor: None,
            config: BTreeMap::from([
                ("retention.ms".to_string(), "-1".to_string()),
                ("retention.bytes".to_string(), "-1".to_string()),
                ("segment.bytes".to_string(), (16 << 20).to_string()),
            ]),
        };
        match self.create(topic, false, true).await {
            Err(ControllerError::TopicExists(_)) => self
                .snapshot()
                .topics
                .get(OFFSETS_TOPIC)
                .cloned()
                .ok_or_else(|| ControllerError::TopicExists(OFFSETS_TOPIC.into())),
            other => other.map(|(record, _)| record),
        }
    }

    /// Creates a topic; an internal one gets a replication factor of up to 3, as many as
    /// there are brokers, and min.insync.replicas 2 when it has 3.
    async fn create(
        &self,
        mut topic: NewTopic,
        validate_only: bool,
        internal: bool,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        if topic.partitions == 0 || topic.partitions > MAX_PARTITIONS {
            return Err(ControllerError::InvalidPartitions(format!(
                "{} requested; a topic has from 1 to {MAX_PARTITIONS} partitions",
                topic.partitions
            )));
        }
        // Checked before waiting for brokers, so a bad config fails at once.
        TopicConfig::resolve(&self.config.read().topic_config, &topic.config)?;
        let replication_factor = topic
            .replication_factor
            .unwrap_or(self.config.read().default_replication_factor)
            as usize;
        let replication_factor = if internal { 3 } else { replication_factor };
        let mut state = self.lock_once_registered(replication_factor).await?;
        if state.snapshot.topics.contains_key(&topic.name) {
            return Err(ControllerError::TopicExists(topic.name));
        }
        let replication_factor = if internal {
            let rf = replication_factor.min(state.eligible().len());
            topic.config.insert(
                "min.insync.replicas".into(),
                if rf >= 3 { "2" } else { "1" }.into(),
            );
            rf
        } else {
            replication_factor
        };
        let partitions = place(&state, topic.partitions, replication_factor)?;
        self.check_config(&topic.config, replication_factor)?;
        let record = TopicRecord {
            name: topic.name.clone(),
            id: Uuid::new_v4(),
            config: topic.config,
            partitions,
        };
        if validate_only {
            return Ok((record, state.snapshot.version));
        }
        let published = self.put_topic(&mut state, record.clone()).await?;
        tracing::info!(topic = %record.name, partitions = record.partitions.len(), replication_factor, "topic created");
        Ok((record, published))
    }

    /// Grows a topic to `partitions` partitions, placing the new ones as a new topic's
    /// would be. Partitions are never removed: records are spread over them by key. Returns
    /// the topic and the metadata version that holds it.
    pub async fn create_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        let rf = self
            .snapshot()
            .topics
            .get(name)
            .map_or(1, TopicRecord::replication_factor);
        let mut state = self.lock_once_registered(rf).await?;
        let Some(mut topic) = state.snapshot.topics.get(name).cloned() else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        let current = topic.partitions.len() as u32;
        if partitions < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions and cannot shrink to {partitions}: \
                 records are spread over partitions by key, so partitions can only be added"
            )));
        }
        if partitions > MAX_PARTITIONS {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} requested; a topic has from 1 to {MAX_PARTITIONS} partitions"
            )));
        }
        if partitions == current {
            return Ok((topic, state.snapshot.version));
        }
        let added = place(&state, partitions - current, topic.replication_factor())?;
        topic.partitions.extend(added);
        let published = self.put_topic(&mut state, topic.clone()).await?;
        tracing::info!(
            topic = name,
            from = current,
            to = partitions,
            "partitions added"
        );
        Ok((topic, published))
    }

    /// Replaces a topic's configuration overrides with `config` (keys not in it return to
    /// the cluster defaults). Brokers apply the change when they receive the metadata.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        let mut state = self.lock().await?;
        let Some(mut topic) = state.snapshot.topics.get(name).cloned() else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        if topic.config == config {
            return Ok((topic, state.snapshot.version));
        }
        self.check_config(&config, topic.replication_factor())?;
        topic.config = config;
        let published = self.put_topic(&mut state, topic.clone()).await?;
        tracing::info!(topic = name, config = ?topic.config, "topic config changed");
        Ok((topic, published))
    }

    /// Takes the state lock; just after a controller (re)start, while brokers are still
    /// registering, first waits for `replication_factor` of them (up to one session timeout
    /// since the start), if that many have ever registered.
    async fn lock_once_registered(
        &self,
        replication_factor: usize,
    ) -> Result<tokio::sync::MutexGuard<'_, State>, ControllerError> {
        let mut updates = self.subscribe();
        updates.borrow_and_update();
        let grace_end = self.started + self.session_timeout();
        loop {
            let state = self.lock().await?;
            let registering = state.eligible().len() < replication_factor
                && state.incarnations.len() >= replication_factor
                && Instant::now() < grace_end;
            if !registering {
                return Ok(state);
            }
            drop(state);
            let _ = tokio::time::timeout_at(grace_end, updates.changed()).await;
        }
    }

    /// Checks topic overrides against the cluster defaults and the replication factor.
    fn check_config(
        &self,
        config: &BTreeMap<String, String>,
        replication_factor: usize,
    ) -> Result<(), ControllerError> {
        let resolved = TopicConfig::resolve(&self.config.read().topic_config, config)?;
        if resolved.min_insync_replicas as usize > replication_factor {
            return Err(ControllerError::InvalidConfig(ConfigError(format!(
                "min.insync.replicas {} is larger than the replication factor {replication_factor}: no write with acks=all could succeed",
                resolved.min_insync_replicas
            ))));
        }
        Ok(())
    }

    /// Stores a new or changed topic record, then publishes it.
    async fn put_topic(
        &self,
        state: &mut State,
        record: TopicRecord,
    ) -> Result<u64, ControllerError> {
        let stored = state.topic_versions.get(&record.name).copied();
        let version = self
            .store_put(&topic_key(&record.name), &record, stored)
            .await?;
        state.topic_versions.insert(record.name.clone(), version);
        state.snapshot.topics.insert(record.name.clone(), record);
        Ok(self.publish(state))
    }

    /// Computes a rebalance: replica and leader counts per broker within one of each other,
    /// rack-aware, moving as few replicas as possible, and every replica off brokers that
    /// may not hold any (out of session, shutting down, cordoned). Unless `dry_run`, starts
    /// it. Refused while another is in progress.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Plan, ControllerError> {
        let mut state = self.lock().await?;
        self.rebalance_locked(&mut state, dry_run).await
    }

    async fn rebalance_locked(
        &self,
        state: &mut State,
        dry_run: bool,
    ) -> Result<Plan, ControllerError> {
        if !state.plan.0.moves.is_empty() {
            let plan = &state.plan.0;
            return Err(ControllerError::RebalanceInProgress {
                done: plan.done,
                total: plan.total,
            });
        }
        let moves = state.rebalance_moves();
        let plan = Plan {
            total: moves.len(),
            moves,
            done: 0,
            rolled_back: 0,
            max_concurrent: self.config.read().max_concurrent_moves.max(1),
            bytes_remaining: 0,
        };
        if dry_run || plan.moves.is_empty() {
            return Ok(plan);
        }
        tracing::info!(moves = plan.total, "rebalance started");
        self.put_plan(state, plan.clone()).await?;
        self.advance_locked(state).await?;
        Ok(plan)
    }

    /// The rebalance in progress (no moves when none), with the bytes it still has to copy.
    pub async fn rebalance_status(&self) -> Result<Plan, ControllerError> {
        Ok(self.lock().await?.plan_with_progress())
    }

    /// What a broker reported its replicas hold, in bytes (with its heartbeats): how a
    /// rebalance's bytes remaining are worked out. Kept in memory only.
    pub async fn report_replica_sizes(
        &self,
        broker: i32,
        sizes: Vec<(TopicPartition, u64)>,
    ) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        state
            .replica_sizes
            .insert(broker, sizes.into_iter().collect());
        Ok(())
    }

    /// Brokers that take no new replicas: new topics and rebalances leave them out, and a
    /// rebalance moves their replicas away (draining them before they are removed).
    pub async fn cordon(&self, brokers: BTreeSet<i32>) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        self.cordon_locked(&mut state, brokers).await
    }

    async fn cordon_locked(
        &self,
        state: &mut State,
        brokers: BTreeSet<i32>,
    ) -> Result<(), ControllerError> {
        if state.cordoned.0 == brokers {
            return Ok(());
        }
        let version = self
            .store_put(CORDONED_KEY, &brokers, state.cordoned.1)
            .await?;
        tracing::info!(?brokers, "cordoned brokers");
        state.cordoned = (brokers, Some(version));
        Ok(())
    }

    pub async fn cordoned(&self) -> Result<BTreeSet<i32>, ControllerError> {
        Ok(self.lock().await?.cordoned.0.clone())
    }

    /// Asks for `brokers` brokers, ids 0 to `brokers - 1` (`tributary cluster scale`). A
    /// shrink cordons the brokers that go and drains them; a growth rebalances once the new
    /// brokers have registered. Whoever runs the brokers (`tributary local up`) starts and
    /// stops them as [`Controller::scale_status`] says. Refused, changing nothing, when a
    /// topic keeps more replicas than `brokers`, or when the broker count is set elsewhere.
    pub async fn scale(&self, brokers: i32) -> Result<ScaleDecision, ControllerError> {
        if let Some(set_by) = self.config.read().broker_count_set_by.clone() {
            return Err(ControllerError::ScaleRefused(format!(
                "this cluster's broker count is set by {set_by}; change it there"
            )));
        }
        if brokers < 1 {
            return Err(ControllerError::ScaleRefused(format!(
                "cannot scale to {brokers} brokers: a cluster needs at least one"
            )));
        }
        let mut state = self.lock().await?;
        let running = state.running_brokers();
        let present = state.present_brokers();
        if present.len() as i32 != running {
            let ids: Vec<String> = present.iter().map(i32::to_string).collect();
            return Err(ControllerError::ScaleRefused(format!(
                "`scale` works on brokers numbered 0 to N-1, as `tributary local up` runs them; this cluster has broker(s) {} in session or holding replicas. Move replicas with `tributary cluster cordon` and `rebalance` instead",
                ids.join(", ")
            )));
        }
        if let Some(why) = scaling::refusal(brokers, running, &state.snapshot, SCALE_ADVICE) {
            return Err(ControllerError::ScaleRefused(why));
        }
        // Growing again: the brokers a shrink cordoned stay, so they take replicas again.
        if let Some(before) = state.broker_count.0
            && brokers > before
        {
            let kept: BTreeSet<i32> = state
                .cordoned
                .0
                .iter()
                .copied()
                .filter(|b| !(before..brokers).contains(b))
                .collect();
            self.cordon_locked(&mut state, kept).await?;
        }
        if state.broker_count.0 != Some(brokers) {
            let version = self
                .store_put(BROKER_COUNT_KEY, &brokers, state.broker_count.1)
                .await?;
            tracing::info!(brokers, running, "broker count changed");
            state.broker_count = (Some(brokers), Some(version));
        }
        let decision = self.apply_scale_locked(&mut state).await?;
        Ok(decision.unwrap_or_else(|| state.scale_decision(brokers)))
    }

    /// What `desired` brokers mean when `running` exist (ids 0 to `running - 1`), for a
    /// host that sets the broker count itself (the operator, from a Cluster's
    /// `spec.replicas`); `ask` is how its users ask for a count, for the advice when a shrink
    /// is refused. A rebalance is asked for only when the balancer would move something.
    pub async fn decide_scale(
        &self,
        desired: i32,
        running: i32,
        auto_rebalance: bool,
        ask: &str,
    ) -> Result<ScaleDecision, ControllerError> {
        let state = self.lock().await?;
        Ok(state.decide_scale(desired, running, auto_rebalance, ask))
    }

    /// The broker count asked for with [`Controller::scale`] and where it stands; None when
    /// it was never asked for.
    pub async fn scale_status(&self) -> Result<Option<(i32, ScaleDecision)>, ControllerError> {
        if self.config.read().broker_count_set_by.is_some() {
            return Ok(None);
        }
        let state = self.lock().await?;
        Ok(state
            .broker_count
            .0
            .map(|desired| (desired, state.scale_decision(desired))))
    }

    /// Cordons the brokers that go and starts the rebalance that drains them (or fills new
    /// ones), for the broker count asked for; cordons of brokers that stay are kept.
    async fn apply_scale_locked(
        &self,
        state: &mut State,
    ) -> Result<Option<ScaleDecision>, ControllerError> {
        let Some(desired) = state.broker_count.0 else {
            return Ok(None);
        };
        if self.config.read().broker_count_set_by.is_some() {
            // Set elsewhere (a Cluster's spec.replicas): a stored count is not followed.
            return Ok(None);
        }
        let decision = state.scale_decision(desired);
        if decision.phase == ScalePhase::ScaleDownRefused || self.still_registering(state) {
            return Ok(Some(decision));
        }
        let cordon: BTreeSet<i32> = state
            .cordoned
            .0
            .iter()
            .copied()
            .filter(|b| *b < desired)
            .chain(decision.cordon.iter().copied())
            .collect();
        self.cordon_locked(state, cordon).await?;
        if decision.rebalance {
            match self.rebalance_locked(state, false).await {
                Ok(_) | Err(ControllerError::RebalanceInProgress { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Some(decision))
    }

    async fn put_plan(&self, state: &mut State, plan: Plan) -> Result<(), ControllerError> {
        let version = self
            .store_put(REASSIGNMENT_KEY, &plan, state.plan.1)
            .await?;
        state.plan = (plan, Some(version));
        Ok(())
    }

    /// Takes the next step of every move in flight, and starts moves up to the limit.
    /// Partition changes are stored before they are published, and the plan after them, so
    /// a controller that restarts in between finds each move where it was.
    pub async fn advance_reassignments(&self) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        self.advance_locked(&mut state).await
    }

    /// Just after a (re)start brokers are still registering: one not back yet is not gone,
    /// so no move is judged (or rolled back, or started) until they have had their chance.
    fn still_registering(&self, state: &State) -> bool {
        self.started.elapsed() < self.session_timeout()
            && state
                .incarnations
                .keys()
                .any(|b| !state.registered.contains(b))
    }

    async fn advance_locked(&self, state: &mut State) -> Result<(), ControllerError> {
        if state.plan.0.moves.is_empty() {
            return Ok(());
        }
        if self.still_registering(state) {
            return Ok(());
        }
        let mut plan = state.plan.0.clone();
        let limit = plan.max_concurrent.max(1);
        let in_flight = plan.moves.iter().filter(|m| m.started).count();
        for m in plan
            .moves
            .iter_mut()
            .filter(|m| !m.started)
            .take(limit.saturating_sub(in_flight))
        {
            m.started = true;
        }
        let started: BTreeMap<(String, u32), Move> = plan
            .moves
            .iter()
            .filter(|m| m.started)
            .map(|m| ((m.topic.clone(), m.partition), m.clone()))
            .collect();
        let eligible = state.eligible();
        let mut steps: BTreeMap<(String, u32), reassignment::Step> = BTreeMap::new();
        let changed = self
            .change_partitions(state, |topic, i, p| {
                let Some(m) = started.get(&(topic.name.clone(), i)) else {
                    return false;
                };
                let before = p.clone();
                let step = reassignment::advance(p, m, &|b| eligible.contains(&b));
                steps.insert((topic.name.clone(), i), step);
                *p != before
            })
            .await?;
        let topics = &state.snapshot.topics;
        plan.moves.retain(|m| {
            match steps.get(&(m.topic.clone(), m.partition)) {
                Some(reassignment::Step::Done) => {
                    plan.done += 1;
                    false
                }
                Some(reassignment::Step::RolledBack) => {
                    plan.rolled_back += 1;
                    false
                }
                // A partition that no longer exists (its topic was deleted) has nothing
                // left to move.
                _ => topics
                    .get(&m.topic)
                    .is_some_and(|t| (m.partition as usize) < t.partitions.len()),
            }
        });
        if changed {
            self.publish(state);
        }
        if plan != state.plan.0 {
            if plan.moves.is_empty() {
                tracing::info!(
                    done = plan.done,
                    rolled_back = plan.rolled_back,
                    "rebalance finished"
                );
            }
            self.put_plan(state, plan).await?;
        }
        Ok(())
    }

    /// Every `preferred_leader_interval`, and never during a rebalance (which moves
    /// leadership itself), hands leadership back to preferred leaders that are in sync.
    async fn elect_preferred_leaders(&self) -> Result<(), ControllerError> {
        let Some(interval) = self.config.read().preferred_leader_interval else {
            return Ok(());
        };
        let mut state = self.lock().await?;
        if state.last_preferred_election.elapsed() < interval || !state.plan.0.moves.is_empty() {
            return Ok(());
        }
        state.last_preferred_election = Instant::now();
        let eligible = state.eligible();
        let changed = self
            .change_partitions(&mut state, |_, _, p| {
                election::elect_preferred(p, &|b| eligible.contains(&b))
            })
            .await?;
        if changed {
            tracing::info!("leadership handed back to preferred leaders");
            self.publish(&mut state);
        }
        Ok(())
    }

    /// What the host of a controller calls every [`SESSION_CHECK_INTERVAL`]: fences brokers
    /// whose sessions expired, moves the rebalance on, and (with self-healing) starts one
    /// when a broker holding replicas has been gone longer than allowed.
    pub async fn tick(&self) -> Result<(), ControllerError> {
        self.expire_sessions().await?;
        self.advance_reassignments().await?;
        self.elect_preferred_leaders().await?;
        self.apply_scale_locked(&mut *self.lock().await?).await?;
        let Some(after) = self.config.read().self_healing_after else {
            return Ok(());
        };
        let mut state = self.lock().await?;
        let holding: BTreeSet<i32> = state.assignment().into_values().flatten().collect();
        let now = Instant::now();
        let present: BTreeSet<i32> = state.sessions.keys().copied().collect();
        state
            .gone_since
            .retain(|b, _| holding.contains(b) && !present.contains(b));
        for broker in holding.difference(&present) {
            state.gone_since.entry(*broker).or_insert(now);
        }
        let overdue: Vec<i32> = state
            .gone_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= after)
            .map(|(b, _)| *b)
            .collect();
        if overdue.is_empty() || !state.plan.0.moves.is_empty() {
            return Ok(());
        }
        tracing::warn!(brokers = ?overdue, ?after, "brokers gone too long; re-creating their replicas on the others");
        let plan = self.rebalance_locked(&mut state, false).await?;
        if plan.moves.is_empty() {
            // Nowhere to put them (too few brokers): look again later, not every tick.
            for b in overdue {
                state.gone_since.insert(b, now);
            }
        }
        Ok(())
    }

    /// Deletes a topic; brokers delete its partitions when they apply the change. Returns the
    /// metadata version without it.
    pub async fn delete_topic(&self, name: &str) -> Result<u64, ControllerError> {
        let mut state = self.lock().await?;
        let Some(&version) = state.topic_versions.get(name) else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        self.check_store(self.store.delete(&topic_key(name), version).await)?;
        state.topic_versions.remove(name);
        state.snapshot.topics.remove(name);
        tracing::info!(topic = name, "topic deleted");
        Ok(self.publish(&mut state))
    }
}

/// Places `count` new partitions of `replication_factor` replicas on the brokers that may
/// take them, keeping replica and leader counts even across the cluster (rack-aware).
fn place(
    state: &State,
    count: u32,
    replication_factor: usize,
) -> Result<Vec<PartitionRecord>, ControllerError> {
    let candidates = state.placeable();
    if candidates.is_empty() {
        return Err(ControllerError::InvalidReplicationFactor(
            "no broker is registered with the controller (or all are being drained); start brokers (or wait until they have registered) and try again".into(),
        ));
    }
    if replication_factor == 0 || replication_factor > candidates.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "{replication_factor} requested, but {} broker{} available; use a replication factor from 1 to {}",
            candidates.len(),
            if candidates.len() == 1 {
                " is"
            } else {
                "s are"
            },
            candidates.len()
        )));
    }
    let mut load = placement::Load::default();
    for p in state.snapshot.topics.values().flat_map(|t| &t.partitions) {
        load.add(&p.replicas);
    }
    Ok(
        placement::assign(&candidates, &mut load, count, replication_factor)
            .into_iter()
            .map(|replicas| PartitionRecord {
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect(),
    )
}

/// A proposed ISR must keep the leader and hold only live replicas of the partition.
fn validate_isr(
    p: &PartitionRecord,
    isr: &[i32],
    leader: i32,
    eligible: &BTreeSet<i32>,
) -> Result<(), IsrRejection> {
    if !isr.contains(&leader) {
        return Err(IsrRejection::Invalid(format!(
            "the ISR {isr:?} leaves out its leader {leader}"
        )));
    }
    if let Some(stranger) = isr.iter().find(|r| !p.replicas.contains(r)) {
        return Err(IsrRejection::Invalid(format!(
            "broker {stranger} is not a replica of this partition"
        )));
    }
    let joining: Vec<i32> = isr.iter().copied().filter(|r| !p.isr.contains(r)).collect();
    if let Some(gone) = joining.iter().find(|r| !eligible.contains(r)) {
        return Err(IsrRejection::Invalid(format!(
            "broker {gone} cannot join the ISR: it is not in session"
        )));
    }
    let mut distinct = isr.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != isr.len() {
        return Err(IsrRejection::Invalid(format!(
            "the ISR {isr:?} names a replica twice"
        )));
    }
    Ok(())
}

#[cfg(any(test, feature = "store-suite"))]
pub mod store_suite;

#[cfg(test)]
mod tests {
    use super::store_suite::StoreFactory;
    use super::*;

    /// File stores in one temporary directory.
    struct FileStores(tempfile::TempDir);

    impl StoreFactory for FileStores {
        type Store = FileStore;

        async fn open(&self) -> FileStore {
            FileStore::open(&self.0.path().join("metadata.json")).expect("the store opens")
        }
    }

    fn stores() -> FileStores {
        FileStores(tempfile::tempdir().expect("a temporary directory"))
    }

    crate::metadata_store_suite!(stores());
}
