//! Leader election with a `coordination.k8s.io` Lease, as Kubernetes' own controllers do
//! it: the leader renews the Lease; a candidate takes it over once it has seen the Lease
//! unchanged for a whole lease duration (measured on its own clock, so clocks need not
//! agree); every write carries the resourceVersion read, so two candidates cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::api::is_status;
use tokio::time::Instant;

/// The label on the leader's pod, which the controller Service selects: brokers reach
/// the cluster controllers only where they run. Its value is the Lease's name, so that
/// operators with Leases of their own in one namespace (two Helm releases) leave each
/// other's leader alone.
pub const LEADER_LABEL: &str = "tributary.dev/controller-leader";

fn leader_label_patch(value: Option<&str>) -> Patch<serde_json::Value> {
    Patch::Merge(serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}}))
}

/// Marks `pod` as the leader of `lease`, after taking that mark off every other pod of
/// `namespace`.
pub async fn label_leader(
    client: &Client,
    namespace: &str,
    pod: &str,
    lease: &str,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{LEADER_LABEL}={lease}");
    let marked = pods.list(&ListParams::default().labels(&selector)).await?;
    for other in marked.items {
        let name = other.name_any();
        if name != pod && other.labels().get(LEADER_LABEL).map(String::as_str) == Some(lease) {
            pods.patch(&name, &PatchParams::default(), &leader_label_patch(None))
                .await?;
        }
    }
    pods.patch(
        pod,
        &PatchParams::default(),
        &leader_label_patch(Some(lease)),
    )
    .await?;
    Ok(())
}

/// Takes the leader mark off `pod`: a replica that starts (or restarts in the same pod)
/// does not lead until it holds the Lease.
pub async fn unlabel(client: &Client, namespace: &str, pod: &str) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.patch(pod, &PatchParams::default(), &leader_label_patch(None))
        .await?;
    Ok(())
}

/// How a Lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate, as other candidates see it (the pod name).
    pub identity: String,
    /// How long a Lease not renewed stays with its holder.
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often a candidate tries for the Lease, and the holder renews it; also how long
    /// one try may take.
    pub fn retry_period(&self) -> Duration {
        self.duration / 7
    }

    /// How long the holder may go without a successful renewal before it stops leading:
    /// well inside the duration, after which a candidate may take the Lease over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// One candidate for a Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease's resourceVersion when last seen, and when (on this clock) it was first
    /// seen at that version.
    observed: Option<(String, Instant)>,
}

impl LeaseLock {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Acquires the Lease, or renews it when held. Returns whether this candidate holds it
    /// now. A refused write (someone else wrote first) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let version = lease.resource_version().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.config.identity {
            self.spec(transitions, spec.acquire_time.clone())
        } else {
            let now = Instant::now();
            let seen_since = match &self.observed {
                Some((seen, since)) if *seen == version => *since,
                _ => {
                    self.observed = Some((version.clone(), now));
                    now
                }
            };
            let duration = spec
                .lease_duration_seconds
                .map_or(self.config.duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                });
            let expired = now.duration_since(seen_since) >= duration;
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            tracing::info!(previous = %holder, "taking over the leader Lease");
            self.spec(transitions + 1, None)
        };
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (when held), so that another candidate takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One try, bounded by the retry period: an API server that does not answer is an
    /// error, not a wait.
    async fn try_once(&mut self) -> Result<bool, String> {
        let period = self.config.retry_period();
        match tokio::time::timeout(period, self.try_acquire_or_renew()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {period:?}")),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_once().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot reach the leader Lease"),
            }
            tokio::time::sleep(self.config.retry_period()).await;
        }
    }

    /// Renews the Lease until it is lost: another candidate took it, or no renewal
    /// succeeded within the renew deadline (counted from when the last successful one
    /// began, and well before a candidate may take over). Returns then; the caller must
    /// stop leading at once.
    pub async fn keep(&mut self) {
        let mut last_success_began = Instant::now();
        loop {
            let deadline = last_success_began + self.config.renew_deadline();
            let began = Instant::now() + self.config.retry_period();
            let attempt = async {
                tokio::time::sleep(self.config.retry_period()).await;
                self.try_once().await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(true)) => last_success_began = began,
                Ok(Ok(false)) => {
                    tracing::error!("another candidate holds the leader Lease now");
                    return;
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot renew the leader Lease"),
                Err(_) => {
                    tracing::error!(deadline = ?self.config.renew_deadline(), "the leader Lease was not renewed within the renew deadline");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::FakeApi;

    fn candidate(api: &FakeApi, identity: &str) -> LeaseLock {
        LeaseLock::new(
            api.client(),
            LeaseConfig {
                namespace: "tributary-system".into(),
                name: "tributary-operator".into(),
                identity: identity.into(),
                duration: Duration::from_secs(15),
            },
        )
    }

    const LEASE: &str =
        "/apis/coordination.k8s.io/v1/namespaces/tributary-system/leases/tributary-operator";

    #[tokio::test(start_paused = true)]
    async fn one_candidate_leads_and_another_takes_over_only_once_the_lease_lapses() {
        let api = FakeApi::new();
        let mut a = candidate(&api, "a");
        let mut b = candidate(&api, "b");
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert!(!b.try_acquire_or_renew().await.unwrap());
        // a renews; b keeps seeing a changed Lease and waits.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(5)).await;
            assert!(a.try_acquire_or_renew().await.unwrap());
            assert!(!b.try_acquire_or_renew().await.unwrap());
        }
        // a stops renewing: b waits a whole duration from when it last saw a change.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!b.try_acquire_or_renew().await.unwrap());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.try_acquire_or_renew().await.unwrap());
        let lease = api.get(LEASE).unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        // a comes back: it does not lead any more.
        assert!(!a.try_acquire_or_renew().await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once_and_a_lost_race_is_no_win() {
        let api = FakeApi::new();
        let mut a = candidate(&api, "a");
        let mut b = candidate(&api, "b");
        assert!(a.try_acquire_or_renew().await.unwrap());
        a.release().await.unwrap();
        assert!(b.try_acquire_or_renew().await.unwrap());
        // b's renewal loses a race for the Lease: it does not count as held.
        api.conflict_once(LEASE);
        assert!(!b.try_acquire_or_renew().await.unwrap());
        assert!(b.try_acquire_or_renew().await.unwrap());
    }

    #[tokio::test]
    async fn only_the_leaders_pod_carries_the_leader_label() {
        let api = FakeApi::new();
        let pods = "/api/v1/namespaces/tributary-system/pods";
        for name in ["op-a", "op-b", "other-a"] {
            api.put(
                &format!("{pods}/{name}"),
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "tributary-system"}}),
            );
        }
        let client = api.client();
        // Another release's operator, with a Lease of its own, leads too.
        label_leader(&client, "tributary-system", "other-a", "other")
            .await
            .unwrap();
        label_leader(&client, "tributary-system", "op-a", "ours")
            .await
            .unwrap();
        label_leader(&client, "tributary-system", "op-b", "ours")
            .await
            .unwrap();
        let label = |name: &str| {
            api.get(&format!("{pods}/{name}")).unwrap()["metadata"]["labels"][LEADER_LABEL].clone()
        };
        assert_eq!(label("op-a"), serde_json::Value::Null);
        assert_eq!(label("op-b"), "ours");
        assert_eq!(
            label("other-a"),
            "other",
            "another Lease's leader keeps its mark"
        );
        unlabel(&client, "tributary-system", "op-b").await.unwrap();
        assert_eq!(label("op-b"), serde_json::Value::Null);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_from_the_api_server_stops_before_anyone_may_take_over() {
        let api = FakeApi::new();
        let mut a = candidate(&api, "a");
        a.acquire().await;
        let keeping = tokio::spawn(async move {
            a.keep().await;
            tokio::time::Instant::now()
        });
        tokio::time::advance(Duration::from_secs(6)).await;
        let cut_off = tokio::time::Instant::now();
        api.unserve("/apis/coordination.k8s.io/");
        let stopped = keeping.await.unwrap();
        // The last renewal began at most one retry period before the cut; a candidate
        // may take over one lease duration after it saw that renewal.
        assert!(
            stopped - cut_off < Duration::from_secs(11),
            "stopped {:?} after the cut",
            stopped - cut_off
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_leading() {
        let api = FakeApi::new();
        let mut a = candidate(&api, "a");
        a.acquire().await;
        let mut b = candidate(&api, "b");
        let keeping = tokio::spawn(async move { a.keep().await });
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(!keeping.is_finished());
        // b cannot take it while a renews, so make b's takeover happen by force: the Lease
        // names b now, as after a partition.
        let mut lease = api.get(LEASE).unwrap();
        lease["spec"]["holderIdentity"] = "b".into();
        api.put(LEASE, lease);
        tokio::time::advance(Duration::from_secs(6)).await;
        keeping.await.unwrap();
        assert!(b.try_acquire_or_renew().await.unwrap());
    }
}
