//! Clean shutdown on SIGTERM and SIGINT.
//!
//! The signals are blocked in every thread and taken synchronously by one watcher thread with
//! `sigwait`, so the shutdown work (stopping the vCPU, closing the vsock socket) runs in normal
//! code rather than in a signal handler.

use std::io;
use std::thread::JoinHandle;

use crate::vm::StopHandle;

/// Errors of signal setup.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// A signal mask operation failed.
    #[error("{what}: {source}")]
    Sys {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn termination_set() -> Result<libc::sigset_t, SignalError> {
    vmm_sys_util::signal::create_sigset(&[libc::SIGTERM, libc::SIGINT]).map_err(|e| SignalError::Sys {
        what: "building the signal set",
        source: io::Error::from_raw_os_error(e.errno()),
    })
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts afterwards. Call
/// first thing in `main`, before any thread exists.
pub fn block_termination_signals() -> Result<(), SignalError> {
    let set = termination_set()?;
    // SAFETY: `set` is an initialized signal set; a null old-set pointer is allowed.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(SignalError::Sys {
            what: "pthread_sigmask",
            source: io::Error::from_raw_os_error(ret),
        });
    }
    Ok(())
}

/// Starts a thread that waits for SIGTERM and SIGINT (blocked with [`block_termination_signals`]
/// first) and calls `on_signal` with the signal's name for each one, until it returns `false`.
/// `setup` runs first on the new thread (e.g. to install its seccomp filter); if it returns
/// `false` the thread ends without waiting.
pub fn spawn_signal_thread(
    setup: impl FnOnce() -> bool + Send + 'static,
    mut on_signal: impl FnMut(&'static str) -> bool + Send + 'static,
) -> Result<JoinHandle<()>, SignalError> {
    let set = termination_set()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if !setup() {
                return;
            }
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `set` is an initialized signal set and `signal` a valid out pointer.
                let ret = unsafe { libc::sigwait(&set, &mut signal) };
                if ret != 0 {
                    tracing::error!("sigwait failed: {}", io::Error::from_raw_os_error(ret));
                    return;
                }
                let name = if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
                if !on_signal(name) {
                    return;
                }
            }
        })
        .map_err(|source| SignalError::Sys {
            what: "spawning the signal thread",
            source,
        })
}

/// Starts a thread that stops the enclave when SIGTERM or SIGINT arrives. The signals must have
/// been blocked with [`block_termination_signals`] first.
///
/// `filter` is the thread's seccomp allow-list, installed before it waits; if that fails the
/// enclave is stopped (fail closed).
pub fn spawn_termination_watcher(
    stop: StopHandle,
    filter: Option<crate::sandbox::ThreadFilter>,
) -> Result<JoinHandle<()>, SignalError> {
    let on_failure = stop.clone();
    spawn_signal_thread(
        move || match filter.map(|f| f.apply()) {
            Some(Err(e)) => {
                tracing::error!("{e}; stopping the enclave");
                on_failure.stop();
                false
            }
            _ => true,
        },
        move |name| {
            tracing::info!("{name} received, stopping the enclave");
            stop.stop();
            true
        },
    )
}
