//! The Tributary operator: `Cluster` and `Topic` custom resources, the objects a Cluster
//! becomes, and (hosted here) the cluster controller.

pub mod api;
pub mod api_access;
pub mod cluster_reconciler;
pub mod context;
pub mod crd;
pub mod hosting;
pub mod install;
pub mod kube_store;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod racks;
pub mod resources;
pub mod run;
pub mod scaling;
pub mod topic_reconciler;

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod test_support;
