//! [`ClusterAdmin`]: cluster-wide operations the controller answers itself: rebalancing,
//! cordoning brokers, the broker count, and the cluster's status.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::error::{Error, Result};
use crate::metadata::Plan;
use crate::protocol::grpc::proto;
use crate::protocol::grpc::transport::{self, ClusterHeader};

/// One broker as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerState {
    pub id: i32,
    /// host:port; empty when the broker is not in session.
    pub address: String,
    pub alive: bool,
    pub cordoned: bool,
    pub replicas: u32,
    pub leaders: u32,
}

/// The broker count asked for with [`ClusterAdmin::scale`], and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleState {
    /// The broker count asked for.
    pub brokers: u32,
    /// How many brokers should run now (ids 0 to `run - 1`): the old count until the
    /// brokers that go are drained.
    pub run: u32,
    /// WaitingForBrokers, Draining, Drained, Rebalancing, Balanced or ScaleDownRefused.
    pub phase: String,
    pub message: String,
}

impl From<proto::ScaleStatus> for ScaleState {
    fn from(s: proto::ScaleStatus) -> Self {
        Self {
            brokers: s.brokers,
            run: s.run,
            phase: s.phase,
            message: s.message,
        }
    }
}

/// The cluster as its controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub brokers: Vec<BrokerState>,
    pub partitions: u32,
    pub under_replicated_partitions: u32,
    /// The rebalance in progress: no moves when none.
    pub rebalance: Plan,
    pub controller_epoch: i32,
    /// The broker count asked for, when one was.
    pub scale: Option<ScaleState>,
}

type Client =
    proto::controller_client::ControllerClient<InterceptedService<Channel, ClusterHeader>>;

/// A connection to a cluster's controller.
#[derive(Clone)]
pub struct ClusterAdmin {
    address: String,
    client: Client,
}

impl std::fmt::Debug for ClusterAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterAdmin({})", self.address)
    }
}

impl ClusterAdmin {
    /// The controller at `address` (`host:port`); `cluster` names the cluster to a
    /// controller that serves several (the operator's: `namespace/name`).
    pub async fn connect(address: &str, cluster: Option<&str>) -> Result<Self> {
        let header = ClusterHeader::new(cluster).map_err(Error::Invalid)?;
        let endpoint = transport::endpoint(address)
            .map_err(|e| Error::Invalid(format!("invalid controller address '{address}': {e}")))?
            .connect_timeout(Duration::from_secs(3));
        let channel = endpoint.connect().await.map_err(|e| Error::Connection {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            address: address.to_string(),
            client: proto::controller_client::ControllerClient::with_interceptor(channel, header),
        })
    }

    /// Computes a rebalance and, unless `dry_run`, starts it. Returns the plan.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Plan> {
        let plan = self
            .client
            .clone()
            .rebalance(proto::RebalanceRequest { dry_run })
            .await
            .map_err(|s| Error::from_status(s, &self.address))?
            .into_inner();
        Ok(crate::protocol::grpc::convert::plan_from_proto(plan))
    }

    pub async fn status(&self) -> Result<ClusterStatus> {
        let status = self
            .client
            .clone()
            .cluster_status(proto::ClusterStatusRequest {})
            .await
            .map_err(|s| Error::from_status(s, &self.address))?
            .into_inner();
        Ok(ClusterStatus {
            brokers: status
                .brokers
                .into_iter()
                .map(|b| BrokerState {
                    id: b.id,
                    address: b.address,
                    alive: b.alive,
                    cordoned: b.cordoned,
                    replicas: b.replicas,
                    leaders: b.leaders,
                })
                .collect(),
            partitions: status.partitions,
            under_replicated_partitions: status.under_replicated_partitions,
            rebalance: status
                .rebalance
                .map(crate::protocol::grpc::convert::plan_from_proto)
                .unwrap_or_default(),
            controller_epoch: status.controller_epoch,
            scale: status.scale.map(ScaleState::from),
        })
    }

    /// Asks for `brokers` brokers (ids 0 to `brokers - 1`): a shrink drains the brokers
    /// that go first; `tributary local up` starts and stops the processes.
    pub async fn scale(&self, brokers: u32) -> Result<ScaleState> {
        let status = self
            .client
            .clone()
            .scale(proto::ScaleRequest { brokers })
            .await
            .map_err(|s| Error::from_status(s, &self.address))?
            .into_inner();
        Ok(status.into())
    }

    /// Sets the brokers that take no new replicas; a rebalance then drains them. An empty
    /// set cordons none.
    pub async fn cordon(&self, brokers: &BTreeSet<i32>) -> Result<()> {
        self.client
            .clone()
            .cordon(proto::CordonRequest {
                broker_ids: brokers.iter().copied().collect(),
            })
            .await
            .map_err(|s| Error::from_status(s, &self.address))?;
        Ok(())
    }
}
