//! What the operator's tests share beyond the fake API server.

use tributary_broker::controller::Registration;
use tributary_broker::metadata::BrokerInfo;

/// A broker registering with a controller: `id` at `host:port`, with its data directory's
/// `incarnation`.
pub fn registration(
    id: i32,
    host: impl Into<String>,
    port: u16,
    incarnation: impl Into<String>,
) -> Registration {
    Registration {
        broker: BrokerInfo {
            id,
            host: host.into(),
            port,
            kafka_port: 0,
            rack: None,
        },
        incarnation: incarnation.into(),
    }
}
