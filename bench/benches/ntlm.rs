//! NTLM benchmark: `NtlmAuthenticate` through gRPC with the enclave (the proxy process, the VMM,
//! the enclave under KVM) vs. the same gRPC call computed in-process (a gRPC server process that
//! runs the enclave crate's own service code on the host, no VM), in the same run: median and
//! p99 of single calls, and handshakes per second (`NtlmNegotiate` + `NtlmAuthenticate`) with
//! 8 and 16 concurrent clients, each on its own connection.
//!
//! The enclave budgets secret use per user and per credential (at most 1,000 operations per second
//! each), so the benchmark measures the machinery, not that limit, by spreading its calls over
//! client processes of distinct uids (`setpriv`, when run as root), each with its own credential:
//! the latency figures over [`LATENCY_UIDS`] clients in turn (each within its burst), the
//! throughput figures with one client process per connection. Run as another user, every client
//! shares one uid and the figures are capped by its budget (said in the output).
//!
//! Run: `cargo bench -p credguard-bench --bench ntlm` (add `-- --quick` for fewer calls).
//! Needs /dev/kvm. Prints figures; asserts nothing about time.

// Benchmark code: a failed unwrap ends the run with its message, as a failed test does.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use credguard_client as client;
use credguard_enclave::rng::HwRng;
use credguard_enclave::service::{Identity, Service};
use credguard_proto::enclave;
use credguard_proto::enclave::EnclaveClient;
use credguard_proto::lsa;
use credguard_proto::lsa::lsa_server::{Lsa, LsaServer};
use credguard_proto::rpc::{RpcError, Transport};
use credguard_proto::unix_transport::UnixTransport;
use credguard_vmm::{Enclave, EnclaveConfig, EnclaveImage};
use tonic::{Request, Response, Status};

/// Set in the environment of the baseline server process: its socket path.
const BASELINE_ENV: &str = "CREDGUARD_NTLM_BENCH_BASELINE";
/// Set in the environment of a client process: `latency N` or `throughput SECS START_UNIX_MS`,
/// with the socket in [`CLIENT_SOCKET_ENV`]; it prints its figures as one line.
const CLIENT_ENV: &str = "CREDGUARD_NTLM_BENCH_CLIENT";
/// The server a client process talks to.
const CLIENT_SOCKET_ENV: &str = "CREDGUARD_NTLM_BENCH_SOCKET";
/// Client processes (uids) the latency calls are spread over, one after the other: each makes
/// fewer calls than the burst of its budget.
const LATENCY_UIDS: usize = 4;
/// The first uid the client processes take.
const FIRST_UID: u32 = 52_000;
/// Credentials each client process logs on with and rotates over: each has its own budget, so
/// that the in-process baseline (several thousand handshakes per second per client) measures the
/// machinery, not the per-credential limit. Through the real proxy, one client process is still
/// one uid, whose budget (1,000 per second) caps it; refusals are counted and printed.
const CREDENTIALS_PER_CLIENT: usize = 8;

type Client = lsa::lsa_client::LsaClient<tonic::transport::Channel>;

/// Logon sessions the raw vsock figures are spread over, each of its own owner.
const SESSIONS: usize = 32;
/// The rate each session asks for: the enclave's ceiling.
const RATE: u32 = credguard_enclave::ratelimit::MAX_OPERATIONS_PER_SECOND;

fn challenge() -> Vec<u8> {
    credguard_enclave::ntlm::sample::windows_challenge()
}

// ----- the in-process baseline: the enclave's service code inside a gRPC server, no VM -----

struct Baseline {
    svc: Mutex<Service<HwRng>>,
    calls: AtomicU64,
    /// The baseline's "TSC": nanoseconds since this instant, on a 1 GHz clock.
    start: Instant,
}

/// The in-process service as the generated client's transport: the same frames the enclave
/// would get, dispatched directly.
struct InProcess<'a>(&'a Baseline);

impl Transport for InProcess<'_> {
    type Error = RpcError;

    fn call(&mut self, method_id: u32, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let b = self.0;
        let frame = enclave::Frame {
            call_id: b.calls.fetch_add(1, Ordering::Relaxed) + 1,
            method_id,
            payload,
            ..Default::default()
        };
        let now = u64::try_from(b.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let reply = b.svc.lock().unwrap().dispatch(&frame, now);
        match RpcError::from_frame(&reply) {
            Some(e) => Err(e),
            None => Ok(reply.payload),
        }
    }
}

impl Baseline {
    fn client(&self) -> EnclaveClient<InProcess<'_>> {
        EnclaveClient::new(InProcess(self))
    }
}

fn status(e: RpcError) -> Status {
    Status::new(tonic::Code::from_i32(e.code), e.message)
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the NTLM benchmark's baseline"))
}

/// Context ids and session ids are the enclave's handles in hex, as in the proxy.
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tonic::async_trait]
impl Lsa for Baseline {
    async fn status(&self, _: Request<lsa::StatusRequest>) -> Result<Response<lsa::StatusReply>, Status> {
        Ok(Response::new(lsa::StatusReply {
            state: "ready".into(),
            ..Default::default()
        }))
    }
    async fn logon(&self, req: Request<lsa::LogonRequest>) -> Result<Response<lsa::LogonReply>, Status> {
        let r = req.into_inner();
        let Some(lsa::logon_request::Secret::Password(p)) = r.secret else {
            return Err(Status::invalid_argument("password only"));
        };
        let w = enclave::LogonRequest {
            user: r.user,
            domain: r.domain,
            realm: String::new(),
            secret: Some(enclave::logon_request::Secret::Password(p)),
            operations_per_second: RATE,
            // One owner per session: the enclave budgets secret use per owner, and this
            // in-process stand-in for the proxy measures throughput, not that limit.
            owner: self.calls.fetch_add(1, Ordering::Relaxed),
            allow_rc4: false,
            ..Default::default()
        };
        let reply = self.client().logon(&w).map_err(status)?;
        Ok(Response::new(lsa::LogonReply {
            session_id: hex(&reply.session_handle),
        }))
    }
    async fn logoff(&self, _: Request<lsa::LogoffRequest>) -> Result<Response<lsa::LogoffReply>, Status> {
        unimplemented()
    }
    async fn list_sessions(
        &self,
        _: Request<lsa::ListSessionsRequest>,
    ) -> Result<Response<lsa::ListSessionsReply>, Status> {
        unimplemented()
    }
    async fn ntlm_negotiate(
        &self,
        req: Request<lsa::NtlmNegotiateRequest>,
    ) -> Result<Response<lsa::NtlmNegotiateReply>, Status> {
        let w = enclave::NtlmNegotiateRequest {
            session_handle: unhex(&req.get_ref().session_id),
        };
        let r = self.client().ntlm_negotiate(&w).map_err(status)?;
        Ok(Response::new(lsa::NtlmNegotiateReply {
            context_id: hex(&r.context_id),
            negotiate_message: r.negotiate_message,
        }))
    }
    async fn ntlm_authenticate(
        &self,
        req: Request<lsa::NtlmAuthenticateRequest>,
    ) -> Result<Response<lsa::NtlmAuthenticateReply>, Status> {
        let r = req.into_inner();
        let w = enclave::NtlmAuthenticateRequest {
            context_id: unhex(&r.context_id),
            challenge_message: r.challenge_message,
            channel_bindings: r.channel_bindings,
            target_spn: r.target_spn,
            now_filetime: credguard_lsa_proxy::ntlm::now_filetime(),
            ..Default::default()
        };
        let a = self.client().ntlm_authenticate(&w).map_err(status)?;
        Ok(Response::new(lsa::NtlmAuthenticateReply {
            authenticate_message: a.authenticate_message,
            exported_session_key: a.exported_session_key,
        }))
    }
    async fn legacy_authenticate(
        &self,
        _: Request<lsa::LegacyAuthenticateRequest>,
    ) -> Result<Response<lsa::LegacyAuthenticateReply>, Status> {
        unimplemented()
    }
    async fn kerberos_get_tgt(
        &self,
        _: Request<lsa::KerberosGetTgtRequest>,
    ) -> Result<Response<lsa::KerberosGetTgtReply>, Status> {
        unimplemented()
    }
    async fn kerberos_get_service_ticket(
        &self,
        _: Request<lsa::KerberosGetServiceTicketRequest>,
    ) -> Result<Response<lsa::KerberosGetServiceTicketReply>, Status> {
        unimplemented()
    }

    async fn save_credential(
        &self,
        _: Request<lsa::SaveCredentialRequest>,
    ) -> Result<Response<lsa::SaveCredentialReply>, Status> {
        unimplemented()
    }

    async fn list_saved_credentials(
        &self,
        _: Request<lsa::ListSavedCredentialsRequest>,
    ) -> Result<Response<lsa::ListSavedCredentialsReply>, Status> {
        unimplemented()
    }

    async fn delete_saved_credential(
        &self,
        _: Request<lsa::DeleteSavedCredentialRequest>,
    ) -> Result<Response<lsa::DeleteSavedCredentialReply>, Status> {
        unimplemented()
    }

    async fn logon_saved(&self, _: Request<lsa::LogonSavedRequest>) -> Result<Response<lsa::LogonSavedReply>, Status> {
        unimplemented()
    }

    async fn get_sealing_nonce(
        &self,
        _: Request<lsa::GetSealingNonceRequest>,
    ) -> Result<Response<lsa::GetSealingNonceReply>, Status> {
        unimplemented()
    }

    async fn set_default_session(
        &self,
        _: Request<lsa::SetDefaultSessionRequest>,
    ) -> Result<Response<lsa::SetDefaultSessionReply>, Status> {
        unimplemented()
    }

    async fn change_password(
        &self,
        _: Request<lsa::ChangePasswordRequest>,
    ) -> Result<Response<lsa::ChangePasswordReply>, Status> {
        unimplemented()
    }

    async fn kerberos_verify_ap_rep(
        &self,
        _: Request<lsa::KerberosVerifyApRepRequest>,
    ) -> Result<Response<lsa::KerberosVerifyApRepReply>, Status> {
        unimplemented()
    }
}

/// The baseline server process: as the proxy, a multi-threaded tokio runtime on a Unix socket.
fn serve_baseline(path: &Path) {
    let rng = HwRng::new().expect("RDRAND");
    let identity = Identity {
        measurement: [0; 48],
        signer: [0; 16],
    };
    let svc = Service::new(identity, 1_000_000, 0, rng).unwrap_or_else(|_| panic!("random source failed"));
    let baseline = Baseline {
        svc: Mutex::new(svc),
        calls: AtomicU64::new(0),
        start: Instant::now(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        // Client processes of other uids connect, as to the real proxy's socket.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        tonic::transport::Server::builder()
            .add_service(LsaServer::new(baseline))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
}

// ----- measuring -----

/// The enclave's own round trips over vsock (no gRPC, no proxy): (median, p99) of `Status` and
/// of `NtlmAuthenticate`, for the breakdown of the gRPC figures.
fn raw_vsock(vsock: &Path, n: usize) -> ((f64, f64), (f64, f64)) {
    let start = Instant::now();
    let mut c = loop {
        match UnixTransport::client(vsock, credguard_proto::abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5)) {
            Ok(c) => break c,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("enclave not reachable: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let logon = enclave::LogonRequest {
        user: "raw".into(),
        domain: "CORP".into(),
        realm: String::new(),
        secret: Some(enclave::logon_request::Secret::Password("Raw-Passw0rd".into())),
        operations_per_second: RATE,
        owner: 0,
        allow_rc4: false,
        ..Default::default()
    };
    // One owner per session (see the stand-in proxy above).
    let sessions: Vec<enclave::LogonReply> = (0..SESSIONS)
        .map(|i| {
            let logon = enclave::LogonRequest {
                owner: 5000 + i as u64,
                ..logon.clone()
            };
            c.logon(&logon).unwrap()
        })
        .collect();
    let challenge = challenge();
    let (mut status, mut auth) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut pace = common::Pacer::new(common::PACED_PER_SECOND);
    for i in 0..n + 100 {
        let t = Instant::now();
        c.status(&enclave::StatusRequest {}).unwrap();
        let st = t.elapsed().as_secs_f64() * 1e6;
        let neg = c
            .ntlm_negotiate(&enclave::NtlmNegotiateRequest {
                session_handle: sessions[i % SESSIONS].session_handle.clone(),
            })
            .unwrap();
        let req = enclave::NtlmAuthenticateRequest {
            context_id: neg.context_id,
            challenge_message: challenge.clone(),
            channel_bindings: Vec::new(),
            target_spn: "HTTP/server.corp.test".into(),
            now_filetime: credguard_lsa_proxy::ntlm::now_filetime(),
            ..Default::default()
        };
        pace.tick();
        let t = Instant::now();
        c.ntlm_authenticate(&req).unwrap();
        if i >= 100 {
            status.push(st);
            auth.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    (common::median_p99(status), common::median_p99(auth))
}

async fn ready_client(api: &Path) -> Client {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = client::connect(api).await
            && let Ok(s) = c.status(lsa::StatusRequest {}).await
            && s.get_ref().state == "ready"
        {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server at {} not ready",
            api.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn logon(c: &mut Client, i: usize) -> String {
    // Each client process its own credentials (and, as root, its own uid).
    c.logon(lsa::LogonRequest {
        user: format!("bench{}-{i}", std::process::id()),
        domain: "CORP".into(),
        realm: String::new(),
        kdc: String::new(),
        secret: Some(lsa::logon_request::Secret::Password("Bench-Passw0rd".into())),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .session_id
}

/// One handshake; the `NtlmAuthenticate` latency in µs, or `None` if the enclave's rate limit
/// refused it (any other error is a failure of the benchmark).
async fn handshake(c: &mut Client, session: &str, challenge: &[u8]) -> Option<f64> {
    let neg = c
        .ntlm_negotiate(lsa::NtlmNegotiateRequest {
            session_id: session.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let t = Instant::now();
    let a = c
        .ntlm_authenticate(lsa::NtlmAuthenticateRequest {
            context_id: neg.context_id,
            challenge_message: challenge.to_vec(),
            channel_bindings: Vec::new(),
            target_spn: "HTTP/server.corp.test".into(),
            ..Default::default()
        })
        .await;
    let a = match a {
        Ok(a) => a.into_inner(),
        Err(e) if e.code() == tonic::Code::ResourceExhausted => return None,
        Err(e) => panic!("NtlmAuthenticate: {e:?}"),
    };
    let us = t.elapsed().as_secs_f64() * 1e6;
    assert_eq!(a.exported_session_key.len(), 16);
    Some(us)
}

struct Figures {
    median: f64,
    p99: f64,
    /// (clients, handshakes per second).
    throughput: Vec<(usize, f64)>,
    /// Handshakes the enclave's rate limit refused (not counted in the figures).
    refused: u64,
}

fn measure(api: &Path, n: usize, secs: f64) -> Figures {
    let per_uid = n.div_ceil(LATENCY_UIDS);
    let mut lat = Vec::with_capacity(n);
    let mut refused = 0u64;
    for k in 0..LATENCY_UIDS {
        let out = run_clients(api, 1, FIRST_UID + k as u32, &format!("latency {per_uid}"));
        let mut words = out[0].split_whitespace();
        refused += words.next().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
        lat.extend(words.filter_map(|v| v.parse::<f64>().ok()));
    }
    let (median, p99) = common::median_p99(lat);
    let mut throughput = Vec::new();
    for clients in [8usize, 16] {
        let start_at = unix_ms() + 1500;
        let out = run_clients(api, clients, FIRST_UID + 100, &format!("throughput {secs} {start_at}"));
        let mut count = 0.0;
        for line in &out {
            let mut w = line.split_whitespace().filter_map(|v| v.parse::<f64>().ok());
            count += w.next().unwrap_or(0.0);
            refused += w.next().unwrap_or(0.0) as u64;
        }
        throughput.push((clients, count / secs));
    }
    Figures {
        median,
        p99,
        throughput,
        refused,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether client processes can take other uids (root with `setpriv`).
fn can_switch_uid() -> bool {
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    root && Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `count` client processes (uids `first_uid`.., if this process may switch uid) doing
/// `work` against `api`; their stdout lines.
fn run_clients(api: &Path, count: usize, first_uid: u32, work: &str) -> Vec<String> {
    let children: Vec<_> = (0..count)
        .map(|k| {
            let exe = std::env::current_exe().unwrap();
            let mut cmd = if can_switch_uid() {
                let uid = first_uid + k as u32;
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ])
                .arg(exe);
                c
            } else {
                Command::new(exe)
            };
            cmd.env(CLIENT_ENV, work)
                .env(CLIENT_SOCKET_ENV, api)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning a client")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("a client");
            assert!(out.status.success(), "a client failed");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

/// A client process: logs on (its own credential, under its uid) and does `work`.
fn run_client(work: &str, api: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let challenge = challenge();
    let words: Vec<&str> = work.split_whitespace().collect();
    rt.block_on(async {
        let mut c = ready_client(api).await;
        let mut sessions = Vec::with_capacity(CREDENTIALS_PER_CLIENT);
        for i in 0..CREDENTIALS_PER_CLIENT {
            sessions.push(logon(&mut c, i).await);
        }
        match words.as_slice() {
            ["latency", n] => {
                let n: usize = n.parse().unwrap();
                // Warm-up within the budget's burst, then the measured calls.
                for i in 0..50 {
                    handshake(&mut c, &sessions[i % sessions.len()], &challenge).await;
                }
                let mut lat = Vec::with_capacity(n);
                let mut refused = 0;
                for i in 0..n {
                    match handshake(&mut c, &sessions[i % sessions.len()], &challenge).await {
                        Some(us) => lat.push(us),
                        None => refused += 1,
                    }
                }
                let text: Vec<String> = lat.iter().map(|v| format!("{v:.2}")).collect();
                println!("{refused} {}", text.join(" "));
            }
            ["throughput", secs, start_at] => {
                let secs: f64 = secs.parse().unwrap();
                let start_at: u64 = start_at.parse().unwrap();
                tokio::time::sleep(Duration::from_millis(start_at.saturating_sub(unix_ms()))).await;
                let t = Instant::now();
                let (mut done, mut refused) = (0u64, 0u64);
                while t.elapsed().as_secs_f64() < secs {
                    match handshake(
                        &mut c,
                        &sessions[(done + refused) as usize % sessions.len()],
                        &challenge,
                    )
                    .await
                    {
                        Some(_) => done += 1,
                        None => refused += 1,
                    }
                }
                println!("{done} {refused}");
            }
            _ => panic!("unknown client work {work:?}"),
        }
    });
}

fn spawn_logged(mut cmd: Command) -> std::process::Child {
    cmd.env("CREDGUARD_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

fn main() {
    if let Some(path) = std::env::var_os(BASELINE_ENV) {
        serve_baseline(&PathBuf::from(path));
        return;
    }
    if let (Ok(work), Some(api)) = (std::env::var(CLIENT_ENV), std::env::var_os(CLIENT_SOCKET_ENV)) {
        run_client(&work, Path::new(&api));
        return;
    }
    if !Path::new("/dev/kvm").exists() {
        eprintln!("!!! SKIPPED: /dev/kvm is missing; this benchmark boots the enclave");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, secs) = if quick { (500, 1.0) } else { (3000, 3.0) };
    let dev = credguard_image::dev::ensure_enclave_built().expect("building the enclave");
    let dir = std::env::temp_dir().join(format!("credguard-ntlm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vsock = dir.join("vsock.sock");
    let api = dir.join("lsa.sock");
    let base_api = dir.join("baseline.sock");

    // In-process baseline first, in its own process like the proxy.
    let mut me = Command::new(std::env::current_exe().unwrap());
    me.env(BASELINE_ENV, &base_api);
    let mut baseline = spawn_logged(me);
    let base = measure(&base_api, n, secs);
    let _ = baseline.kill();
    let _ = baseline.wait();

    let signed = dev.verify().expect("verify");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(vsock.clone());
    let enclave = Enclave::launch(config).expect("launch");
    let (raw_status, raw_auth) = raw_vsock(&vsock, n);
    // The proxy asks the enclave for the ceiling rate, as the baseline does.
    let cfg = dir.join("bench.toml");
    std::fs::write(&cfg, format!("[limits]\noperations_per_second_per_session = {RATE}\n")).unwrap();
    let mut cmd = Command::new(&common::binaries().lsa_proxy);
    cmd.arg("--config").arg(&cfg);
    cmd.arg("--socket").arg(&api).arg("--vmm-socket").arg(&vsock);
    // The benchmark logs on in the clear, as in dev mode.
    cmd.arg("--allow-plaintext-secrets");
    let mut proxy = spawn_logged(cmd);
    let encl = measure(&api, n, secs);
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = enclave.stop_and_wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "credguard NTLM benchmark: NtlmAuthenticate ({n} calls over {LATENCY_UIDS} client processes, after 50 warm-up handshakes each)"
    );
    if !can_switch_uid() {
        println!(
            "  (not root: every client has this uid, so the figures are capped by one uid's budget of 1000 operations per second)"
        );
    }
    println!(
        "  in-process (no enclave): median {:.1} us, p99 {:.1} us",
        base.median, base.p99
    );
    println!(
        "  enclave alone over vsock (no gRPC, no proxy): NtlmAuthenticate median {:.1} us, p99 {:.1} us; Status median {:.1} us",
        raw_auth.0, raw_auth.1, raw_status.0
    );
    println!(
        "  with the enclave:        median {:.1} us, p99 {:.1} us; {:.2}x the in-process median (target <= 1.2x)",
        encl.median,
        encl.p99,
        encl.median / base.median
    );
    // The floor is the bare enclave round trip for the same call (`NtlmAuthenticate` over vsock:
    // no gRPC, no proxy) over the in-process gRPC figure, not the sum of the two: the proxy's
    // gRPC work and the enclave's trip overlap (while one call waits for the enclave the proxy
    // serves others), so a call with the enclave can be faster than that sum (issue 19 measured
    // it so). No design gets below max(1, floor).
    let floor = raw_auth.0 / base.median;
    println!(
        "  floor: bare enclave NtlmAuthenticate {:.1} us / in-process {:.1} us = {:.2}x (target <= 1.2x {})",
        raw_auth.0,
        base.median,
        floor,
        if floor > 1.2 {
            "is below the floor here"
        } else {
            "is above the floor"
        }
    );
    if base.refused + encl.refused > 0 {
        println!(
            "  refused by the rate limit (per uid and per credential, 1000/s each): {} in-process, {} with the enclave",
            base.refused, encl.refused
        );
    }
    for ((clients, b), (_, e)) in base.throughput.iter().zip(&encl.throughput) {
        println!(
            "  {clients:>2} clients, {secs} s: handshakes (Negotiate + Authenticate) per second: in-process {b:.0}, with the enclave {e:.0} (target >= 15000 with 16 clients)"
        );
    }
    let tp = |f: &Figures| {
        f.throughput
            .iter()
            .map(|(c, t)| format!("\"{c}\":{t:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{{\"inprocess_auth_us_median\":{:.2},\"inprocess_auth_us_p99\":{:.2},\"enclave_auth_us_median\":{:.2},\"enclave_auth_us_p99\":{:.2},\"vsock_auth_us_median\":{:.2},\"vsock_status_us_median\":{:.2},\"inprocess_handshakes_per_s\":{{{}}},\"enclave_handshakes_per_s\":{{{}}}}}",
        base.median,
        base.p99,
        encl.median,
        encl.p99,
        raw_auth.0,
        raw_status.0,
        tp(&base),
        tp(&encl)
    );
}
