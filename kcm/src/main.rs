//! `credguard-kcm`: serves the KCM protocol on a Unix socket (or the one systemd passes), from
//! the credguard LSA proxy's API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use credguard_kcm::backend::GrpcBackend;
use credguard_kcm::server::{self, KcmServer, ServerConfig};
use tracing::info;

/// The Kerberos credential cache daemon of credguard: programs using `KCM:` caches get service
/// tickets from the enclave; TGTs never leave it.
#[derive(Debug, Parser)]
#[command(name = "credguard-kcm", version)]
struct Cli {
    /// The KCM socket to listen on (unless systemd passes one). Programs find it there, or
    /// where `kcm_socket` in krb5.conf's [libdefaults] says.
    #[arg(long, value_name = "PATH", default_value = server::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The credguard API socket of the LSA proxy.
    #[arg(long, value_name = "PATH", default_value = credguard_client::DEFAULT_API_SOCKET)]
    api_socket: PathBuf,
    /// Log every request and refusal (debug level), never a ticket or a key.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Verbose is this daemon's own debug lines (requests and refusals), not its libraries'.
    let default_level = if cli.verbose {
        "info,credguard_kcm=debug"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CREDGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    not_dumpable();
    // One thread, as in the proxy: the daemon's own work per request takes microseconds (the TGS
    // exchange is the enclave's), and on a multi-threaded runtime a fetch hops between workers
    // (the connection's task, the gRPC channel's, the HTTP/2 connection's), each hop waking
    // another thread (tens of microseconds on the target machines; benches/kcm.rs measures it).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("credguard-kcm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credguard-kcm: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Service tickets and their session keys pass through this process: no core dump of it, and
/// no ptrace by anyone but root.
fn not_dumpable() {
    // SAFETY: PR_SET_DUMPABLE takes integers only and changes nothing but this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make the process non-dumpable");
    }
}

async fn run(cli: Cli) -> Result<(), server::ServerError> {
    let (listener, bound_path) = match server::activated_listener()? {
        Some(l) => {
            info!("listening on the socket systemd passed");
            (l, None)
        }
        None => {
            let l = server::bind_socket(&cli.socket)?;
            info!(socket = %cli.socket.display(), "listening");
            (l, Some(cli.socket.clone()))
        }
    };
    info!(api = %cli.api_socket.display(), "tickets come from the credguard API");
    let backend = GrpcBackend::new(cli.api_socket);
    let kcm = KcmServer::new(backend, ServerConfig::default());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    kcm.serve(listener, shutdown_signal()).await;
    if let Some(path) = bound_path {
        let _ = std::fs::remove_file(path);
    }
    info!("credguard-kcm stopped");
    Ok(())
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
}
