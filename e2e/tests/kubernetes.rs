//! The operator's examples on a real Kubernetes cluster: the cluster of
//! examples/cluster.yaml with the topics of examples/topics.yaml, each test in a namespace
//! of its own. They need the operator installed watching all namespaces (`e2e/kind.sh`
//! does all of it) and print `skipped: ...` and pass where no cluster is reachable.
//! Records go in and out through the `tributary` CLI inside a broker pod (see
//! `tributary_e2e::cli` for why).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kube::Api;
use kube::ResourceExt;
use kube::api::DeleteParams;
use tributary_e2e::access::cluster_or_skip;
use tributary_e2e::example_cluster::{COMMAND_TIMEOUT, ExampleCluster, produce_args};
use tributary_e2e::records::{self, check_read_back};
use tributary_e2e::wait::{self, Check};
use tributary_operator::topic_reconciler::FINALIZER;

/// A killed broker's pod back, in sync, and the cluster settled again.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(420);
/// Two brokers added (or drained and removed) and the partitions rebalanced.
const SCALE_TIMEOUT: Duration = Duration::from_secs(600);
/// A deleted topic gone from the controller and the brokers.
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);
/// The grace period the partition leader's pod is deleted with: the shortest that is not a
/// force deletion. A force deletion (0) removes the pod from the API at once, so the
/// StatefulSet starts its replacement while the kubelet still stops the old container
/// gracefully, with the pod's whole termination grace period (kubernetes/kubernetes#115819,
/// #120449): the new broker finds its data directory locked and restarts until the old one
/// has shut down cleanly, which is no kill at all. With one second the kubelet stops the
/// broker within about two (its preStop hook and its shutdown are cut short), and the
/// replacement starts only once the old pod is gone.
const KILL_GRACE_SECONDS: u32 = 1;

/// The first topic of examples/topics.yaml.
fn first_topic(example: &ExampleCluster) -> anyhow::Result<String> {
    example
        .topic_names
        .first()
        .cloned()
        .context("examples/topics.yaml has no topic")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_cluster_becomes_ready_and_serves_produce_and_consume() -> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client, "produce-consume").await?;
    let cluster = example.cluster().await?;
    let brokers = cluster.status.unwrap_or_default().brokers;
    ensure!(
        brokers.len() == 3 && brokers.iter().all(|b| b.alive),
        "expected brokers 0, 1 and 2 in session, got {}",
        tributary_e2e::status::brokers(&brokers)
    );
    let topic = first_topic(&example)?;
    let spec = example.topic(&topic).await?.spec;
    let partitions = tributary_e2e::status::partitions(&example.topic(&topic).await?)?;
    ensure!(
        partitions.len() == spec.partitions as usize
            && partitions
                .iter()
                .all(|p| Some(p.replicas.len() as i32) == spec.replication_factor),
        "the Topic {topic} status does not match its spec: {partitions:?}"
    );

    let lines = records::keyed_lines("basic", 600);
    let acked = example.produce_all(0, &topic, &lines).await?;
    // Keyed records land where Kafka's partitioner puts them, which reaches every partition.
    for ack in &acked {
        let expected = records::partition_of(&lines[ack.line], spec.partitions as u32);
        ensure!(
            ack.partition == expected,
            "{:?} went to partition {}, Kafka's partitioner says {expected}",
            lines[ack.line],
            ack.partition
        );
    }
    let used: BTreeSet<i32> = acked.iter().map(|a| a.partition).collect();
    ensure!(
        used.len() == partitions.len(),
        "the records reached only partitions {used:?}"
    );
    let read = example.consume_all(1, &topic, Some(lines.len())).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_partition_leader_while_producing_with_acks_all_loses_no_acknowledged_record()
-> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client, "kill-leader").await?;
    let topic = first_topic(&example)?;
    let before = tributary_e2e::status::partitions(&example.topic(&topic).await?)?;
    let partition0 = before.first().context("partition 0 has no status")?.clone();
    let victim = partition0.leader;
    let victim_pod = example.pod(victim);
    let victim_uid = example.pods.get(&victim_pod).await?.metadata.uid;
    // The producer runs in another broker's pod, which stays up.
    let producer_broker = (victim + 1) % 3;
    println!(
        "partition 0 is led by broker {victim} (epoch {}); producing from broker {producer_broker}'s pod",
        partition0.leader_epoch
    );

    let lines = records::keyed_lines("kill", 3000);
    let mut producer = example
        .cli
        .start(&example.pod(producer_broker), &produce_args(&topic))
        .await?;
    let chunks: Vec<&[String]> = lines.chunks(100).collect();
    let kill_after = chunks.len() / 3;
    // Lines written to the producer. It stops reading when a line cannot be sent (and
    // says so): then what it printed tells more than the failed write.
    let mut written = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if let Err(error) = producer.write(&records::input(chunk)).await {
            println!("stopped writing after {written} records: {error:#}");
            break;
        }
        written += chunk.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if i + 1 == kill_after {
            println!(
                "deleting pod {victim_pod} (grace period {KILL_GRACE_SECONDS} s) after {} records",
                (i + 1) * 100
            );
            example
                .pods
                .delete(
                    &victim_pod,
                    &DeleteParams::default().grace_period(KILL_GRACE_SECONDS),
                )
                .await
                .with_context(|| format!("deleting the pod {victim_pod}"))?;
        }
    }
    let output = producer.finish(COMMAND_TIMEOUT).await?;
    let after_kill = kill_after * 100;
    ensure!(
        written > after_kill,
        "the producer took only {written} records, not one after the leader was killed (exit code {:?}): {}",
        output.code,
        output.stderr.trim()
    );
    let acked = records::acknowledged(&output.stdout, &output.stderr, written)?;
    println!(
        "{} of {written} records acknowledged (producer exit code {:?})",
        acked.len(),
        output.code
    );
    ensure!(
        acked.iter().any(|a| a.line >= after_kill),
        "no record sent after the leader was killed was acknowledged: {}",
        output.stderr.trim()
    );

    example
        .wait_pod_replaced(&victim_pod, victim_uid, RECOVERY_TIMEOUT)
        .await?;
    example
        .wait_settled("the killed broker to rejoin", RECOVERY_TIMEOUT)
        .await?;
    let now = example.wait_topic_ready(&topic).await?;
    let epoch = tributary_e2e::status::partitions(&now)?
        .first()
        .map_or(-1, |p| p.leader_epoch);
    ensure!(
        epoch > partition0.leader_epoch,
        "partition 0's leader epoch is still {epoch}: its leadership never moved"
    );
    let read = example.consume_all(producer_broker, &topic, None).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_three_to_five_to_three_rebalances_and_keeps_the_data() -> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client, "scale").await?;
    let topic = first_topic(&example)?;
    let lines = records::keyed_lines("scale", 1000);
    let acked = example.produce_all(0, &topic, &lines).await?;

    example.set_replicas(5).await?;
    let grown = example
        .wait_balanced("scaling to 5 brokers", SCALE_TIMEOUT)
        .await?;
    let brokers = grown.status.unwrap_or_default().brokers;
    println!("5 brokers: {}", tributary_e2e::status::brokers(&brokers));
    ensure!(
        brokers.iter().filter(|b| b.id >= 3).all(|b| b.replicas > 0),
        "the new brokers hold no replicas: {}",
        tributary_e2e::status::brokers(&brokers)
    );
    let read = example.consume_all(0, &topic, Some(lines.len())).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;

    example.set_replicas(3).await?;
    let shrunk = example
        .wait_balanced("scaling back to 3 brokers", SCALE_TIMEOUT)
        .await?;
    println!(
        "3 brokers: {}",
        tributary_e2e::status::brokers(&shrunk.status.unwrap_or_default().brokers)
    );
    for gone in [3, 4] {
        let pod = example.pod(gone);
        wait::until(
            &format!("the pod {pod} to be removed"),
            SCALE_TIMEOUT,
            || async {
                Ok(match example.pods.get_opt(&pod).await? {
                    None => Check::Done(()),
                    Some(_) => Check::Waiting(format!("{pod} still exists")),
                })
            },
        )
        .await?;
    }
    example.wait_topic_ready(&topic).await?;
    let read = example.consume_all(0, &topic, Some(lines.len())).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

/// Whether a broker's metrics still show a replica of `topic`: its log gauges are
/// rendered from the replicas the broker holds, one per partition directory.
fn holds_replica(metrics: &str, topic: &str) -> bool {
    let label = format!("topic=\"{topic}\"");
    metrics.lines().any(|line| {
        (line.starts_with("tributary_log_size_bytes{")
            || line.starts_with("tributary_log_end_offset{"))
            && line.contains(&label)
    })
}

/// What `tributary topic list --output json` and `tributary topic describe`, run from
/// broker `from`'s pod, say of `topic`: None once both say it does not exist, else what
/// still shows it.
async fn still_listed(
    example: &ExampleCluster,
    from: i32,
    topic: &str,
) -> anyhow::Result<Option<String>> {
    let listed = example
        .tributary(from, &["topic", "list", "--output", "json"])
        .await?
        .expect_success()?;
    let names: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout)
        .with_context(|| format!("topic list --output json printed {:?}", listed.stdout))?;
    if names.iter().any(|t| t["name"] == topic) {
        return Ok(Some(format!(
            "`tributary topic list` still lists {topic}: {}",
            listed.stdout.trim()
        )));
    }
    let described = example
        .tributary(from, &["topic", "describe", topic])
        .await?;
    if described.success() || !described.stderr.contains("unknown topic") {
        return Ok(Some(format!(
            "`tributary topic describe {topic}` should fail with unknown topic, got exit code {:?}: {}{}",
            described.code,
            described.stdout.trim(),
            described.stderr.trim()
        )));
    }
    Ok(None)
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_topic_deletes_its_data() -> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client.clone(), "delete-topic").await?;
    let topic = first_topic(&example)?;
    let lines = records::keyed_lines("delete", 300);
    example.produce_all(0, &topic, &lines).await?;
    let before = example.topic(&topic).await?;
    ensure!(
        before.finalizers().iter().any(|f| f == FINALIZER),
        "the Topic {topic} does not hold the finalizer {FINALIZER} (it has {:?}): deleting it would not delete the topic",
        before.finalizers()
    );
    let old_id = before.status.unwrap_or_default().topic_id;
    // The brokers' replicas are read from /metrics below: first make sure the metrics
    // show them now, so that their absence later means something.
    for broker in 0..3 {
        let metrics = example.broker_metrics(broker).await?;
        ensure!(
            holds_replica(&metrics, &topic),
            "broker {broker}'s /metrics shows no replica of {topic} before the delete (no tributary_log_size_bytes or tributary_log_end_offset with topic=\"{topic}\"):\n{metrics}"
        );
    }

    example
        .topics
        .delete(&topic, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting the Topic {topic}"))?;
    wait::until(
        &format!("the Topic {topic} to be gone (its finalizer deletes the topic first)"),
        DELETE_TIMEOUT,
        || async {
            Ok(match example.topics.get_opt(&topic).await? {
                None => Check::Done(()),
                Some(t) => Check::Waiting(format!("finalizers {:?}", t.metadata.finalizers)),
            })
        },
    )
    .await?;

    // The cluster no longer knows the topic. The finalizer goes once the controller has
    // deleted it; the brokers, which answer list and describe from their own copy of the
    // metadata, apply that a moment later.
    wait::until(
        &format!("the brokers to forget {topic}"),
        DELETE_TIMEOUT,
        || async {
            Ok(match still_listed(&example, 0, &topic).await? {
                None => Check::Done(()),
                Some(shown) => Check::Waiting(shown),
            })
        },
    )
    .await?;

    // The brokers dropped their replicas. The broker image has no shell (no `ls` through
    // exec), so this reads each broker's /metrics through the API server's pod proxy:
    // its per-partition log gauges are rendered from the replicas the broker holds, and a
    // replica leaves that set when the broker applies the topic's deletion.
    for broker in 0..3 {
        wait::until(
            &format!("broker {broker} to drop its replicas of {topic}"),
            DELETE_TIMEOUT,
            || async {
                let metrics = example.broker_metrics(broker).await?;
                Ok(if holds_replica(&metrics, &topic) {
                    Check::Waiting(format!(
                        "{}'s /metrics still shows {topic}'s logs",
                        example.pod(broker)
                    ))
                } else {
                    Check::Done(())
                })
            },
        )
        .await?;
    }

    // Made again, the topic starts empty: nothing of the old data is served.
    let topics = tributary_e2e::repo_root().join("examples/topics.yaml");
    tributary_e2e::manifest::apply_file(&client, example.namespace.name(), &topics).await?;
    let again = example.wait_topic_ready(&topic).await?;
    let new_id = again.status.unwrap_or_default().topic_id;
    ensure!(
        new_id.is_some() && new_id != old_id,
        "the re-created topic has the old topic id {old_id:?}"
    );
    let read = example.consume_all(0, &topic, None).await?;
    if !read.is_empty() {
        bail!(
            "the re-created topic {topic} serves {} old records, the first at partition {} offset {}",
            read.len(),
            read[0].partition,
            read[0].offset
        );
    }
    example.passed();
    Ok(())
}

#[test]
fn replica_metrics_are_told_apart_from_topic_counters() {
    let metrics = "tributary_bytes_in_total{topic=\"orders\"} 10\n\
                   tributary_log_size_bytes{partition=\"0\",topic=\"other\"} 0\n";
    assert!(!holds_replica(metrics, "orders"));
    let holding = "tributary_log_end_offset{partition=\"2\",topic=\"orders\"} 7\n";
    assert!(holds_replica(holding, "orders"));
}

/// Writes `lines` to `producer`, 100 every 200 ms, until `done` says stop (checked between
/// chunks) or the lines run out; returns how many were written.
async fn feed<F, Fut>(
    producer: &mut tributary_e2e::cli::Running,
    lines: &[String],
    mut done: F,
) -> anyhow::Result<usize>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let mut written = 0;
    for chunk in lines.chunks(100) {
        if done().await? {
            break;
        }
        producer.write(&records::input(chunk)).await?;
        written += chunk.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(written)
}

/// The pod's uid, if it is ready.
async fn ready_uid(example: &ExampleCluster, pod: &str) -> anyhow::Result<Option<String>> {
    let Some(pod) = example.pods.get_opt(pod).await? else {
        return Ok(None);
    };
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Ok(ready.then(|| pod.metadata.uid.clone()).flatten())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_from_a_config_change_under_acks_all_load_fails_no_send()
-> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client, "roll").await?;
    let topic = first_topic(&example)?;
    let mut old = Vec::new();
    for id in 0..3 {
        old.push(example.pods.get(&example.pod(id)).await?.metadata.uid);
    }
    // The StatefulSet rolls from the highest ordinal down: the first producer runs in
    // broker 0's pod while 2 and 1 roll, the second in the new pod of broker 2 while 0 rolls.
    let rolled = |ids: Vec<i32>| {
        let (example, old) = (&example, &old);
        move || {
            let ids = ids.clone();
            async move {
                for id in ids {
                    let uid = ready_uid(example, &example.pod(id)).await?;
                    if uid.is_none() || uid == old[id as usize] {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    };
    let lines = records::keyed_lines("roll", 120_000);
    let mut producer = example
        .cli
        .start(&example.pod(0), &produce_args(&topic))
        .await?;
    let first = feed(&mut producer, &lines[..1_000], || async { Ok(false) }).await?;
    // A changed value of the brokers' configuration: a new ConfigMap hash in the pod
    // template, so a rolling restart.
    let patch = serde_json::json!({"spec": {"config": {"retentionMs": 604_800_001}}});
    example
        .clusters
        .patch(
            &example.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    println!("changed retentionMs: the brokers roll");
    let written = first + feed(&mut producer, &lines[first..80_000], rolled(vec![2, 1])).await?;
    let output = producer.finish(COMMAND_TIMEOUT).await?.expect_success()?;
    let mut acked = records::acknowledged(&output.stdout, &output.stderr, written)?;
    ensure!(
        acked.len() == written,
        "{} of {written} records sent during the roll of brokers 2 and 1 were acknowledged: {}",
        acked.len(),
        output.stderr.trim()
    );
    ensure!(
        written < 80_000,
        "brokers 2 and 1 did not roll while 79,000 records went (160 s)"
    );
    println!("{written} records acknowledged while brokers 2 and 1 rolled");

    let mut producer = example
        .cli
        .start(&example.pod(2), &produce_args(&topic))
        .await?;
    let rest = &lines[written..];
    let more = feed(&mut producer, rest, rolled(vec![2, 1, 0])).await?;
    ensure!(
        more < rest.len(),
        "broker 0 did not roll while {more} records went"
    );
    let output = producer.finish(COMMAND_TIMEOUT).await?.expect_success()?;
    let second = records::acknowledged(&output.stdout, &output.stderr, more)?;
    ensure!(
        second.len() == more,
        "{} of {more} records sent during the roll of broker 0 were acknowledged: {}",
        second.len(),
        output.stderr.trim()
    );
    println!("{more} records acknowledged while broker 0 rolled");
    acked.extend(second.into_iter().map(|mut a| {
        a.line += written;
        a
    }));
    example
        .wait_settled("the rolled cluster", RECOVERY_TIMEOUT)
        .await?;
    example.wait_topic_ready(&topic).await?;
    let all = &lines[..written + more];
    let read = example.consume_all(1, &topic, Some(all.len())).await?;
    check_read_back(all, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_a_whole_node_while_producing_with_acks_all_loses_no_acknowledged_record()
-> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client.clone(), "lose-node").await?;
    let topic = first_topic(&example)?;
    let partitions = tributary_e2e::status::partitions(&example.topic(&topic).await?)?;
    let victim = partitions
        .first()
        .context("partition 0 has no status")?
        .leader;
    let victim_pod = example.pods.get(&example.pod(victim)).await?;
    let node = victim_pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("the leader's pod is not bound to a node")?;
    let producer_broker = (0..3).find(|id| *id != victim).context("three brokers")?;
    let producer_pod = example.pods.get(&example.pod(producer_broker)).await?;
    ensure!(
        producer_pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            != Some(node.as_str()),
        "brokers {victim} and {producer_broker} share the node {node}: the anti-affinity did not spread them"
    );
    println!(
        "partition 0 is led by broker {victim} on {node}; producing from broker {producer_broker}'s pod"
    );

    let lines = records::keyed_lines("node", 3000);
    let mut producer = example
        .cli
        .start(&example.pod(producer_broker), &produce_args(&topic))
        .await?;
    let first = feed(&mut producer, &lines[..1000], || async { Ok(false) }).await?;
    // The node is gone (as a cloud deletes a failed machine's Node): its object and then
    // every pod bound to it, at once.
    println!("deleting the node {node} and its pods");
    Api::<Node>::all(client.clone())
        .delete(&node, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting the node {node}"))?;
    let all_pods: Api<Pod> = Api::all(client.clone());
    let on_node = all_pods
        .list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    for pod in on_node {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        pods.delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await
            .with_context(|| format!("deleting the pod {} of the lost node", pod.name_any()))?;
    }
    let written = first + feed(&mut producer, &lines[first..], || async { Ok(false) }).await?;
    let output = producer.finish(COMMAND_TIMEOUT).await?;
    let acked = records::acknowledged(&output.stdout, &output.stderr, written)?;
    println!(
        "{} of {written} records acknowledged (producer exit code {:?})",
        acked.len(),
        output.code
    );
    ensure!(
        acked.iter().any(|a| a.line >= first),
        "no record sent after the node was lost was acknowledged: {}",
        output.stderr.trim()
    );
    example
        .wait_pod_replaced(
            &example.pod(victim),
            victim_pod.metadata.uid.clone(),
            RECOVERY_TIMEOUT,
        )
        .await?;
    example
        .wait_settled(
            "the lost node's broker to come back elsewhere",
            RECOVERY_TIMEOUT,
        )
        .await?;
    example.wait_topic_ready(&topic).await?;
    let read = example.consume_all(producer_broker, &topic, None).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_operator_leader_mid_rebalance_still_ends_balanced_with_the_data()
-> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Pod;
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client.clone(), "operator-kill").await?;
    let topic = first_topic(&example)?;
    let lines = records::keyed_lines("operator", 1000);
    let acked = example.produce_all(0, &topic, &lines).await?;
    let (namespace, lease_name) = tributary_e2e::operator::leader_lease(&client).await?;
    let lease = Api::<Lease>::namespaced(client.clone(), &namespace)
        .get(&lease_name)
        .await?;
    let leader = lease
        .spec
        .and_then(|s| s.holder_identity)
        .context("the operator's Lease has no holder")?;
    example.set_replicas(5).await?;
    // Mid-rebalance: the new brokers are up and replicas are moving.
    wait::until(
        "the rebalance onto brokers 3 and 4 to start",
        SCALE_TIMEOUT,
        || async {
            let cluster = example.cluster().await?;
            let moving = cluster
                .status
                .unwrap_or_default()
                .brokers
                .iter()
                .any(|b| b.id >= 3 && b.replicas > 0);
            Ok(if moving {
                Check::Done(())
            } else {
                Check::Waiting("no replica on brokers 3 or 4 yet".into())
            })
        },
    )
    .await?;
    println!("killing the operator's leader pod {leader} mid-rebalance");
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .delete(&leader, &DeleteParams::default().grace_period(0))
        .await
        .with_context(|| format!("deleting the operator pod {leader}"))?;
    // Another replica takes the Lease once the killed holder's lease runs out.
    let leases = Api::<Lease>::namespaced(client.clone(), &namespace);
    let holder = wait::until(
        "another operator replica to lead",
        RECOVERY_TIMEOUT,
        || async {
            let holder = leases
                .get(&lease_name)
                .await?
                .spec
                .and_then(|s| s.holder_identity);
            Ok(match holder {
                Some(h) if h != leader && !h.is_empty() => Check::Done(Some(h)),
                other => Check::Waiting(format!("the Lease is held by {other:?}")),
            })
        },
    )
    .await?;
    let grown = example
        .wait_balanced("the rebalance under a new operator leader", SCALE_TIMEOUT)
        .await?;
    println!(
        "balanced under {}: {}",
        holder.unwrap_or_default(),
        tributary_e2e::status::brokers(&grown.status.unwrap_or_default().brokers)
    );
    example.wait_topic_ready(&topic).await?;
    let read = example.consume_all(0, &topic, Some(lines.len())).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

/// The Kafka client image of the Kafka-client test; `e2e/local.sh` maps it to the
/// machine's kcat.
const KCAT_IMAGE: &str = "docker.io/edenhill/kcat:1.7.1";

/// Runs kcat with `args` as a pod (with `input` mounted at /tmp/input) until it ends; returns
/// its exit code and log.
async fn run_kcat(
    example: &ExampleCluster,
    name: &str,
    args: &[String],
    input: Option<&str>,
) -> anyhow::Result<(i32, String)> {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    let ns = example.namespace.name().to_string();
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "kcat", "image": KCAT_IMAGE, "args": args}],
        },
    });
    if let Some(text) = input {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}-input"), "namespace": ns},
            "data": {"records.txt": text},
        }))?;
        Api::<ConfigMap>::namespaced(example.client.clone(), &ns)
            .create(&Default::default(), &map)
            .await?;
        pod["spec"]["volumes"] =
            serde_json::json!([{"name": "input", "configMap": {"name": format!("{name}-input")}}]);
        pod["spec"]["containers"][0]["volumeMounts"] =
            serde_json::json!([{"name": "input", "mountPath": "/tmp/input"}]);
    }
    let pod: Pod = serde_json::from_value(pod)?;
    example.pods.create(&Default::default(), &pod).await?;
    let code = wait::until(
        &format!("the kcat pod {name} to finish"),
        COMMAND_TIMEOUT,
        || async {
            let pod = example.pods.get(name).await?;
            let status = pod.status.unwrap_or_default();
            let terminated = status
                .container_statuses
                .unwrap_or_default()
                .first()
                .and_then(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code));
            Ok(match (status.phase.as_deref(), terminated) {
                (Some("Succeeded" | "Failed"), Some(code)) => Check::Done(code),
                (phase, _) => Check::Waiting(format!("phase {phase:?}")),
            })
        },
    )
    .await?;
    let log = example.pods.logs(name, &Default::default()).await?;
    Ok((code, log))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_client_in_a_pod_produces_and_consumes_through_the_client_service()
-> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client, "kafka-client").await?;
    let topic = first_topic(&example)?;
    let cluster = example.cluster().await?;
    let names = tributary_operator::resources::Names::of(&cluster);
    let bootstrap = format!("{}.{}.svc:9092", names.client, example.namespace.name());
    let lines = records::keyed_lines("kcat", 500);
    let produce: Vec<String> = [
        "-b",
        &bootstrap,
        "-t",
        &topic,
        "-P",
        "-K",
        ":",
        "-X",
        "acks=all",
        "-X",
        "enable.idempotence=true",
        "-l",
        "/tmp/input/records.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let text = String::from_utf8(records::input(&lines))?;
    let (code, log) = run_kcat(&example, "kcat-produce", &produce, Some(&text)).await?;
    ensure!(code == 0, "kcat -P exited with {code}: {log}");
    let consume: Vec<String> = [
        "-b",
        &bootstrap,
        "-t",
        &topic,
        "-C",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k:%s\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, log) = run_kcat(&example, "kcat-consume", &consume, None).await?;
    ensure!(code == 0, "kcat -C exited with {code}: {log}");
    let mut read: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    read.sort_unstable();
    let mut sent: Vec<&str> = lines.iter().map(String::as_str).collect();
    sent.sort_unstable();
    ensure!(
        read == sent,
        "kcat read {} records back for the {} it produced (first read: {:?})",
        read.len(),
        sent.len(),
        read.first()
    );
    println!(
        "kcat produced {} records through {bootstrap} and read each back once",
        sent.len()
    );
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn altering_a_topic_manifest_grows_its_partitions_and_changes_its_config()
-> anyhow::Result<()> {
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client.clone(), "alter-topic").await?;
    let topic = first_topic(&example)?;
    // The manifest edited and applied again, as `kubectl apply` would.
    let mut manifest = tributary_e2e::manifest::documents(
        &tributary_e2e::repo_root().join("examples/topics.yaml"),
    )?
    .into_iter()
    .find(|o| o.name_any() == topic)
    .context("examples/topics.yaml holds the topic")?;
    manifest.metadata.namespace = Some(example.namespace.name().to_string());
    manifest.data["spec"]["partitions"] = serde_json::json!(6);
    manifest.data["spec"]["config"]["retention.ms"] = serde_json::json!("3600000");
    let (resource, _) = kube::discovery::pinned_kind(
        &client,
        &kube::api::GroupVersionKind::gvk("tributary.dev", "v1alpha1", "Topic"),
    )
    .await?;
    Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        example.namespace.name(),
        &resource,
    )
    .patch(
        &topic,
        &kube::api::PatchParams::apply(tributary_e2e::manifest::FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(&manifest),
    )
    .await
    .context("applying the edited Topic")?;
    let grown = example.wait_topic_ready(&topic).await?;
    let status = grown.status.clone().unwrap_or_default();
    ensure!(
        status.partition_count == Some(6) && tributary_e2e::status::partitions(&grown)?.len() == 6,
        "the Topic {topic} has {:?} partitions after asking for 6",
        status.partition_count
    );
    ensure!(
        status.config.get("retention.ms").map(String::as_str) == Some("3600000"),
        "the controller records retention.ms as {:?}, not the applied 3600000",
        status.config.get("retention.ms")
    );
    // The brokers know the new partitions: keyed records reach all six.
    let lines = records::keyed_lines("grown", 600);
    let acked = example.produce_all(0, &topic, &lines).await?;
    let used: BTreeSet<i32> = acked.iter().map(|a| a.partition).collect();
    ensure!(
        used.len() == 6,
        "the records reached only partitions {used:?} of 6"
    );
    for ack in &acked {
        ensure!(
            ack.partition == records::partition_of(&lines[ack.line], 6),
            "{:?} went to partition {}, not where Kafka's partitioner puts it among 6",
            lines[ack.line],
            ack.partition
        );
    }
    let read = example.consume_all(1, &topic, Some(lines.len())).await?;
    check_read_back(&lines, &acked, &read).map_err(anyhow::Error::msg)?;
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn racks_come_from_the_nodes_zones_when_the_cluster_asks_for_them() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let example = ExampleCluster::start(client.clone(), "racks").await?;
    let key = "topology.kubernetes.io/zone";
    let patch = serde_json::json!({"spec": {"rack": {"topologyKey": key}}});
    example
        .clusters
        .patch(
            &example.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    // The zones the brokers' nodes are in.
    let mut zones = BTreeSet::new();
    for id in 0..3 {
        let pod = example.pods.get(&example.pod(id)).await?;
        let node = pod
            .spec
            .and_then(|s| s.node_name)
            .context("an unscheduled broker")?;
        let node = Api::<Node>::all(client.clone()).get(&node).await?;
        if let Some(zone) = node.labels().get(key) {
            zones.insert(zone.clone());
        }
    }
    ensure!(
        !zones.is_empty(),
        "no broker's node has the label {key}; label the nodes (kind: see e2e/kind-config.yaml)"
    );
    let cluster = wait::until("the Cluster to be rack-aware", RECOVERY_TIMEOUT, || async {
        let cluster = example.cluster().await?;
        let conditions = cluster.status.clone().unwrap_or_default().conditions;
        let rack = conditions.iter().find(|c| c.type_ == "RackAware");
        Ok(match rack {
            Some(c)
                if c.status == "True" && c.observed_generation == cluster.metadata.generation =>
            {
                Check::Done(c.message.clone())
            }
            other => Check::Waiting(format!("RackAware is {other:?}")),
        })
    })
    .await?;
    for zone in &zones {
        ensure!(
            cluster.contains(zone.as_str()),
            "RackAware says {cluster:?}, which does not name the zone {zone}"
        );
    }
    println!("rack-aware: {cluster}");
    example
        .wait_settled("the rack-aware cluster", RECOVERY_TIMEOUT)
        .await?;
    example.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_container_is_restarted_with_its_last_exit_recorded() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let Some(client) = cluster_or_skip().await else {
        return Ok(());
    };
    let mut namespace = tributary_e2e::namespace::TestNamespace::create(&client, "crash").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace.name());
    // kcat without a mode exits 1 at once: the kubelet (or the node agent) restarts it.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "crasher"},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{"name": "kcat", "image": KCAT_IMAGE, "args": ["-b", "nowhere:9092"]}],
        },
    }))?;
    pods.create(&Default::default(), &pod).await?;
    let (restarts, code) = wait::until(
        "the crashing container to be restarted twice",
        COMMAND_TIMEOUT,
        || async {
            let status = pods.get("crasher").await?.status.unwrap_or_default();
            let container = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .next();
            let restarts = container.as_ref().map_or(0, |c| c.restart_count);
            let code = container
                .and_then(|c| c.last_state?.terminated)
                .map(|t| t.exit_code);
            Ok(match code {
                Some(code) if restarts >= 2 => Check::Done((restarts, code)),
                _ => Check::Waiting(format!("{restarts} restarts, last exit {code:?}")),
            })
        },
    )
    .await?;
    ensure!(
        code != 0,
        "the last run of a crashing container ended with 0"
    );
    println!("restarted {restarts} times, last exit code {code}");
    namespace.passed();
    Ok(())
}
