//! Foundation benchmark: cold start, `Status` over vsock vs. the bare doorbell round trip, VMM
//! RSS and guest memory touched. All in one run, so the ratios compare like with like.
//!
//! Run: `cargo bench -p credguard-bench --bench enclave` (add `-- --quick` for fewer iterations).
//! Needs /dev/kvm. Prints a table and one JSON line with every figure.

// Benchmark code: a failed unwrap ends the run with its message, as a failed test does.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credguard_image::SignedImage;
use credguard_proto::abi;
use credguard_proto::enclave::{StatusReply, StatusRequest};
use credguard_proto::unix_transport::{UnixClient, UnixTransport};
use credguard_vmm::{BootMode, Enclave, EnclaveConfig, EnclaveImage, ExitOutcome};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Stats {
    median: f64,
    p99: f64,
    min: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats {
        median: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        min: v.first().copied().unwrap_or(f64::NAN),
    }
}

fn connect_retry(sock: &Path) -> UnixClient {
    let start = Instant::now();
    loop {
        match UnixTransport::client(sock, abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5)) {
            Ok(c) => return c,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("enclave not reachable: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    }
}

/// One cold start: verify + measure + create VM + boot + connect + first Status reply.
fn cold_start(dev: &credguard_image::dev::DevImage, sock: &Path) -> (f64, f64, f64) {
    let t0 = Instant::now();
    let signed = SignedImage::load_and_verify(&dev.image, &dev.manifest, &dev.trusted_key).expect("verify");
    let t_verified = t0.elapsed();
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(sock.to_path_buf());
    let enclave = Enclave::launch(config).expect("launch");
    let t_launched = t0.elapsed();
    let mut c = connect_retry(sock);
    let _: StatusReply = c.status(&StatusRequest {}).expect("status");
    let total = t0.elapsed();
    drop(c);
    let _ = enclave.stop_and_wait();
    (
        total.as_secs_f64() * 1e3,
        t_verified.as_secs_f64() * 1e3,
        (t_launched - t_verified).as_secs_f64() * 1e3,
    )
}

fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Guest RAM as the VMM process maps it: (KiB mapped, KiB resident). The guest RAM mappings are
/// the pieces of the guest_memfd (`anon_inode:[kvm-gmem]`), or one anonymous mapping of the whole
/// RAM size when the kernel has no guest_memfd.
fn guest_kib(pid: u32, ram_size: u64) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut in_guest, mut mapped, mut rss) = (false, 0, 0);
    for line in text.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            in_guest = b - a == ram_size || line.contains("kvm-gmem");
            if in_guest {
                mapped += (b - a) / 1024;
            }
            continue;
        }
        if in_guest && line.starts_with("Rss:") {
            rss += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (mapped, rss)
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("!!! SKIPPED: /dev/kvm is missing; this benchmark boots the enclave");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (cold_runs, status_calls, doorbell_iters) = if quick { (5, 300, 1000) } else { (30, 3000, 10_000) };
    // The doorbell benchmark is a boot mode of the test image only.
    let dev = credguard_image::dev::ensure_test_enclave_built().expect("building the test enclave");
    let dir = std::env::temp_dir().join(format!("credguard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock = dir.join("vsock.sock");

    // 1. Cold start.
    let mut totals = Vec::new();
    let mut verifies = Vec::new();
    let mut launches = Vec::new();
    let _ = cold_start(&dev, &sock); // warm the page cache
    for _ in 0..cold_runs {
        let (t, v, l) = cold_start(&dev, &sock);
        totals.push(t);
        verifies.push(v);
        launches.push(l);
    }
    let cold = stats(totals);
    let verify = stats(verifies);
    let launch = stats(launches);

    // 2. Status round trip over vsock, and 3. the bare doorbell round trip, same run.
    let signed = dev.verify().expect("verify");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(sock.clone());
    let enclave = Enclave::launch(config).expect("launch");
    let mut c = connect_retry(&sock);
    for _ in 0..100 {
        let _: StatusReply = c.status(&StatusRequest {}).expect("status");
    }
    let mut rtt = Vec::with_capacity(status_calls);
    for _ in 0..status_calls {
        let t = Instant::now();
        let _: StatusReply = c.status(&StatusRequest {}).expect("status");
        rtt.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let status = stats(rtt);
    drop(c);
    let _ = enclave.stop_and_wait();

    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.boot_mode = BootMode::DoorbellBench;
    config.mode_arg = doorbell_iters;
    let mut bench = Enclave::launch(config).expect("launch doorbell bench");
    let outcome = bench
        .wait_timeout(Duration::from_secs(120))
        .expect("doorbell bench finishes");
    let ExitOutcome::BenchDone(db) = outcome else {
        panic!("doorbell bench: {outcome}")
    };
    let door_median = db.cycles_to_us(db.report.bench_median_cycles).unwrap_or(f64::NAN);
    let door_p99 = db.cycles_to_us(db.report.bench_p99_cycles).unwrap_or(f64::NAN);

    // 4. VMM RSS and guest memory touched, of a real `credguard-vmm run` process after 1,000 calls.
    let mut child = Command::new(&common::binaries().vmm)
        .args(["run", "--image"])
        .arg(&dev.image)
        .arg("--manifest")
        .arg(&dev.manifest)
        .arg("--trusted-key")
        .arg(&dev.trusted_key)
        .arg("--vsock-socket")
        .arg(&sock)
        // The enclave in this very process (no supervisor/worker split), so that its RSS and
        // guest mappings are the ones measured.
        .arg("--no-supervise")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn credguard-vmm");
    let mut c = connect_retry(&sock);
    for _ in 0..1000 {
        let _: StatusReply = c.status(&StatusRequest {}).expect("status");
    }
    let pid = child.id();
    let rss = proc_kib(pid, "status", "VmRSS:");
    let hwm = proc_kib(pid, "status", "VmHWM:");
    let (guest_mapped, guest) = guest_kib(pid, abi::DEFAULT_RAM_SIZE);
    drop(c);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let ratio = status.median / door_median;
    println!(
        "credguard foundation benchmark ({cold_runs} cold starts, {status_calls} Status calls, {doorbell_iters} doorbells)"
    );
    println!(
        "  cold start (verify+measure+VM+boot+first vsock reply): median {:.2} ms, p99 {:.2} ms, min {:.2} ms (target <= 5 ms without guest_memfd, 3 ms with)",
        cold.median, cold.p99, cold.min
    );
    println!(
        "    of which verify+measure: median {:.2} ms; create VM + load: median {:.2} ms",
        verify.median, launch.median
    );
    println!(
        "  Status round trip over vsock: median {:.1} us, p99 {:.1} us, min {:.1} us",
        status.median, status.p99, status.min
    );
    println!("  bare doorbell round trip (guest-measured): median {door_median:.1} us, p99 {door_p99:.1} us");
    println!("  Status / doorbell median ratio: {ratio:.2}x (target <= 1.3x)");
    println!(
        "  credguard-vmm RSS: {:.1} MiB (peak {:.1} MiB; target <= 4 MiB); guest RAM mapped in the VMM: {:.2} MiB, resident there: {:.2} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        guest_mapped as f64 / 1024.0,
        guest as f64 / 1024.0
    );
    println!(
        "{{\"cold_start_ms_median\":{:.3},\"cold_start_ms_p99\":{:.3},\"verify_ms_median\":{:.3},\"launch_ms_median\":{:.3},\"status_us_median\":{:.2},\"status_us_p99\":{:.2},\"doorbell_us_median\":{door_median:.2},\"doorbell_us_p99\":{door_p99:.2},\"status_over_doorbell\":{ratio:.3},\"vmm_rss_kib\":{rss},\"vmm_hwm_kib\":{hwm},\"guest_touched_kib\":{guest},\"guest_mapped_kib\":{guest_mapped}}}",
        cold.median, cold.p99, verify.median, launch.median, status.median, status.p99
    );
}
