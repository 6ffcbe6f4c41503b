use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Names, owned_meta, selector};
use crate::crd::Cluster;

/// Voluntary disruptions (node drains) take one broker at a time, so a partition with
/// replicas on three brokers keeps two in sync.
pub fn pod_disruption_budget(cluster: &Cluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(cluster, &Names::of(cluster).statefulset),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
