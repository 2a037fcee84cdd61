//! The supervisor's watchdog: is the enclave still answering?
//!
//! A guest that spins forever in ring 3 never exits to the VMM, so nothing in the VMM process can
//! see it hang. The watchdog asks from outside, as a client would: it connects to the worker's
//! vsock Unix socket (`CONNECT 7000`), sends `Status` every [`WatchdogConfig::interval`], and
//! reports a hang when no answer has come for [`WatchdogConfig::timeout`].
//!
//! The enclave is single-threaded and serves its callers in order, so under load a ping waits
//! behind the queued requests. The timeout counts from the last answer (not per ping) and is
//! several intervals long, so a busy enclave is not mistaken for a hung one; one persistent
//! connection is kept (the enclave accepts only a few) and reopened only after an error.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use credguard_proto::abi::ENCLAVE_VSOCK_PORT;
use credguard_proto::enclave::StatusRequest;

use credguard_proto::unix_transport::{TransportError, UnixClient, UnixTransport};

/// Errors of the watchdog.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The configuration cannot work.
    #[error("watchdog: {0}")]
    Config(&'static str),
    /// The watchdog thread could not be started.
    #[error("spawning the watchdog thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// How often to ping and how long silence may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Time between pings.
    pub interval: Duration,
    /// No answer for this long (counted from the last answer, or from the start) is a hang.
    pub timeout: Duration,
}

impl WatchdogConfig {
    /// Checks that the configuration can tell a hang from a slow answer.
    pub fn validate(&self) -> Result<(), WatchdogError> {
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(WatchdogError::Config("interval and timeout must be positive"));
        }
        if self.timeout < self.interval {
            return Err(WatchdogError::Config(
                "the timeout must be at least one interval (else every ping would be a hang)",
            ));
        }
        Ok(())
    }

    /// The reason the supervisor logs and hands to the next boot.
    pub fn hang_reason(&self) -> String {
        format!("watchdog: no answer within {}", human(self.timeout))
    }
}

/// "10 s", "1.5 s", "200 ms".
fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A running watchdog. Dropping it (or [`Watchdog::stop`]) ends its pings; it never reports
/// after that.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging the enclave behind `socket`; calls `on_hang` (once, from the watchdog's
    /// thread) when it stops answering, then ends.
    pub fn start(
        socket: PathBuf,
        config: WatchdogConfig,
        on_hang: impl FnOnce(String) + Send + 'static,
    ) -> Result<Self, WatchdogError> {
        config.validate()?;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                if let Some(reason) = watch(&socket, config, &stop_rx) {
                    on_hang(reason);
                }
            })
            .map_err(WatchdogError::Spawn)?;
        Ok(Watchdog {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops pinging. Does not wait for a ping in progress (it may take up to the timeout); the
    /// thread ends by itself after it, without reporting.
    pub fn stop(mut self) {
        self.stop.take();
        self.thread.take();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread's wait between pings.
        self.stop.take();
    }
}

/// Pings until stopped (`None`) or until the enclave has been silent for the timeout (the reason).
fn watch(socket: &std::path::Path, config: WatchdogConfig, stop: &mpsc::Receiver<()>) -> Option<String> {
    let mut last_answer = Instant::now();
    let mut client: Option<UnixClient> = None;
    loop {
        match stop.recv_timeout(config.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            // Stopped (sender dropped) or told to stop.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return None,
        }
        // The ping may use whatever is left of the silence allowed, and at least a moment.
        let left = config
            .timeout
            .saturating_sub(last_answer.elapsed())
            .max(Duration::from_millis(10));
        match ping(&mut client, socket, left) {
            Ok(()) => last_answer = Instant::now(),
            Err(e) => {
                client = None;
                tracing::debug!("watchdog ping failed: {e}");
            }
        }
        // A stop that came during the ping wins: the worker is being replaced anyway.
        if matches!(stop.try_recv(), Ok(()) | Err(mpsc::TryRecvError::Disconnected)) {
            return None;
        }
        if last_answer.elapsed() >= config.timeout {
            return Some(config.hang_reason());
        }
    }
}

/// One `Status` round trip on the kept connection (opened first if needed).
fn ping(client: &mut Option<UnixClient>, socket: &std::path::Path, timeout: Duration) -> Result<(), TransportError> {
    let c = match client {
        Some(c) => {
            c.transport_mut().set_timeout(timeout)?;
            c
        }
        None => client.insert(UnixTransport::client(socket, ENCLAVE_VSOCK_PORT, timeout)?),
    };
    match c.status(&StatusRequest {}) {
        Ok(_) => Ok(()),
        // An error reply is still an answer: the enclave is alive.
        Err(TransportError::Rpc(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn cfg(interval_ms: u64, timeout_ms: u64) -> WatchdogConfig {
        WatchdogConfig {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn config_is_checked() {
        assert!(cfg(0, 100).validate().is_err());
        assert!(cfg(100, 0).validate().is_err());
        assert!(cfg(200, 100).validate().is_err());
        assert!(cfg(2000, 10_000).validate().is_ok());
        assert_eq!(cfg(2000, 10_000).hang_reason(), "watchdog: no answer within 10 s");
        assert_eq!(cfg(100, 1500).hang_reason(), "watchdog: no answer within 1.5 s");
        assert_eq!(cfg(100, 300).hang_reason(), "watchdog: no answer within 300 ms");
    }

    /// A peer that accepts connections and never answers is a hang; the report names the timeout.
    #[test]
    fn silent_peer_is_reported() {
        let dir = std::env::temp_dir().join(format!("credguard-watchdog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Accept and hold connections so the client blocks on the handshake, as with a hung guest.
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(8) {
                conns.push(c);
            }
        });
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::start(path, cfg(20, 200), move |reason| {
            let _ = tx.send(reason);
        })
        .unwrap();
        let reason = rx.recv_timeout(Duration::from_secs(30)).expect("a hang report");
        assert_eq!(reason, "watchdog: no answer within 200 ms");
        dog.stop();
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stopped watchdog never reports, even if the peer is gone.
    #[test]
    fn stopped_watchdog_stays_quiet() {
        let reported = Arc::new(AtomicBool::new(false));
        let r = reported.clone();
        let dog = Watchdog::start(
            PathBuf::from("/nonexistent/credguard.sock"),
            cfg(10, 10_000),
            move |_| r.store(true, Ordering::SeqCst),
        )
        .unwrap();
        let thread = {
            let mut dog = dog;
            let t = dog.thread.take();
            drop(dog);
            t
        };
        thread.expect("thread").join().unwrap();
        assert!(!reported.load(Ordering::SeqCst));
    }
}
