//! KCM benchmark (issue 15): MIT's own `kvno` with its cache in `credguard-kcm` (the enclave does
//! the TGS exchange) against plain MIT `kvno` with a FILE ccache holding a TGT from `kinit`, against
//! the same throwaway MIT KDC (scripts/test-kdc.sh), interleaved in the same run:
//!
//! - new service: `kvno SVC` for a service neither cache holds yet (a fresh `HTTP/benchNNN` each
//!   round): through KCM the daemon misses, asks the proxy (`KerberosGetServiceTicket`), and the
//!   enclave runs the TGS exchange; MIT reads its TGT from the file and runs it itself;
//! - cached service: `kvno SVC` for a service already in the cache (the daemon's, the file);
//! - the floor: `kvno` with a FILE cache that does not exist (the process starts, links libkrb5,
//!   reads krb5.conf, fails to find the cache: no network, no KCM), and a bare `/bin/true` spawn.
//!
//! Also measured, to say where the time goes: `KerberosGetServiceTicket` over gRPC from this
//! process (what one KCM miss asks the proxy for), and a KCM `NOOP` round trip on the daemon's
//! socket (one request of the several each `kvno` makes).
//!
//! Run: `cargo bench -p credguard-bench --bench kcm` (add `-- --quick` for fewer rounds). With
//! `-- --pin-vmm-threads` (a diagnostic, not how credguard runs), the VMM's vsock worker and the
//! vCPU thread are pinned to two different CPUs: the enclave's virtio driver busy-waits for the
//! vsock worker to take each packet it sends, and when the scheduler queues the worker behind the
//! spinning vCPU on one core, the wait lasts until the next scheduler tick (docs/BENCHMARKS.md).
//! Needs /dev/kvm and the MIT KDC packages (krb5-kdc, krb5-admin-server, krb5-user). Prints
//! figures; asserts no time.

// Benchmark code: a failed unwrap ends the run with its message, as a failed test does.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credguard_client as client;
use credguard_proto::lsa;
use credguard_vmm::{Enclave, EnclaveConfig, EnclaveImage};

/// Services the test KDC has for cold runs (`HTTP/bench001..200.credguard.test`).
const BENCH_SERVICES: usize = 200;
/// The user on both sides: one enctype (aes256-cts-hmac-sha1-96), so both run the same crypto.
const USER: &str = "alice18";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `n`th fresh service (1-based).
fn bench_service(n: usize) -> String {
    format!("HTTP/bench{n:03}.credguard.test")
}

/// One way of running MIT's `kvno`: a krb5.conf and a `KRB5CCNAME`.
struct Kvno {
    conf: PathBuf,
    ccname: String,
}

impl Kvno {
    /// Runs `kvno spn` and returns how long the process took, start to exit; `expect_ok` says
    /// whether it must succeed or fail (the floor fails: it has no cache).
    fn time(&self, spn: &str, expect_ok: bool) -> f64 {
        let t = Instant::now();
        let status = Command::new("kvno")
            .arg(spn)
            .env("KRB5_CONFIG", &self.conf)
            .env("KRB5CCNAME", &self.ccname)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running kvno");
        let took = ms(t.elapsed());
        assert_eq!(
            status.success(),
            expect_ok,
            "kvno {spn} with {} ({})",
            self.ccname,
            self.conf.display()
        );
        took
    }

    /// `klist`'s listing of the cache.
    fn klist(&self) -> String {
        let out = Command::new("klist")
            .env("KRB5_CONFIG", &self.conf)
            .env("KRB5CCNAME", &self.ccname)
            .output()
            .expect("running klist");
        assert!(out.status.success(), "klist {}", self.ccname);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// How long a bare spawn takes (`/bin/true`).
fn time_true() -> f64 {
    let t = Instant::now();
    let ok = Command::new("true").status().expect("running true").success();
    assert!(ok);
    ms(t.elapsed())
}

/// A KCM `NOOP` on `conn` (Heimdal KCM framing: length, version 2.0, opcode 0), in µs.
fn kcm_noop(conn: &mut UnixStream) -> f64 {
    let t = Instant::now();
    conn.write_all(&[0, 0, 0, 4, 2, 0, 0, 0]).unwrap();
    // The reply (MIT's framing): the length of what follows the status word, the status word,
    // then the KCM code (0: success) and the payload.
    let mut head = [0u8; 8];
    conn.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    let took = t.elapsed().as_secs_f64() * 1e6;
    assert!(
        head[4..] == [0; 4] && body.get(..4) == Some(&[0; 4][..]),
        "NOOP answered an error"
    );
    took
}

/// Starts the test KDC in `dir`; its KEY=VALUE lines, or `None` after a loud skip.
fn start_kdc(root: &str, dir: &Path) -> Option<HashMap<String, String>> {
    let out = Command::new(format!("{root}/scripts/test-kdc.sh"))
        .arg("start")
        .arg(dir)
        .output()
        .expect("scripts/test-kdc.sh");
    if !out.status.success() {
        eprintln!(
            "!!! SKIPPED: the test KDC did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The KDC's krb5.conf with the cache in the KCM daemon at `socket`.
fn kcm_krb5_conf(base: &Path, socket: &Path, out: &Path) {
    let base = std::fs::read_to_string(base).unwrap();
    let conf = base.replacen(
        "[libdefaults]\n",
        &format!("[libdefaults]\n kcm_socket = {}\n", socket.display()),
        1,
    );
    std::fs::write(out, conf).unwrap();
}

/// `kinit -c cc USER` with the password on stdin.
fn kinit(cc: &Path, conf: &str, password: &str) {
    let mut kinit = Command::new("kinit")
        .arg("-c")
        .arg(cc)
        .arg(USER)
        .env("KRB5_CONFIG", conf)
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
}

/// The samples of one figure, in ms.
#[derive(Default)]
struct Samples {
    floor_true: Vec<f64>,
    floor_kvno: Vec<f64>,
    new_kcm: Vec<f64>,
    new_mit: Vec<f64>,
    cached_kcm: Vec<f64>,
    cached_mit: Vec<f64>,
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("!!! SKIPPED: /dev/kvm is missing; this benchmark boots the enclave");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let pin = std::env::args().any(|a| a == "--pin-vmm-threads");
    let rounds = if quick { 15 } else { 60 };
    assert!(rounds < BENCH_SERVICES);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = std::env::temp_dir().join(format!("credguard-kcm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kdc_dir = dir.join("kdc");
    let Some(env) = start_kdc(root, &kdc_dir) else {
        return;
    };
    let (kdc, realm, password, spn, krb5_config) = (
        env["KDC"].clone(),
        env["REALM"].clone(),
        env["PASSWORD"].clone(),
        env["SPN"].clone(),
        env["KRB5_CONFIG"].clone(),
    );

    // The enclave in this process (credguard-vmm's library), the shipped proxy and KCM daemon as
    // processes; all run as root, whom the proxy lets the KCM daemon act for.
    let dev = credguard_image::dev::ensure_enclave_built().expect("building the enclave");
    let vsock = dir.join("vsock.sock");
    let api = dir.join("lsa.sock");
    let kcm_socket = dir.join("kcm.sock");
    let signed = dev.verify().expect("verify");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(vsock.clone());
    let enclave = Enclave::launch(config).expect("launch");
    let pinned = pin && pin_vmm_threads();
    if pin && !pinned {
        eprintln!("!!! --pin-vmm-threads: could not pin the vsock and vcpu0 threads to two CPUs; running unpinned");
    }
    let cfg = dir.join("bench.toml");
    std::fs::write(&cfg, format!("[kerberos]\ndefault_kdc = \"{kdc}\"\n")).unwrap();
    let mut proxy = common::spawn_proxy(&cfg, &api, &vsock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut lsa_client, session) = rt.block_on(async {
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
        // Root's logon becomes root's default session: the one root's KCM cache shows.
        let id = c
            .logon(lsa::LogonRequest {
                user: USER.into(),
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
        (c, id)
    });
    let mut kcm = common::spawn_kcm(&kcm_socket, &api);

    let kcm_conf = dir.join("krb5-kcm.conf");
    kcm_krb5_conf(Path::new(&krb5_config), &kcm_socket, &kcm_conf);
    let mit_cc = dir.join("mit.ccache");
    kinit(&mit_cc, &krb5_config, &password);
    let through_kcm = Kvno {
        conf: kcm_conf,
        ccname: "KCM:".into(),
    };
    let mit = Kvno {
        conf: PathBuf::from(&krb5_config),
        ccname: format!("FILE:{}", mit_cc.display()),
    };
    let no_cache = Kvno {
        conf: PathBuf::from(&krb5_config),
        ccname: format!("FILE:{}", dir.join("none.ccache").display()),
    };

    // Warm-up: the daemon learns the default session (ListSessions, then its one KerberosGetTgt),
    // both caches get the SPN the cached rounds ask for, and the binaries are in the page cache.
    for _ in 0..3 {
        through_kcm.time(&spn, true);
        mit.time(&spn, true);
        no_cache.time(&spn, false);
        time_true();
    }

    // The rounds, interleaved so that both sides see the same machine: each round runs every
    // figure once, starting at a different one each time.
    let mut s = Samples::default();
    for i in 0..rounds {
        let fresh = bench_service(i + 1);
        for step in 0..6 {
            match (step + i) % 6 {
                0 => s.floor_true.push(time_true()),
                1 => s.floor_kvno.push(no_cache.time(&spn, false)),
                2 => s.new_kcm.push(through_kcm.time(&fresh, true)),
                3 => s.new_mit.push(mit.time(&fresh, true)),
                4 => s.cached_kcm.push(through_kcm.time(&spn, true)),
                _ => s.cached_mit.push(mit.time(&spn, true)),
            }
        }
    }

    // Every fresh service was fetched once and kept: both caches list them all.
    let listed_kcm = through_kcm.klist().matches("HTTP/bench").count();
    let listed_mit = mit.klist().matches("HTTP/bench").count();
    assert_eq!((listed_kcm, listed_mit), (rounds, rounds), "tickets cached");

    // Where the KCM path's time goes: the one gRPC call a miss makes (a TGS exchange of the
    // enclave through the proxy, the same session), and one request on the daemon's socket.
    let grpc: Vec<f64> = rt.block_on(async {
        let mut v = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            lsa_client
                .kerberos_get_service_ticket(lsa::KerberosGetServiceTicketRequest {
                    session_id: session.clone(),
                    spn: spn.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            v.push(ms(t.elapsed()));
        }
        v
    });
    let mut conn = UnixStream::connect(&kcm_socket).unwrap();
    let noop: Vec<f64> = (0..rounds * 10).map(|_| kcm_noop(&mut conn)).collect();
    drop(conn);

    let _ = kcm.kill();
    let _ = kcm.wait();
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = enclave.stop_and_wait();
    let _ = Command::new(format!("{root}/scripts/test-kdc.sh"))
        .arg("stop")
        .arg(&kdc_dir)
        .status();
    let _ = std::fs::remove_dir_all(&dir);

    report(rounds, pinned, s, grpc, noop);
}

/// Pins this process's VMM threads, the vsock worker (`vsock`) and the vCPU (`vcpu0`), to the
/// first two CPUs this process may use, one each; false if there are not two, or a thread is
/// missing or could not be pinned.
fn pin_vmm_threads() -> bool {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size given into `allowed`, which is that size.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) } != 0 {
        return false;
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| {
            // SAFETY: CPU_ISSET reads bit `c` of `allowed`, inside the set for every c < CPU_SETSIZE.
            unsafe { libc::CPU_ISSET(c, &allowed) }
        })
        .take(2)
        .collect();
    let [first, second] = cpus[..] else {
        return false;
    };
    // A new thread names itself once it runs: look again for a while until both have.
    for _ in 0..100 {
        let mut pinned = 0;
        for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let cpu = match comm.trim() {
                "vsock" => first,
                "vcpu0" => second,
                _ => continue,
            };
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else {
                continue;
            };
            // SAFETY: an all-zero cpu_set_t is a valid, empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `cpu` < CPU_SETSIZE (it came from the scan above): the bit is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
            // SAFETY: sched_setaffinity reads the set of the size given; `tid` is a thread of ours.
            if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } == 0 {
                pinned += 1;
            }
        }
        if pinned == 2 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn verdict(ratio: f64, goal: f64) -> &'static str {
    if ratio <= goal { "met" } else { "NOT met" }
}

fn report(rounds: usize, pinned: bool, s: Samples, grpc: Vec<f64>, noop: Vec<f64>) {
    let (true_m, true_p) = common::median_p99(s.floor_true);
    let (floor_m, floor_p) = common::median_p99(s.floor_kvno);
    let (nk_m, nk_p) = common::median_p99(s.new_kcm);
    let (nm_m, nm_p) = common::median_p99(s.new_mit);
    let (ck_m, ck_p) = common::median_p99(s.cached_kcm);
    let (cm_m, cm_p) = common::median_p99(s.cached_mit);
    let (g_m, g_p) = common::median_p99(grpc);
    let (n_m, n_p) = common::median_p99(noop);
    println!(
        "credguard KCM benchmark ({rounds} rounds, interleaved; same MIT KDC; times of whole `kvno` processes){}",
        if pinned {
            "; DIAGNOSTIC: the VMM's vsock worker and vCPU pinned to two CPUs"
        } else {
            ""
        }
    );
    println!(
        "  {:<44} {:>9} {:>9} {:>8} {:>9} {:>12}",
        "figure", "median", "p99", "/ MIT", "/ floor", "above floor"
    );
    let row = |name: &str, m: f64, p: f64, mit: Option<f64>| {
        let vs_mit = mit.map_or_else(String::new, |b| format!("{:.2}x", m / b));
        println!(
            "  {name:<44} {m:>6.2} ms {p:>6.2} ms {vs_mit:>8} {:>8.2}x {:>9.2} ms",
            m / floor_m,
            m - floor_m
        );
    };
    row("floor: spawn /bin/true", true_m, true_p, None);
    row("floor: kvno start-up (no cache, no network)", floor_m, floor_p, None);
    row("new service: MIT kvno, FILE ccache + TGT", nm_m, nm_p, None);
    row("new service: kvno through credguard-kcm", nk_m, nk_p, Some(nm_m));
    row("cached service: MIT kvno, FILE ccache", cm_m, cm_p, None);
    row("cached service: kvno through credguard-kcm", ck_m, ck_p, Some(cm_m));
    let (new_ratio, cached_ratio) = (nk_m / nm_m, ck_m / cm_m);
    println!(
        "  new service: {new_ratio:.2}x MIT (goal <= 1.5x: {}); above the floor {:.2} ms vs {:.2} ms ({:.2}x)",
        verdict(new_ratio, 1.5),
        nk_m - floor_m,
        nm_m - floor_m,
        (nk_m - floor_m) / (nm_m - floor_m)
    );
    println!(
        "  cached service: {cached_ratio:.2}x MIT (goal <= 1.2x: {}); above the floor {:.2} ms vs {:.2} ms",
        verdict(cached_ratio, 1.2),
        ck_m - floor_m,
        cm_m - floor_m
    );
    println!(
        "  process start-up (the floor) is {:.0}% of kvno through KCM for a new service, {:.0}% for a cached one",
        100.0 * floor_m / nk_m,
        100.0 * floor_m / ck_m
    );
    println!(
        "  where the KCM path goes: KerberosGetServiceTicket over gRPC (what a miss asks the proxy) median {g_m:.2} ms, p99 {g_p:.2} ms; \
         a KCM NOOP round trip median {n_m:.0} us, p99 {n_p:.0} us; a miss costs the KCM path {:.2} ms over a hit",
        nk_m - ck_m
    );
    println!(
        "{{\"floor_true_ms_median\":{true_m:.3},\"floor_kvno_ms_median\":{floor_m:.3},\"floor_kvno_ms_p99\":{floor_p:.3},\
         \"new_kcm_ms_median\":{nk_m:.3},\"new_kcm_ms_p99\":{nk_p:.3},\"new_mit_ms_median\":{nm_m:.3},\"new_mit_ms_p99\":{nm_p:.3},\
         \"cached_kcm_ms_median\":{ck_m:.3},\"cached_kcm_ms_p99\":{ck_p:.3},\"cached_mit_ms_median\":{cm_m:.3},\"cached_mit_ms_p99\":{cm_p:.3},\
         \"new_ratio\":{new_ratio:.3},\"cached_ratio\":{cached_ratio:.3},\"vmm_threads_pinned\":{pinned},\"grpc_service_ticket_ms_median\":{g_m:.3},\"kcm_noop_us_median\":{n_m:.1}}}"
    );
}
