//! Helpers over the Kubernetes API that every part of the operator shares: its field
//! manager, server-side apply of an owned object, and reading an API error's status.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "tributary-operator";

/// Whether the API server answered `error` with HTTP status `code` (404, 409, ...).
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Applies `object` in `namespace` with server-side apply as [`MANAGER`], taking over
/// fields other managers set, and returns what the API server holds afterwards.
pub async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}
