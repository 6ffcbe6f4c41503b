//! The Tributary operator. It reconciles `Cluster` and `Topic` resources into broker
//! StatefulSets and hosts the cluster controller; that work has its own issue. Until then
//! this binary only says so, so that nobody mistakes it for a working operator.

fn main() -> std::process::ExitCode {
    eprintln!(
        "tributary-operator {}: the Kubernetes operator is not built yet; \
         run a cluster on one machine with `tributary local up` instead",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
