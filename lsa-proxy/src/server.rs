//! Serving the API: the Unix socket (and optionally AF_VSOCK), health, reflection, readiness.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use credguard_proto::lsa;
use credguard_proto::lsa::lsa_server::LsaServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use crate::config::Config;
use crate::connection::{self, ClientConn};
use crate::core::LsaCore;
use crate::enclave_link::{EnclaveLink, LinkState};
use crate::grpc::LsaService;
use crate::sessions::Caller;

/// Hard cap on a request's size at the gRPC layer; the configured (smaller) limit is checked per
/// call and answered with RESOURCE_EXHAUSTED.
pub const GRPC_MAX_MESSAGE: usize = 1 << 20;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be set up.
    #[error("{path}: {what}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another proxy already serves the socket.
    #[error("{0}: another credguard-lsa-proxy is already listening there")]
    InUse(PathBuf),
}

/// Binds the API socket: removes a stale socket left by a killed proxy (but never a live one),
/// and lets every local user connect (authorization is per call, by uid).
pub fn bind_api_socket(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |what| {
        move |source| ServeError::Socket {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("cannot create the socket's directory"))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err("cannot remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(err("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err("cannot set permissions"))?;
    Ok(listener)
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lsa::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The server's layers: see [`crate::bad_request`] and [`connection::CallTrackingLayer`].
pub type Layers = tower::layer::util::Stack<
    tower::util::MapResponseLayer<crate::bad_request::Rewrite>,
    tower::layer::util::Stack<connection::CallTrackingLayer, tower::layer::util::Identity>,
>;

fn router(core: Arc<LsaCore>) -> Result<tonic::transport::server::Router<Layers>, ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_err = |e: tonic_reflection::server::Error| ServeError::Socket {
        path: PathBuf::new(),
        what: "reflection setup",
        source: io::Error::other(e.to_string()),
    };
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = reflection_builder().build_v1().map_err(reflection_err)?;
    let reflection_alpha = reflection_builder().build_v1alpha().map_err(reflection_err)?;
    // Health follows the enclave link: SERVING only while the enclave answers.
    let mut states = core.link().subscribe();
    tokio::spawn(async move {
        loop {
            let ready = matches!(*states.borrow_and_update(), LinkState::Ready(_));
            if ready {
                health_reporter.set_serving::<LsaServer<LsaService>>().await;
            } else {
                health_reporter.set_not_serving::<LsaServer<LsaService>>().await;
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    });
    let lsa = LsaServer::new(LsaService::new(core))
        .max_decoding_message_size(GRPC_MAX_MESSAGE)
        .max_encoding_message_size(GRPC_MAX_MESSAGE);
    Ok(tonic::transport::Server::builder()
        .layer(connection::CallTrackingLayer)
        .layer(crate::bad_request::layer())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(lsa))
}

/// Forgets the sessions of an enclave that restarted, and says so in the log.
fn watch_enclave_restarts(core: Arc<LsaCore>) {
    let mut states = core.link().subscribe();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let ready = matches!(*states.borrow_and_update(), LinkState::Ready(_));
            if ready {
                let n = core.drop_stale_sessions();
                if n > 0 {
                    warn!(sessions = n, "the enclave restarted: its logon sessions are gone");
                }
            }
        }
    });
}

/// Runs the proxy until `shutdown` resolves. Calls `on_ready` once the API socket is bound.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let link = EnclaveLink::start(config.enclave.clone());
    let core = LsaCore::new(config.clone(), link);
    watch_enclave_restarts(core.clone());
    let socket = config.api.socket.clone();
    let listener = bind_api_socket(&socket)?;
    info!(socket = %socket.display(), vmm = %config.enclave.vmm_socket.display(), "credguard-lsa-proxy listening");

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    if let Some(port) = config.api.vsock_port {
        match tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port)) {
            Ok(l) => {
                info!(port, "also listening on AF_VSOCK");
                let incoming = connection::accepted(l.incoming(), "vsock", |stream: tokio_vsock::VsockStream| {
                    let cid = stream.peer_addr().ok().map(|a| Caller::VsockCid(a.cid()));
                    ClientConn::new(stream, cid)
                });
                let r = router(core.clone())?;
                let mut stop = stop_tx.subscribe();
                tokio::spawn(connection::serve(r, incoming, async move {
                    let _ = stop.recv().await;
                }));
            }
            Err(e) => warn!(port, error = %e, "AF_VSOCK is not available here; serving the Unix socket only"),
        }
    }

    on_ready();
    let incoming = connection::accepted(
        UnixListenerStream::new(listener),
        "API socket",
        |stream: tokio::net::UnixStream| {
            let uid = stream.peer_cred().ok().map(|c| Caller::Uid(c.uid()));
            ClientConn::new(stream, uid)
        },
    );
    connection::serve(router(core)?, incoming, shutdown).await;
    let _ = stop_tx.send(());
    let _ = std::fs::remove_file(&socket);
    info!("credguard-lsa-proxy stopped");
    Ok(())
}
