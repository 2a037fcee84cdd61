//! `cargo run --release`: credguard in dev mode.
//!
//! Builds and dev-signs the enclave if needed, then runs the VMM and the LSA proxy as two child
//! processes (this same binary, re-executed as `credguard vmm ...` and `credguard lsa-proxy ...`),
//! with their sockets under `run/` in the repository, and restarts either if it dies, as systemd
//! does in production. `credguard ctl ...` is `credguardctl` pointed at `run/lsa.sock`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// Freed memory keeps no secret: this binary runs the LSA proxy and the VMM (see
/// `credguard_lsa_proxy::wiping_alloc`).
#[global_allocator]
static ALLOC: credguard_lsa_proxy::wiping_alloc::WipingAllocator = credguard_lsa_proxy::wiping_alloc::WipingAllocator;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let sub = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    match sub.as_deref() {
        Some("vmm") => {
            args.remove(0);
            args[0] = "credguard-vmm".into();
            credguard_vmm::cli::main_with_args(args)
        }
        Some("lsa-proxy") => {
            args.remove(0);
            args[0] = "credguard-lsa-proxy".into();
            credguard_lsa_proxy::cli::main_with_args(args)
        }
        Some("ctl") => {
            args.remove(0);
            args[0] = "credguardctl".into();
            if std::env::var_os("CREDGUARD_SOCKET").is_none() {
                // SAFETY: nothing else runs yet: no other thread reads the environment.
                unsafe { std::env::set_var("CREDGUARD_SOCKET", run_dir().join("lsa.sock")) };
            }
            if std::env::var_os("CREDGUARD_ATTESTATION_PUB").is_none() {
                // The dev VMM's attestation key lives in run/ (see dev_run); its public half is
                // what a client checks the enclave's sealing key against.
                // SAFETY: as above.
                unsafe { std::env::set_var("CREDGUARD_ATTESTATION_PUB", run_dir().join("attestation.key.pub")) };
            }
            if std::env::var_os("CREDGUARD_SIGNER_PUB").is_none() {
                // The dev image's signer, which the client pins.
                // SAFETY: as above.
                unsafe { std::env::set_var("CREDGUARD_SIGNER_PUB", credguard_image::dev::default_trusted_key_path()) };
            }
            credguard_client::ctl::main_with_args(args)
        }
        Some("load") => load(&args[2..]),
        None | Some("run") => dev_run(),
        Some(other) => {
            eprintln!("credguard: unknown subcommand {other:?}; use run (default), vmm, lsa-proxy, ctl or load");
            ExitCode::from(2)
        }
    }
}

/// `credguard load [--socket PATH] [--clients N] [--seconds S] [--json]`: drives the API with N
/// concurrent clients (mixed Status, Logon, ListSessions, Logoff) for S seconds and reports
/// throughput, p50/p99 per operation and errors by code.
fn load(args: &[OsString]) -> ExitCode {
    let mut socket = run_dir().join("lsa.sock");
    let (mut clients, mut seconds, mut json) = (16usize, 10u64, false);
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let r =
            match a.as_str() {
                "--socket" => value("--socket").map(|v| socket = PathBuf::from(v)),
                "--clients" => value("--clients")
                    .and_then(|v| v.parse().map(|n| clients = n).map_err(|e| format!("--clients: {e}"))),
                "--seconds" => value("--seconds")
                    .and_then(|v| v.parse().map(|n| seconds = n).map_err(|e| format!("--seconds: {e}"))),
                "--json" => {
                    json = true;
                    Ok(())
                }
                other => Err(format!("unknown argument {other:?}")),
            };
        if let Err(e) = r {
            eprintln!("credguard load: {e}");
            return ExitCode::from(2);
        }
    }
    if clients == 0 || clients > 1024 || seconds == 0 || seconds > 3600 {
        eprintln!("credguard load: --clients must be 1..=1024 and --seconds 1..=3600");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credguard load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = credguard_bench::load::LoadConfig {
        socket,
        clients,
        duration: Duration::from_secs(seconds),
    };
    let report = rt.block_on(credguard_bench::load::run(config));
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.summary());
    }
    ExitCode::SUCCESS
}

fn run_dir() -> PathBuf {
    credguard_image::dev::repo_root().join("run")
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
    args: Vec<OsString>,
    child: Option<Child>,
    restarts: u32,
    started: Instant,
}

impl Supervised {
    fn spawn(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find this program")?;
        let child = Command::new(exe)
            .args(&self.args)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
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
    let dev = tokio::task::spawn_blocking(credguard_image::dev::ensure_enclave_built)
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
        "vmm".into(),
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
    let mut vmm = Supervised {
        name: "credguard-vmm",
        args: vmm_args,
        child: None,
        restarts: 0,
        started: Instant::now(),
    };
    let mut proxy_args: Vec<OsString> = vec![
        "lsa-proxy".into(),
        "--socket".into(),
        os(&api),
        "--vmm-socket".into(),
        os(&vsock),
        "--vault-dir".into(),
        os(&run.join("vault")),
        // Dev mode: clients without the attestation key may log on in the clear.
        "--allow-plaintext-secrets".into(),
    ];
    if let Some(config) = &config {
        proxy_args.push("--config".into());
        proxy_args.push(os(config));
    }
    let mut proxy = Supervised {
        name: "credguard-lsa-proxy",
        args: proxy_args,
        child: None,
        restarts: 0,
        started: Instant::now(),
    };
    vmm.spawn()?;
    proxy.spawn()?;
    info!(api = %api.display(), "credguard is starting; try: cargo run --release -- ctl status");

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            s = wait_child(&mut vmm.child) => restart(&mut vmm, s).await?,
            s = wait_child(&mut proxy.child) => restart(&mut proxy, s).await?,
        }
    }
    info!("stopping");
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
