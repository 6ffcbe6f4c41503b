//! Cluster DNS names for the pods, through each pod's own `/etc/hosts` (bind-mounted by
//! the sandbox), rewritten in place when Services or their endpoints change: glibc reads
//! the file at every lookup, so no DNS server and nothing of the machine's resolver
//! configuration is needed. A headless Service's name lists its endpoints, and each
//! endpoint with a hostname gets `<hostname>.<service>.<namespace>.svc`; a ClusterIP
//! Service's name is one of its ready endpoints' addresses, since no proxy serves
//! cluster IPs here (so a Service's port must equal its target port, as Tributary's do).
//! Short forms (`<service>.<namespace>`, and `<service>` within its namespace) are listed
//! as the search path would make them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

const DOMAIN: &str = "cluster.local";

/// Name → addresses, per namespace, from the watched Services and EndpointSlices.
#[derive(Default)]
pub struct Names {
    /// (namespace, name below the namespace, e.g. `svc` or `host.svc`) → addresses.
    entries: BTreeMap<(String, String), Vec<String>>,
    /// The API server's address, for `kubernetes.default`.
    api_host: String,
}

impl Names {
    pub fn new(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], api_host: &str) -> Self {
        let mut entries: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let headless: BTreeMap<(String, String), bool> = services
            .iter()
            .map(|s| {
                let ip = s
                    .spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.clone())
                    .unwrap_or_default();
                (
                    (s.namespace().unwrap_or_default(), s.name_any()),
                    ip == "None",
                )
            })
            .collect();
        for slice in slices {
            let namespace = slice.namespace().unwrap_or_default();
            let Some(service) = slice.labels().get("kubernetes.io/service-name") else {
                continue;
            };
            let Some(is_headless) = headless.get(&(namespace.clone(), service.clone())) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let Some(address) = endpoint.addresses.first() else {
                    continue;
                };
                if let Some(host) = &endpoint.hostname
                    && *is_headless
                {
                    entries
                        .entry((namespace.clone(), format!("{host}.{service}")))
                        .or_default()
                        .push(address.clone());
                }
                if ready {
                    entries
                        .entry((namespace.clone(), service.clone()))
                        .or_default()
                        .push(address.clone());
                }
            }
        }
        for addresses in entries.values_mut() {
            addresses.sort();
            addresses.dedup();
        }
        // A ClusterIP Service is one address; which one does not matter.
        for ((namespace, name), addresses) in entries.iter_mut() {
            if headless.get(&(namespace.clone(), name.clone())) == Some(&false) {
                addresses.truncate(1);
            }
        }
        Self {
            entries,
            api_host: api_host.to_string(),
        }
    }

    /// The hosts file of a pod in `namespace`.
    pub fn hosts(&self, namespace: &str, pod: &Pod, ip: Option<&str>) -> String {
        let mut out =
            String::from("# Written by the e2e node agent: this pod's view of cluster DNS.\n");
        out += "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
        let spec = pod.spec.clone().unwrap_or_default();
        let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
        if let Some(ip) = ip {
            match &spec.subdomain {
                Some(sub) => {
                    out += &format!("{ip}\t{hostname}.{sub}.{namespace}.svc.{DOMAIN}\t{hostname}\n")
                }
                None => out += &format!("{ip}\t{hostname}\n"),
            }
        }
        let api = (String::from("default"), String::from("kubernetes"));
        let mut lines = vec![(api, vec![self.api_host.clone()])];
        lines.extend(self.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        for ((ns, name), addresses) in lines {
            let mut names = vec![
                format!("{name}.{ns}.svc.{DOMAIN}"),
                format!("{name}.{ns}.svc"),
            ];
            if !name.contains('.') {
                names.push(format!("{name}.{ns}"));
                if ns == namespace {
                    names.push(name.clone());
                }
            }
            for address in addresses {
                out += &format!("{address}\t{}\n", names.join(" "));
            }
        }
        out
    }

    /// Rewrites a pod's hosts file in place (the bind mount keeps the inode) when it
    /// changed. It never shrinks: a shorter text is padded with a comment to the old
    /// length, so a lookup reading during the write never sees the tail of an old line.
    pub fn write_hosts(
        &self,
        path: &Path,
        namespace: &str,
        pod: &Pod,
        ip: Ipv4Addr,
    ) -> anyhow::Result<()> {
        let mut text = self.hosts(namespace, pod, Some(&ip.to_string()));
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if old.trim_end_matches([' ', '#', '\n']) == text.trim_end_matches([' ', '#', '\n']) {
            return Ok(());
        }
        if text.len() < old.len() {
            let pad = old.len() - text.len();
            text.push('#');
            text.push_str(&" ".repeat(pad.saturating_sub(2)));
            if pad >= 2 {
                text.push('\n');
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, cluster_ip: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"clusterIP": cluster_ip},
            }))
            .unwrap(),
        )
    }

    fn slice(namespace: &str, service: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{service}-x"), "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_hosts_file_names_services_and_stateful_pods_as_cluster_dns_would() {
        let services = [
            service("s", "demo-brokers", "None"),
            service("s", "demo", "10.0.0.20"),
            service("other", "api", "10.0.0.30"),
        ];
        let slices = [
            slice(
                "s",
                "demo-brokers",
                serde_json::json!([
                    {"addresses": ["10.244.1.2"], "hostname": "demo-broker-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.2"], "hostname": "demo-broker-1", "conditions": {"ready": false}},
                ]),
            ),
            slice(
                "s",
                "demo",
                serde_json::json!([
                    {"addresses": ["10.244.2.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.3.2"], "conditions": {"ready": false}},
                ]),
            ),
            slice(
                "other",
                "api",
                serde_json::json!([{"addresses": ["10.244.3.3"]}]),
            ),
        ];
        let names = Names::new(&services, &slices, "127.0.0.1");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-broker-0", "namespace": "s"},
            "spec": {"containers": [], "hostname": "demo-broker-0", "subdomain": "demo-brokers"},
        }))
        .unwrap();
        let hosts = names.hosts("s", &pod, Some("10.244.1.2"));
        let line = |address: &str, name: &str| {
            hosts.lines().any(|l| {
                l.starts_with(&format!("{address}\t")) && l.split_whitespace().any(|n| n == name)
            })
        };
        // The pod's own name, as the kubelet writes it.
        assert!(
            line(
                "10.244.1.2",
                "demo-broker-0.demo-brokers.s.svc.cluster.local"
            ),
            "{hosts}"
        );
        // Each stateful pod by name, ready or not; the headless name lists ready ones.
        assert!(
            line("10.244.2.2", "demo-broker-1.demo-brokers.s.svc"),
            "{hosts}"
        );
        assert!(line("10.244.1.2", "demo-brokers.s.svc"), "{hosts}");
        assert!(!line("10.244.2.2", "demo-brokers.s.svc"), "{hosts}");
        // A ClusterIP Service is one ready endpoint; short names only in its namespace.
        assert_eq!(
            hosts
                .lines()
                .filter(|l| l.split_whitespace().any(|n| n == "demo.s.svc"))
                .count(),
            1
        );
        assert!(!line("10.244.3.2", "demo.s.svc"), "{hosts}");
        assert!(line("10.244.3.3", "api.other"), "{hosts}");
        assert!(!hosts.split_whitespace().any(|n| n == "api"), "{hosts}");
        assert!(
            line("127.0.0.1", "kubernetes.default.svc.cluster.local"),
            "{hosts}"
        );
    }
}
