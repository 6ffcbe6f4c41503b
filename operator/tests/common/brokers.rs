//! Brokers for a controller under test: registrations as broker pods would make them.

use tributary_broker::controller::{Controller, MetadataStore, Registration};
use tributary_broker::metadata::BrokerInfo;

/// Registers brokers `ids` of Cluster `demo` (pods `demo-broker-<id>`, each with a disk
/// of its own) and returns each registration with its session.
pub async fn register<S: MetadataStore>(
    controller: &Controller<S>,
    ids: std::ops::Range<i32>,
) -> Vec<(Registration, u64)> {
    let mut sessions = Vec::new();
    for id in ids {
        let registration = Registration {
            broker: BrokerInfo {
                id,
                host: format!("demo-broker-{id}"),
                port: 9095,
                kafka_port: 9092,
                rack: None,
            },
            incarnation: format!("disk-{id}"),
        };
        let session = controller
            .register_broker(registration.clone())
            .await
            .unwrap_or_else(|e| panic!("broker {id} registers: {e}"));
        sessions.push((registration, session));
    }
    sessions
}
