//! Whether a Kubernetes cluster is reachable. Each test asks first and, when none is,
//! prints one line saying why and passes, within a few seconds.

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

/// How long finding the API server and asking its version may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Set to anything but empty or `0` to skip the cluster tests even where a cluster is
/// reachable (say, a kubeconfig for a cluster that is not for testing).
pub const SKIP_VARIABLE: &str = "TRIBUTARY_E2E_SKIP";

/// A client for the cluster the kubeconfig (or the pod's service account) points at, or
/// why there is none.
pub async fn reachable_cluster() -> Result<Client, String> {
    if std::env::var(SKIP_VARIABLE).is_ok_and(|v| !v.is_empty() && v != "0") {
        return Err(format!("{SKIP_VARIABLE} is set"));
    }
    if let Some(missing) = no_configuration() {
        return Err(format!("no Kubernetes cluster reachable ({missing})"));
    }
    let client = match tokio::time::timeout(REACH_TIMEOUT, Client::try_default()).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return Err(format!("cluster unreachable: {error}")),
        Err(_) => {
            return Err(format!(
                "cluster unreachable: no client configuration within {REACH_TIMEOUT:?}"
            ));
        }
    };
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(error)) => Err(format!("cluster unreachable: {error}")),
        Err(_) => Err(format!(
            "cluster unreachable: the API server did not answer within {REACH_TIMEOUT:?}"
        )),
    }
}

/// The client for a test, or None after printing why the test is skipped.
pub async fn cluster_or_skip() -> Option<Client> {
    match reachable_cluster().await {
        Ok(client) => Some(client),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// What is missing when there is no configuration at all: not in a pod, no KUBECONFIG
/// naming an existing file, no ~/.kube/config.
fn no_configuration() -> Option<String> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return None;
    }
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(paths) => {
            let paths: Vec<PathBuf> = std::env::split_paths(&paths).collect();
            if paths.iter().any(|p| p.exists()) {
                None
            } else {
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                Some(format!(
                    "KUBECONFIG names {}, which does not exist",
                    names.join(", ")
                ))
            }
        }
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let default = home.map(|h| h.join(".kube").join("config"));
            if default.as_ref().is_some_and(|p| p.exists()) {
                None
            } else {
                Some("KUBECONFIG unset and ~/.kube/config missing".to_string())
            }
        }
    }
}
