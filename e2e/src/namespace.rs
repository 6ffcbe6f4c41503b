//! A fresh namespace per test, deleted when the test ends, also when it fails or panics.
//! A test that did not call [`TestNamespace::passed`] leaves its objects, events and pod
//! logs behind first (see [`crate::diagnostics`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

/// The label on every namespace the tests make.
pub const LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "tributary-e2e");
/// How long the guard waits for a deleted namespace to be gone (its broker pods stop
/// gracefully) before it lets the next test start anyway.
const DELETE_WAIT: Duration = Duration::from_secs(180);

#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    passed: bool,
}

impl TestNamespace {
    /// Creates `e2e-<test>-<random>`.
    pub async fn create(client: &Client, test: &str) -> anyhow::Result<Self> {
        let name = name_for(test);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(LABEL.0.into(), LABEL.1.into())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating the namespace {name}"))?;
        println!("namespace {name}");
        Ok(Self {
            name,
            passed: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The test got to its end: nothing to collect before deleting the namespace.
    pub fn passed(&mut self) {
        self.passed = true;
    }
}

impl Drop for TestNamespace {
    /// Runs on a thread of its own with its own runtime, so it works whether the test's
    /// runtime is still running, shutting down, or unwinding from a panic.
    fn drop(&mut self) {
        let name = self.name.clone();
        let failed = !self.passed;
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("no runtime to delete the namespace {name}: {e}"))?;
            runtime.block_on(delete(&name, failed))
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(problem)) => eprintln!("{problem}"),
            Err(_) => eprintln!("deleting the namespace {} panicked", self.name),
        }
    }
}

async fn delete(name: &str, failed: bool) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot delete the namespace {name}: {e}"))?;
    if failed {
        crate::diagnostics::collect(&client, name).await;
    }
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(name, &DeleteParams::background())
        .await
        .map_err(|e| format!("cannot delete the namespace {name}: {e}"))?;
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    while tokio::time::Instant::now() < deadline {
        match namespaces.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    Err(format!(
        "the namespace {name} is still terminating after {DELETE_WAIT:?}; going on"
    ))
}

/// `e2e-<test>-<6 hex digits>`, a valid DNS label.
fn name_for(test: &str) -> String {
    let slug: String = test
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let slug = slug.trim_matches('-');
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let random = (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff;
    format!("e2e-{slug}-{random:06x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        let name = name_for("Scaling_Three_To_Five_To_Three_Rebalances_And_Keeps_The_Data");
        assert!(name.starts_with("e2e-scaling-three-to-five"), "{name}");
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(!name.ends_with('-'));
    }
}
