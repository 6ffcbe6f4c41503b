use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tributary_broker::metadata::{BrokerInfo, NewTopic};
use tributary_broker::server::{ControllerLink, controller_server};

use super::*;
use crate::fake_api::FakeApi;

fn cluster(name: &str) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "streams", "uid": format!("uid-{name}")},
        "spec": {"replicas": 1},
    }))
    .unwrap()
}

/// Serves `controllers` over gRPC on an ephemeral port; the server stops with the test.
async fn serve(controllers: Controllers) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(controller_server(controllers))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    address
}

fn topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions: 1,
        replication_factor: Some(1),
        config: BTreeMap::new(),
    }
}

#[tokio::test]
async fn brokers_reach_their_own_clusters_controller_by_naming_it() {
    let api = FakeApi::new();
    let controllers = Controllers::default();
    for name in ["one", "two"] {
        let controller = controllers
            .ensure(&api.client(), &cluster(name), ControllerConfig::default())
            .await
            .unwrap();
        let registration =
            crate::test_support::registration(0, format!("{name}-broker-0"), 9095, "disk");
        controller.register_broker(registration).await.unwrap();
    }
    let address = serve(controllers.clone()).await;

    let link = ControllerLink::remote(&address, Some("streams/two")).unwrap();
    link.create_topic(topic("events"), false).await.unwrap();
    assert!(
        controllers
            .get("streams/two")
            .unwrap()
            .snapshot()
            .topics
            .contains_key("events")
    );
    assert!(
        controllers
            .get("streams/one")
            .unwrap()
            .snapshot()
            .topics
            .is_empty()
    );

    let unnamed = ControllerLink::remote(&address, None).unwrap();
    let err = unnamed.create_topic(topic("x"), false).await.unwrap_err();
    assert!(err.message().contains("tributary-cluster"), "{err}");
    let unknown = ControllerLink::remote(&address, Some("streams/three")).unwrap();
    let err = unknown.create_topic(topic("x"), false).await.unwrap_err();
    assert!(err.message().contains("'streams/three'"), "{err}");
}

#[tokio::test]
async fn a_cluster_made_again_gets_a_new_controller_and_a_gone_one_stops() {
    let api = FakeApi::new();
    let controllers = Controllers::default();
    let first = controllers
        .ensure(&api.client(), &cluster("one"), ControllerConfig::default())
        .await
        .unwrap();
    let same = controllers
        .ensure(&api.client(), &cluster("one"), ControllerConfig::default())
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    let mut remade = cluster("one");
    remade.metadata.uid = Some("uid-new".into());
    let second = controllers
        .ensure(&api.client(), &remade, ControllerConfig::default())
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(
        first.is_closed(),
        "the old controller stops, ending its sessions"
    );
    controllers.retain(|key| key != "streams/one");
    assert!(controllers.keys().is_empty());
    assert!(second.is_closed());
}

#[tokio::test]
async fn a_controller_that_stops_by_itself_is_started_again_from_the_store() {
    let api = FakeApi::new();
    let controllers = Controllers::default();
    let first = controllers
        .ensure(&api.client(), &cluster("one"), ControllerConfig::default())
        .await
        .unwrap();
    // As when its store refused a write: the metadata changed underneath it.
    first.close();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let second = loop {
        let current = controllers.get("streams/one").unwrap();
        if !current.is_closed() {
            break current;
        }
        assert!(tokio::time::Instant::now() < deadline, "not restarted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(second.snapshot().controller_epoch, 2);
    controllers.stop_all();
    assert!(second.is_closed());
    assert!(controllers.keys().is_empty());
}

#[test]
fn broker_status_counts_replicas_and_leaders_and_names_missing_brokers() {
    let mut snapshot = MetadataSnapshot::default();
    snapshot.brokers.insert(
        0,
        BrokerInfo {
            id: 0,
            host: "b0".into(),
            port: 9095,
            kafka_port: 9092,
            rack: None,
        },
    );
    let partition =
        |replicas: Vec<i32>, leader, isr: Vec<i32>| tributary_broker::metadata::PartitionRecord {
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        };
    snapshot.topics.insert(
        "t".into(),
        tributary_broker::metadata::TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            config: BTreeMap::new(),
            partitions: vec![
                partition(vec![0, 1], 0, vec![0]),
                partition(vec![1, 0], 0, vec![0]),
                partition(vec![0, 3], 0, vec![0, 3]),
            ],
        },
    );
    let brokers = broker_statuses(&snapshot, 2);
    let summary: Vec<(i32, bool, i32, i32)> = brokers
        .iter()
        .map(|b| (b.id, b.alive, b.replicas, b.leaders))
        .collect();
    // Broker 3 is beyond the spec's replicas but still holds a replica: it is listed.
    assert_eq!(
        summary,
        [(0, true, 3, 3), (1, false, 2, 0), (3, false, 1, 0)]
    );
    assert_eq!(brokers[0].address, "b0:9095");
    assert_eq!(snapshot.under_replicated(), 2);
}

/// A real broker joins the operator's controller for its cluster, a Topic object becomes a
/// topic it serves, and the controller's record of it shows in the Topic's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_of_a_hosted_cluster_serves_a_topic_made_from_a_topic_object() {
    use std::time::Duration;

    use tributary_broker::client::fixtures::write_and_read_back;
    use tributary_broker::server::{self, BrokerConfig};

    use crate::context::Context;
    use crate::crd::Topic;
    use crate::resources::Settings;

    const TOPIC: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/topics/orders";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let api = FakeApi::new();
    let ctx = Arc::new(Context::new(
        api.client(),
        Settings {
            controller_address: String::new(),
        },
        Controllers::default(),
    ));
    let mut demo = cluster("demo");
    demo.spec.replicas = 1;
    let controller = ctx
        .controllers
        .ensure(&ctx.client, &demo, ControllerConfig::default())
        .await
        .unwrap();
    let address = serve(ctx.controllers.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(0, dir.path());
    config.controller = Some(address);
    config.cluster = Some("streams/demo".into());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kafka = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bootstrap = grpc.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = server::Listeners { grpc, http, kafka };
    let broker = tokio::spawn(server::run(config, listeners, async {
        let _ = stopped.await;
    }));
    while !controller.snapshot().brokers.contains_key(&0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    api.put(
        TOPIC,
        json!({"apiVersion": "tributary.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "streams"},
            "spec": {"cluster": "demo", "partitions": 1, "replicationFactor": 1}}),
    );
    let topic: Topic = serde_json::from_value(api.get(TOPIC).unwrap()).unwrap();
    crate::topic_reconciler::reconcile(Arc::new(topic), ctx.clone())
        .await
        .unwrap();
    let status = &api.get(TOPIC).unwrap()["status"];
    let partitions =
        crate::kube_store::assignment::decode(status["assignment"].as_str().unwrap()).unwrap();
    assert_eq!(partitions[0].leader, 0);

    let records = write_and_read_back(&bootstrap, "orders", "hello", deadline).await;
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), broker)
        .await
        .expect("the broker stops")
        .unwrap()
        .unwrap();
}

#[test]
fn durations_read_as_the_spec_writes_them() {
    use std::time::Duration;
    assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    for bad in ["", "10", "m", "1x", "1.5h"] {
        let err = parse_duration(bad).unwrap_err();
        assert!(err.contains("like 30s"), "{bad}: {err}");
    }
}
