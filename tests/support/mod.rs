//! Shared helpers of the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use credguard_image::dev::{self, DevImage, HostBinaries, Progress};

pub mod fake_kdc;
pub mod kcm;
pub mod kdc;
pub mod kdc_relay;
pub mod memory;
pub mod pyspnego;
pub mod samba;

/// Whether KVM tests can run. Without /dev/kvm: a loud skip, or a failure when
/// CREDGUARD_REQUIRE_KVM=1.
pub fn kvm_or_skip(test: &str) -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    if std::env::var("CREDGUARD_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{test}: /dev/kvm is missing and CREDGUARD_REQUIRE_KVM=1");
    }
    eprintln!("!!! SKIPPED {test}: /dev/kvm is missing, the enclave cannot boot here");
    false
}

/// The dev-built, dev-signed enclave image (built once per test process).
pub fn dev_image() -> &'static DevImage {
    static IMAGE: OnceLock<DevImage> = OnceLock::new();
    IMAGE.get_or_init(|| dev::ensure_enclave_built().expect("building the enclave"))
}

/// The dev-signed test image (fault injection compiled in; built once per test process).
pub fn test_image() -> &'static DevImage {
    static IMAGE: OnceLock<DevImage> = OnceLock::new();
    IMAGE.get_or_init(|| dev::ensure_test_enclave_built().expect("building the test enclave"))
}

/// A manifest of the dev image signed with the dev key and `policy`, in a fresh directory.
pub fn manifest_with_policy(name: &str, policy: credguard_image::Policy) -> PathBuf {
    let dev = dev_image();
    let dir = temp_dir(&format!("manifest-{name}"));
    let manifest = dir.join("enclave.elf.manifest.json");
    dev::ensure_dev_key()
        .expect("the dev key")
        .sign_file_full(&dev.image, &manifest, &[], &policy)
        .expect("signing the dev image");
    manifest
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("credguard-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating a temp dir");
    d
}

/// Parses a JSON document printed by `credguardctl --json`.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

/// A small multi-threaded runtime for in-process gRPC clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Retries `f` until it succeeds or `timeout` passes; returns the last error on timeout.
pub fn retry<T, E: std::fmt::Debug>(timeout: Duration, mut f: impl FnMut() -> Result<T, E>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => panic!("still failing after {timeout:?}: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The whole stack as separate processes, as in production: `credguard-vmm run` and
/// `credguard-lsa-proxy`, with sockets in a temporary run directory any uid can reach.
pub struct Stack {
    pub dir: PathBuf,
    pub api: PathBuf,
    pub vsock: PathBuf,
    pub config: PathBuf,
    /// Where the proxy's stderr goes (appended across restarts), with the audit log on; `None`:
    /// inherited, warnings only.
    pub proxy_log: Option<PathBuf>,
    /// Extra arguments of `credguard-vmm run` (watchdog timings, fault injection), used by every
    /// [`Stack::start_vmm`].
    pub vmm_args: Vec<String>,
    /// Whether the proxy accepts secrets in the clear, as in dev mode (`--allow-plaintext-secrets`;
    /// every stack but [`Stack::start_as_installed`]'s).
    pub plaintext_secrets: bool,
    /// Whether the VMM boots the test image (fault injection compiled in) instead of the
    /// production one; `ctl` is then told to accept it.
    pub test_image: bool,
    /// Another manifest of the image than the dev build's (e.g. one signed with another policy).
    pub manifest: Option<PathBuf>,
    vmm: Option<std::process::Child>,
    proxy: Option<std::process::Child>,
    kcm: Option<std::process::Child>,
}

/// The shipped binaries, built in this test's profile (cargo is incremental: a no-op when they are
/// fresh) once per test process: cargo gives a package's tests the paths of that package's own
/// binaries only, and these are other packages'.
pub fn binaries() -> &'static HostBinaries {
    static BINARIES: OnceLock<HostBinaries> = OnceLock::new();
    BINARIES.get_or_init(|| dev::ensure_host_binaries_built(Progress::Quiet).expect("building the shipped binaries"))
}

/// `credguard-vmm`.
pub fn vmm_bin() -> &'static Path {
    &binaries().vmm
}

/// `credguard-lsa-proxy`.
pub fn proxy_bin() -> &'static Path {
    &binaries().lsa_proxy
}

/// `credguard-kcm`.
pub fn kcm_bin() -> &'static Path {
    &binaries().kcm
}

/// `credguardctl`.
pub fn ctl_bin() -> &'static Path {
    &binaries().ctl
}

/// `credguard-load`.
pub fn load_bin() -> &'static Path {
    &binaries().load
}

/// `credguard-ntlm-auth`.
pub fn ntlm_auth_bin() -> &'static Path {
    &binaries().ntlm_auth
}

impl Stack {
    /// Starts the VMM and the proxy with `config_toml` (the socket keys are filled in).
    pub fn start(name: &str, config_toml: &str) -> Stack {
        Self::start_with(name, config_toml, false, &[])
    }

    /// Like [`Stack::start`], but the proxy runs as installed, not in dev mode: it refuses secrets
    /// in the clear unless `config_toml` allows them.
    pub fn start_as_installed(name: &str, config_toml: &str) -> Stack {
        let mut s = Self::prepare(name, config_toml, false, &[]);
        s.plaintext_secrets = false;
        s.start_vmm();
        s.start_proxy();
        s
    }

    /// Like [`Stack::start`], with extra arguments for `credguard-vmm run` (see [`Stack::vmm_args`]).
    pub fn start_with_vmm_args(name: &str, config_toml: &str, vmm_args: &[&str]) -> Stack {
        Self::start_with(name, config_toml, false, vmm_args)
    }

    /// Like [`Stack::start_with_vmm_args`], booting the test image (for `--inject-fault`).
    pub fn start_test_image(name: &str, config_toml: &str, vmm_args: &[&str]) -> Stack {
        let mut s = Self::prepare(name, config_toml, false, vmm_args);
        s.test_image = true;
        s.start_vmm();
        s.start_proxy();
        s
    }

    /// Like [`Stack::start`], with the image's manifest at `manifest` (signed with the dev key,
    /// e.g. with another policy).
    pub fn start_with_manifest(name: &str, config_toml: &str, manifest: PathBuf) -> Stack {
        let mut s = Self::prepare(name, config_toml, false, &[]);
        s.manifest = Some(manifest);
        s.start_vmm();
        s.start_proxy();
        s
    }

    /// Like [`Stack::start`], with the proxy's log (warnings and the `audit` target) written to
    /// `proxy.log` in the stack's directory (see [`Stack::proxy_log_text`]) and the VMM's whole
    /// log to [`Stack::vmm_log`].
    pub fn start_logged(name: &str, config_toml: &str) -> Stack {
        Self::start_with(name, config_toml, true, &[])
    }

    fn start_with(name: &str, config_toml: &str, log_proxy: bool, vmm_args: &[&str]) -> Stack {
        let mut s = Self::prepare(name, config_toml, log_proxy, vmm_args);
        s.start_vmm();
        s.start_proxy();
        s
    }

    fn prepare(name: &str, config_toml: &str, log_proxy: bool, vmm_args: &[&str]) -> Stack {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir(name);
        // Other uids (setpriv tests) must reach the API socket inside.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let api = dir.join("lsa.sock");
        let vsock = dir.join("vsock.sock");
        let config = dir.join("credguard.toml");
        std::fs::write(&config, config_toml).unwrap();
        let proxy_log = log_proxy.then(|| dir.join("proxy.log"));
        Stack {
            dir,
            api,
            vsock,
            config,
            proxy_log,
            vmm_args: vmm_args.iter().map(|a| a.to_string()).collect(),
            plaintext_secrets: true,
            test_image: false,
            manifest: None,
            vmm: None,
            proxy: None,
            kcm: None,
        }
    }

    /// Waits until the proxy says the enclave is ready; returns `credguardctl --json status`.
    pub fn wait_ready(&self) -> serde_json::Value {
        retry(Duration::from_secs(30), || {
            let (code, out, err) = self.ctl(None, &["status"], "");
            if code == 0 && out.contains("\"state\":\"ready\"") {
                Ok(json(&out))
            } else {
                Err(format!("{code} {out} {err}"))
            }
        })
    }

    /// (Re)starts the VMM.
    pub fn start_vmm(&mut self) {
        let dev = if self.test_image { test_image() } else { dev_image() };
        let manifest = self.manifest.clone().unwrap_or_else(|| dev.manifest.clone());
        let mut cmd = std::process::Command::new(vmm_bin());
        cmd.args(["run", "--image"])
            .arg(&dev.image)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--trusted-key")
            .arg(&dev.trusted_key)
            .arg("--vsock-socket")
            .arg(&self.vsock)
            // Made on first start with its public half, which `ctl` checks sealing keys against.
            .arg("--attestation-key")
            .arg(self.dir.join("attestation.key"))
            .args(&self.vmm_args)
            .env("CREDGUARD_LOG", "warn");
        if self.proxy_log.is_some() {
            // Logged stacks keep the VMM's whole log too, the enclave's console included.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.vmm_log())
                .expect("opening the VMM log");
            cmd.env("CREDGUARD_LOG", "info").stderr(file);
        }
        self.vmm = Some(cmd.spawn().expect("starting the VMM"));
    }

    /// The VMM's attestation public key (hex), made by the VMM on its first start.
    pub fn attestation_pub(&self) -> PathBuf {
        self.dir.join("attestation.key.pub")
    }

    /// (Re)starts the proxy.
    pub fn start_proxy(&mut self) {
        let mut cmd = std::process::Command::new(proxy_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.api)
            .arg("--vmm-socket")
            .arg(&self.vsock)
            .env("CREDGUARD_LOG", "warn");
        if self.plaintext_secrets {
            cmd.arg("--allow-plaintext-secrets");
        }
        if let Some(log) = &self.proxy_log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("opening the proxy log");
            cmd.env("CREDGUARD_LOG", "warn,audit=info").stderr(file);
        }
        self.proxy = Some(cmd.spawn().expect("starting the proxy"));
    }

    /// Starts `credguard-kcm` on `kcm.sock` in the stack's directory (reachable by every uid), as
    /// a client of this stack's proxy; returns the socket once it is listening. The test process
    /// runs as root, whom the proxy lets act for other uids.
    pub fn start_kcm(&mut self) -> PathBuf {
        let socket = self.dir.join("kcm.sock");
        let mut cmd = std::process::Command::new(kcm_bin());
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--api-socket")
            .arg(&self.api)
            .env("CREDGUARD_LOG", "warn");
        self.kcm = Some(cmd.spawn().expect("starting credguard-kcm"));
        retry(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).map(drop)
        });
        socket
    }

    /// Where a logged stack's VMM writes its log (info level, the enclave's console included).
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// What the proxy has logged so far (empty unless started with [`Stack::start_logged`]).
    pub fn proxy_log_text(&self) -> String {
        self.proxy_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Process id of the VMM process that runs the enclave: the supervisor's worker (waited for
    /// up to 10 s while it is being restarted).
    pub fn vmm_pid(&self) -> Option<u32> {
        let supervisor = self.supervisor_pid()?;
        let start = Instant::now();
        loop {
            if let Some(worker) = children_of(supervisor).first() {
                return Some(*worker);
            }
            if start.elapsed() > Duration::from_secs(10) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id of `credguard-vmm run` itself, the supervisor of the VMM worker.
    pub fn supervisor_pid(&self) -> Option<u32> {
        self.vmm.as_ref().map(std::process::Child::id)
    }

    /// Process id of the running proxy.
    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy.as_ref().map(std::process::Child::id)
    }

    /// Process id of the KCM daemon, once [`Stack::start_kcm`] started it.
    pub fn kcm_pid(&self) -> Option<u32> {
        self.kcm.as_ref().map(std::process::Child::id)
    }

    /// SIGKILLs the VMM, as a crash would.
    pub fn kill_vmm(&mut self) {
        if let Some(mut c) = self.vmm.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the VMM as systemd does (SIGTERM to `credguard-vmm run`) and waits for it.
    pub fn terminate_vmm(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.vmm.take()?;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().ok()
    }

    /// SIGKILLs the proxy.
    pub fn kill_proxy(&mut self) {
        if let Some(mut c) = self.proxy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `credguardctl --socket API --json ARGS` as `uid` (via setpriv) or as ourselves,
    /// with `stdin` as its standard input. Returns (exit code, stdout, stderr).
    pub fn ctl(&self, uid: Option<u32>, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ])
                .arg(ctl_bin());
                c
            }
            None => std::process::Command::new(ctl_bin()),
        };
        cmd.arg("--socket")
            .arg(&self.api)
            .arg("--json")
            .args(args)
            .env("CREDGUARD_ATTESTATION_PUB", self.attestation_pub())
            .env("CREDGUARD_SIGNER_PUB", &dev_image().trusted_key)
            .env("CREDGUARD_ALLOW_TEST_IMAGE", if self.test_image { "1" } else { "0" });
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running credguardctl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// What a client of `stack` requires of its enclave before sealing (the dev signer pinned).
impl Stack {
    pub fn expectations(&self) -> credguard_client::sealed::Expectations {
        use credguard_client::sealed;
        let signer = sealed::read_public_key(&dev_image().trusted_key).expect("the dev signer key");
        sealed::Expectations {
            attestation_pub: sealed::read_attestation_public_key(&self.attestation_pub()).expect("the attestation key"),
            attestation_pub_path: self.attestation_pub(),
            signer: Some(sealed::signer_fingerprint(&signer)),
            signer_path: dev_image().trusted_key.clone(),
            measurement: None,
            require_hidden_memory: false,
            allow_test_image: self.test_image,
        }
    }
}

/// A logon seal for this test process's own uid with `nonce` and the names.
pub fn seal_for_me<'a>(
    nonce: &'a [u8],
    user: &'a str,
    domain: &'a str,
    realm: &'a str,
) -> credguard_client::sealed::SealFor<'a> {
    credguard_client::sealed::SealFor {
        purpose: credguard_proto::attest::SealPurpose::Logon,
        // SAFETY: getuid has no preconditions.
        owner: credguard_proto::attest::Owner::uid(unsafe { libc::getuid() }),
        sealing_nonce: nonce,
        names: credguard_proto::attest::SealedNames {
            user,
            domain,
            realm,
            target: "",
        },
    }
}

/// The live (not zombie) child processes of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            ppid == Some(pid) && state != Some("Z")
        })
        .collect()
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut c) = self.kcm.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_proxy();
        self.kill_vmm();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds the module (cargo does not build a dependency's cdylib) in this test's profile; returns
/// the path of `libpam_credguard.so`.
pub fn build_pam_module() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "pam-credguard", "--lib", "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("running cargo build");
    assert!(out.status.success(), "building pam-credguard failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.file_name().is_some_and(|n| n == "libpam_credguard.so"))
        .expect("cargo named no libpam_credguard.so")
}
