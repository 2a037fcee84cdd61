//! Launching, watching and stopping one enclave VM.
//!
//! [`Enclave::launch`] builds the whole VM from an already verified [`EnclaveImage`] — KVM VM,
//! guest memory, interrupt controllers, boot state, devices — and starts its vCPU on a thread of
//! its own. The returned [`RunningEnclave`] is how the caller waits for the outcome or stops it.
//!
//! ```no_run
//! use credguard_vmm::{Enclave, EnclaveConfig, EnclaveImage};
//! # fn demo(signed: &credguard_image::SignedImage) -> Result<(), credguard_vmm::VmError> {
//! let mut config = EnclaveConfig::new(EnclaveImage::from_signed(signed));
//! config.vsock_socket = Some("/run/credguard/enclave.sock".into());
//! let enclave = Enclave::launch(config)?;
//! // ... connect to the vsock socket (see `credguard_proto::unix_transport`) ...
//! let outcome = enclave.stop_and_wait();
//! assert!(outcome.is_success());
//! # Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use credguard_proto::abi::{self, BootInfo, BootMode, MEASUREMENT_LEN, VsockPreset};
use credguard_proto::{boot_tables, vmm_status};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;

use crate::attestation::AttestationKey;
use crate::boot::{self, BootError, CpuProtection};
use crate::devices::MmioDevice;
use crate::devices::virtio::{HostAnsweredPort, VirtioMmioVsock, VsockConfig, VsockError, create_vsock_device};
use crate::doorbell::{Doorbell, DoorbellError};
use crate::interrupts::{self, InterruptError};
use crate::memory::{self, Backing, GuestRam, Locking, MemoryError};
use crate::outcome::ExitOutcome;
use crate::placement::Placement;
use crate::sandbox::{self, SandboxError, ThreadFilter, ThreadRole};
use crate::status_board::StatusBoard;
use crate::vault_key::VaultRootSecret;
use crate::vcpu::{self, Attestor, Vcpu, VcpuControl, VcpuError};

/// How often a waiter re-sends a lost stop kick (see [`VcpuControl::request_stop`]).
const KICK_INTERVAL: Duration = Duration::from_millis(20);

/// Why an enclave could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The RAM size does not fit the guest layout.
    #[error(
        "guest RAM of {0} bytes is not a multiple of 2 MiB within {min} MiB..={max} MiB",
        min = abi::MIN_RAM_SIZE >> 20,
        max = abi::MAX_RAM_SIZE >> 20
    )]
    RamSize(u64),
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    GuestMemory(#[from] MemoryError),
    /// Hidden guest memory was required ([`EnclaveConfig::require_hidden_memory`]) but guest RAM
    /// could only be anonymous memory that the VMM maps whole.
    #[error(
        "--require-hidden-memory: KVM on this host offers no guest_memfd (KVM_CAP_GUEST_MEMFD is 0), so guest RAM \
         would be mapped whole in the VMM; refusing to start"
    )]
    HiddenMemoryUnavailable,
    /// The process could not be hardened or a seccomp filter not built.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The boot state could not be prepared (e.g. the image is refused).
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The interrupt controllers could not be set up.
    #[error("interrupt controllers: {0}")]
    Interrupts(#[from] InterruptError),
    /// The vsock device could not be created.
    #[error("vsock device: {0}")]
    Vsock(#[from] VsockError),
    /// The benchmark doorbell could not be set up.
    #[error(transparent)]
    Doorbell(#[from] DoorbellError),
    /// The vCPU thread could not be prepared or started.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Spawning the vCPU thread failed.
    #[error("spawning the vCPU thread: {0}")]
    Spawn(#[source] io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// An enclave image whose signature the caller has verified, with its measurement.
#[derive(Clone)]
pub struct EnclaveImage {
    bytes: Arc<[u8]>,
    measurement: [u8; MEASUREMENT_LEN],
    signer: [u8; abi::SIGNER_LEN],
    /// Earlier images whose vault this one may open, from its signed manifest.
    upgrade_from: Vec<[u8; MEASUREMENT_LEN]>,
    /// The image's signed `abi::policy` bits, from its manifest.
    policy: u64,
}

impl std::fmt::Debug for EnclaveImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveImage")
            .field("len", &self.bytes.len())
            .field("measurement", &hex::encode(self.measurement))
            .finish()
    }
}

impl EnclaveImage {
    /// The image of a [`credguard_image::SignedImage`], which is only constructed after its
    /// signature verified.
    pub fn from_signed(image: &credguard_image::SignedImage) -> Self {
        EnclaveImage {
            bytes: Arc::from(image.bytes()),
            measurement: *image.measurement().as_bytes(),
            signer: image.signer_id(),
            upgrade_from: image.upgrade_from().iter().map(|m| *m.as_bytes()).collect(),
            policy: image.policy().bits(),
        }
    }

    /// An image from its bytes and measurement, for callers that verified it some other way (and
    /// tests). The measurement is handed to the guest as is: it must be the SHA-384 of `bytes`
    /// that was checked against a signature.
    pub fn from_verified_parts(bytes: impl Into<Arc<[u8]>>, measurement: [u8; MEASUREMENT_LEN]) -> Self {
        EnclaveImage {
            bytes: bytes.into(),
            measurement,
            signer: [0; abi::SIGNER_LEN],
            upgrade_from: Vec::new(),
            policy: 0,
        }
    }

    /// The ELF bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The SHA-384 measurement.
    pub fn measurement(&self) -> &[u8; MEASUREMENT_LEN] {
        &self.measurement
    }

    /// The image's signed `abi::policy` bits.
    pub fn policy(&self) -> u64 {
        self.policy
    }
}

/// Everything needed to launch an enclave.
#[derive(Debug, Clone)]
pub struct EnclaveConfig {
    /// The verified image.
    pub image: EnclaveImage,
    /// Guest RAM in bytes (see [`boot_tables::check_ram_size`]); default [`abi::DEFAULT_RAM_SIZE`].
    pub ram_size: u64,
    /// What the enclave does after boot; default [`BootMode::Service`].
    pub boot_mode: BootMode,
    /// Argument of the boot mode (iterations of the doorbell benchmark).
    pub mode_arg: u64,
    /// Host end of the enclave's vsock: a Unix socket created at this path (replacing a stale
    /// socket file) and removed when the enclave stops. `None`: no vsock device.
    pub vsock_socket: Option<PathBuf>,
    /// Harden the process (`PR_SET_DUMPABLE` 0, `PR_SET_NO_NEW_PRIVS`) and run the vCPU, vsock
    /// and doorbell threads under their seccomp allow-lists (see [`crate::sandbox`]); default
    /// `true`. The caller's own threads install theirs with [`RunningEnclave::thread_filter`].
    pub sandbox: bool,
    /// Signs the enclave's sealing public key once per boot; `None`: the enclave's `Status`
    /// carries no attestation signature (clients cannot seal secrets to it).
    pub attestation_key: Option<Arc<AttestationKey>>,
    /// The vault's root secret (`--sealing-secret`): the VMM derives the image's vault keys from
    /// it and hands only those to the enclave in the exchange page (which the enclave wipes after
    /// copying); `None`: no vault.
    pub vault_root_secret: Option<VaultRootSecret>,
    /// How many times this enclave was restarted before this launch, and why (oldest first);
    /// handed to the enclave for its `Status`.
    pub restart_count: u64,
    /// See [`EnclaveConfig::restart_count`].
    pub restart_reasons: Vec<String>,
    /// Measurements of earlier images whose vault this image may open, from its signed manifest.
    pub upgrade_from: Vec<[u8; abi::MEASUREMENT_LEN]>,
    /// Refuse to launch ([`VmError::HiddenMemoryUnavailable`]) unless guest RAM is a
    /// `guest_memfd` of which the VMM maps only the boot tables, the image and the DMA window;
    /// default `false` (fall back to anonymous memory, mapped whole, and say so).
    pub require_hidden_memory: bool,
    /// Tests only: run the guest with CR4.SMEP and CR4.SMAP even where KVM does not offer them
    /// (they are added to the guest's CPUID); default `false`: exactly what
    /// `KVM_GET_SUPPORTED_CPUID` offers. On the nested PVM KVM of the development machines KVM
    /// offers neither, yet its instruction emulator, which runs all guest ring-0 code there,
    /// enforces both; this lets the tests run the enclave's ring-0 code under them.
    #[doc(hidden)]
    pub force_smep_smap: bool,
}

impl EnclaveConfig {
    /// A service-mode configuration with default RAM and no vsock device.
    pub fn new(image: EnclaveImage) -> Self {
        // The signed manifest's allowance, unless the caller changes it.
        let upgrade_from = image.upgrade_from.clone();
        EnclaveConfig {
            image,
            ram_size: abi::DEFAULT_RAM_SIZE,
            boot_mode: BootMode::Service,
            mode_arg: 0,
            vsock_socket: None,
            sandbox: true,
            attestation_key: None,
            vault_root_secret: None,
            restart_count: 0,
            restart_reasons: Vec::new(),
            upgrade_from,
            require_hidden_memory: false,
            force_smep_smap: false,
        }
    }
}

/// Entry point for launching enclaves.
#[derive(Debug)]
pub struct Enclave;

impl Enclave {
    /// Builds the VM for `config` and starts its vCPU; returns once the guest is running.
    ///
    /// The vsock socket (if configured) is listening when this returns, so a client may connect
    /// at once; the enclave's service accepts the connection once it has booted.
    pub fn launch(config: EnclaveConfig) -> Result<RunningEnclave, VmError> {
        let started = Instant::now();
        boot_tables::check_ram_size(config.ram_size).map_err(|_| VmError::RamSize(config.ram_size))?;
        vcpu::install_kick_handler()?;
        let layout = boot::image_layout(config.image.bytes())?;

        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        // Declared before every view of it, so it is dropped after them on an early return.
        let ram = guest_ram(&vm, &config, layout.end)?;
        let mem = ram.vmm_view()?;
        let filters = ThreadFilters::new(&config, &ram)?;
        if config.sandbox {
            sandbox::harden_process()?;
        }
        // The irqchip must exist before the vCPU is created.
        interrupts::setup_irqchip(&vm)?;

        let vcpu_fd = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpu = boot::setup_cpuid(&kvm, &vcpu_fd, config.force_smep_smap)?;
        let protection = Protection::of(&ram, config.sandbox, cpu);
        let tsc_khz = tsc_khz(&vcpu_fd);
        let placement = Placement::for_this_process();
        tracing::debug!(?placement, "CPUs of the vCPU and the I/O threads");
        let status_board = Arc::new(StatusBoard::new(
            &protection,
            config.restart_count,
            &config.restart_reasons,
        ));
        // The device first: the boot info says how it was pre-negotiated.
        let vsock = match &config.vsock_socket {
            Some(path) => Some(attach_vsock(
                &vm,
                ram.window_view()?,
                path,
                filters.vsock,
                status_board.clone(),
                placement,
            )?),
            None => None,
        };
        let entry = boot::load_image(&mem, config.image.bytes())?;
        let info = boot_info(&config, tsc_khz, vsock.as_ref().map(|(_, preset)| *preset));
        let vsock = vsock.map(|(device, _)| device);
        write_boot_state(&mem, &config, &info, &layout.segments, cpu)?;
        boot::setup_registers(&vcpu_fd, entry, cpu)?;
        interrupts::enable_lapic(&vcpu_fd)?;
        let doorbell = match config.boot_mode {
            BootMode::DoorbellBench => Some(Doorbell::start(&vm, filters.doorbell)?),
            BootMode::Service
            | BootMode::PanicSelfTest
            | BootMode::ServicePanicAfter
            | BootMode::ServiceHangAfter
            | BootMode::WriteCodeSelfTest => None,
        };

        let control = Arc::new(VcpuControl::default());
        let vsock_mmio = vsock
            .as_ref()
            .map(|v| v.transport.clone() as Arc<Mutex<dyn MmioDevice>>);
        let attestor = Attestor::new(config.attestation_key.clone(), &info, status_board.clone());
        let vcpu = Vcpu::new(vcpu_fd, mem.clone(), vsock_mmio, tsc_khz, control.clone(), attestor);
        let (vcpu_thread, outcome_rx) = spawn_vcpu(vcpu, filters.vcpu, placement)?;
        tracing::debug!("enclave launched in {:?}", started.elapsed());
        tracing::debug!("guest memory protection: {}", protection.describe());

        Ok(RunningEnclave {
            control,
            outcome_rx,
            vcpu_thread: Some(vcpu_thread),
            vsock,
            doorbell,
            outcome: None,
            measurement: *config.image.measurement(),
            ram_size: config.ram_size,
            tsc_khz,
            vsock_socket: config.vsock_socket.clone(),
            protection,
            status_board,
            sandbox: config.sandbox,
            _mem: mem,
            _vm: vm,
            ram,
        })
    }
}

/// Guest RAM for `config`, mapped by the VMM up to `image_end` only where guest_memfd allows;
/// refused if hidden memory is required and KVM cannot give it.
fn guest_ram(vm: &VmFd, config: &EnclaveConfig, image_end: u64) -> Result<GuestRam, VmError> {
    if config.require_hidden_memory && !memory::guest_memfd_supported(vm) {
        return Err(VmError::HiddenMemoryUnavailable);
    }
    let ram = GuestRam::new(vm, config.ram_size, image_end)?;
    if config.require_hidden_memory && ram.mapped_bytes() >= ram.size() {
        // KVM offered guest_memfd but refused to make one (logged by GuestRam::new).
        return Err(VmError::HiddenMemoryUnavailable);
    }
    Ok(ram)
}

/// The seccomp allow-lists of the launch's threads (none without the sandbox), made before the
/// process is hardened: each thread installs its own before it runs guest-facing code.
struct ThreadFilters {
    vcpu: Option<ThreadFilter>,
    vsock: Option<ThreadFilter>,
    doorbell: Option<ThreadFilter>,
}

impl ThreadFilters {
    fn new(config: &EnclaveConfig, ram: &GuestRam) -> Result<Self, VmError> {
        let filter = |role| -> Result<Option<ThreadFilter>, VmError> {
            Ok(if config.sandbox {
                Some(ThreadFilter::new(role, ram.host_range())?)
            } else {
                None
            })
        };
        Ok(ThreadFilters {
            vcpu: filter(ThreadRole::Vcpu)?,
            vsock: filter(ThreadRole::Vsock)?,
            doorbell: filter(ThreadRole::Doorbell)?,
        })
    }
}

/// The TSC frequency KVM gives the vCPU, for the enclave's clock (0 if KVM does not know it).
fn tsc_khz(vcpu_fd: &kvm_ioctls::VcpuFd) -> u64 {
    match vcpu_fd.get_tsc_khz() {
        Ok(khz) => u64::from(khz),
        Err(e) => {
            tracing::warn!("KVM does not know the TSC frequency ({e}); the enclave gets 0");
            0
        }
    }
}

/// What the enclave is told at boot: its memory, mode, the image it was verified as, and the
/// image's signed manifest (earlier images whose vault it may open, policy).
fn boot_info(config: &EnclaveConfig, tsc_khz: u64, vsock: Option<VsockPreset>) -> BootInfo {
    let image = &config.image;
    let info = BootInfo::new(
        config.ram_size,
        tsc_khz,
        config.boot_mode,
        config.mode_arg,
        image.bytes().len() as u64,
        *image.measurement(),
    )
    .with_signer(image.signer)
    .with_upgrade_from(&config.upgrade_from)
    .with_policy(image.policy);
    match vsock {
        Some(preset) => info.with_vsock(preset),
        None => info,
    }
}

/// Writes the boot tables and boot info, and hands over the vault keys (if the VMM has a sealing
/// secret).
fn write_boot_state(
    mem: &GuestMemoryMmap,
    config: &EnclaveConfig,
    info: &BootInfo,
    segments: &[boot_tables::ImageSegment],
    cpu: CpuProtection,
) -> Result<(), VmError> {
    boot::write_boot_tables(mem, info, segments, cpu)?;
    if let Some(secret) = &config.vault_root_secret {
        // Keys for exactly the image just verified and the earlier images its signed manifest
        // allows (the same list, in the same order, as the boot info's upgrade_from).
        let own = secret.vault_key(config.image.measurement());
        let upgrade: Vec<_> = info.upgrade_from().iter().map(|m| secret.vault_key(m)).collect();
        boot::hand_over_vault_keys(mem, &own, &upgrade)?;
    }
    // An upgrade allowance is a decision of the signing key's holder: say it at every boot.
    for m in config.upgrade_from.iter().take(abi::MAX_UPGRADE_FROM) {
        tracing::info!(
            earlier_measurement = %hex::encode(m),
            "this image's signed manifest lets it open and re-seal the vault of an earlier image"
        );
    }
    Ok(())
}

/// Runs `vcpu` on its own thread, on its CPU of `placement`, under `filter`; the receiver gets
/// how it ended.
fn spawn_vcpu(
    vcpu: Vcpu,
    filter: Option<ThreadFilter>,
    placement: Placement,
) -> Result<(JoinHandle<()>, mpsc::Receiver<ExitOutcome>), VmError> {
    let (outcome_tx, outcome_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || {
            placement.pin_vcpu_thread();
            if let Some(filter) = filter
                && let Err(e) = filter.apply()
            {
                let _ = outcome_tx.send(ExitOutcome::Unexpected(e.to_string()));
                return;
            }
            let outcome = vcpu.run();
            // The receiver is gone only if the RunningEnclave was leaked; nobody to tell.
            let _ = outcome_tx.send(outcome);
        })
        .map_err(VmError::Spawn)?;
    Ok((thread, outcome_rx))
}

/// Which protections are in force for an enclave, as the VMM reports them (its status port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// [`vmm_status::protection`] bits.
    pub bits: u64,
    /// Bytes of guest RAM mapped in the VMM.
    pub host_mapped_bytes: u64,
    /// Guest RAM in bytes.
    pub ram_size: u64,
}

impl Protection {
    fn of(ram: &GuestRam, sandbox: bool, cpu: CpuProtection) -> Self {
        use vmm_status::protection::*;
        // The page tables are always built W^X from the image's segments (boot::image_layout).
        let mut bits = KNOWN | W_XOR_X;
        if cpu.smep {
            bits |= SMEP;
        }
        if cpu.smap {
            bits |= SMAP;
        }
        if ram.backing() == Backing::GuestMemfd {
            bits |= GUEST_MEMFD;
            if ram.mapped_bytes() < ram.size() {
                bits |= HIDDEN;
            }
        }
        match ram.locking() {
            Locking::Locked => bits |= MLOCKED,
            Locking::OnFault => bits |= MLOCKED_ON_FAULT,
            Locking::Unlocked => {}
        }
        if ram.dontdump() {
            bits |= DONTDUMP;
        }
        if sandbox {
            // The filters are installed by each thread before it runs guest-facing code; a
            // failure to install ends the enclave, so the bit is never claimed falsely.
            bits |= SECCOMP | NO_NEW_PRIVS;
            if !sandbox::dumpable() {
                bits |= NOT_DUMPABLE;
            }
        }
        Protection {
            bits,
            host_mapped_bytes: ram.mapped_bytes(),
            ram_size: ram.size(),
        }
    }

    /// One line, e.g. "guest_memfd, 2.16 of 16.00 MiB mapped in the VMM, mlocked, ...".
    pub fn describe(&self) -> String {
        vmm_status::describe_protection(self.bits, self.host_mapped_bytes, self.ram_size)
    }
}

/// Creates the vsock device, starts it pre-negotiated (boot ABI 4: the returned preset goes into
/// the boot info), and wires its queue notifications and interrupt into KVM.
/// The device sees only the DMA window (`mem`): descriptors pointing elsewhere are refused. The
/// VMM's status port answers from `status_board`.
fn attach_vsock(
    vm: &VmFd,
    mem: GuestMemoryMmap,
    path: &Path,
    filter: Option<ThreadFilter>,
    status_board: Arc<StatusBoard>,
    placement: Placement,
) -> Result<(VirtioMmioVsock, VsockPreset), VmError> {
    let device = create_vsock_device(
        mem,
        VsockConfig {
            guest_cid: abi::GUEST_CID,
            uds_path: path.into(),
            filter,
            host_answered: Some(HostAnsweredPort {
                port: vmm_status::VMM_STATUS_PORT,
                answer: Arc::new(move || status_board.encoded()),
            }),
            placement: Some(placement),
        },
    )?;
    let notify = IoEventAddress::Mmio(abi::VSOCK_MMIO_GPA + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
    for (queue, evt) in &device.queue_notify_evts {
        // The u32 datamatch makes this a 4-byte match on the queue index written to QueueNotify.
        vm.register_ioevent(evt, &notify, *queue)
            .map_err(kvm_err("KVM_IOEVENTFD (vsock queue notify)"))?;
    }
    vm.register_irqfd(&device.irq_evt, abi::VSOCK_GSI)
        .map_err(kvm_err("KVM_IRQFD (vsock)"))?;
    let preset = VsockPreset::agreed(device.offered_features(), abi::GUEST_CID);
    device.start_negotiated(preset.features, &preset.queues)?;
    Ok((device, preset))
}

/// Stops a [`RunningEnclave`] from any thread (e.g. a signal watcher).
#[derive(Debug, Clone)]
pub struct StopHandle {
    control: Arc<VcpuControl>,
}

impl StopHandle {
    /// Asks the enclave to stop. Returns at once; the enclave's waiter sees
    /// [`ExitOutcome::Stopped`] (unless the guest exited on its own first).
    pub fn stop(&self) {
        self.control.request_stop();
    }
}

/// A launched enclave. Dropping it stops the enclave and waits for it.
pub struct RunningEnclave {
    control: Arc<VcpuControl>,
    outcome_rx: mpsc::Receiver<ExitOutcome>,
    vcpu_thread: Option<JoinHandle<()>>,
    vsock: Option<VirtioMmioVsock>,
    doorbell: Option<Doorbell>,
    outcome: Option<ExitOutcome>,
    measurement: [u8; MEASUREMENT_LEN],
    ram_size: u64,
    tsc_khz: u64,
    vsock_socket: Option<PathBuf>,
    protection: Protection,
    status_board: Arc<StatusBoard>,
    sandbox: bool,
    // Kept for as long as the VM exists: the memory slot points into it, and the ioeventfd and
    // irqfd registrations live as long as the VM fd.
    _mem: GuestMemoryMmap,
    _vm: VmFd,
    // Last: dropped after the VM and every view of guest memory (fields drop in order, and the
    // threads holding views are joined before, in `finish`).
    ram: GuestRam,
}

impl std::fmt::Debug for RunningEnclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEnclave")
            .field("measurement", &hex::encode(self.measurement))
            .field("ram_size", &self.ram_size)
            .field("vsock_socket", &self.vsock_socket)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl RunningEnclave {
    /// The measurement of the image the enclave runs.
    pub fn measurement(&self) -> &[u8; MEASUREMENT_LEN] {
        &self.measurement
    }

    /// Guest RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// TSC frequency handed to the guest (0 if unknown).
    pub fn tsc_khz(&self) -> u64 {
        self.tsc_khz
    }

    /// Guest accesses to the vsock device's registers so far (each an exit to the VMM; 0 for a
    /// boot that used the pre-negotiated device as agreed), if the enclave has one.
    pub fn vsock_register_accesses(&self) -> Option<u64> {
        self.vsock.as_ref().map(VirtioMmioVsock::register_accesses)
    }

    /// Path of the host end of the enclave's vsock, if it has one.
    pub fn vsock_socket(&self) -> Option<&Path> {
        self.vsock_socket.as_deref()
    }

    /// Which protections are in force (also in the start-up log and the VMM's status).
    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// What the VMM reports on its status port about this launch, as it is now.
    pub fn vmm_status(&self) -> credguard_proto::vmm_status::VmmStatus {
        self.status_board.status()
    }

    /// The seccomp filter for one of the caller's threads (the signal watcher, the main
    /// thread), or `None` if the enclave was launched without the sandbox. Apply it with
    /// [`ThreadFilter::apply`] once that thread's setup is done.
    pub fn thread_filter(&self, role: ThreadRole) -> Result<Option<ThreadFilter>, VmError> {
        if !self.sandbox {
            return Ok(None);
        }
        Ok(Some(ThreadFilter::new(role, self.ram.host_range())?))
    }

    /// A handle that stops this enclave from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            control: self.control.clone(),
        }
    }

    /// Asks the enclave to stop; [`RunningEnclave::wait`] then returns [`ExitOutcome::Stopped`].
    pub fn stop(&self) {
        self.control.request_stop();
    }

    /// Blocks until the enclave ends, then releases its devices (which removes the vsock socket
    /// file) and returns how it ended.
    pub fn wait(mut self) -> ExitOutcome {
        self.wait_until(None)
            .unwrap_or_else(|| ExitOutcome::Unexpected("wait returned without an outcome".into()))
    }

    /// Like [`RunningEnclave::wait`] but gives up after `timeout`, returning `None` if the
    /// enclave is still running. Once it returned an outcome, later calls return the same.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitOutcome> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    /// Stops the enclave and waits for it.
    pub fn stop_and_wait(self) -> ExitOutcome {
        self.stop();
        self.wait()
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<ExitOutcome> {
        if let Some(outcome) = &self.outcome {
            return Some(outcome.clone());
        }
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(KICK_INTERVAL),
                None => KICK_INTERVAL,
            };
            match self.outcome_rx.recv_timeout(slice) {
                Ok(outcome) => return Some(self.finish(outcome)),
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(self.finish(ExitOutcome::Unexpected("the vCPU thread panicked".into())));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.control.stop_requested() {
                        // The first kick may have arrived before the thread entered KVM_RUN.
                        self.control.kick();
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return None;
                    }
                }
            }
        }
    }

    fn finish(&mut self, outcome: ExitOutcome) -> ExitOutcome {
        if let Some(thread) = self.vcpu_thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the vCPU thread panicked");
        }
        if let Some(mut doorbell) = self.doorbell.take() {
            doorbell.stop();
        }
        if let Some(mut vsock) = self.vsock.take() {
            vsock.stop();
        }
        self.outcome = Some(outcome.clone());
        outcome
    }
}

impl Drop for RunningEnclave {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            self.control.request_stop();
            let _ = self.wait_until(None);
        }
    }
}
