//! The controller as a process of its own (`tributary-controller`, as `tributary local up`
//! runs it): a file store, the periodic work of sessions and rebalances, and the
//! `Controller` gRPC service.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use super::{BrokerError, controller_server};
use crate::controller::{Controller, ControllerConfig, FileStore};

/// How the controller process runs.
#[derive(Debug, Clone)]
pub struct ControllerProcessConfig {
    pub id: i32,
    /// Where the metadata store lives (`metadata.json`).
    pub data_dir: PathBuf,
    pub controller: ControllerConfig,
}

/// Runs the cluster controller on an already bound listener until `shutdown` completes.
/// `started` is called once the metadata store is open (and locked) and the controller has
/// taken its epoch, just before it serves.
pub async fn run_controller(
    config: ControllerProcessConfig,
    listener: TcpListener,
    started: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BrokerError> {
    let store = FileStore::open(&config.data_dir.join("metadata.json"))?;
    let controller = Arc::new(Controller::start(config.id, store, config.controller).await?);
    started();
    let stop = CancellationToken::new();
    let expiry = {
        let controller = controller.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(crate::controller::SESSION_CHECK_INTERVAL);
            loop {
                tokio::select! { _ = ticker.tick() => {}, () = stop.cancelled() => return }
                if let Err(error) = controller.tick().await {
                    tracing::error!(%error, "the controller's periodic work (sessions, rebalance) failed");
                }
            }
        })
    };
    let service = controller_server(controller);
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    stop.cancel();
    let _ = expiry.await;
    served.map_err(BrokerError::Serve)
}
