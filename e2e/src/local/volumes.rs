//! A pod's volumes as directories on this machine: an emptyDir is a directory of the pod's
//! own; a claim is its bound PersistentVolume's host path, which outlives the pod;
//! ConfigMaps, Secrets, the downward API and projected service-account tokens are written
//! as files once, when the pod starts. The fsGroup owns the writable ones, as the kubelet
//! sets ownership.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    Volume,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use super::runtime::field;

/// Where kube-controller-manager's test hostPath provisioner makes volumes.
pub const PROVISIONER_ROOT: &str = "/tmp/hostpath_pv";

/// Why a pod cannot start yet (its claim is not bound): tried again later.
#[derive(Debug)]
pub struct NotYet(pub String);

impl std::fmt::Display for NotYet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotYet {}

pub struct PodVolumes<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    pub dir: &'a Path,
    pub ip: std::net::Ipv4Addr,
    pub host_ip: std::net::Ipv4Addr,
}

impl PodVolumes<'_> {
    /// Every volume of the pod, by name.
    pub async fn prepare(&self) -> anyhow::Result<BTreeMap<String, PathBuf>> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let fs_group = spec
            .security_context
            .as_ref()
            .and_then(|s| s.fs_group)
            .map(|g| g as u32);
        let mut volumes = BTreeMap::new();
        for volume in spec.volumes.clone().unwrap_or_default() {
            let path = self
                .volume(&volume)
                .await
                .with_context(|| format!("the volume {}", volume.name))?;
            // As the kubelet: never a hostPath volume, which is the machine's own folder.
            if let Some(gid) = fs_group
                && volume.host_path.is_none()
            {
                own(&path, gid)?;
            }
            volumes.insert(volume.name.clone(), path);
        }
        Ok(volumes)
    }

    async fn volume(&self, volume: &Volume) -> anyhow::Result<PathBuf> {
        let namespace = self.pod.namespace().unwrap_or_default();
        let dir = self.dir.join("volumes").join(&volume.name);
        if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir)?;
            return Ok(dir);
        }
        if let Some(host) = &volume.host_path {
            return Ok(PathBuf::from(&host.path));
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            return self.claim(&namespace, &claim.claim_name).await;
        }
        std::fs::create_dir_all(&dir)?;
        if let Some(source) = &volume.config_map {
            let data = self.config_map(&namespace, &source.name).await?;
            write_items(&dir, &data, source.items.as_deref())?;
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let data = self.secret(&namespace, &name).await?;
            write_items(&dir, &data, source.items.as_deref())?;
        } else if let Some(source) = &volume.downward_api {
            for item in source.items.clone().unwrap_or_default() {
                if let Some(f) = &item.field_ref {
                    let value = field(self.pod, &f.field_path, self.ip, self.host_ip)?;
                    write_file(&dir.join(&item.path), value.as_bytes())?;
                }
            }
        } else if let Some(projected) = &volume.projected {
            for source in projected.sources.clone().unwrap_or_default() {
                if let Some(token) = &source.service_account_token {
                    let text = self
                        .token(&namespace, token.audience.clone(), token.expiration_seconds)
                        .await?;
                    write_file(&dir.join(&token.path), text.as_bytes())?;
                } else if let Some(c) = &source.config_map {
                    let data = self.config_map(&namespace, &c.name).await?;
                    write_items(&dir, &data, c.items.as_deref())?;
                } else if let Some(s) = &source.secret {
                    let data = self.secret(&namespace, &s.name).await?;
                    write_items(&dir, &data, s.items.as_deref())?;
                } else if let Some(d) = &source.downward_api {
                    for item in d.items.clone().unwrap_or_default() {
                        if let Some(f) = &item.field_ref {
                            let value = field(self.pod, &f.field_path, self.ip, self.host_ip)?;
                            write_file(&dir.join(&item.path), value.as_bytes())?;
                        }
                    }
                }
            }
        } else {
            bail!("this node agent does not serve the volume's type: {volume:?}");
        }
        Ok(dir)
    }

    /// The host path of the volume bound to the claim.
    async fn claim(&self, namespace: &str, name: &str) -> anyhow::Result<PathBuf> {
        let claim = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| format!("the claim {namespace}/{name}"))?;
        let Some(volume) = claim
            .spec
            .and_then(|s| s.volume_name)
            .filter(|v| !v.is_empty())
        else {
            return Err(NotYet(format!("the claim {namespace}/{name} is not bound yet")).into());
        };
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get(&volume)
            .await
            .with_context(|| format!("the volume {volume}"))?;
        let spec = pv.spec.unwrap_or_default();
        let path = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .with_context(|| {
                format!("the volume {volume} is neither a hostPath nor a local volume")
            })?;
        let path = PathBuf::from(path);
        // Only the test provisioner's folders (kube-controller-manager
        // --enable-hostpath-provisioner): nothing else of the machine is made or changed.
        if !path.starts_with(PROVISIONER_ROOT) {
            bail!(
                "the volume {volume} is at {}, outside {PROVISIONER_ROOT}, the test provisioner's folder: this node agent serves only volumes it provisioned",
                path.display()
            );
        }
        std::fs::create_dir_all(&path).with_context(|| format!("making {}", path.display()))?;
        Ok(path)
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let map = Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| format!("the ConfigMap {namespace}/{name}"))?;
        let mut data: BTreeMap<String, Vec<u8>> = map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            map.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        Ok(data)
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| format!("the Secret {namespace}/{name}"))?;
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }

    /// A token for the pod's ServiceAccount, bound to the pod (TokenRequest API).
    async fn token(
        &self,
        namespace: &str,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> anyhow::Result<String> {
        let account = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.into_iter().collect(),
                expiration_seconds: expiration,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod.name_any()),
                    uid: self.pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let answer = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token for the ServiceAccount {namespace}/{account}"))?;
        answer
            .status
            .map(|s| s.token)
            .context("the token request was answered without a token")
    }
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> anyhow::Result<()> {
    match items {
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .with_context(|| format!("no key {}", item.key))?;
                write_file(&dir.join(&item.path), value)?;
            }
        }
        None => {
            for (key, value) in data {
                write_file(&dir.join(key), value)?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Gives `gid` the volume (fsGroupChangePolicy OnRootMismatch: only when its root is not
/// the group's yet), group-writable, with new files inheriting the group.
fn own(path: &Path, gid: u32) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.gid() == gid {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(next) = stack.pop() {
        let meta = std::fs::symlink_metadata(&next)?;
        std::os::unix::fs::lchown(&next, None, Some(gid))
            .with_context(|| format!("giving {} the group {gid}", next.display()))?;
        if meta.is_dir() {
            let mode = meta.permissions().mode() | 0o2070;
            std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode))?;
            for entry in std::fs::read_dir(&next)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file() {
            let mode = meta.permissions().mode() | 0o060;
            std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}
