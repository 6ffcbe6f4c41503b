//! Helpers of Tributary's end-to-end tests (`e2e/tests/`), which run the operator's
//! examples on a real Kubernetes cluster: usually the kind cluster `e2e/kind.sh` makes,
//! but any cluster the kubeconfig points at with the operator installed watching all
//! namespaces. Where no cluster is reachable the tests print why and pass.
//!
//! - [`access`]: whether a cluster is reachable, and the client for it.
//! - [`operator`]: the check that the CRDs and the operator are installed.
//! - [`namespace`]: a namespace per test, deleted at the end even when the test fails.
//! - [`diagnostics`]: what a failed test leaves behind: objects, events, pod logs.
//! - [`manifest`]: server-side apply of the YAML files in `examples/`.
//! - [`wait`]: polling with a deadline that says what it waited for.
//! - [`status`]: readings of a Cluster's and a Topic's status.
//! - [`cli`]: the `tributary` CLI run inside a broker pod.
//! - [`records`]: the records the tests produce, and the check that each acknowledged one
//!   is read back once and in order.
//! - [`example_cluster`]: the `demo` Cluster and its topics, made ready in a test namespace.
//! - [`dockerfile`]: a Dockerfile's stages and instructions, for the static image checks.
//! - [`local`]: a local cluster whose pods run as processes (`e2e/local.sh`), where
//!   there is no Docker.

pub mod access;
pub mod cli;
pub mod diagnostics;
pub mod dockerfile;
pub mod example_cluster;
pub mod local;
pub mod manifest;
pub mod namespace;
pub mod operator;
pub mod records;
pub mod status;
pub mod wait;

use std::path::PathBuf;

/// The repository's root directory, where `examples/` and `docker/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate is inside the repository")
        .to_path_buf()
}
