//! The benchmark doorbell: a guest write to [`abi::DOORBELL_MMIO_GPA`] is answered with an
//! interrupt on [`abi::DOORBELL_GSI`].
//!
//! It measures the fast path the vsock device relies on: KVM completes the write through an
//! ioeventfd (no exit to this process's vCPU thread), a VMM thread wakes on it and answers through
//! an irqfd. Only set up in [`abi::BootMode::DoorbellBench`].

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use credguard_proto::abi;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

/// Errors of the doorbell.
#[derive(Debug, thiserror::Error)]
pub enum DoorbellError {
    /// An eventfd could not be created or duplicated.
    #[error("doorbell eventfd: {0}")]
    EventFd(#[source] io::Error),
    /// Registering with KVM failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The answering thread could not be started.
    #[error("spawning the doorbell thread: {0}")]
    Spawn(#[source] io::Error),
}

/// The running doorbell; [`Doorbell::stop`] (or drop) ends its thread.
#[derive(Debug)]
pub struct Doorbell {
    ring: EventFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Doorbell {
    /// Registers the ioeventfd and irqfd with `vm` and starts the answering thread.
    /// `filter` is the thread's seccomp allow-list, installed before its loop.
    pub fn start(vm: &VmFd, filter: Option<crate::sandbox::ThreadFilter>) -> Result<Self, DoorbellError> {
        let ring = EventFd::new(0).map_err(DoorbellError::EventFd)?;
        let answer = EventFd::new(0).map_err(DoorbellError::EventFd)?;
        // Without datamatch KVM takes any write length at the address; the guest writes 4 bytes.
        vm.register_ioevent(&ring, &IoEventAddress::Mmio(abi::DOORBELL_MMIO_GPA), NoDatamatch)
            .map_err(|source| DoorbellError::Kvm {
                what: "KVM_IOEVENTFD (doorbell)",
                source,
            })?;
        vm.register_irqfd(&answer, abi::DOORBELL_GSI)
            .map_err(|source| DoorbellError::Kvm {
                what: "KVM_IRQFD (doorbell)",
                source,
            })?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread_ring = ring.try_clone().map_err(DoorbellError::EventFd)?;
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("doorbell".into())
            .spawn(move || {
                if let Some(filter) = filter
                    && let Err(e) = filter.apply()
                {
                    tracing::error!("doorbell: {e}; not answering");
                    return;
                }
                answer_loop(&thread_ring, &answer, &thread_stop)
            })
            .map_err(DoorbellError::Spawn)?;
        Ok(Doorbell {
            ring,
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the answering thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread's blocking read; it then sees the flag.
        if let Err(e) = self.ring.write(1) {
            tracing::warn!("cannot wake the doorbell thread: {e}");
            return;
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the doorbell thread panicked");
        }
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

fn answer_loop(ring: &EventFd, answer: &EventFd, stop: &AtomicBool) {
    loop {
        match ring.read() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("doorbell: reading the ioeventfd failed: {e}");
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = answer.write(1) {
            tracing::warn!("doorbell: writing the irqfd failed: {e}");
            return;
        }
    }
}
