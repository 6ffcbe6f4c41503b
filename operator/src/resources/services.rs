use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{GRPC_PORT, HTTP_PORT, KAFKA_PORT, Names, owned_meta, selector};
use crate::crd::Cluster;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Gives every broker pod a stable DNS name (`<pod>.<service>.<namespace>.svc`), which is
/// the address it advertises. Not-ready pods are published too: brokers must reach a
/// starting broker to replicate to it.
pub fn headless_service(cluster: &Cluster) -> Service {
    Service {
        metadata: owned_meta(cluster, &Names::of(cluster).headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(cluster)),
            ports: Some(vec![
                port("grpc", GRPC_PORT),
                port("kafka", KAFKA_PORT),
                port("http", HTTP_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where clients bootstrap: `<cluster>.<namespace>.svc:9095`, any ready broker.
pub fn client_service(cluster: &Cluster) -> Service {
    Service {
        metadata: owned_meta(cluster, &Names::of(cluster).client),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(cluster)),
            ports: Some(vec![port("grpc", GRPC_PORT), port("kafka", KAFKA_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
