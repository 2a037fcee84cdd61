//! What the benchmarks share.
// Each benchmark uses some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use credguard_image::dev::{self, HostBinaries, Progress};

/// The shipped binaries (`credguard-lsa-proxy`, `credguard-vmm`), built in this benchmark's
/// profile on first use: another package's binaries, which cargo does not build for a benchmark.
pub fn binaries() -> &'static HostBinaries {
    static BINARIES: OnceLock<HostBinaries> = OnceLock::new();
    BINARIES.get_or_init(|| dev::ensure_host_binaries_built(Progress::Shown).expect("building the shipped binaries"))
}

/// Starts `credguard-lsa-proxy` with the config file `cfg`, serving `api`, linked to the VMM's
/// vsock socket `vsock`; its log (warnings only) is dropped so that it cannot disturb the figures.
pub fn spawn_proxy(cfg: &Path, api: &Path, vsock: &Path) -> Child {
    Command::new(&binaries().lsa_proxy)
        .arg("--config")
        .arg(cfg)
        .arg("--socket")
        .arg(api)
        .arg("--vmm-socket")
        .arg(vsock)
        // The benchmarks log on in the clear, as in dev mode.
        .arg("--allow-plaintext-secrets")
        .env("CREDGUARD_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the proxy")
}

/// Starts `credguard-kcm` on the KCM socket `socket`, a client of the proxy's API socket `api`;
/// its log (warnings only) is dropped, as the proxy's is. Returns once the socket accepts.
pub fn spawn_kcm(socket: &Path, api: &Path) -> Child {
    let child = Command::new(&binaries().kcm)
        .arg("--socket")
        .arg(socket)
        .arg("--api-socket")
        .arg(api)
        .env("CREDGUARD_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn credguard-kcm");
    let start = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "credguard-kcm is not listening on {}",
            socket.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

/// The median and the 99th percentile of `v` (not empty).
pub fn median_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Keeps a loop of secret-using calls of one user under the enclave's rate limit (1,000 per
/// second per user and per credential): at most `per_second` calls in each second, sleeping out
/// the rest of a second that used them up. Each call is still timed alone, so the pause changes
/// how many calls a run makes per second, not what one costs.
pub struct Pacer {
    per_second: u32,
    window: std::time::Instant,
    used: u32,
}

impl Pacer {
    /// A pacer allowing `per_second` calls per second.
    pub fn new(per_second: u32) -> Self {
        Pacer {
            per_second,
            window: std::time::Instant::now(),
            used: 0,
        }
    }

    /// Call before each call: waits if this second's calls are used up.
    pub fn tick(&mut self) {
        let second = std::time::Duration::from_secs(1);
        if self.window.elapsed() >= second {
            self.window = std::time::Instant::now();
            self.used = 0;
        }
        if self.used >= self.per_second {
            std::thread::sleep(second.saturating_sub(self.window.elapsed()));
            self.window = std::time::Instant::now();
            self.used = 0;
        }
        self.used += 1;
    }
}

/// Calls per second a paced loop makes: under the enclave's 1,000 with room for the rest of the run.
pub const PACED_PER_SECOND: u32 = 800;
