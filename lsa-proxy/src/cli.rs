//! The command line of `credguard-lsa-proxy`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::server;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "credguard-lsa-proxy",
    version,
    about = "credguard's LSA proxy: the gRPC API in front of the enclave"
)]
struct Cli {
    /// Configuration file (TOML); defaults apply to every key it leaves out.
    #[arg(long, env = "CREDGUARD_CONFIG")]
    config: Option<PathBuf>,
    /// API socket (overrides api.socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The VMM's hybrid-vsock socket (overrides enclave.vmm_socket).
    #[arg(long)]
    vmm_socket: Option<PathBuf>,
    /// Directory of saved credentials (overrides vault.dir).
    #[arg(long)]
    vault_dir: Option<PathBuf>,
    /// Development only: accept secrets in the clear (sets api.allow_plaintext_secrets).
    #[arg(long)]
    allow_plaintext_secrets: bool,
    /// A uid that may act for other uids, the KCM daemon's (adds to kcm.trusted_uids; repeat,
    /// or separate with commas, for more).
    #[arg(
        long = "kcm-trusted-uid",
        value_name = "UID",
        env = "CREDGUARD_KCM_TRUSTED_UIDS",
        value_delimiter = ','
    )]
    kcm_trusted_uids: Vec<u32>,
}

/// Runs `credguard-lsa-proxy` with `args` (the first is the program name).
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CREDGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init()
        .ok();
    // First, before the runtime starts: no dump, no swap, no privilege, for all it will hold.
    crate::sandbox::harden_process();
    let mut config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("credguard-lsa-proxy: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(s) = cli.socket {
        config.api.socket = s;
    }
    if let Some(s) = cli.vmm_socket {
        config.enclave.vmm_socket = s;
    }
    if let Some(d) = cli.vault_dir {
        config.vault.dir = d;
    }
    config.kcm.trusted_uids.extend(cli.kcm_trusted_uids);
    config.ntlm.resolve_workstation(&crate::config::host_name());
    if cli.allow_plaintext_secrets {
        config.api.allow_plaintext_secrets = true;
    }
    // One thread: the proxy does no heavy computation (that is the enclave's), and every wake-up
    // of another thread costs tens of microseconds on the target machines, which a
    // multi-threaded runtime adds to most calls (the reply arrives on another worker).
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credguard-lsa-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(server::serve(config, shutdown_signal(), || {
        // The sockets are bound: from here on, only the system calls of serving. A failure is
        // logged and reported by Status ("seccomp OFF").
        let _ = crate::sandbox::install_seccomp();
        // Tell systemd (Type=notify) we are ready; a no-op outside systemd.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credguard-lsa-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
