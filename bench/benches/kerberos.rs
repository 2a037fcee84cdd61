//! Kerberos benchmark against a throwaway MIT KDC (scripts/test-kdc.sh), all in the same run:
//!
//! - logon + TGT + one service ticket through credguard (gRPC -> proxy -> enclave, the proxy
//!   carrying every message to the KDC) vs. MIT's own `kinit` + `kvno` (as processes, fresh ccache);
//! - a service ticket alone with the TGT cached (gRPC), median and p99, vs. the bare KDC round trip
//!   of a TGS exchange (the same TGS-REQs, timed around the UDP exchange alone) and vs. `kvno
//!   --no-store` with a cached TGT (each round for a service the session has no ticket for yet);
//! - a service ticket cached in the enclave (the same service again: no KDC exchange), over gRPC
//!   and over raw vsock, vs. the bare enclave round trip (`Status` over vsock).
//!
//! Run: `cargo bench -p credguard-bench --bench kerberos` (add `-- --quick` for fewer rounds).
//! Needs /dev/kvm and the MIT KDC packages. Prints figures; asserts no time.

// Benchmark code: a failed unwrap ends the run with its message, as a failed test does.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credguard_client as client;
use credguard_lsa_proxy::kerberos;
use credguard_proto::abi;
use credguard_proto::enclave;
use credguard_proto::lsa;
use credguard_proto::unix_transport::UnixTransport;
use credguard_vmm::{Enclave, EnclaveConfig, EnclaveImage};

/// A service of the test KDC for round `i` (`HTTP/bench001..200`): the enclave keeps at most
/// 64 tickets per session, oldest out first, so a service comes round again only after its ticket
/// is gone and every round is a real TGS exchange.
fn bench_spn(i: usize) -> String {
    format!("HTTP/bench{:03}.credguard.test", i % 200 + 1)
}

/// Microseconds since `t`.
fn us_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("!!! SKIPPED: /dev/kvm is missing; this benchmark boots the enclave");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, cached) = if quick { (10, 100) } else { (40, 1000) };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = std::env::temp_dir().join(format!("credguard-kerberos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kdc_dir = dir.join("kdc");
    let out = Command::new(format!("{root}/scripts/test-kdc.sh"))
        .arg("start")
        .arg(&kdc_dir)
        .output()
        .expect("scripts/test-kdc.sh");
    if !out.status.success() {
        eprintln!(
            "!!! SKIPPED: the test KDC did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (kdc, realm, password, spn, krb5_config) = (
        env["KDC"].clone(),
        env["REALM"].clone(),
        env["PASSWORD"].clone(),
        env["SPN"].clone(),
        env["KRB5_CONFIG"].clone(),
    );
    // The same principals on both sides, each with one enctype so that both negotiate the same
    // string-to-key: alice18 (aes256-sha1, PBKDF2 4,096 iterations) and alice20 (aes256-sha384,
    // 32,768 iterations). The cached-TGT figures use alice18.
    let users = ["alice18", "alice20"];
    let user = users[0];

    let dev = credguard_image::dev::ensure_enclave_built().expect("building the enclave");
    let vsock = dir.join("vsock.sock");
    let api = dir.join("lsa.sock");
    let signed = dev.verify().expect("verify");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(vsock.clone());
    let enclave = Enclave::launch(config).expect("launch");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Bare KDC round trip: real TGS-REQs built by the enclave over raw vsock, the UDP exchange
    // alone timed (the same transport code the proxy uses).
    let bare = {
        let start = Instant::now();
        let mut raw = loop {
            match UnixTransport::client(&vsock, abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5)) {
                Ok(c) => break c,
                Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("enclave not reachable: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let logon = raw
            .logon(&enclave::LogonRequest {
                user: user.into(),
                domain: String::new(),
                realm: realm.clone(),
                secret: Some(enclave::logon_request::Secret::Password(password.clone())),
                // The ceiling: the cached-TGT loop runs one TGS exchange after another on this
                // session, and must measure the exchange, not the enclave's rate limit.
                operations_per_second: credguard_enclave::ratelimit::MAX_OPERATIONS_PER_SECOND,
                owner: 0,
                allow_rc4: false,
                ..Default::default()
            })
            .unwrap();
        let handle = logon.session_handle;
        let mut reply = Vec::new();
        loop {
            let r = raw
                .kerberos_as(&enclave::KerberosAsRequest {
                    session_handle: handle.clone(),
                    now_unix: now_unix(),
                    kdc_reply: std::mem::take(&mut reply),
                    fast: 0,
                })
                .unwrap();
            if r.kdc_request.is_empty() {
                break;
            }
            reply = rt.block_on(kerberos::kdc_exchange(&kdc, &r.kdc_request)).unwrap();
        }
        let mut times = Vec::with_capacity(cached);
        let mut whole = Vec::with_capacity(cached);
        let mut pace = common::Pacer::new(common::PACED_PER_SECOND / 2);
        for i in 0..cached {
            pace.tick();
            let started = Instant::now();
            let mut reply = Vec::new();
            loop {
                let r = raw
                    .kerberos_tgs(&enclave::KerberosTgsRequest {
                        session_handle: handle.clone(),
                        now_unix: now_unix(),
                        spn: bench_spn(i),
                        mutual: false,
                        delegate: false,
                        kdc_reply: std::mem::take(&mut reply),
                        channel_bindings: Vec::new(),
                    })
                    .unwrap();
                if r.kdc_request.is_empty() {
                    break;
                }
                let t = Instant::now();
                reply = rt.block_on(kerberos::kdc_exchange(&kdc, &r.kdc_request)).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            whole.push(started.elapsed().as_secs_f64() * 1e6);
        }
        // The same service again and again: one enclave step each, from the session's tickets
        // (the full-flow ticket below warms nothing here: this is another session).
        let hit = enclave::KerberosTgsRequest {
            session_handle: handle.clone(),
            now_unix: now_unix(),
            spn: bench_spn(cached.saturating_sub(1)),
            ..Default::default()
        };
        let mut hits = Vec::with_capacity(cached);
        let mut status = Vec::with_capacity(cached);
        for _ in 0..cached {
            pace.tick();
            let t = Instant::now();
            let r = raw.kerberos_tgs(&hit).unwrap();
            hits.push(us_since(t));
            assert!(r.kdc_request.is_empty(), "served from the enclave's cache");
            let t = Instant::now();
            raw.status(&enclave::StatusRequest {}).unwrap();
            status.push(us_since(t));
        }
        (times, whole, hits, status)
    };
    let (bare, raw_whole, raw_hits, enclave_rtt) = bare;

    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kerberos]\ndefault_kdc = \"{kdc}\"\n[limits]\nsessions_per_uid = 1000\noperations_per_second_per_session = {}\n",
            credguard_enclave::ratelimit::MAX_OPERATIONS_PER_SECOND
        ),
    )
    .unwrap();
    let mut proxy = common::spawn_proxy(&cfg, &api, &vsock);
    let (full, svc, svc_hits) = rt.block_on(async {
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
        let ticket_for = |id: &str, spn: &str| lsa::KerberosGetServiceTicketRequest {
            session_id: id.to_string(),
            spn: spn.to_string(),
            delegate: false,
            mutual: false,
            ccache_path: String::new(),
            channel_bindings: Vec::new(),
        };
        let mut full = Vec::new();
        let mut last = String::new();
        for u in users {
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                let id = c
                    .logon(lsa::LogonRequest {
                        user: u.into(),
                        domain: String::new(),
                        realm: realm.clone(),
                        kdc: String::new(),
                        secret: Some(lsa::logon_request::Secret::Password(password.clone())),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .session_id;
                c.kerberos_get_tgt(lsa::KerberosGetTgtRequest { session_id: id.clone() })
                    .await
                    .unwrap();
                c.kerberos_get_service_ticket(ticket_for(&id, &spn)).await.unwrap();
                times.push(ms(t.elapsed()));
                if u == user {
                    if !last.is_empty() {
                        c.logoff(lsa::LogoffRequest { session_id: last }).await.unwrap();
                    }
                    last = id;
                } else {
                    c.logoff(lsa::LogoffRequest { session_id: id }).await.unwrap();
                }
            }
            full.push(times);
        }
        let mut svc = Vec::with_capacity(cached);
        let mut pace = common::Pacer::new(common::PACED_PER_SECOND / 2);
        for i in 0..cached {
            pace.tick();
            let t = Instant::now();
            let r = c
                .kerberos_get_service_ticket(ticket_for(&last, &bench_spn(i)))
                .await
                .unwrap();
            svc.push(us_since(t));
            assert!(!r.get_ref().from_cache, "a TGS exchange each round");
        }
        // One exchange for `spn` (the rounds above pushed its full-flow ticket out), then every
        // call a hit.
        c.kerberos_get_service_ticket(ticket_for(&last, &spn)).await.unwrap();
        let mut hits = Vec::with_capacity(cached);
        for _ in 0..cached {
            pace.tick();
            let t = Instant::now();
            let r = c.kerberos_get_service_ticket(ticket_for(&last, &spn)).await.unwrap();
            hits.push(us_since(t));
            assert!(r.get_ref().from_cache, "served from the enclave's cache");
        }
        (full, svc, hits)
    });
    let _ = proxy.kill();
    let _ = proxy.wait();

    // MIT: kinit (password on stdin) + kvno, fresh ccache each round; then kvno alone with the
    // TGT cached (--no-store, so each run asks the KDC).
    let cc = dir.join("mit.ccache");
    let mut mit = Vec::new();
    for u in users.iter().rev() {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let _ = std::fs::remove_file(&cc);
            let t = Instant::now();
            let mut kinit = Command::new("kinit")
                .arg("-c")
                .arg(&cc)
                .arg(u)
                .env("KRB5_CONFIG", &krb5_config)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("kinit");
            kinit
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{password}\n").as_bytes())
                .unwrap();
            assert!(kinit.wait().unwrap().success(), "kinit failed");
            run_kvno(&cc, &spn, &krb5_config, true);
            times.push(ms(t.elapsed()));
        }
        mit.push(times);
    }
    // Last in the loop above: alice18's TGT is the one cached in `cc`.
    mit.reverse();
    let mut kvno = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        run_kvno(&cc, &spn, &krb5_config, false);
        kvno.push(ms(t.elapsed()));
    }

    let _ = enclave.stop_and_wait();
    let _ = Command::new(format!("{root}/scripts/test-kdc.sh"))
        .arg("stop")
        .arg(&kdc_dir)
        .status();
    let _ = std::fs::remove_dir_all(&dir);

    let (s_m, s_p) = common::median_p99(svc);
    let (b_m, b_p) = common::median_p99(bare);
    let (r_m, r_p) = common::median_p99(raw_whole);
    let (k_m, k_p) = common::median_p99(kvno);
    let (h_m, h_p) = common::median_p99(svc_hits);
    let (rh_m, rh_p) = common::median_p99(raw_hits);
    let (e_m, e_p) = common::median_p99(enclave_rtt);
    println!("credguard Kerberos benchmark ({rounds} rounds; {cached} cached-TGT service tickets)");
    let mut json = String::new();
    for ((u, f), m) in users.iter().zip(full).zip(mit) {
        let (f_m, f_p) = common::median_p99(f);
        let (m_m, m_p) = common::median_p99(m);
        println!(
            "  logon + TGT + service ticket, {u}: credguard median {f_m:.2} ms, p99 {f_p:.2} ms; MIT kinit + kvno median {m_m:.2} ms, p99 {m_p:.2} ms; ratio {:.2}x (target <= 0.5x)",
            f_m / m_m
        );
        json.push_str(&format!(
            "\"{u}_credguard_full_ms_median\":{f_m:.3},\"{u}_mit_kinit_kvno_ms_median\":{m_m:.3},"
        ));
    }
    println!(
        "  service ticket over raw vsock (two enclave steps + the KDC, no gRPC, no proxy): median {r_m:.0} us, p99 {r_p:.0} us"
    );
    println!(
        "  service ticket, TGT cached: credguard median {s_m:.0} us, p99 {s_p:.0} us; bare KDC TGS round trip median {b_m:.0} us, p99 {b_p:.0} us; ratio {:.2}x; kvno --no-store median {k_m:.2} ms, p99 {k_p:.2} ms",
        s_m / b_m
    );
    println!(
        "  service ticket, cached in the enclave: credguard median {h_m:.0} us, p99 {h_p:.0} us; over raw vsock median {rh_m:.0} us, p99 {rh_p:.0} us; bare enclave round trip (Status over vsock) median {e_m:.0} us, p99 {e_p:.0} us; ratio {:.2}x (raw vsock {:.2}x)",
        h_m / e_m,
        rh_m / e_m
    );
    // The floor of any design on this machine: the exchange needs two enclave round trips (build
    // the TGS-REQ, read the TGS-REP: the SPN is only known when the call comes, and the request
    // is made under the TGT session key) around the KDC's. The target is 1.3x of it.
    let floor = 2.0 * e_m + b_m;
    println!(
        "  floor: 2 bare enclave round trips + the bare KDC round trip = {floor:.0} us; credguard (gRPC) {:.2}x of it, raw vsock {:.2}x (target <= 1.3x)",
        s_m / floor,
        r_m / floor
    );
    println!(
        "{{{json}\"credguard_service_ticket_us_median\":{s_m:.1},\"tgs_floor_us\":{floor:.1},\"credguard_service_ticket_us_p99\":{s_p:.1},\"bare_tgs_rtt_us_median\":{b_m:.1},\"bare_tgs_rtt_us_p99\":{b_p:.1},\"kvno_cached_ms_median\":{k_m:.3},\"raw_vsock_service_ticket_us_median\":{r_m:.1},\"enclave_cached_service_ticket_us_median\":{h_m:.1},\"enclave_cached_service_ticket_us_p99\":{h_p:.1},\"raw_vsock_cached_service_ticket_us_median\":{rh_m:.1},\"enclave_rtt_us_median\":{e_m:.1}}}"
    );
}

/// MIT's `kvno` for `spn` with the TGT in the ccache `cc`; with `store`, the service ticket is
/// stored there too (as after `kinit`), else not (`--no-store`: each run asks the KDC).
fn run_kvno(cc: &Path, spn: &str, krb5_config: &str, store: bool) {
    let mut cmd = Command::new("kvno");
    if !store {
        cmd.arg("--no-store");
    }
    let ok = cmd
        .arg("-c")
        .arg(cc)
        .arg(spn)
        .env("KRB5_CONFIG", krb5_config)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kvno failed");
}
