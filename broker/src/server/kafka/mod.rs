//! The Kafka protocol listener: every Kafka client and tool talks to the broker here, over
//! the same log, replication, controller and group coordinator as the gRPC API. Each
//! connection answers its requests in the order they came (see `connection`). Handlers
//! convert between Kafka's messages and the engine; the engine decides.

mod configs;
mod errors;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod sendfile;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::controller_link::ControllerLink;
use super::metrics::Metrics;
use super::offsets_topic::OffsetsTopic;
use super::producer_ids::ProducerIds;
use crate::group::GroupCoordinator;
use crate::protocol::kafka::frame::{self, FrameError, Request};
use crate::protocol::kafka::messages::ApiKey;
use crate::protocol::kafka::{Decodable, Encodable, ResponseError};
use crate::protocol::kafka::{legacy_produce, versions};
use crate::replication::ReplicaManager;

/// How the Kafka listener behaves.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Larger requests are refused and their connection closed (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Create a topic a client asks for by name when it does not exist
    /// (`auto.create.topics.enable`), with `default_partitions` partitions.
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    /// How long a consumer-protocol (KIP-848) member may go without a heartbeat
    /// (`group.consumer.session.timeout.ms`; that protocol has no per-member timeout).
    pub consumer_session_timeout: Duration,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            max_request_bytes: frame::DEFAULT_MAX_REQUEST_BYTES,
            auto_create_topics: true,
            default_partitions: 1,
            consumer_session_timeout: Duration::from_secs(45),
        }
    }
}

/// What answers Kafka requests on one broker.
pub struct KafkaService {
    pub(super) replicas: Arc<ReplicaManager>,
    pub(super) link: ControllerLink,
    pub(super) metrics: Arc<Metrics>,
    pub(super) producer_ids: Arc<ProducerIds>,
    pub(super) groups: Arc<GroupCoordinator>,
    pub(super) offsets_topic: OffsetsTopic,
    /// The broker's defaults for topic configuration keys, as DescribeConfigs shows them.
    pub(super) topic_defaults: std::collections::BTreeMap<String, String>,
    pub(super) settings: KafkaSettings,
}

/// What a request gets back.
enum Reply {
    Frame(Bytes),
    /// A frame whose record data is still in segment files (Fetch).
    Parts(Vec<sendfile::Part>),
    /// Produce with acks=0 that succeeded: the client waits for nothing.
    Nothing,
    /// The request cannot be answered in the protocol: close the connection, as Kafka does.
    Close(String),
}

/// Accepts Kafka connections until `stop`, then waits for each connection to finish the
/// request it is answering.
pub async fn serve(listener: TcpListener, service: Arc<KafkaService>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(stream, peer, service.clone(), stop.clone()));
            }
            Err(error) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(%error, "cannot accept a Kafka connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Produce requests a connection works on at once (Kafka's producers keep up to five in
/// flight); more wait in the socket.
const PRODUCES_IN_FLIGHT: usize = 8;

/// Serves one connection. Requests are answered in the order they came, and each starts
/// once the ones before it are answered, as on Kafka's brokers, except consecutive Produce
/// requests: each appends its batches as soon as it is read (in order, before anything
/// waits) and then waits for its replicas while the next ones append, so a producer's
/// in-flight requests share one wait for the followers instead of queueing behind it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<KafkaService>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let (sender, mut requests) = mpsc::channel(PRODUCES_IN_FLIGHT);
    // Frames are read on their own task, so that no frame is ever left half read.
    let reading = tokio::spawn(read_requests(
        reader,
        peer,
        service.settings.max_request_bytes,
        sender,
    ));
    let mut answering = FuturesOrdered::new();
    let mut only_produces = true;
    let mut waiting: Option<Request> = None;
    let mut reading_done = false;
    let stopping = stop.cancelled();
    tokio::pin!(stopping);
    loop {
        // Start the request that waited, once it may.
        if let Some(request) = waiting
            .take_if(|r| answering.is_empty() || (only_produces && r.api == Some(ApiKey::Produce)))
        {
            if answering.is_empty() {
                only_produces = true;
            }
            only_produces &= request.api == Some(ApiKey::Produce);
            let service = service.clone();
            answering.push_back(async move { service.handle(request, peer).await });
        }
        if answering.is_empty() && waiting.is_none() && reading_done {
            break;
        }
        let may_read = waiting.is_none() && !reading_done && answering.len() < PRODUCES_IN_FLIGHT;
        tokio::select! {
            Some(reply) = answering.next(), if !answering.is_empty() => match reply {
                Reply::Frame(bytes) => {
                    if let Err(error) = writer.write_all(&bytes).await {
                        tracing::debug!(%peer, %error, "a Kafka client went away before its answer");
                        break;
                    }
                }
                Reply::Parts(parts) => {
                    if let Err(error) = sendfile::write_parts(&mut writer, parts, &service.metrics).await {
                        tracing::debug!(%peer, %error, "a Kafka fetch answer was cut short; closing its connection");
                        break;
                    }
                }
                Reply::Nothing => {}
                Reply::Close(why) => {
                    tracing::warn!(%peer, why, "closing a Kafka connection");
                    break;
                }
            },
            request = requests.recv(), if may_read => match request {
                Some(request) => waiting = Some(request),
                None => reading_done = true,
            },
            // Stopping: no new requests; those under way are answered.
            () = &mut stopping, if !reading_done => reading_done = true,
        }
    }
    reading.abort();
}

/// Reads and parses request frames into `requests` until the peer closes, a frame is bad,
/// or the connection is answered no more.
async fn read_requests(
    reader: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    max_request_bytes: usize,
    requests: mpsc::Sender<Request>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    loop {
        let payload = match frame::read_frame(&mut reader, max_request_bytes).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(error @ (FrameError::TooLarge { .. } | FrameError::NegativeSize(_))) => {
                tracing::warn!(%peer, %error, "closing a Kafka connection");
                return;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "a Kafka connection ended");
                return;
            }
        };
        let request = match frame::parse_request(payload.freeze()) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing a Kafka connection");
                return;
            }
        };
        if requests.send(request).await.is_err() {
            return;
        }
    }
}

/// A partition as Kafka names it (an i32 index); None for a negative index, which no
/// partition has.
fn topic_partition(topic: &str, index: i32) -> Option<crate::TopicPartition> {
    Some(crate::TopicPartition::new(
        topic,
        u32::try_from(index).ok()?,
    ))
}

/// Decodes a request body of type `T`, or says why it cannot be.
fn decode<T: Decodable>(request: &Request) -> Result<T, Reply> {
    let mut body = request.body.clone();
    T::decode(&mut body, request.api_version).map_err(|e| {
        Reply::Close(format!(
            "a {} v{} request from client '{}' does not decode: {e}",
            api_name(request),
            request.api_version,
            request.client_id.as_deref().unwrap_or("")
        ))
    })
}

fn api_name(request: &Request) -> String {
    request.api.map_or_else(
        || format!("API key {}", request.api_key),
        |a| format!("{a:?}"),
    )
}

/// Encodes `body` as the answer to `request`.
fn reply<B: Encodable>(request: &Request, api: ApiKey, body: &B) -> Reply {
    match frame::response(api, request.api_version, request.correlation_id, body) {
        Ok(bytes) => Reply::Frame(bytes),
        Err(why) => Reply::Close(why),
    }
}

impl KafkaService {
    async fn handle(&self, request: Request, peer: SocketAddr) -> Reply {
        let Some(api) = request
            .api
            .filter(|api| versions::is_served(*api, request.api_version))
        else {
            self.metrics
                .kafka_request(&api_name(&request), request.api_version, false, None);
            return unsupported(&request);
        };
        let started = Instant::now();
        let (reply, ok) = self.dispatch(api, &request, peer).await;
        self.metrics.kafka_request(
            &format!("{api:?}"),
            request.api_version,
            ok,
            Some(started.elapsed()),
        );
        reply
    }

    /// Answers a served request; also says whether it succeeded whole, for the metrics.
    async fn dispatch(&self, api: ApiKey, request: &Request, peer: SocketAddr) -> (Reply, bool) {
        macro_rules! answer {
            ($handler:ident) => {
                match decode(request) {
                    Ok(body) => {
                        let (response, ok) = self.$handler(request.api_version, body).await;
                        (reply(request, api, &response), ok)
                    }
                    Err(close) => (close, false),
                }
            };
        }
        match api {
            ApiKey::ApiVersions => (reply(request, api, &versions::api_versions()), true),
            ApiKey::Metadata => answer!(metadata),
            ApiKey::DescribeCluster => answer!(describe_cluster),
            ApiKey::Produce => match decode(request) {
                Ok(body) => self.produce(request, body).await,
                Err(close) => (close, false),
            },
            ApiKey::Fetch => match decode(request) {
                Ok(body) => {
                    let mut files = sendfile::FileRecords::new();
                    let (response, ok) = self.fetch(request.api_version, body, &mut files).await;
                    let version = request.api_version;
                    match files.encode(api, version, request.correlation_id, &response) {
                        Ok(parts) => (Reply::Parts(parts), ok),
                        Err(why) => (Reply::Close(why), false),
                    }
                }
                Err(close) => (close, false),
            },
            ApiKey::ListOffsets => answer!(list_offsets),
            ApiKey::OffsetForLeaderEpoch => answer!(offset_for_leader_epoch),
            ApiKey::DeleteRecords => answer!(delete_records),
            ApiKey::InitProducerId => answer!(init_producer_id),
            ApiKey::DescribeProducers => answer!(describe_producers),
            ApiKey::CreateTopics => answer!(create_topics),
            ApiKey::FindCoordinator => answer!(find_coordinator),
            ApiKey::CreatePartitions => answer!(create_partitions),
            ApiKey::DescribeConfigs => answer!(describe_configs),
            ApiKey::AlterConfigs => answer!(alter_configs),
            ApiKey::IncrementalAlterConfigs => answer!(incremental_alter_configs),
            ApiKey::JoinGroup => match decode(request) {
                Ok(body) => {
                    let client = request.client_id.as_deref().unwrap_or("");
                    let (response, ok) = self
                        .join_group(request.api_version, body, peer, client)
                        .await;
                    (reply(request, api, &response), ok)
                }
                Err(close) => (close, false),
            },
            ApiKey::SyncGroup => answer!(sync_group),
            ApiKey::ConsumerGroupHeartbeat => match decode(request) {
                Ok(body) => {
                    let client = request.client_id.as_deref().unwrap_or("");
                    let (response, ok) = self
                        .consumer_group_heartbeat(request.api_version, body, client)
                        .await;
                    (reply(request, api, &response), ok)
                }
                Err(close) => (close, false),
            },
            ApiKey::ConsumerGroupDescribe => answer!(consumer_group_describe),
            ApiKey::Heartbeat => answer!(heartbeat),
            ApiKey::LeaveGroup => answer!(leave_group),
            ApiKey::OffsetCommit => answer!(offset_commit),
            ApiKey::OffsetFetch => answer!(offset_fetch),
            ApiKey::ListGroups => answer!(list_groups),
            ApiKey::DeleteGroups => answer!(delete_groups),
            ApiKey::OffsetDelete => answer!(offset_delete),
            ApiKey::DescribeGroups => answer!(describe_groups),
            ApiKey::DeleteTopics => answer!(delete_topics),
            other => (
                Reply::Close(format!("{other:?} is listed as served but has no handler")),
                false,
            ),
        }
    }
}

/// The answer to an API or version this broker does not serve. ApiVersions of a version
/// the broker does not know is answered at v0 with UNSUPPORTED_VERSION and the versions it
/// does serve, so that the client can pick one (KIP-511); Produce v0 to v2, listed but not
/// accepted (as Kafka 4 does), gets UNSUPPORTED_VERSION for each partition; anything else
/// cannot be encoded at a version the broker does not know, so its connection is closed
/// with a log line, as Kafka does.
fn unsupported(request: &Request) -> Reply {
    if request.api == Some(ApiKey::ApiVersions) {
        let body =
            versions::api_versions().with_error_code(ResponseError::UnsupportedVersion.code());
        return match frame::response(ApiKey::ApiVersions, 0, request.correlation_id, &body) {
            Ok(bytes) => Reply::Frame(bytes),
            Err(why) => Reply::Close(why),
        };
    }
    if request.api == Some(ApiKey::Produce) && (0..=2).contains(&request.api_version) {
        return match legacy_produce::refuse(
            request.api_version,
            request.correlation_id,
            request.body.clone(),
        ) {
            Some(frame) => Reply::Frame(frame),
            None => Reply::Close(format!(
                "Produce v{} from client '{}' is not supported (acks=0, or a body that does not parse); use Produce v3 or later",
                request.api_version,
                request.client_id.as_deref().unwrap_or("")
            )),
        };
    }
    let served = request.api.and_then(versions::served_versions).map_or_else(
        || "not served by Tributary".to_string(),
        |s| format!("served at versions {} to {}", s.min, s.max),
    );
    Reply::Close(format!(
        "{} v{} from client '{}' is not supported ({served}); the client should have chosen from ApiVersions",
        api_name(request),
        request.api_version,
        request.client_id.as_deref().unwrap_or("")
    ))
}
