//! Connecting to the API's Unix socket with tonic.

use std::path::{Path, PathBuf};

use credguard_proto::lsa::lsa_client::LsaClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Where the installed proxy serves the API (its `[api] socket` by default: the proxy's
/// `config::DEFAULT_API_SOCKET`, which the end-to-end tests check this against).
pub const DEFAULT_API_SOCKET: &str = "/run/credguard/lsa.sock";

/// Where the API socket is: `explicit`, else `$CREDGUARD_SOCKET`, else the default path.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("CREDGUARD_SOCKET") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_API_SOCKET),
    }
}

/// A client connected to the API at `path`.
pub async fn connect(path: &Path) -> Result<LsaClient<Channel>, tonic::transport::Error> {
    Ok(LsaClient::new(channel(path).await?))
}

/// A gRPC channel to the API at `path`, for callers that speak to it below the generated client
/// (tests sending raw, malformed protobuf).
pub async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is unused: every connection goes to the Unix socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}
