use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tributary_broker::controller::{BrokerInfo, NewTopic, Registration};
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
        let registration = Registration {
            broker: BrokerInfo {
                id: 0,
                host: format!("{name}-broker-0"),
                port: 9095,
                rack: None,
            },
            incarnation: "disk".into(),
        };
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
    controllers.retain(|key| key != "streams/one");
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
            rack: None,
        },
    );
    let partition =
        |replicas: Vec<i32>, leader, isr: Vec<i32>| tributary_broker::controller::PartitionRecord {
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        };
    snapshot.topics.insert(
        "t".into(),
        tributary_broker::controller::TopicRecord {
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
    assert_eq!(under_replicated(&snapshot), 2);
}
