//! The shipped host binaries, built on demand for the dev launcher, the end-to-end tests and the
//! benchmarks.
//!
//! All three run the binaries as they ship (`credguard-vmm`, `credguard-lsa-proxy`,
//! `credguard-kcm`, `credguardctl`, `credguard-load`, `credguard-ntlm-auth`), but cargo builds only what they need themselves: `cargo run`
//! builds the launcher's package alone, and a package's tests and benchmarks get the paths of
//! their own package's binaries only. [`ensure_host_binaries_built`] runs `cargo build --bins` for
//! the binaries' packages in the build profile of the running program (so that `cargo run
//! --release` runs release binaries and `cargo test` dev ones, next to the outer build's
//! artifacts) and returns where cargo put them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::repo_root;

/// The packages of the shipped host binaries.
pub const HOST_PACKAGES: [&str; 6] = [
    "credguard-vmm",
    "credguard-lsa-proxy",
    "credguard-kcm",
    "credguard-client",
    "credguard-bench",
    "credguard-ntlm-auth",
];

/// Why the host binaries could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// The lock file, or this program's own path.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `cargo build` failed (its messages went to standard error).
    #[error("`{command}` failed ({status})")]
    Cargo {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// Cargo built the packages but did not report this binary.
    #[error("cargo did not build the binary {0}")]
    Missing(&'static str),
}

/// Paths of the built host binaries.
#[derive(Debug, Clone)]
pub struct HostBinaries {
    /// `credguard-vmm`.
    pub vmm: PathBuf,
    /// `credguard-lsa-proxy`.
    pub lsa_proxy: PathBuf,
    /// `credguard-kcm`.
    pub kcm: PathBuf,
    /// `credguardctl`.
    pub ctl: PathBuf,
    /// `credguard-load`.
    pub load: PathBuf,
    /// `credguard-ntlm-auth`.
    pub ntlm_auth: PathBuf,
}

/// How much of cargo's output reaches standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Cargo's progress lines, as a build in a terminal shows them.
    Shown,
    /// Only warnings and errors (`cargo build --quiet`).
    Quiet,
}

/// Builds the host binaries (cargo is incremental: a no-op when nothing changed) in the build
/// profile of the running program and returns their paths. Safe to call from several processes
/// at once: a file lock serializes them.
pub fn ensure_host_binaries_built(progress: Progress) -> Result<HostBinaries, BinariesError> {
    let root = repo_root();
    let lock_dir = root.join("images/out");
    fs::create_dir_all(&lock_dir).map_err(io_err(format!("cannot create {}", lock_dir.display())))?;
    let lock_path = lock_dir.join(".host-build.lock");
    let lock = fs::File::create(&lock_path).map_err(io_err(format!("cannot create {}", lock_path.display())))?;
    lock.lock()
        .map_err(io_err(format!("cannot take the lock {}", lock_path.display())))?;

    let exe = std::env::current_exe().map_err(io_err("cannot find this program".into()))?;
    let mut args: Vec<OsString> = vec!["build".into(), "--manifest-path".into(), root.join("Cargo.toml").into()];
    for package in HOST_PACKAGES {
        args.extend(["-p".into(), package.into()]);
    }
    args.extend(["--bins".into(), "--message-format=json-render-diagnostics".into()]);
    args.extend(profile_args(&exe).into_iter().map(OsString::from));
    if progress == Progress::Quiet {
        args.push("--quiet".into());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(&args)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_for_the_program) {
            cmd.env_remove(key);
        }
    }
    let command = format!(
        "{} {}",
        Path::new(&cargo).display(),
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    if progress == Progress::Shown {
        eprintln!("building the shipped binaries: {command}");
    }
    let out = cmd
        .output()
        .map_err(io_err(format!("cannot run {}", Path::new(&cargo).display())))?;
    if !out.status.success() {
        return Err(BinariesError::Cargo {
            command,
            status: out.status,
        });
    }
    let built = executables(&String::from_utf8_lossy(&out.stdout));
    let path = |name: &'static str| built.get(name).cloned().ok_or(BinariesError::Missing(name));
    Ok(HostBinaries {
        vmm: path("credguard-vmm")?,
        lsa_proxy: path("credguard-lsa-proxy")?,
        kcm: path("credguard-kcm")?,
        ctl: path("credguardctl")?,
        load: path("credguard-load")?,
        ntlm_auth: path("credguard-ntlm-auth")?,
    })
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> BinariesError {
    move |source| BinariesError::Io { what, source }
}

/// The `cargo build` arguments that select the profile `exe` was built in, from the directory
/// cargo put it in: `target/debug` (the dev and test profiles), `target/release` (release and
/// bench) or `target/NAME` (a custom profile); tests and benchmarks run from its `deps/`.
fn profile_args(exe: &Path) -> Vec<String> {
    let mut dir = exe.parent();
    if dir.and_then(Path::file_name).is_some_and(|n| n == "deps") {
        dir = dir.and_then(Path::parent);
    }
    match dir.and_then(Path::file_name).and_then(|n| n.to_str()) {
        None | Some("debug") => Vec::new(),
        Some("release") => vec!["--release".into()],
        Some(profile) => vec!["--profile".into(), profile.into()],
    }
}

/// Whether cargo set the environment variable `key` for the program it runs (the package's
/// identity and binaries, its jobserver), as opposed to the caller's own configuration of cargo
/// (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, `CARGO_PROFILE_*`, `RUSTFLAGS`, ...), which
/// the inner build keeps so that it builds what the outer build would, into the same target
/// directory, instead of rebuilding with other settings.
fn set_by_cargo_for_the_program(key: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_CFG_",
    ];
    const NAMES: [&str; 8] = [
        "CARGO",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_MAKEFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_SBOM_PATH",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || NAMES.contains(&key)
}

/// The executables in cargo's JSON messages (`compiler-artifact` of `bin` targets), by name.
fn executables(json_lines: &str) -> BTreeMap<String, PathBuf> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            let exe = m["executable"].as_str()?;
            Some((name, PathBuf::from(exe)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_the_one_of_the_running_program() {
        let args = |p: &str| profile_args(Path::new(p)).join(" ");
        assert_eq!(args("/r/target/debug/credguard"), "");
        assert_eq!(args("/r/target/debug/deps/isolation-0123abcd"), "");
        assert_eq!(args("/r/target/release/credguard"), "--release");
        assert_eq!(args("/r/target/release/deps/proxy-0123abcd"), "--release");
        assert_eq!(args("/r/target/fast/deps/proxy-0123abcd"), "--profile fast");
    }

    #[test]
    fn the_program_identity_is_removed_and_the_configuration_kept() {
        for gone in [
            "CARGO",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_BIN_EXE_credguard",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_for_the_program(gone), "{gone}");
        }
        for kept in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "RUSTFLAGS",
        ] {
            assert!(!set_by_cargo_for_the_program(kept), "{kept}");
        }
    }

    #[test]
    fn executables_come_from_bin_artifacts_only() {
        let lines = [
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"credguard_vmm"},"executable":null}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"credguard-vmm"},"executable":"/t/debug/credguard-vmm"}"#,
            "not json",
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        let found = executables(&lines);
        assert_eq!(found.len(), 1);
        assert_eq!(found["credguard-vmm"], PathBuf::from("/t/debug/credguard-vmm"));
    }
}
