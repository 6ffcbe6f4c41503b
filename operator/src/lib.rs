//! The Tributary operator: `Cluster` and `Topic` custom resources, the objects a Cluster
//! becomes, and (hosted here) the cluster controller.

pub mod cluster_reconciler;
pub mod context;
pub mod crd;
pub mod hosting;
pub mod kube_store;
pub mod resources;
pub mod topic_reconciler;

#[cfg(test)]
mod fake_api;
