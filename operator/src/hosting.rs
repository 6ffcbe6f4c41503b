//! The cluster controllers this operator hosts: one per `Cluster`, keyed `namespace/name`,
//! each over a [`KubeStore`]. Brokers reach them through one gRPC Service and name their
//! cluster in a request header; [`Controllers`] is the directory that routes them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tributary_broker::config::TopicConfig;
use tributary_broker::controller::{
    Controller, ControllerConfig, ControllerError, SESSION_CHECK_INTERVAL,
};
use tributary_broker::metadata::MetadataSnapshot;
use tributary_broker::protocol::grpc::transport::CLUSTER_HEADER;
use tributary_broker::server::ControllerDirectory;

use crate::crd::{BrokerStatus, Cluster};
use crate::kube_store::KubeStore;

/// The id hosted controllers announce to brokers.
const CONTROLLER_ID: i32 = 0;

struct Hosted {
    /// The Cluster's uid: a Cluster deleted and made again gets a new controller.
    uid: String,
    controller: Arc<Controller<KubeStore>>,
    stop: CancellationToken,
}

/// Cheap to clone; every clone sees the same controllers.
#[derive(Clone, Default)]
pub struct Controllers {
    hosted: Arc<Mutex<BTreeMap<String, Hosted>>>,
    /// Serializes starts, so that one Cluster never gets two controllers.
    starting: Arc<tokio::sync::Mutex<()>>,
}

/// A duration as the Cluster spec writes it: numbers with units, `500ms`, `30s`, `10m`,
/// `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration: write it like 30s, 10m or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, millis) = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
            .into_iter()
            .find(|(unit, _)| rest.starts_with(unit))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        total += Duration::from_millis(number.saturating_mul(millis));
    }
    Ok(total)
}

/// The controller settings a Cluster's spec implies.
pub fn controller_config(cluster: &Cluster) -> Result<ControllerConfig, String> {
    let topic_config = TopicConfig::resolve(&TopicConfig::default(), &cluster.topic_defaults())
        .map_err(|e| format!("config: {e}"))?;
    let healing = &cluster.spec.self_healing;
    let self_healing_after = if healing.enabled {
        Some(parse_duration(&healing.after).map_err(|e| format!("selfHealing.after: {e}"))?)
    } else {
        None
    };
    Ok(ControllerConfig {
        default_replication_factor: cluster.default_replication_factor().max(1) as u32,
        topic_config,
        max_concurrent_moves: cluster.spec.rebalance.max_concurrent_moves.max(1) as usize,
        self_healing_after,
        broker_count_set_by: Some(format!(
            "the Cluster's spec.replicas (kubectl patch clusters.tributary.dev {} -n {} --type merge -p '{{\"spec\":{{\"replicas\":N}}}}')",
            cluster.name_any(),
            cluster.namespace().unwrap_or_default()
        )),
        ..ControllerConfig::default()
    })
}

impl Controllers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Hosted>> {
        self.hosted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The controller of `key` (`namespace/name`), if this operator runs it.
    pub fn get(&self, key: &str) -> Option<Arc<Controller<KubeStore>>> {
        self.lock().get(key).map(|h| h.controller.clone())
    }

    /// Every cluster with a controller here.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The controller of `cluster`, configured from its spec; started from what the API
    /// server holds when it is not running yet (taking a new controller epoch).
    pub async fn ensure(
        &self,
        client: &Client,
        cluster: &Cluster,
        config: ControllerConfig,
    ) -> Result<Arc<Controller<KubeStore>>, ControllerError> {
        let key = cluster.key();
        let uid = cluster.uid().unwrap_or_default();
        let _starting = self.starting.lock().await;
        if let Some(hosted) = self.lock().get(&key).filter(|h| h.uid == uid) {
            hosted.controller.reconfigure(config);
            return Ok(hosted.controller.clone());
        }
        let controller = start(client, cluster, config).await?;
        let stop = CancellationToken::new();
        tokio::spawn(supervise(
            self.clone(),
            key.clone(),
            client.clone(),
            cluster.clone(),
            controller.clone(),
            stop.clone(),
        ));
        let mut hosted = self.lock();
        let previous = hosted.insert(
            key.clone(),
            Hosted {
                uid,
                controller: controller.clone(),
                stop,
            },
        );
        // Under the lock, so that the old supervisor cannot put its controller back.
        if let Some(previous) = previous {
            previous.stop.cancel();
            previous.controller.close();
        }
        drop(hosted);
        tracing::info!(cluster = %key, "controller started");
        Ok(controller)
    }

    /// Stops the controllers of clusters for which `keep` is false (their Cluster is gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|key, hosted| {
            let kept = keep(key);
            if !kept {
                tracing::info!(cluster = %key, "controller stopped");
                hosted.stop.cancel();
                hosted.controller.close();
            }
            kept
        });
    }

    /// Stops every controller (this replica no longer leads): their broker sessions end,
    /// and brokers reconnect to the new leader's.
    pub fn stop_all(&self) {
        self.retain(|_| false);
    }
}

async fn start(
    client: &Client,
    cluster: &Cluster,
    config: ControllerConfig,
) -> Result<Arc<Controller<KubeStore>>, ControllerError> {
    let store = KubeStore::new(client.clone(), cluster)?;
    Ok(Arc::new(
        Controller::start(CONTROLLER_ID, store, config).await?,
    ))
}

/// Fences the brokers of one cluster whose sessions time out, and starts the controller
/// afresh from the API server when it stops by itself (its metadata changed underneath
/// it), until `stop`.
async fn supervise(
    controllers: Controllers,
    key: String,
    client: Client,
    cluster: Cluster,
    mut controller: Arc<Controller<KubeStore>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(SESSION_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = controller.closed() => {}
            () = stop.cancelled() => {
                controller.close();
                return;
            }
        }
        if controller.is_closed() {
            if stop.is_cancelled() {
                return;
            }
            let config = controller.config();
            let restarted = tokio::select! {
                restarted = start(&client, &cluster, config) => restarted,
                () = stop.cancelled() => return,
            };
            match restarted {
                Ok(new) => {
                    tracing::info!(cluster = %key, "controller restarted from the stored metadata");
                    let mut hosted = controllers.lock();
                    match hosted.get_mut(&key) {
                        Some(h) if !stop.is_cancelled() => h.controller = new.clone(),
                        _ => {
                            new.close();
                            return;
                        }
                    }
                    controller = new;
                }
                Err(error) => {
                    tracing::error!(cluster = %key, %error, "cannot restart the controller; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        if let Err(error) = controller.tick().await {
            tracing::error!(cluster = %key, %error, "the controller's periodic work (sessions, rebalance) failed");
            // The API server may be briefly unreachable: do not spin on it.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl ControllerDirectory for Controllers {
    type Store = KubeStore;

    fn find(&self, cluster: Option<&str>) -> Result<Arc<Controller<KubeStore>>, Status> {
        let Some(cluster) = cluster else {
            return Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "this controller serves several clusters: name yours in the {CLUSTER_HEADER} header (tributary-broker --cluster NAMESPACE/NAME, or TRIBUTARY_CLUSTER)"
                ),
            ));
        };
        self.get(cluster).ok_or_else(|| {
            Status::new(
                Code::Unavailable,
                format!(
                    "no controller runs here for cluster '{cluster}': the operator has not reconciled a Cluster of that namespace/name (yet), or does not watch its namespace"
                ),
            )
        })
    }
}

/// Each broker of a cluster of `replicas` brokers (ids 0..replicas) as the controller sees
/// it, with brokers it knows beyond those (being removed) after them.
pub fn broker_statuses(snapshot: &MetadataSnapshot, replicas: i32) -> Vec<BrokerStatus> {
    let load = snapshot.load();
    let mut ids: Vec<i32> = (0..replicas.max(0)).collect();
    ids.extend(snapshot.brokers.keys().filter(|id| **id >= replicas));
    ids.extend(load.keys().filter(|id| **id >= replicas));
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let (replicas, leaders) = load.get(&id).copied().unwrap_or_default();
            let broker = snapshot.brokers.get(&id);
            BrokerStatus {
                id,
                address: broker.map(|b| b.address()).unwrap_or_default(),
                alive: broker.is_some(),
                replicas: replicas as i32,
                leaders: leaders as i32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
