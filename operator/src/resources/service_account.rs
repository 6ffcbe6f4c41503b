use k8s_openapi::api::core::v1::ServiceAccount;

use super::{Names, owned_meta};
use crate::crd::Cluster;

/// The brokers' own identity. Brokers do not call the Kubernetes API, so no token is
/// mounted.
pub fn service_account(cluster: &Cluster) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(cluster, &Names::of(cluster).statefulset),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
