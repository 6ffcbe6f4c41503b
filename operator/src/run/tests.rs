use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::fake_api::FakeApi;

const POD: &str = "/api/v1/namespaces/tributary-system/pods/op-a";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/tributary-system/leases/tributary-operator";
const CLUSTER: &str = "/apis/tributary.dev/v1alpha1/namespaces/streams/clusters/demo";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/streams/statefulsets/demo-broker";

fn config() -> RunConfig {
    RunConfig {
        namespace: Some("streams".into()),
        settings: Settings {
            controller_address: "controller:9093".into(),
        },
        lease: LeaseConfig {
            namespace: "tributary-system".into(),
            name: "tributary-operator".into(),
            identity: "op-a".into(),
            duration: Duration::from_secs(15),
        },
        pod: Some(("tributary-system".into(), "op-a".into())),
    }
}

async fn listeners() -> (TcpListener, TcpListener, SocketAddr) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = http.local_addr().unwrap();
    (grpc, http, address)
}

/// The body of `GET path` on `address`, with the status line.
async fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Polls `check` every 20 ms until it holds, for at most 10 seconds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_leader_labels_its_pod_reconciles_and_releases_the_lease_on_shutdown() {
    let api = FakeApi::new();
    api.put(
        POD,
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "op-a", "namespace": "tributary-system",
                "labels": {crate::leader::LEADER_LABEL: "tributary-operator"}}}),
    );
    api.put(
        CLUSTER,
        json!({"apiVersion": "tributary.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "streams"}, "spec": {"replicas": 3}}),
    );
    let (grpc, http, address) = listeners().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(run(api.client(), config(), grpc, http, async {
        let _ = stopped.await;
    }));

    eventually("the health endpoints", async || {
        get(address, "/healthz").await.contains("200 OK")
            && get(address, "/readyz").await.contains("200 OK")
    })
    .await;
    eventually("leadership", async || {
        get(address, "/metrics")
            .await
            .contains("tributary_operator_leader 1")
    })
    .await;
    eventually("the Cluster's StatefulSet", async || {
        api.get(STATEFULSET).is_some()
    })
    .await;
    eventually("the reconcile count", async || {
        get(address, "/metrics")
            .await
            .contains("tributary_operator_reconciles_total{kind=\"cluster\"}")
    })
    .await;
    let pod = api.get(POD).unwrap();
    assert_eq!(
        pod["metadata"]["labels"][crate::leader::LEADER_LABEL],
        "tributary-operator",
        "labelled with its Lease's name"
    );
    assert_eq!(api.get(LEASE).unwrap()["spec"]["holderIdentity"], "op-a");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the operator stops")
        .unwrap()
        .unwrap();
    assert_eq!(
        api.get(LEASE).unwrap()["spec"].get("holderIdentity"),
        None,
        "the Lease is released for the next leader"
    );
}

#[tokio::test]
async fn without_the_crds_the_operator_says_how_to_install_them() {
    let api = FakeApi::new();
    api.unserve("/apis/tributary.dev/");
    let (grpc, http, _) = listeners().await;
    let err = run(api.client(), config(), grpc, http, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.contains("CRDs are not installed")
            && err.contains("tributary-operator crd | kubectl apply"),
        "{err}"
    );
}
