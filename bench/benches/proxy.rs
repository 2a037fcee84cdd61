//! LSA proxy benchmark: `Status` and `Logon` through gRPC over the Unix socket vs. the enclave's
//! own vsock round trip, in the same run; and the proxy's RSS with one user's most sessions.
//!
//! Run: `cargo bench -p credguard-bench --bench proxy` (add `-- --quick` for fewer calls).
//! Needs /dev/kvm. The proxy runs as its own process (`credguard-lsa-proxy`), as in production.

// Benchmark code: a failed unwrap ends the run with its message, as a failed test does.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use credguard_client as client;
use credguard_proto::abi;
use credguard_proto::enclave::{self, StatusRequest};
use credguard_proto::lsa;
use credguard_proto::unix_transport::{UnixClient, UnixTransport};
use credguard_vmm::{Enclave, EnclaveConfig, EnclaveImage};

fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn connect_vsock(sock: &Path) -> UnixClient {
    let start = Instant::now();
    loop {
        match UnixTransport::client(sock, abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5)) {
            Ok(c) => return c,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("enclave not reachable: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn logon_req(i: usize) -> lsa::LogonRequest {
    lsa::LogonRequest {
        user: format!("bench{i}"),
        domain: "BENCH".into(),
        realm: String::new(),
        kdc: String::new(),
        secret: Some(lsa::logon_request::Secret::Password(format!("pw-{i}"))),
        ..Default::default()
    }
}

/// Sessions of the RSS figure: one user's most in the enclave.
const MANY_SESSIONS: usize = credguard_enclave::credentials::MAX_SESSIONS_PER_OWNER;

fn main() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("!!! SKIPPED: /dev/kvm is missing; this benchmark boots the enclave");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 300 } else { 3000 };
    let dev = credguard_image::dev::ensure_enclave_built().expect("building the enclave");
    let dir = std::env::temp_dir().join(format!("credguard-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vsock = dir.join("vsock.sock");
    let api = dir.join("lsa.sock");

    let signed = dev.verify().expect("verify");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(vsock.clone());
    let enclave = Enclave::launch(config).expect("launch");

    // Baseline: the enclave's Status and Logon over vsock, no gRPC, no proxy.
    let mut raw = connect_vsock(&vsock);
    let mut vs_status = Vec::with_capacity(n);
    let mut vs_logon = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        raw.status(&StatusRequest {}).unwrap();
        if i >= 100 {
            vs_status.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    for i in 0..n {
        let req = enclave::LogonRequest {
            user: format!("raw{i}"),
            domain: "BENCH".into(),
            realm: String::new(),
            secret: Some(enclave::logon_request::Secret::Password(format!("pw-{i}"))),
            operations_per_second: 0,
            owner: 0,
            allow_rc4: false,
            ..Default::default()
        };
        let t = Instant::now();
        let r = raw.logon(&req).unwrap();
        vs_logon.push(t.elapsed().as_secs_f64() * 1e6);
        raw.logoff(&enclave::LogoffRequest {
            session_handle: r.session_handle,
        })
        .unwrap();
    }
    drop(raw);

    // One proxy for every figure. The bench is one uid, so its per-uid limit must allow the
    // the sessions of the RSS figure; the limit does not change the latency of a call.
    let cfg = dir.join("bench.toml");
    std::fs::write(&cfg, "[limits]\nsessions_per_uid = 1000\n").unwrap();
    let mut proxy = common::spawn_proxy(&cfg, &api, &vsock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (g_status, g_logon, rss_idle, rss_1000) = rt.block_on(async {
        let start = Instant::now();
        let mut c = loop {
            if let Ok(mut c) = client::connect(&api).await
                && let Ok(s) = c.status(lsa::StatusRequest {}).await
                && s.get_ref().state == "ready"
            {
                break c;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "proxy not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let rss_idle = rss_kib(proxy.id());
        let mut st = Vec::with_capacity(n);
        for i in 0..n + 100 {
            let t = Instant::now();
            c.status(lsa::StatusRequest {}).await.unwrap();
            if i >= 100 {
                st.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let mut lo = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let r = c.logon(logon_req(i)).await.unwrap().into_inner();
            lo.push(t.elapsed().as_secs_f64() * 1e6);
            c.logoff(lsa::LogoffRequest {
                session_id: r.session_id,
            })
            .await
            .unwrap();
        }
        // As many sessions as the enclave lets one user hold (the bench is one user).
        for i in 0..MANY_SESSIONS {
            c.logon(logon_req(i)).await.unwrap();
        }
        let listed = c.list_sessions(lsa::ListSessionsRequest {}).await.unwrap().into_inner();
        assert_eq!(listed.sessions.len(), MANY_SESSIONS);
        (st, lo, rss_idle, rss_kib(proxy.id()))
    });
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = enclave.stop_and_wait();
    let _ = std::fs::remove_dir_all(&dir);

    let (vs_m, vs_p) = common::median_p99(vs_status);
    let (vl_m, vl_p) = common::median_p99(vs_logon);
    let (gs_m, gs_p) = common::median_p99(g_status);
    let (gl_m, gl_p) = common::median_p99(g_logon);
    println!("credguard LSA proxy benchmark ({n} calls each)");
    println!(
        "  Status  over vsock: median {vs_m:.1} us, p99 {vs_p:.1} us; through gRPC: median {gs_m:.1} us, p99 {gs_p:.1} us; added {:.1} us (target <= 100)",
        gs_m - vs_m
    );
    println!(
        "  Logon   over vsock: median {vl_m:.1} us, p99 {vl_p:.1} us; through gRPC: median {gl_m:.1} us, p99 {gl_p:.1} us; added {:.1} us (target <= 100)",
        gl_m - vl_m
    );
    println!(
        "  proxy RSS: idle {:.1} MiB; with {MANY_SESSIONS} sessions (one user's most) {:.1} MiB (target < 32)",
        rss_idle as f64 / 1024.0,
        rss_1000 as f64 / 1024.0
    );
    println!(
        "{{\"vsock_status_us_median\":{vs_m:.2},\"grpc_status_us_median\":{gs_m:.2},\"grpc_status_us_p99\":{gs_p:.2},\"vsock_logon_us_median\":{vl_m:.2},\"grpc_logon_us_median\":{gl_m:.2},\"grpc_logon_us_p99\":{gl_p:.2},\"proxy_rss_idle_kib\":{rss_idle},\"proxy_rss_many_sessions_kib\":{rss_1000},\"many_sessions\":{MANY_SESSIONS}}}"
    );
}
