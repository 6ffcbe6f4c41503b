//! The cluster of `examples/cluster.yaml` (`demo`, three brokers) with the topics of
//! `examples/topics.yaml`, applied into a test's own namespace and waited for.

use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tributary_operator::crd::{Cluster, Topic};
use tributary_operator::resources::{GRPC_PORT, HTTP_PORT, Names};

use crate::cli::{Cli, Output};
use crate::namespace::TestNamespace;
use crate::records::{self, Acked, Consumed};
use crate::wait::{self, Check};
use crate::{manifest, operator, repo_root, status};

/// From nothing to every broker ready: volumes are provisioned and pods scheduled.
pub const START_TIMEOUT: Duration = Duration::from_secs(480);
/// A topic's partitions created, led and in sync.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(180);
/// A produce or consume command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// A consumer stops when no record has come for this long.
const CONSUME_IDLE_MS: &str = "10000";

pub struct ExampleCluster {
    pub client: Client,
    pub namespace: TestNamespace,
    /// The Cluster's name (`demo`).
    pub name: String,
    /// The Topics' names, from examples/topics.yaml.
    pub topic_names: Vec<String>,
    pub clusters: Api<Cluster>,
    pub topics: Api<Topic>,
    pub pods: Api<Pod>,
    /// The CLI, bootstrapping from the client Service.
    pub cli: Cli,
    statefulset: String,
}

impl ExampleCluster {
    /// Checks the operator is installed, makes a namespace for `test`, applies the
    /// examples there and waits until the cluster has settled and its topics are ready.
    pub async fn start(client: Client, test: &str) -> anyhow::Result<Self> {
        operator::expect_installed(&client).await?;
        let namespace = TestNamespace::create(&client, test).await?;
        let ns = namespace.name().to_string();
        let examples = repo_root().join("examples");
        let applied = manifest::apply_file(&client, &ns, &examples.join("cluster.yaml")).await?;
        let cluster: Cluster = serde_json::from_value(serde_json::to_value(&applied[0])?)
            .context("examples/cluster.yaml holds a Cluster")?;
        let topics = manifest::apply_file(&client, &ns, &examples.join("topics.yaml")).await?;
        let names = Names::of(&cluster);
        let example = Self {
            cli: Cli::new(
                &client,
                &ns,
                &format!("{}.{ns}.svc:{GRPC_PORT}", names.client),
            ),
            clusters: Api::namespaced(client.clone(), &ns),
            topics: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            name: cluster.name_any(),
            topic_names: topics.iter().map(ResourceExt::name_any).collect(),
            statefulset: names.statefulset,
            namespace,
            client,
        };
        example
            .wait_settled("the example cluster to start", START_TIMEOUT)
            .await?;
        for topic in &example.topic_names {
            example.wait_topic_ready(topic).await?;
        }
        Ok(example)
    }

    /// The pod of broker `id`.
    pub fn pod(&self, id: i32) -> String {
        format!("{}-{id}", self.statefulset)
    }

    pub async fn cluster(&self) -> anyhow::Result<Cluster> {
        Ok(self.clusters.get(&self.name).await?)
    }

    pub async fn topic(&self, name: &str) -> anyhow::Result<Topic> {
        Ok(self.topics.get(name).await?)
    }

    /// Waits until the cluster has settled (see [`status::cluster_settled`]).
    pub async fn wait_settled(&self, why: &str, timeout: Duration) -> anyhow::Result<Cluster> {
        let what = format!("{why}: the Cluster {} to settle", self.name);
        wait::until(&what, timeout, || async {
            let cluster = self.cluster().await?;
            Ok(match status::cluster_settled(&cluster) {
                Check::Done(()) => Check::Done(cluster),
                Check::Waiting(state) => Check::Waiting(state),
            })
        })
        .await
    }

    /// Waits until the cluster has settled with its brokers balanced.
    pub async fn wait_balanced(&self, why: &str, timeout: Duration) -> anyhow::Result<Cluster> {
        let what = format!(
            "{why}: the Cluster {} to settle with balanced brokers",
            self.name
        );
        wait::until(&what, timeout, || async {
            let cluster = self.cluster().await?;
            if let Check::Waiting(state) = status::cluster_settled(&cluster) {
                return Ok(Check::Waiting(state));
            }
            let brokers = cluster.status.clone().unwrap_or_default().brokers;
            Ok(match status::balanced(&brokers) {
                Ok(()) => Check::Done(cluster),
                Err(why) => Check::Waiting(why),
            })
        })
        .await
    }

    pub async fn wait_topic_ready(&self, name: &str) -> anyhow::Result<Topic> {
        wait::until(
            &format!("the Topic {name} to be ready"),
            TOPIC_TIMEOUT,
            || async {
                let topic = self.topic(name).await?;
                Ok(match status::topic_ready(&topic) {
                    Check::Done(()) => Check::Done(topic),
                    Check::Waiting(state) => Check::Waiting(state),
                })
            },
        )
        .await
    }

    /// Waits until the pod `name` exists again with a uid other than `old_uid`, and is
    /// ready.
    pub async fn wait_pod_replaced(
        &self,
        name: &str,
        old_uid: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("the pod {name} to be made again and be ready");
        wait::until(&what, timeout, || async {
            let Some(pod) = self.pods.get_opt(name).await? else {
                return Ok(Check::Waiting(format!("no pod {name}")));
            };
            if pod.metadata.uid == old_uid {
                return Ok(Check::Waiting(format!("the old pod {name} is still there")));
            }
            let status = pod.status.unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(if ready {
                Check::Done(())
            } else {
                Check::Waiting(format!(
                    "the new pod {name} is {}, not ready",
                    status.phase.unwrap_or_default()
                ))
            })
        })
        .await
    }

    /// Sets `spec.replicas`, as `kubectl scale` or an edit would.
    pub async fn set_replicas(&self, replicas: i32) -> anyhow::Result<()> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.clusters
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| {
                format!(
                    "setting replicas of the Cluster {} to {replicas}",
                    self.name
                )
            })?;
        Ok(())
    }

    /// Produces `lines` to `topic` with acks=all from the pod of broker `from`, and returns
    /// what was acknowledged; fails unless every line was.
    pub async fn produce_all(
        &self,
        from: i32,
        topic: &str,
        lines: &[String],
    ) -> anyhow::Result<Vec<Acked>> {
        let output = self
            .cli
            .run(
                &self.pod(from),
                &produce_args(topic),
                &records::input(lines),
                COMMAND_TIMEOUT,
            )
            .await?
            .expect_success()?;
        let acked = records::acknowledged(&output.stdout, &output.stderr, lines.len())?;
        if acked.len() != lines.len() {
            bail!(
                "{} of {} records were acknowledged",
                acked.len(),
                lines.len()
            );
        }
        Ok(acked)
    }

    /// Reads `topic` from the beginning, from the pod of broker `from`, until no record has
    /// come for ten seconds (or `expected` records have come).
    pub async fn consume_all(
        &self,
        from: i32,
        topic: &str,
        expected: Option<usize>,
    ) -> anyhow::Result<Vec<Consumed>> {
        let expected = expected.map(|n| n.to_string());
        let mut args = vec![
            "consume",
            topic,
            "--from-beginning",
            "--format",
            "json",
            "--timeout-ms",
            CONSUME_IDLE_MS,
        ];
        if let Some(n) = &expected {
            args.extend(["--max-messages", n.as_str()]);
        }
        let output = self
            .cli
            .run(&self.pod(from), &args, b"", COMMAND_TIMEOUT)
            .await?
            .expect_success()?;
        records::consumed(&output.stdout)
    }

    /// Broker `id`'s Prometheus metrics, read through the API server's pod proxy (the
    /// broker image has no shell to read them with through exec).
    pub async fn broker_metrics(&self, id: i32) -> anyhow::Result<String> {
        let pod = self.pod(id);
        let path = format!(
            "/api/v1/namespaces/{}/pods/{pod}:{HTTP_PORT}/proxy/metrics",
            self.namespace.name()
        );
        let request = http::Request::get(&path).body(Vec::new())?;
        self.client
            .request_text(request)
            .await
            .with_context(|| format!("reading {path}"))
    }

    /// Runs any `tributary` command from the pod of broker `from`.
    pub async fn tributary(&self, from: i32, args: &[&str]) -> anyhow::Result<Output> {
        self.cli
            .run(&self.pod(from), args, b"", COMMAND_TIMEOUT)
            .await
    }

    /// The test got to its end: its namespace is deleted without collecting diagnostics.
    pub fn passed(mut self) {
        self.namespace.passed();
    }
}

/// `tributary produce` with acks=all, keyed lines and the acknowledged offsets printed.
pub fn produce_args(topic: &str) -> Vec<&str> {
    vec![
        "produce",
        topic,
        "--acks",
        "all",
        "--key-separator",
        ":",
        "--print-offsets",
    ]
}
