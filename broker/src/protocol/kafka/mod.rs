//! The Kafka wire protocol, as every Kafka client and tool speaks it: size-prefixed frames,
//! request and response headers (`frame`), and the APIs and versions a broker answers
//! (`versions`). Message bodies are the `kafka-protocol` crate's types, generated from
//! Kafka's own schemas for every version; the handlers that answer them over the engine
//! are in `server::kafka`.

pub mod frame;
pub mod legacy_produce;
pub mod versions;

pub use kafka_protocol::ResponseError;
pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
