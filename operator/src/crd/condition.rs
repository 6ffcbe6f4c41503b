//! Status conditions (Ready, Reconciling, Degraded, Rebalancing, RackAware) as Kubernetes defines
//! them: one entry per type, merged per type by server-side apply.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const DEGRADED: &str = "Degraded";
pub const REBALANCING: &str = "Rebalancing";
/// Whether every scheduled broker has a rack (only when the Cluster asks for racks).
pub const RACK_AWARE: &str = "RackAware";
/// Present (True) while the pause annotation stops the operator changing the object.
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";

/// A condition of `type_`: `status` "True" or "False", a CamelCase `reason` and a message
/// for people.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// `new` conditions, keeping the transition time of those whose status did not change.
pub fn merge(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(before) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = before.last_transition_time.clone();
            }
            c
        })
        .collect()
}
