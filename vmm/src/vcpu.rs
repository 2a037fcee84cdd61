//! The vCPU thread: runs the enclave's single vCPU and dispatches its exits to the devices.
//!
//! Another thread stops it through [`VcpuControl`]: a stop flag plus a signal that interrupts
//! `KVM_RUN` (which otherwise only returns when the guest exits).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use credguard_proto::abi::{self, AttestState, ExitCode, exchange};
use credguard_proto::attest;
use credguard_proto::vmm_status::Attested;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::attestation::AttestationKey;
use crate::boot;
use crate::devices::MmioDevice;
use crate::devices::serial::SerialConsole;
use crate::outcome::{BenchResult, ExitOutcome, FaultInfo};
use crate::status_board::StatusBoard;

/// Errors of vCPU thread control.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The kick signal's handler could not be installed.
    #[error("installing the vCPU kick signal handler: {0}")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
}

/// The signal that interrupts `KVM_RUN`: the first real-time signal, as is usual for VMMs.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only purpose is to make KVM_RUN return EINTR.
}

/// Installs the (process-wide, no-op) handler of the kick signal, once.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALLED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();
    (*INSTALLED.get_or_init(|| vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)))
        .map_err(VcpuError::SignalHandler)
}

/// Shared between the vCPU thread and whoever stops it.
#[derive(Debug, Default)]
pub struct VcpuControl {
    stop: AtomicBool,
    // The running vCPU thread. Cleared (under the lock) before the thread ends, so a kick never
    // targets a thread that is gone.
    thread: Mutex<Option<libc::pthread_t>>,
}

impl VcpuControl {
    /// Asks the vCPU thread to stop and kicks it out of `KVM_RUN`.
    ///
    /// A kick that lands just before the thread enters `KVM_RUN` is lost; callers waiting for
    /// the thread kick again (see [`VcpuControl::kick`]) until it is gone.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sends the kick signal to the vCPU thread, if it is running.
    pub fn kick(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = *thread {
            // SAFETY: `t` is the id of a live thread: it is only set by the thread itself and
            // cleared under this lock before that thread returns. The signal has a handler
            // installed by `install_kick_handler`, so it cannot kill the process.
            let ret = unsafe { libc::pthread_kill(t, kick_signal()) };
            if ret != 0 {
                tracing::warn!("kicking the vCPU thread failed: errno {ret}");
            }
        }
    }

    fn enter(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(me);
    }

    fn leave(&self) {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Registers the current thread as the vCPU thread for as long as it lives; unregisters it even
/// if the thread unwinds, so [`VcpuControl::kick`] never signals a thread that is gone.
struct Running<'a>(&'a VcpuControl);

impl<'a> Running<'a> {
    fn enter(control: &'a VcpuControl) -> Self {
        control.enter();
        Running(control)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// What a single exit asks the run loop to do.
enum Step {
    Continue,
    Exit(ExitOutcome),
    /// `KVM_EXIT_INTERNAL_ERROR`: its details are read from `kvm_run` once the exit is released.
    InternalError,
    /// `KVM_EXIT_HLT`: described with the vCPU's registers once the exit is released.
    Halted,
}

/// Handles exits that are not the vCPU's own business: devices, the exit port, guest memory.
/// Answers the enclave's one attestation request per boot (see [`crate::attestation`]), and
/// records the boot and the signature on the [`StatusBoard`] that serves them to host clients.
#[derive(Debug)]
pub struct Attestor {
    key: Option<Arc<AttestationKey>>,
    /// What this VMM verified and set up: the boot info's and the status board's facts.
    facts: Attested,
    board: Arc<StatusBoard>,
    answered: bool,
}

impl Attestor {
    /// Signs with `key` (none: the enclave is told there is no key) what this VMM verified and
    /// handed over in `info` (measurement, signer, RAM size, the image's policy) and what only it
    /// knows, from `board` (protections, restarts).
    pub fn new(key: Option<Arc<AttestationKey>>, info: &abi::BootInfo, board: Arc<StatusBoard>) -> Self {
        let vmm = board.status();
        Attestor {
            key,
            facts: Attested {
                measurement: info.measurement,
                signer: info.signer,
                boot_id: [0; attest::BOOT_ID_LEN],
                public_key: [0; attest::PUBLIC_KEY_LEN],
                protection_bits: vmm.protection_bits,
                host_mapped_bytes: vmm.host_mapped_bytes,
                ram_size: info.ram_size,
                policy_bits: info.policy,
                enclave_flags: 0,
                restarts: vmm.restarts,
                restart_reasons: vmm.restart_reasons,
            },
            board,
            answered: false,
        }
    }

    /// Reads the boot id, public key and build flags from the exchange page, signs them with the
    /// VMM's facts, and writes the answer's state there.
    fn answer(&mut self, mem: &GuestMemoryMmap) -> Result<AttestState, vm_memory::GuestMemoryError> {
        if self.answered {
            // One per boot: a second request would let a compromised guest have other keys
            // signed as this boot's.
            mem.write_obj(AttestState::Refused as u64, exchange_field(exchange::ATTEST_STATE))?;
            return Ok(AttestState::Refused);
        }
        self.answered = true;
        let facts = &mut self.facts;
        mem.read_slice(&mut facts.boot_id, exchange_field(exchange::ATTEST_BOOT_ID))?;
        mem.read_slice(&mut facts.public_key, exchange_field(exchange::ATTEST_PUBLIC_KEY))?;
        facts.enclave_flags = mem.read_obj(exchange_field(exchange::ATTEST_ENCLAVE_FLAGS))?;
        let signature = self.key.as_ref().map(|key| key.sign(facts));
        self.board.record_attestation(&facts.boot_id, signature.as_ref());
        let state = if signature.is_some() {
            tracing::info!(
                "attested enclave boot {}: sealing key {}",
                hex::encode(facts.boot_id),
                hex::encode(facts.public_key)
            );
            AttestState::Signed
        } else {
            AttestState::NoKey
        };
        if facts.enclave_flags & abi::enclave_flags::TEST_BUILD != 0 {
            tracing::warn!(
                "the enclave is a TEST build (fault injection and benchmark modes compiled in); its attestation \
                 says so, and clients refuse to seal secrets to it unless told otherwise"
            );
        }
        mem.write_obj(state as u64, exchange_field(exchange::ATTEST_STATE))?;
        Ok(state)
    }
}

/// What the enclave says about itself once up (`exchange::BOOT_FACTS_*`), as it wrote it.
#[derive(Debug, PartialEq, Eq)]
struct BootFacts {
    /// Printable ASCII only (anything else shows as `?`), at most 32 characters.
    version: String,
    vsock_port: u64,
    guest_cid: u64,
}

impl BootFacts {
    fn read(mem: &GuestMemoryMmap) -> Self {
        let mut raw = [0u8; exchange::BOOT_FACTS_VERSION_LEN];
        let word = |offset| mem.read_obj::<u64>(exchange_field(offset)).unwrap_or(0);
        let version = match mem.read_slice(&mut raw, exchange_field(exchange::BOOT_FACTS_VERSION)) {
            Ok(()) => raw
                .iter()
                .take_while(|&&b| b != 0)
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
                .collect(),
            Err(_) => "?".into(),
        };
        BootFacts {
            version,
            vsock_port: word(exchange::BOOT_FACTS_VSOCK_PORT),
            guest_cid: word(exchange::BOOT_FACTS_GUEST_CID),
        }
    }
}

fn exchange_field(offset: usize) -> GuestAddress {
    GuestAddress(abi::EXCHANGE_GPA + offset as u64)
}

struct ExitHandler {
    mem: GuestMemoryMmap,
    attestor: Attestor,
    serial: SerialConsole,
    vsock: Option<Arc<Mutex<dyn MmioDevice>>>,
    tsc_khz: u64,
    // Unclaimed addresses already logged, so a guest probing them cannot flood the log.
    logged: HashSet<(bool, u64)>,
    /// When the vCPU was made, for the boot time in the "enclave up" line.
    created: Instant,
}

const MAX_LOGGED_ADDRESSES: usize = 64;

impl ExitHandler {
    fn log_unclaimed(&mut self, mmio: bool, addr: u64, what: &str) {
        if self.logged.len() < MAX_LOGGED_ADDRESSES && self.logged.insert((mmio, addr)) {
            tracing::debug!("unclaimed {what} at {addr:#x} (logged once)");
        }
    }

    fn handle(&mut self, exit: VcpuExit<'_>) -> Step {
        match exit {
            VcpuExit::IoOut(port, data) => self.io_out(port, data),
            VcpuExit::IoIn(port, data) => {
                if SerialConsole::handles(port) {
                    self.serial.pio_read(port, data);
                } else {
                    data.fill(0xff);
                    self.log_unclaimed(false, port.into(), "port read");
                }
                Step::Continue
            }
            VcpuExit::MmioRead(addr, data) => {
                match self.vsock_offset(addr) {
                    Some((dev, offset)) => match dev.lock() {
                        Ok(mut dev) => dev.read(offset, data),
                        Err(_) => return Step::Exit(vsock_poisoned()),
                    },
                    None => {
                        data.fill(0);
                        self.log_unclaimed(true, addr, "MMIO read");
                    }
                }
                Step::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                match self.vsock_offset(addr) {
                    Some((dev, offset)) => match dev.lock() {
                        Ok(mut dev) => dev.write(offset, data),
                        Err(_) => return Step::Exit(vsock_poisoned()),
                    },
                    None => self.log_unclaimed(true, addr, "MMIO write"),
                }
                Step::Continue
            }
            // With the in-kernel irqchip KVM handles HLT itself; seeing it means the irqchip is
            // not what we set up.
            VcpuExit::Hlt => Step::Halted,
            VcpuExit::Shutdown => Step::Exit(ExitOutcome::TripleFault),
            VcpuExit::FailEntry(reason, cpu) => Step::Exit(ExitOutcome::Unexpected(format!(
                "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on cpu {cpu}"
            ))),
            VcpuExit::InternalError => Step::InternalError,
            // A signal interrupted the guest; the run loop looks at the stop flag.
            VcpuExit::Intr => Step::Continue,
            other => Step::Exit(ExitOutcome::Unexpected(format!("unexpected vCPU exit {other:?}"))),
        }
    }

    fn vsock_offset(&self, addr: u64) -> Option<(Arc<Mutex<dyn MmioDevice>>, u64)> {
        let offset = addr.checked_sub(abi::VSOCK_MMIO_GPA)?;
        if offset >= abi::VSOCK_MMIO_SIZE {
            return None;
        }
        self.vsock.as_ref().map(|dev| (dev.clone(), offset))
    }

    fn io_out(&mut self, port: u16, data: &[u8]) -> Step {
        if SerialConsole::handles(port) {
            if let Err(e) = self.serial.pio_write(port, data) {
                tracing::warn!("serial: {e}");
            }
            return Step::Continue;
        }
        if port == abi::EXIT_PORT {
            let Ok(raw) = <[u8; 4]>::try_from(data) else {
                return Step::Exit(ExitOutcome::Unexpected(format!(
                    "{}-byte write to the exit port (expected a 32-bit out)",
                    data.len()
                )));
            };
            return Step::Exit(self.guest_exit(u32::from_le_bytes(raw)));
        }
        if port == abi::ATTEST_PORT {
            match self.attestor.answer(&self.mem) {
                Ok(AttestState::Refused) => {}
                Ok(state) => self.log_enclave_up(state),
                Err(e) => tracing::warn!("attestation: {e}"),
            }
            return Step::Continue;
        }
        self.log_unclaimed(false, port.into(), "port write");
        Step::Continue
    }

    /// The admin's sign that the enclave came up: the enclave prints nothing on a good boot (25 µs
    /// a character on the serial console), but hands its boot facts over with its one attestation
    /// request, once its service listens. The guest wrote them: they are sanitised.
    fn log_enclave_up(&self, state: AttestState) {
        let facts = BootFacts::read(&self.mem);
        let exits = self
            .vsock
            .as_ref()
            .and_then(|dev| dev.lock().ok().map(|dev| dev.accesses()))
            .unwrap_or(0);
        let attested = match state {
            AttestState::Signed => "sealing key attested",
            AttestState::NoKey => "no attestation key: clients cannot verify sealed logons",
            AttestState::None | AttestState::Refused => "not attested",
        };
        tracing::info!(
            "enclave up in {:.2} ms: credguard-enclave {}, listening on vsock cid {} port {}; {attested}; {exits} \
             virtio register exits at boot",
            self.created.elapsed().as_secs_f64() * 1e3,
            facts.version,
            facts.guest_cid,
            facts.vsock_port
        );
    }

    fn guest_exit(&mut self, raw: u32) -> ExitOutcome {
        match ExitCode::from_raw(raw) {
            Some(ExitCode::Clean) => ExitOutcome::Clean,
            Some(ExitCode::Panic) => {
                self.serial.flush();
                ExitOutcome::Panic {
                    last_lines: self.serial.recent_lines(),
                }
            }
            Some(ExitCode::Fault) => match boot::read_report(&self.mem) {
                Ok(report) => ExitOutcome::Fault(FaultInfo { report }),
                Err(e) => ExitOutcome::Unexpected(format!("the guest reported a fault, but: {e}")),
            },
            Some(ExitCode::BenchDone) => match boot::read_report(&self.mem) {
                Ok(report) => ExitOutcome::BenchDone(BenchResult {
                    report,
                    tsc_khz: self.tsc_khz,
                }),
                Err(e) => ExitOutcome::Unexpected(format!("the guest finished the benchmark, but: {e}")),
            },
            None => ExitOutcome::Unexpected(format!("unknown exit code {raw:#x}")),
        }
    }
}

fn vsock_poisoned() -> ExitOutcome {
    ExitOutcome::Unexpected("the vsock device panicked earlier".to_owned())
}

/// The enclave's vCPU with everything its exits need.
pub struct Vcpu {
    fd: VcpuFd,
    handler: ExitHandler,
    control: Arc<VcpuControl>,
}

impl std::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcpu")
            .field("tsc_khz", &self.handler.tsc_khz)
            .finish_non_exhaustive()
    }
}

impl Vcpu {
    /// A vCPU ready to run: `fd` holds the boot state, `mem` is the guest's memory (for the report
    /// page), `vsock` the device behind [`abi::VSOCK_MMIO_GPA`] if any.
    pub fn new(
        fd: VcpuFd,
        mem: GuestMemoryMmap,
        vsock: Option<Arc<Mutex<dyn MmioDevice>>>,
        tsc_khz: u64,
        control: Arc<VcpuControl>,
        attestor: Attestor,
    ) -> Self {
        Vcpu {
            fd,
            handler: ExitHandler {
                mem,
                attestor,
                serial: SerialConsole::new(),
                vsock,
                tsc_khz,
                logged: HashSet::new(),
                created: Instant::now(),
            },
            control,
        }
    }

    /// Runs the guest until it exits, fails, or a stop is requested. Call on the vCPU's own
    /// thread (the stop signal targets the calling thread).
    pub fn run(mut self) -> ExitOutcome {
        let control = self.control.clone();
        let _running = Running::enter(&control);
        let outcome = self.run_loop();
        self.handler.serial.flush();
        outcome
    }

    fn run_loop(&mut self) -> ExitOutcome {
        loop {
            if self.control.stop_requested() {
                return ExitOutcome::Stopped;
            }
            let step = match self.fd.run() {
                Ok(exit) => self.handler.handle(exit),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Continue,
                Err(e) => Step::Exit(ExitOutcome::Unexpected(format!("KVM_RUN failed: {e}"))),
            };
            match step {
                Step::Continue => {}
                Step::Exit(outcome) => return outcome,
                Step::InternalError => return ExitOutcome::Unexpected(self.internal_error()),
                Step::Halted => {
                    return ExitOutcome::Unexpected(format!(
                        "KVM_EXIT_HLT (in-kernel irqchip missing?){}",
                        self.at_rip()
                    ));
                }
            }
        }
    }

    fn at_rip(&self) -> String {
        match self.fd.get_regs() {
            Ok(regs) => format!(" at rip {:#x}", regs.rip),
            Err(_) => String::new(),
        }
    }

    /// Describes a `KVM_EXIT_INTERNAL_ERROR`; under PVM usually an instruction the emulator lacks
    /// in ring 0.
    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so the kernel filled `internal`.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..ndata].iter().map(|d| format!("{d:#x}")).collect();
        let kind = match internal.suberror {
            1 => "emulation failure (an instruction KVM cannot emulate in ring 0)",
            2 => "simultaneous exceptions",
            3 => "delivery event failure",
            4 => "unexpected exit reason",
            _ => "unknown",
        };
        format!(
            "KVM_EXIT_INTERNAL_ERROR: suberror {} ({kind}), data [{}]{}",
            internal.suberror,
            data.join(", "),
            self.at_rip()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_facts_from_a_hostile_guest_are_sanitised() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(abi::EXCHANGE_GPA), 0x1000)]).unwrap();
        let mut version = [b'A'; exchange::BOOT_FACTS_VERSION_LEN];
        version[..8].copy_from_slice(b"1.0\n\x1b[2J");
        mem.write_slice(&version, exchange_field(exchange::BOOT_FACTS_VERSION))
            .unwrap();
        mem.write_obj(u64::MAX, exchange_field(exchange::BOOT_FACTS_VSOCK_PORT))
            .unwrap();
        let facts = BootFacts::read(&mem);
        // No line break or terminal sequence reaches the log; the field is bounded, unterminated or not.
        assert_eq!(
            facts.version,
            format!("1.0??[2J{}", "A".repeat(exchange::BOOT_FACTS_VERSION_LEN - 8))
        );
        assert_eq!((facts.vsock_port, facts.guest_cid), (u64::MAX, 0));

        mem.write_slice(b"0.1.0\0junk", exchange_field(exchange::BOOT_FACTS_VERSION))
            .unwrap();
        assert_eq!(BootFacts::read(&mem).version, "0.1.0");
        // A guest memory without the exchange page: nothing to read, nothing invented.
        let elsewhere = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();
        assert_eq!(
            BootFacts::read(&elsewhere),
            BootFacts {
                version: "?".into(),
                vsock_port: 0,
                guest_cid: 0
            }
        );
    }
}
