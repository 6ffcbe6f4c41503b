//! What every reconciler shares: the API client, the operator's settings, the hosted
//! controllers, the Event recorder, and the error a reconcile can end with.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::api::MANAGER;
use crate::crd::condition;
use crate::hosting::Controllers;
use crate::resources::Settings;

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// The cluster controllers this operator hosts.
    pub controllers: Controllers,
    pub recorder: Recorder,
}

impl Context {
    pub fn new(client: Client, settings: Settings, controllers: Controllers) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            controllers,
        }
    }

    /// Records an Event on `object` for every condition that changed from `old` to `new`
    /// (shown by `kubectl describe`). A failure to record is logged, never fatal.
    pub async fn record_transitions<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        old: &[Condition],
        new: &[Condition],
    ) {
        for condition in new {
            let unchanged = old.iter().any(|o| {
                o.type_ == condition.type_
                    && o.status == condition.status
                    && o.reason == condition.reason
            });
            if unchanged {
                continue;
            }
            let bad = (condition.type_ == condition::READY && condition.status == "False")
                || (condition.type_ == condition::DEGRADED && condition.status == "True")
                || (condition.type_ == condition::RACK_AWARE && condition.status == "False");
            let event = Event {
                type_: if bad {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: condition.reason.clone(),
                note: Some(format!(
                    "{} is {}: {}",
                    condition.type_, condition.status, condition.message
                )),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
                tracing::warn!(%error, reason = %condition.reason, "could not record an Event");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} '{name}' has no namespace; Tributary resources are namespaced")]
    NoNamespace { kind: &'static str, name: String },
    #[error("invalid Cluster spec: {0}")]
    Invalid(String),
    #[error("the cluster controller failed: {0}")]
    Controller(#[from] tributary_broker::controller::ControllerError),
}
