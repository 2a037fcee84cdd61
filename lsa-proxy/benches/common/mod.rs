//! What the proxy benchmarks share.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `credguard-lsa-proxy` with the config file `cfg`, serving `api`, linked to the VMM's
/// vsock socket `vsock`; its log (warnings only) is dropped so that it cannot disturb the figures.
pub fn spawn_proxy(cfg: &Path, api: &Path, vsock: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_credguard-lsa-proxy"))
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
