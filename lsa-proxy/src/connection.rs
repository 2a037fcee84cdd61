//! Client connections of the API: who is at the other end, and ending a connection on request.
//!
//! A connection that carried a secret in the clear is ended once it is quiet. The HTTP/2 stack
//! keeps one read buffer per connection (h2's `FramedRead`, 8 KiB, reused in place) for the
//! connection's whole life, and a request's bytes stay in it until later reads overwrite them:
//! measured with a Python grpcio client that keeps its channel open, a plaintext logon's password
//! and NT hash were still in that buffer after the call (the wiping allocator only wipes blocks
//! that are freed, and this one never was). Ending the connection frees the buffer, which the
//! allocator then zeroes. The end is graceful (HTTP/2 GOAWAY), and gRPC clients reconnect by
//! themselves for their next call.
//!
//! "Quiet" means no call in flight for [`PLAINTEXT_QUIET`]. Ending a connection at once, with the
//! answer still to come, made tonic's client fail the caller's next call (CANCELLED "connection
//! closed": hyper's client queues a request before it notices the GOAWAY it already received);
//! a connection that has been quiet for a while leaves no such window but a few hundred
//! microseconds.
//!
//! tonic ends connections gracefully only all together, when its server stops. So each connection
//! is served by a tonic server of its own (over the same routes, so with the same behaviour), whose
//! stop signal is that connection's end: quiet after a plaintext secret, the proxy stopping, or the
//! connection closing by itself.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http;
use tonic::transport::server::{Connected, Router};
use tracing::{debug, warn};

use crate::server::Layers;
use crate::sessions::Caller;

/// How long to wait after a failed `accept` (e.g. no file descriptor left) before the next one,
/// so that a listener in trouble does not spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a connection that carried a secret in the clear must be without a call in flight
/// before it is ended (see the module documentation).
pub const PLAINTEXT_QUIET: Duration = Duration::from_millis(500);

/// What the server knows about a client connection; every request carries a copy in its
/// extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Who is at the other end, as the kernel says (`None`: it did not say).
    pub caller: Option<Caller>,
    state: Arc<ConnectionState>,
}

#[derive(Debug)]
struct ConnectionState {
    /// The stream was dropped: the HTTP/2 connection is over.
    closed: Notify,
    /// A call carried a secret in the clear.
    plaintext: Notify,
    calls: Mutex<Calls>,
}

/// The calls of a connection.
#[derive(Debug)]
struct Calls {
    in_flight: usize,
    /// When the last call started or ended.
    last: Instant,
}

impl ConnectionInfo {
    /// The connection of `caller`.
    pub fn new(caller: Option<Caller>) -> Self {
        ConnectionInfo {
            caller,
            state: Arc::new(ConnectionState {
                closed: Notify::new(),
                plaintext: Notify::new(),
                calls: Mutex::new(Calls {
                    in_flight: 0,
                    last: Instant::now(),
                }),
            }),
        }
    }

    /// Ends the connection once it is quiet: a call on it carried a secret in the clear.
    pub fn end_when_quiet(&self) {
        // A permit is kept if nobody waits yet: the request is never lost.
        self.state.plaintext.notify_one();
    }

    /// Counts a call as in flight until the returned guard is dropped.
    pub fn call_started(&self) -> CallGuard {
        self.state.calls(|c| {
            c.in_flight += 1;
            c.last = Instant::now();
        });
        CallGuard(self.state.clone())
    }

    /// Resolves once the connection must end because it carried a plaintext secret and is quiet.
    async fn quiet_after_plaintext(&self) {
        self.state.plaintext.notified().await;
        loop {
            let wait = self.state.calls(|c| {
                let quiet_for = c.last.elapsed();
                if c.in_flight > 0 {
                    Some(PLAINTEXT_QUIET)
                } else if quiet_for >= PLAINTEXT_QUIET {
                    None
                } else {
                    Some(PLAINTEXT_QUIET - quiet_for)
                }
            });
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => return,
            }
        }
    }
}

impl ConnectionState {
    fn calls<T>(&self, f: impl FnOnce(&mut Calls) -> T) -> T {
        // Plain counters: they stay consistent whatever panicked while holding the lock.
        f(&mut self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A call in flight on a connection (see [`ConnectionInfo::call_started`]).
#[derive(Debug)]
pub struct CallGuard(Arc<ConnectionState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.calls(|c| {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.last = Instant::now();
        });
    }
}

/// The layer that counts every call in flight on its connection (outside the gRPC services, so
/// that health and reflection calls count too).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTrackingLayer;

impl<S> tower::Layer<S> for CallTrackingLayer {
    type Service = CallTracking<S>;

    fn layer(&self, inner: S) -> CallTracking<S> {
        CallTracking { inner }
    }
}

/// See [`CallTrackingLayer`].
#[derive(Debug, Clone)]
pub struct CallTracking<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for CallTracking<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req
            .extensions()
            .get::<ConnectionInfo>()
            .map(ConnectionInfo::call_started);
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            drop(guard);
            response
        })
    }
}

/// A client's stream with its [`ConnectionInfo`].
pub struct ClientConn<S> {
    stream: S,
    info: ConnectionInfo,
}

impl<S> ClientConn<S> {
    /// `stream`, from `caller`.
    pub fn new(stream: S, caller: Option<Caller>) -> Self {
        ClientConn {
            stream,
            info: ConnectionInfo::new(caller),
        }
    }

    /// The connection's information.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl<S> Drop for ClientConn<S> {
    fn drop(&mut self) {
        // The HTTP/2 connection is over (the client closed it, or it ended): so is its server.
        self.info.state.closed.notify_one();
    }
}

impl<S> Connected for ClientConn<S> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientConn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientConn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    // Passed through so that h2 writes a frame's header and its payload (which it does not copy
    // into its buffer) in one writev: without it they went out in separate writes, and the
    // client woke up for each part of a reply (tens of microseconds per wake-up here).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connections a listener accepts: `accept` results, each accepted stream made a
/// [`ClientConn`] by `conn`; a failed accept is logged and followed by [`ACCEPT_BACKOFF`].
pub fn accepted<A, S, F>(accepts: A, what: &'static str, conn: F) -> impl Stream<Item = ClientConn<S>>
where
    A: Stream<Item = io::Result<S>>,
    F: Fn(S) -> ClientConn<S> + Copy,
{
    accepts
        .then(move |r| async move {
            match r {
                Ok(stream) => Some(conn(stream)),
                Err(e) => {
                    warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    None
                }
            }
        })
        .filter_map(|c| c)
}

/// Serves each connection of `incoming` with `router` until `shutdown` resolves; then ends every
/// connection gracefully and returns once all are closed.
pub async fn serve<S, I>(router: Router<Layers>, incoming: I, shutdown: impl Future<Output = ()>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    I: Stream<Item = ClientConn<S>>,
{
    let (stop_tx, _) = broadcast::channel::<()>(1);
    // Each connection's task holds a sender: `recv` answers `None` once all of them are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    {
        let mut incoming = std::pin::pin!(incoming);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                conn = incoming.next() => match conn {
                    Some(conn) => {
                        tokio::spawn(serve_connection(router.clone(), conn, stop_tx.subscribe(), alive_tx.clone()));
                    }
                    None => break,
                },
            }
        }
    }
    let _ = stop_tx.send(());
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

/// Serves one connection with a tonic server of its own, stopped by the connection's end.
async fn serve_connection<S>(
    router: Router<Layers>,
    conn: ClientConn<S>,
    mut stop: broadcast::Receiver<()>,
    _alive: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let info = conn.info().clone();
    // One connection, then nothing: an incoming stream that ended would stop the server at once.
    let incoming = tokio_stream::once(Ok::<_, io::Error>(conn)).chain(tokio_stream::pending());
    let end = async move {
        tokio::select! {
            () = info.state.closed.notified() => {}
            _ = stop.recv() => {}
            () = info.quiet_after_plaintext() => {
                debug!("ending a connection that carried a secret in the clear, now quiet");
            }
        }
    };
    if let Err(e) = router.serve_with_incoming_shutdown(incoming, end).await {
        debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves once the connection of `info` is ended for quiet after a plaintext secret.
    async fn ended(info: &ConnectionInfo) {
        info.quiet_after_plaintext().await;
    }

    async fn pending_for(info: &ConnectionInfo, d: Duration) -> bool {
        tokio::time::timeout(d, ended(info)).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_plaintext_connection_ends_only_when_quiet() {
        let info = ConnectionInfo::new(Some(Caller::Uid(7)));
        // No plaintext secret: never.
        assert!(pending_for(&info, PLAINTEXT_QUIET * 10).await);
        // Asked before anyone waits: kept. A call in flight holds it off, however long it takes.
        info.end_when_quiet();
        let call = info.call_started();
        assert!(pending_for(&info, PLAINTEXT_QUIET * 10).await);
        drop(call);
        // Then it ends once quiet: not before, but within the quiet time and a margin.
        let start = Instant::now();
        info.end_when_quiet();
        tokio::time::timeout(PLAINTEXT_QUIET * 2, ended(&info))
            .await
            .expect("a quiet connection was not ended");
        assert!(start.elapsed() >= PLAINTEXT_QUIET);
    }

    #[tokio::test]
    async fn a_closed_stream_ends_its_connection() {
        let (a, _b) = tokio::io::duplex(64);
        let conn = ClientConn::new(a, None);
        let info = conn.info().clone();
        drop(conn);
        tokio::time::timeout(Duration::from_secs(5), info.state.closed.notified())
            .await
            .expect("dropping the stream did not end the connection");
    }
}
