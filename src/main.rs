//! `cargo run --release`: credguard in dev mode.
//!
//! The launcher links neither the VMM nor the proxy: it builds the shipped binaries
//! (`credguard-vmm`, `credguard-lsa-proxy`, `credguard-kcm`, `credguardctl`, `credguard-load`,
//! `credguard-ntlm-auth`) in its own build profile, builds and dev-signs the enclave if needed,
//! then runs the VMM, the LSA proxy and the KCM daemon as child processes, with their sockets
//! under `run/` in the repository, and restarts any that dies, as systemd does in production.
//! `credguard ctl ...` runs `credguardctl` pointed at `run/lsa.sock` and the dev keys;
//! `credguard load ...` runs `credguard-load` and `credguard ntlm-auth ...` runs
//! `credguard-ntlm-auth` (a helper its caller starts, not a daemon) the same way.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use credguard_image::dev::{self, HostBinaries, Progress};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("ctl") => exec_client(|b| &b.ctl, &args[1..]),
        Some("load") => exec_client(|b| &b.load, &args[1..]),
        Some("ntlm-auth") => exec_client(|b| &b.ntlm_auth, &args[1..]),
        None | Some("run") => dev_run(),
        Some(other) => {
            eprintln!("credguard: unknown subcommand {other:?}; use run (default), ctl, load or ntlm-auth");
            ExitCode::from(2)
        }
    }
}

/// Runs the client binary that `which` picks out of the shipped binaries (built first, quietly)
/// in place of this process, with `args`, pointed at the dev stack unless the environment says
/// otherwise: the API socket `run/lsa.sock`, the dev VMM's attestation key and the dev image's
/// signer.
fn exec_client(which: fn(&HostBinaries) -> &PathBuf, args: &[OsString]) -> ExitCode {
    let binaries = match dev::ensure_host_binaries_built(Progress::Quiet) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("credguard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let program = which(&binaries);
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let run = run_dir();
    let defaults = [
        ("CREDGUARD_SOCKET", run.join("lsa.sock")),
        // The dev VMM's attestation key lives in run/ (see supervise); its public half is what a
        // client checks the enclave's sealing key against.
        ("CREDGUARD_ATTESTATION_PUB", run.join("attestation.key.pub")),
        // The dev image's signer, which the client pins.
        ("CREDGUARD_SIGNER_PUB", dev::default_trusted_key_path()),
    ];
    for (key, value) in defaults {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    // Only returns if the program could not be run.
    let e = cmd.exec();
    eprintln!("credguard: cannot run {}: {e}", program.display());
    ExitCode::FAILURE
}

fn run_dir() -> PathBuf {
    dev::repo_root().join("run")
}

fn dev_run() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CREDGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credguard: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(supervise()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A child process the launcher keeps running.
struct Supervised {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    restarts: u32,
    started: Instant,
}

impl Supervised {
    fn new(name: &'static str, program: PathBuf, args: Vec<OsString>) -> Self {
        Supervised {
            name,
            program,
            args,
            child: None,
            restarts: 0,
            started: Instant::now(),
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&self.program)
            .args(&self.args)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    async fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

async fn wait_child(c: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match c {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn supervise() -> Result<()> {
    let binaries = tokio::task::spawn_blocking(|| dev::ensure_host_binaries_built(Progress::Shown))
        .await
        .context("the build of the shipped binaries panicked")?
        .context("cannot build the shipped binaries")?;
    let dev = tokio::task::spawn_blocking(dev::ensure_enclave_built)
        .await
        .context("the enclave build panicked")?
        .context("cannot build the enclave")?;
    let run = run_dir();
    std::fs::create_dir_all(&run).with_context(|| format!("cannot create {}", run.display()))?;
    let vsock = run.join("vsock.sock");
    let api = run.join("lsa.sock");
    let os = |p: &Path| p.as_os_str().to_owned();
    // The same format as the installed /etc/credguard/credguard.toml (scripts/credguard.toml
    // documents every key), e.g. the realm table or `[vmm] require_hidden_memory`; the sockets,
    // keys and the vault stay under run/.
    let config = Some(run.join("credguard.toml")).filter(|c| c.exists());
    if let Some(config) = &config {
        info!(config = %config.display(), "using the configuration file");
    }
    let mut vmm_args: Vec<OsString> = vec![
        "run".into(),
        "--image".into(),
        os(&dev.image),
        "--manifest".into(),
        os(&dev.manifest),
        "--trusted-key".into(),
        os(&dev.trusted_key),
        "--vsock-socket".into(),
        os(&vsock),
        // Made on first start (0600) with its public half run/attestation.key.pub.
        "--attestation-key".into(),
        os(&run.join("attestation.key")),
        // The vault's host sealing secret, made on first start (0600); kept across runs so
        // that saved credentials survive restarts.
        "--sealing-secret".into(),
        os(&run.join("sealing.secret")),
    ];
    if let Some(config) = &config {
        vmm_args.push("--config".into());
        vmm_args.push(os(config));
    }
    let mut vmm = Supervised::new("credguard-vmm", binaries.vmm, vmm_args);
    let mut proxy_args: Vec<OsString> = vec![
        "--socket".into(),
        os(&api),
        "--vmm-socket".into(),
        os(&vsock),
        "--vault-dir".into(),
        os(&run.join("vault")),
        // Dev mode: clients without the attestation key may log on in the clear.
        "--allow-plaintext-secrets".into(),
        // The dev KCM daemon runs as this user and serves every uid's cache: it may act for
        // them. (So may any program of this user, at this dev stack only; installed, only the
        // credguard-kcm system user may.)
        "--kcm-trusted-uid".into(),
        own_uid().to_string().into(),
    ];
    if let Some(config) = &config {
        proxy_args.push("--config".into());
        proxy_args.push(os(config));
    }
    let mut proxy = Supervised::new("credguard-lsa-proxy", binaries.lsa_proxy, proxy_args);
    let kcm_socket = run.join("kcm.sock");
    let kcm_args: Vec<OsString> = vec!["--socket".into(), os(&kcm_socket), "--api-socket".into(), os(&api)];
    let mut kcm = Supervised::new("credguard-kcm", binaries.kcm, kcm_args);
    // Not a daemon: programs start it per exchange (CREDGUARD_SOCKET points it at run/lsa.sock).
    info!(helper = %binaries.ntlm_auth.display(), "credguard-ntlm-auth is built");
    vmm.spawn()?;
    proxy.spawn()?;
    kcm.spawn()?;
    info!(api = %api.display(), kcm = %kcm_socket.display(), "credguard is starting; try: cargo run --release -- ctl status");

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            s = wait_child(&mut vmm.child) => restart(&mut vmm, s).await?,
            s = wait_child(&mut proxy.child) => restart(&mut proxy, s).await?,
            s = wait_child(&mut kcm.child) => restart(&mut kcm, s).await?,
        }
    }
    info!("stopping");
    kcm.terminate().await;
    proxy.terminate().await;
    vmm.terminate().await;
    Ok(())
}

async fn restart(p: &mut Supervised, status: std::io::Result<std::process::ExitStatus>) -> Result<()> {
    p.child = None;
    match status {
        Ok(s) => error!(process = p.name, status = %s, "exited; restarting"),
        Err(e) => error!(process = p.name, error = %e, "lost; restarting"),
    }
    // A process that dies at once again and again would spin: back off.
    let delay = if p.started.elapsed() < Duration::from_secs(5) {
        Duration::from_secs(1u64 << p.restarts.min(4))
    } else {
        p.restarts = 0;
        Duration::from_millis(500)
    };
    p.restarts += 1;
    if p.restarts > 1 {
        warn!(
            process = p.name,
            delay_ms = delay.as_millis() as u64,
            "restarting after a delay"
        );
    }
    tokio::time::sleep(delay).await;
    p.spawn()
}

/// This process's real uid.
fn own_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}
