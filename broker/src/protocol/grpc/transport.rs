//! What every gRPC connection between Tributary processes uses: message and flow-control
//! limits, the endpoint they are opened with, and the header that names a broker's cluster
//! to a controller serving several.

use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Endpoint;

/// Largest gRPC message either way: well above the largest batch and fetch response.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// HTTP/2 flow-control windows sized so a 1 MB batch never waits for a window update.
pub const STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// The request header naming the cluster a broker belongs to (`namespace/name` on
/// Kubernetes), for a controller host that serves several clusters.
pub const CLUSTER_HEADER: &str = "tributary-cluster";

/// An endpoint for `address` (`host:port`) with the transport settings above and no Nagle
/// delay; callers add their connect timeout and keep-alives. The error says what is wrong
/// with the address.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES))
}

/// Names the broker's cluster on every request to a controller that serves several.
#[derive(Debug, Clone)]
pub struct ClusterHeader(Option<AsciiMetadataValue>);

impl ClusterHeader {
    /// The header naming `cluster`, or none.
    pub fn new(cluster: Option<&str>) -> Result<Self, String> {
        let value = cluster
            .map(|c| {
                c.parse::<AsciiMetadataValue>().map_err(|_| {
                    format!("invalid cluster name '{c}': use letters, digits, '-', '.' and '/'")
                })
            })
            .transpose()?;
        Ok(Self(value))
    }
}

impl Interceptor for ClusterHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(cluster) = &self.0 {
            request
                .metadata_mut()
                .insert(CLUSTER_HEADER, cluster.clone());
        }
        Ok(request)
    }
}
