//! The `credguard-vmm` command line: `verify` and `run`.
//!
//! In the library, so that the `credguard-vmm` binary is a one-line `main`.
//!
//! `run` in service mode is a [`supervisor`](crate::supervisor): it re-executes this program as a
//! worker (`run ... --worker`) that verifies, boots and sandboxes the enclave, and starts a new
//! worker when the enclave dies or hangs. `--no-supervise`, the benchmark and self-test modes, and
//! the worker itself run the enclave in this process.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::attestation::AttestationKey;
use crate::config::VmmConfig;
use crate::memory::host_has_guest_memfd;
use crate::sandbox::ThreadRole;
use crate::supervisor::{InjectedFault, RestartPolicy, SupervisorConfig};
use crate::vault_key::VaultRootSecret;
use crate::watchdog::WatchdogConfig;
use crate::{
    BootMode, Enclave, EnclaveConfig, EnclaveImage, ExitOutcome, RunningEnclave, VmError, signals, supervisor,
};
use clap::{Parser, Subcommand, ValueEnum};
use credguard_image::SignedImage;
use credguard_proto::{abi, boot_tables};

/// Exit status for a refused image or configuration (nothing was booted).
const EXIT_REFUSED: u8 = supervisor::EXIT_REFUSED;
/// Exit status when the enclave ended badly.
const EXIT_ENCLAVE_FAILED: u8 = supervisor::EXIT_ENCLAVE_FAILED;

#[derive(Parser)]
#[command(name = "credguard-vmm", version, about = "Verify and run the credguard enclave")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the image's signature comes from.
#[derive(clap::Args)]
struct ImageArgs {
    /// The image's manifest (default: `<image>.manifest.json`).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The public key the manifest must be signed with. Required, here or as `trusted_key` in the
    /// `[vmm]` table of --config: there is no default key.
    #[arg(long)]
    trusted_key: Option<PathBuf>,
    /// credguard's configuration file (e.g. /etc/credguard/credguard.toml). The VMM reads its
    /// `[vmm]` table (`trusted_key`, `require_hidden_memory`; flags win) and ignores the rest.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The settings of `verify` and `run` once the command line and the `[vmm]` table are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// The public key the image must be signed with.
    trusted_key: PathBuf,
    /// Refuse to start without guest_memfd.
    require_hidden_memory: bool,
}

impl Settings {
    /// Merges the flags with the `[vmm]` table of `--config`: a flag wins; `require_hidden_memory`
    /// is on if either turns it on. Without a trusted key from either, refuses: the production
    /// VMM has no default key (the dev launcher passes the dev key explicitly).
    fn resolve(sig: &ImageArgs, require_hidden_memory: bool) -> Result<Self, String> {
        let file = match &sig.config {
            Some(path) => VmmConfig::load(path).map_err(|e| format!("--config: {e}"))?,
            None => VmmConfig::default(),
        };
        let trusted_key = sig.trusted_key.clone().or(file.trusted_key).ok_or(
            "no trusted key: give --trusted-key PATH, or trusted_key in the [vmm] table of --config \
             (there is no default key)",
        )?;
        Ok(Settings {
            trusted_key,
            require_hidden_memory: require_hidden_memory || file.require_hidden_memory,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Verify an image's signature; print its measurement and signer.
    Verify {
        /// The enclave image (ELF).
        image: PathBuf,
        #[command(flatten)]
        sig: ImageArgs,
    },
    /// Make the VMM's attestation key at PATH (mode 0600) if there is none, write its public half
    /// to PATH.pub (hex, for clients), and print the public half.
    AttestationKey {
        /// The key file.
        path: PathBuf,
    },
    /// Verify and boot the enclave; run until it exits or SIGTERM/SIGINT.
    Run {
        #[command(flatten)]
        args: RunArgs,
        #[command(flatten)]
        supervise: SuperviseArgs,
    },
}

/// What to boot and how (the arguments of `run` a worker gets unchanged).
#[derive(clap::Args)]
struct RunArgs {
    /// The enclave image (ELF).
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    sig: ImageArgs,
    /// Where to create the host end of the enclave's vsock (a Unix socket).
    #[arg(long)]
    vsock_socket: PathBuf,
    /// Refuse to start (exit status 2, nothing booted) unless KVM offers guest_memfd, so that the
    /// VMM maps only the boot tables, the image and the DMA window of guest RAM, never the
    /// enclave's heap and stack. Also `require_hidden_memory = true` in the `[vmm]` table of
    /// --config. Without it, a host without guest_memfd runs the enclave in anonymous memory the
    /// VMM maps whole (and says so in the log and in Status).
    #[arg(long)]
    require_hidden_memory: bool,
    /// Guest RAM in MiB (a multiple of 2, at least 12).
    #[arg(long, default_value_t = abi::DEFAULT_RAM_SIZE >> 20)]
    memory_mib: u64,
    /// What the enclave does after boot.
    #[arg(long, value_enum, default_value_t = Mode::Service)]
    boot_mode: Mode,
    /// Round trips of the doorbell benchmark.
    #[arg(long, default_value_t = 10_000)]
    bench_iterations: u64,
    /// The VMM's attestation key (Ed25519 PKCS#8, a root-only file), made here with its
    /// public half `<path>.pub` if missing. It signs each boot's sealing public key, so that
    /// clients can seal passwords to the enclave. Without it, sealed logon is unavailable.
    #[arg(long)]
    attestation_key: Option<PathBuf>,
    /// The host sealing secret of the vault (32 bytes, a root-only file), made here if
    /// missing. Without it, the vault (saved credentials) is unavailable.
    #[arg(long)]
    sealing_secret: Option<PathBuf>,
}

/// How `run` keeps the enclave alive (service mode).
#[derive(clap::Args)]
struct SuperviseArgs {
    /// Run the enclave in this process, without restarts or watchdog (tests and benchmarks).
    #[arg(long)]
    no_supervise: bool,
    /// Ping the enclave this often (milliseconds); 0 turns the watchdog off.
    #[arg(long, default_value_t = 2000)]
    watchdog_interval_ms: u64,
    /// Restart the enclave when it has not answered a ping for this long (milliseconds). Long
    /// enough for a busy enclave: it serves requests one at a time.
    #[arg(long, default_value_t = 10_000)]
    watchdog_timeout_ms: u64,
    /// Restarts allowed within --restart-window-secs; one more exits with status 1 (the
    /// service manager then decides).
    #[arg(long, default_value_t = 10)]
    max_restarts: u32,
    /// See --max-restarts.
    #[arg(long, default_value_t = 60)]
    restart_window_secs: u64,
    /// Internal: this process is the supervisor's worker.
    #[arg(long, hide = true)]
    worker: bool,
    /// Internal: the pipe on which the worker reports why its enclave ended.
    #[arg(long, hide = true)]
    report_fd: Option<RawFd>,
    /// Internal: how many times the enclave was restarted before this boot.
    #[arg(long, hide = true, default_value_t = 0)]
    restart_count: u64,
    /// Internal: why (repeated, oldest first).
    #[arg(long, hide = true)]
    restart_reason: Vec<String>,
    /// Tests only: make the enclave panic or hang after --inject-fault-after requests.
    #[arg(long, hide = true, value_enum)]
    inject_fault: Option<FaultKind>,
    /// Tests only: requests served before the injected fault.
    #[arg(long, hide = true, default_value_t = 0)]
    inject_fault_after: u64,
    /// Tests only: how many boots get the injected fault (restarts after them boot normally).
    #[arg(long, hide = true, default_value_t = 1)]
    inject_fault_boots: u32,
}

/// An injected fault (tests only).
#[derive(Clone, Copy, ValueEnum)]
enum FaultKind {
    /// `BootMode::ServicePanicAfter`.
    Panic,
    /// `BootMode::ServiceHangAfter`.
    Hang,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::Hang => "hang",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Serve the enclave service on vsock.
    Service,
    /// Measure doorbell round trips and print them as JSON.
    DoorbellBench,
    /// Panic right after boot (checks that a panic is reported).
    PanicSelfTest,
}

impl From<Mode> for BootMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Service => BootMode::Service,
            Mode::DoorbellBench => BootMode::DoorbellBench,
            Mode::PanicSelfTest => BootMode::PanicSelfTest,
        }
    }
}

/// Runs the command line `args` (the first item is the program name) and returns the process's
/// exit status: 0 on success, 1 when the enclave ended badly or could not start, 2 when the image
/// or the configuration was refused (nothing booted).
///
/// Call it first thing in `main`, before any thread exists: it blocks SIGTERM and SIGINT so that
/// only its watcher thread takes them.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    if let Err(e) = signals::block_termination_signals() {
        eprintln!("credguard-vmm: {e}");
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    match cli.command {
        Command::Verify { image, sig } => match Settings::resolve(&sig, false) {
            Ok(settings) => verify(&image, &sig, &settings),
            Err(e) => {
                eprintln!("credguard-vmm: {e}");
                ExitCode::from(EXIT_REFUSED)
            }
        },
        Command::AttestationKey { path } => match AttestationKey::load_or_create(&path) {
            Ok(key) => {
                println!("{}", hex::encode(key.public_key()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("credguard-vmm: attestation key: {e}");
                ExitCode::from(EXIT_REFUSED)
            }
        },
        Command::Run { args, supervise } => {
            // SAFETY: taken once, before this process starts a thread or opens an fd of its own.
            let mut report = supervise.report_fd.and_then(|fd| unsafe { take_report_fd(fd) });
            // The configuration is checked before anything else, by the supervisor and again by
            // each worker: a refusal is final (exit 2), never a restart loop.
            let settings = Settings::resolve(&args.sig, args.require_hidden_memory)
                .and_then(|s| refuse_without_hidden_memory(s.require_hidden_memory, host_has_guest_memfd).map(|()| s));
            let settings = match settings {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("credguard-vmm: {e}");
                    return ExitCode::from(EXIT_REFUSED);
                }
            };
            let boot_mode = args.boot_mode;
            // Only the service is kept alive; the benchmark and the self-test report their one run.
            if matches!(boot_mode, Mode::Service) && !supervise.no_supervise && !supervise.worker {
                return run_supervisor(&args, &settings, &supervise);
            }
            let (code, reason) = run(args, &settings, &supervise);
            if let (Some(file), Some(reason)) = (report.as_mut(), reason) {
                // One line: the supervisor logs it and hands it to the next boot.
                let line = reason.lines().next().unwrap_or("").trim();
                let _ = writeln!(file, "{line}");
            }
            ExitCode::from(code)
        }
    }
}

/// Takes ownership of the report pipe the supervisor handed down, if `fd` is open, and keeps it
/// from leaking further (close-on-exec).
///
/// # Safety
/// Call once, before anything else in the process may own `fd`.
unsafe fn take_report_fd(fd: RawFd) -> Option<std::fs::File> {
    // The standard streams are never the report pipe; leave them alone.
    // SAFETY: F_GETFD/F_SETFD only read and set the fd's flags.
    let open = fd > 2
        && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
        && unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
    if !open {
        eprintln!("credguard-vmm: --report-fd {fd} is not an open pipe; not reporting");
        return None;
    }
    // SAFETY: the supervisor opened this fd for this worker alone and nothing else here owns it
    // (the caller's contract).
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// The part of this process's own command line that leads to `run` (`["run"]` for
/// `credguard-vmm run`), so the worker is started the same way this process was.
fn run_prefix() -> Vec<OsString> {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    match argv.iter().position(|a| a == "run") {
        Some(i) => argv[..=i].to_vec(),
        None => vec!["run".into()],
    }
}

/// Refuses (a message naming the option) when hidden guest memory is `required` and `probe` says
/// this host's KVM cannot give it, or cannot be asked; `probe` runs only when it is required.
fn refuse_without_hidden_memory(
    required: bool,
    probe: impl FnOnce() -> Result<bool, kvm_ioctls::Error>,
) -> Result<(), String> {
    if !required {
        return Ok(());
    }
    match probe() {
        Ok(true) => Ok(()),
        Ok(false) => Err(VmError::HiddenMemoryUnavailable.to_string()),
        Err(e) => Err(format!(
            "--require-hidden-memory: cannot ask KVM whether it offers guest_memfd ({e}); refusing to start"
        )),
    }
}

fn run_supervisor(args: &RunArgs, settings: &Settings, s: &SuperviseArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("credguard-vmm: cannot find this program to start the enclave worker: {e}");
            return ExitCode::from(EXIT_ENCLAVE_FAILED);
        }
    };
    let mut worker_args = run_prefix();
    let mut push = |flag: &str, value: &std::ffi::OsStr| {
        worker_args.push(flag.into());
        worker_args.push(value.to_owned());
    };
    push("--image", args.image.as_os_str());
    if let Some(m) = &args.sig.manifest {
        push("--manifest", m.as_os_str());
    }
    // The worker gets the settings as resolved here (flags and --config), not the file.
    push("--trusted-key", settings.trusted_key.as_os_str());
    push("--vsock-socket", args.vsock_socket.as_os_str());
    push("--memory-mib", args.memory_mib.to_string().as_ref());
    if let Some(k) = &args.attestation_key {
        push("--attestation-key", k.as_os_str());
    }
    if let Some(k) = &args.sealing_secret {
        push("--sealing-secret", k.as_os_str());
    }
    if settings.require_hidden_memory {
        worker_args.push("--require-hidden-memory".into());
    }
    let watchdog = (s.watchdog_interval_ms > 0).then(|| WatchdogConfig {
        interval: Duration::from_millis(s.watchdog_interval_ms),
        timeout: Duration::from_millis(s.watchdog_timeout_ms),
    });
    if let Some(w) = &watchdog
        && let Err(e) = w.validate()
    {
        eprintln!("credguard-vmm: --watchdog-interval-ms/--watchdog-timeout-ms: {e}");
        return ExitCode::from(EXIT_REFUSED);
    }
    let fault = s.inject_fault.map(|kind| InjectedFault {
        worker_args: vec![
            "--inject-fault".into(),
            kind.name().into(),
            "--inject-fault-after".into(),
            s.inject_fault_after.to_string().into(),
        ],
        boots: s.inject_fault_boots,
    });
    if let Some(w) = &watchdog {
        tracing::info!(
            "supervising the enclave: watchdog every {} ms, restart after {} ms without an answer; at most {} restarts in {} s",
            w.interval.as_millis(),
            w.timeout.as_millis(),
            s.max_restarts,
            s.restart_window_secs
        );
    }
    let config = SupervisorConfig {
        exe,
        worker_args,
        vsock_socket: args.vsock_socket.clone(),
        watchdog,
        policy: RestartPolicy {
            max_restarts: s.max_restarts,
            window: Duration::from_secs(s.restart_window_secs),
        },
        fault,
    };
    match supervisor::run(config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("credguard-vmm: {e}");
            ExitCode::from(EXIT_ENCLAVE_FAILED)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes when stderr goes to a file or the journal.
    let ansi = std::io::stderr().is_terminal();
    // `try_init`: a process that already installed a subscriber keeps it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn load(image: &Path, sig: &ImageArgs, settings: &Settings) -> Result<SignedImage, credguard_image::ImageError> {
    let manifest = sig
        .manifest
        .clone()
        .unwrap_or_else(|| credguard_image::default_manifest_path(image));
    SignedImage::load_and_verify(image, &manifest, &settings.trusted_key)
}

fn verify(image: &Path, sig: &ImageArgs, settings: &Settings) -> ExitCode {
    match load(image, sig, settings) {
        Ok(signed) => {
            println!("measurement: {}", signed.measurement());
            println!("signer: {}", signed.signer_fingerprint());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("credguard-vmm: {} does not verify: {e}", image.display());
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// Runs the enclave in this process. Returns the exit status and, when the enclave ended badly,
/// a one-line reason (for the supervisor, which restarts on it).
fn run(args: RunArgs, settings: &Settings, s: &SuperviseArgs) -> (u8, Option<String>) {
    let failed = |reason: String| (EXIT_ENCLAVE_FAILED, Some(reason));
    // Everything that can refuse is checked before any guest memory exists: a refusal is a
    // configuration error (exit 2, no restart), not a failed boot.
    let (config, summary) = match checked_enclave_config(args, settings, s) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("credguard-vmm: {e}");
            return (EXIT_REFUSED, None);
        }
    };
    let enclave = match Enclave::launch(config) {
        Ok(enclave) => enclave,
        Err(e @ VmError::HiddenMemoryUnavailable) => {
            eprintln!("credguard-vmm: {e}");
            return (EXIT_REFUSED, None);
        }
        Err(e) => {
            eprintln!("credguard-vmm: cannot start the enclave: {e}");
            return failed(format!("cannot start the enclave: {e}"));
        }
    };
    tracing::info!("enclave started: {summary}");
    if let Err(e) = sandbox_this_process(&enclave) {
        eprintln!("credguard-vmm: {e}");
        let _ = enclave.stop_and_wait();
        return failed(e);
    }
    tracing::info!("protection in force: {}", enclave.protection().describe());
    exit_status(enclave.wait())
}

/// The enclave's configuration from `args`, every part checked (keys, signature, bootability,
/// RAM size), and the start-up log line's summary of it. `Err` is the message of a refusal.
fn checked_enclave_config(
    args: RunArgs,
    settings: &Settings,
    s: &SuperviseArgs,
) -> Result<(EnclaveConfig, String), String> {
    let RunArgs {
        image,
        sig,
        vsock_socket,
        require_hidden_memory: _,
        memory_mib,
        boot_mode,
        bench_iterations,
        attestation_key,
        sealing_secret,
    } = args;
    // Keys first: a missing or unreadable key is a configuration error, found before any boot.
    let attestation_key = attestation_key
        .as_deref()
        .map(AttestationKey::load_or_create)
        .transpose()
        .map_err(|e| format!("attestation key: {e}"))?;
    let sealing_secret = sealing_secret
        .as_deref()
        .map(VaultRootSecret::load_or_create)
        .transpose()
        .map_err(|e| format!("sealing secret: {e}"))?;
    let signed = load_bootable(&image, &sig, settings)?;
    let ram_size = guest_ram_size(memory_mib)?;
    let (boot_mode, mode_arg) = enclave_boot_mode(boot_mode, bench_iterations, s);

    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.ram_size = ram_size;
    config.boot_mode = boot_mode;
    config.mode_arg = mode_arg;
    config.restart_count = s.restart_count;
    config.restart_reasons = s.restart_reason.clone();
    config.vsock_socket = Some(vsock_socket.clone());
    config.attestation_key = attestation_key.map(Arc::new);
    config.vault_root_secret = sealing_secret;
    config.require_hidden_memory = settings.require_hidden_memory;
    let summary = format!(
        "measurement {}, signer {}, {} MiB, mode {boot_mode:?}, vsock {}",
        signed.measurement(),
        signed.signer_fingerprint(),
        memory_mib,
        vsock_socket.display()
    );
    Ok((config, summary))
}

/// The image at `image`, its signature verified and its segments checked bootable.
fn load_bootable(image: &Path, sig: &ImageArgs, settings: &Settings) -> Result<SignedImage, String> {
    // The signature is checked before any guest memory exists.
    let signed = load(image, sig, settings).map_err(|e| format!("refusing to boot {}: {e}", image.display()))?;
    // A signed image can still be unbootable (segments outside the image window): refuse it here
    // too, before any guest memory exists. `Enclave::launch` checks again.
    crate::boot::check_image(signed.bytes()).map_err(|e| format!("refusing to boot {}: {e}", image.display()))?;
    Ok(signed)
}

/// `--memory-mib` in bytes, if the boot ABI allows it.
fn guest_ram_size(memory_mib: u64) -> Result<u64, String> {
    let ram_size = memory_mib.saturating_mul(1 << 20);
    boot_tables::check_ram_size(ram_size).map_err(|_| {
        format!(
            "--memory-mib {memory_mib}: must be even and within {}..={}",
            abi::MIN_RAM_SIZE >> 20,
            abi::MAX_RAM_SIZE >> 20
        )
    })?;
    Ok(ram_size)
}

/// The boot mode the enclave gets and its argument: an injected fault turns the service into its
/// failing variant (tests only); the benchmark gets its iteration count.
fn enclave_boot_mode(mode: Mode, bench_iterations: u64, s: &SuperviseArgs) -> (BootMode, u64) {
    match (mode, s.inject_fault) {
        (Mode::Service, Some(FaultKind::Panic)) => (BootMode::ServicePanicAfter, s.inject_fault_after),
        (Mode::Service, Some(FaultKind::Hang)) => (BootMode::ServiceHangAfter, s.inject_fault_after),
        (Mode::DoorbellBench, _) => (BootMode::DoorbellBench, bench_iterations),
        (mode, _) => (BootMode::from(mode), 0),
    }
}

/// Starts the SIGTERM/SIGINT watcher under its filter, then puts this (the main) thread under
/// its own. `Err` is the message of a filter that cannot be built or installed.
fn sandbox_this_process(enclave: &RunningEnclave) -> Result<(), String> {
    let signals_filter = enclave.thread_filter(ThreadRole::Signals).map_err(|e| e.to_string())?;
    let main_filter = enclave.thread_filter(ThreadRole::Main).map_err(|e| e.to_string())?;
    if let Err(e) = signals::spawn_termination_watcher(enclave.stop_handle(), signals_filter) {
        tracing::warn!("no clean shutdown on SIGTERM/SIGINT: {e}");
    }
    // Last: every other thread has started (filters are inherited by threads started later).
    if let Some(filter) = main_filter {
        filter.apply().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The exit status of a run that ended with `outcome`, and the reason to report when it ended
/// badly.
fn exit_status(outcome: ExitOutcome) -> (u8, Option<String>) {
    match outcome {
        ExitOutcome::BenchDone(bench) => {
            println!("{}", bench.to_json());
            (0, None)
        }
        outcome @ (ExitOutcome::Clean | ExitOutcome::Stopped) => {
            tracing::info!("{outcome}");
            (0, None)
        }
        outcome => {
            eprintln!("credguard-vmm: {outcome}");
            (EXIT_ENCLAVE_FAILED, Some(restart_reason(&outcome)))
        }
    }
}

/// The one line the supervisor logs and hands to the next boot for `outcome`.
fn restart_reason(outcome: &ExitOutcome) -> String {
    match outcome {
        // The panic message is the console line the enclave's panic handler wrote.
        ExitOutcome::Panic { last_lines } => match last_lines.iter().rev().find(|l| l.contains("PANIC")) {
            Some(line) => format!("the enclave panicked: {}", line.trim()),
            None => "the enclave panicked".to_owned(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_args(trusted_key: Option<&str>, config: Option<&Path>) -> ImageArgs {
        ImageArgs {
            manifest: None,
            trusted_key: trusted_key.map(PathBuf::from),
            config: config.map(Path::to_path_buf),
        }
    }

    fn config_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("credguard-vmm-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credguard.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn there_is_no_default_trusted_key() {
        let e = Settings::resolve(&image_args(None, None), false).unwrap_err();
        assert!(e.contains("--trusted-key") && e.contains("no default"), "{e}");
        // A config file without the key does not help either.
        let empty = config_file("empty", "[api]\nsocket = \"/x\"\n");
        assert!(Settings::resolve(&image_args(None, Some(&empty)), false).is_err());
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let file = config_file(
            "keys",
            "[vmm]\ntrusted_key = \"/etc/a.pub\"\nrequire_hidden_memory = true\n",
        );
        let s = Settings::resolve(&image_args(None, Some(&file)), false).unwrap();
        assert_eq!(s.trusted_key, PathBuf::from("/etc/a.pub"));
        assert!(s.require_hidden_memory, "the file turns it on");
        let s = Settings::resolve(&image_args(Some("/b.pub"), Some(&file)), false).unwrap();
        assert_eq!(s.trusted_key, PathBuf::from("/b.pub"));
        let s = Settings::resolve(&image_args(Some("/b.pub"), None), true).unwrap();
        assert!(s.require_hidden_memory, "the flag turns it on");
        let bad = config_file("bad", "[vmm]\nrequire_hidden = true\n");
        let e = Settings::resolve(&image_args(Some("/b.pub"), Some(&bad)), false).unwrap_err();
        assert!(e.contains("--config") && e.contains("require_hidden"), "{e}");
    }

    #[test]
    fn hidden_memory_is_refused_only_when_required_and_missing() {
        let never = || -> Result<bool, kvm_ioctls::Error> { panic!("probed although not required") };
        assert!(refuse_without_hidden_memory(false, never).is_ok());
        // A host with guest_memfd starts.
        assert!(refuse_without_hidden_memory(true, || Ok(true)).is_ok());
        let e = refuse_without_hidden_memory(true, || Ok(false)).unwrap_err();
        assert!(
            e.contains("--require-hidden-memory") && e.contains("guest_memfd"),
            "{e}"
        );
        let e = refuse_without_hidden_memory(true, || Err(kvm_ioctls::Error::new(libc::ENOENT))).unwrap_err();
        assert!(e.contains("--require-hidden-memory") && e.contains("cannot ask"), "{e}");
    }
}
