//! The `credguard-vmm` command line: `verify` and `run`.
//!
//! In the library so that both the `credguard-vmm` binary and the `credguard` dev launcher (which
//! re-executes itself as `credguard vmm ...`) run exactly the same code.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use crate::attestation::AttestationKey;
use crate::sandbox::ThreadRole;
use crate::sealing::SealingSecret;
use crate::{BootMode, Enclave, EnclaveConfig, EnclaveImage, ExitOutcome, signals};
use clap::{Parser, Subcommand, ValueEnum};
use credguard_image::SignedImage;
use credguard_proto::abi;

/// Exit status for a refused image or configuration (nothing was booted).
const EXIT_REFUSED: u8 = 2;
/// Exit status when the enclave ended badly.
const EXIT_ENCLAVE_FAILED: u8 = 1;

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
    /// The public key the manifest must be signed with (default: the dev key).
    #[arg(long)]
    trusted_key: Option<PathBuf>,
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
    /// Verify and boot the enclave; run until it exits or SIGTERM/SIGINT.
    Run {
        /// The enclave image (ELF).
        #[arg(long)]
        image: PathBuf,
        #[command(flatten)]
        sig: ImageArgs,
        /// Where to create the host end of the enclave's vsock (a Unix socket).
        #[arg(long)]
        vsock_socket: PathBuf,
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
    },
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
        Command::Verify { image, sig } => verify(&image, &sig),
        Command::Run {
            image,
            sig,
            vsock_socket,
            memory_mib,
            boot_mode,
            bench_iterations,
            attestation_key,
            sealing_secret,
        } => run(RunArgs {
            image,
            sig,
            vsock_socket,
            memory_mib,
            boot_mode: boot_mode.into(),
            bench_iterations,
            attestation_key,
            sealing_secret,
        }),
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

fn load(image: &Path, sig: &ImageArgs) -> Result<SignedImage, credguard_image::ImageError> {
    let manifest = sig
        .manifest
        .clone()
        .unwrap_or_else(|| credguard_image::default_manifest_path(image));
    let key = sig
        .trusted_key
        .clone()
        .unwrap_or_else(credguard_image::dev::default_trusted_key_path);
    SignedImage::load_and_verify(image, &manifest, &key)
}

fn verify(image: &Path, sig: &ImageArgs) -> ExitCode {
    match load(image, sig) {
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

/// The arguments of `run`.
struct RunArgs {
    image: PathBuf,
    sig: ImageArgs,
    vsock_socket: PathBuf,
    memory_mib: u64,
    boot_mode: BootMode,
    bench_iterations: u64,
    attestation_key: Option<PathBuf>,
    sealing_secret: Option<PathBuf>,
}

fn run(args: RunArgs) -> ExitCode {
    let RunArgs {
        image,
        sig,
        vsock_socket,
        memory_mib,
        boot_mode,
        bench_iterations,
        attestation_key,
        sealing_secret,
    } = args;
    let (image, sig) = (image.as_path(), &sig);
    // Keys first: a missing or unreadable key is a configuration error, found before any boot.
    let attestation_key = match attestation_key
        .as_deref()
        .map(AttestationKey::load_or_create)
        .transpose()
    {
        Ok(key) => key.map(Arc::new),
        Err(e) => {
            eprintln!("credguard-vmm: attestation key: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let sealing_secret = match sealing_secret.as_deref().map(SealingSecret::load_or_create).transpose() {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("credguard-vmm: sealing secret: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    // The signature is checked before any guest memory exists.
    let signed = match load(image, sig) {
        Ok(signed) => signed,
        Err(e) => {
            eprintln!("credguard-vmm: refusing to boot {}: {e}", image.display());
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    // A signed image can still be unbootable (segments outside the image window): refuse it here
    // too, before any guest memory exists. `Enclave::launch` checks again.
    if let Err(e) = crate::boot::check_image(signed.bytes()) {
        eprintln!("credguard-vmm: refusing to boot {}: {e}", image.display());
        return ExitCode::from(EXIT_REFUSED);
    }
    let ram_size = memory_mib.saturating_mul(1 << 20);
    if abi::check_ram_size(ram_size).is_err() {
        eprintln!(
            "credguard-vmm: --memory-mib {memory_mib}: must be even and within {}..={}",
            abi::MIN_RAM_SIZE >> 20,
            abi::MAX_RAM_SIZE >> 20
        );
        return ExitCode::from(EXIT_REFUSED);
    }

    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.ram_size = ram_size;
    config.boot_mode = boot_mode;
    config.mode_arg = if boot_mode == BootMode::DoorbellBench {
        bench_iterations
    } else {
        0
    };
    config.vsock_socket = Some(vsock_socket.clone());
    config.attestation_key = attestation_key;
    config.sealing_secret = sealing_secret;

    let enclave = match Enclave::launch(config) {
        Ok(enclave) => enclave,
        Err(e) => {
            eprintln!("credguard-vmm: cannot start the enclave: {e}");
            return ExitCode::from(EXIT_ENCLAVE_FAILED);
        }
    };
    tracing::info!(
        "enclave started: measurement {}, signer {}, {} MiB, mode {boot_mode:?}, vsock {}",
        signed.measurement(),
        signed.signer_fingerprint(),
        memory_mib,
        vsock_socket.display()
    );
    let filters = enclave
        .thread_filter(ThreadRole::Signals)
        .and_then(|s| Ok((s, enclave.thread_filter(ThreadRole::Main)?)));
    let (signals_filter, main_filter) = match filters {
        Ok(f) => f,
        Err(e) => {
            eprintln!("credguard-vmm: {e}");
            let _ = enclave.stop_and_wait();
            return ExitCode::from(EXIT_ENCLAVE_FAILED);
        }
    };
    if let Err(e) = signals::spawn_termination_watcher(enclave.stop_handle(), signals_filter) {
        tracing::warn!("no clean shutdown on SIGTERM/SIGINT: {e}");
    }
    // Last: every other thread has started (filters are inherited by threads started later).
    if let Some(filter) = main_filter
        && let Err(e) = filter.apply()
    {
        eprintln!("credguard-vmm: {e}");
        let _ = enclave.stop_and_wait();
        return ExitCode::from(EXIT_ENCLAVE_FAILED);
    }
    tracing::info!("protection in force: {}", enclave.protection().describe());

    match enclave.wait() {
        ExitOutcome::BenchDone(bench) => {
            println!("{}", bench.to_json());
            ExitCode::SUCCESS
        }
        outcome @ (ExitOutcome::Clean | ExitOutcome::Stopped) => {
            tracing::info!("{outcome}");
            ExitCode::SUCCESS
        }
        outcome => {
            eprintln!("credguard-vmm: {outcome}");
            ExitCode::from(EXIT_ENCLAVE_FAILED)
        }
    }
}
