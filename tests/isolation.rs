//! Isolation you can check: the real stack (VMM and proxy as separate processes, the enclave under
//! KVM), scanned and attacked from the outside.
//!
//! Each test asserts the strongest property the host supports. Whether KVM offers guest_memfd is
//! asked of KVM and checked against `Status`; where it does not, the parts that need it print one
//! `SKIPPED: no guest_memfd on this host` line each (a failure with
//! CREDGUARD_REQUIRE_GUEST_MEMFD=1), and everything else still runs.
//!
//! - After logons with a password and an NT hash, no readable byte of the proxy holds the password
//!   (UTF-8 or UTF-16LE) or the NT hash; nor does any byte of the VMM outside guest RAM.
//! - With guest_memfd: guest RAM is a guest_memfd of which the VMM maps only the boot tables, the
//!   image and the DMA window, `Status` says so, and no readable byte of the VMM at all (guest RAM
//!   mappings included) holds a secret. Without: `Status` says "anonymous memory" and "mlocked on
//!   fault", and the VMM's scan leaves out guest RAM, which then holds the secrets.
//! - A core dump of the VMM holds no guest memory, with or without guest_memfd (`gcore` honours
//!   `MADV_DONTDUMP`; a control dump that ignores it finds the guest's page tables, so the check
//!   can fail).
//! - The seccomp filter of each VMM thread kills the process on a call outside its allow-list.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use credguard_proto::{abi, boot_tables};
use support::kdc::TestKdc;
use support::kdc_relay::{KdcRelay, tgt_session_key, u2u_session_key};
use support::memory::{Mapping, readable_mappings, scan, scan_except, utf16le};
use support::{Stack, dev_image, json, kvm_or_skip, retry, temp_dir};

/// The password of the scan; distinctive enough never to occur by chance.
const PASSWORD: &str = "Qx7-IsolationCanary-Passw0rd-9f3b";
/// An NT hash logged on with directly (hex), distinct from the password's.
const NT_HASH_HEX: &str = "c0ffee11d00dfeed5ca1ab1e0badf00d";
/// A Kerberos long-term key (aes256-cts-hmac-sha1-96, enctype 18) logged on with directly (hex).
const KEY_HEX: &str = "5eed5a1ad0c0ffee1337beefcafe4b1d9a8b7c6d5e4f30211203f4e5d6c7b8a9";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn needles() -> Vec<(&'static str, Vec<u8>)> {
    let hash = unhex(NT_HASH_HEX);
    vec![
        ("Kerberos key", unhex(KEY_HEX)),
        ("Kerberos key (hex)", KEY_HEX.as_bytes().to_vec()),
        ("password (UTF-8)", PASSWORD.as_bytes().to_vec()),
        ("password (UTF-16LE)", utf16le(PASSWORD)),
        ("NT hash", hash),
        ("NT hash (hex)", NT_HASH_HEX.as_bytes().to_vec()),
        ("NT hash (hex, UTF-16LE)", utf16le(NT_HASH_HEX)),
    ]
}

/// Bytes of guest RAM (the guest_memfd) the VMM has mapped.
fn guest_mapped_bytes(pid: u32) -> u64 {
    readable_mappings(pid)
        .iter()
        .filter(|m| m.line.contains("kvm-gmem"))
        .map(|m| m.end - m.start)
        .sum()
}

/// Whether this host hides the enclave's heap and stack from the VMM (guest RAM on a guest_memfd),
/// asked of KVM and checked against the `protection` line of `Status`. Where it does not: one
/// `SKIPPED: no guest_memfd on this host` line for the part of `test` that needs it, or a failure
/// with CREDGUARD_REQUIRE_GUEST_MEMFD=1.
fn hidden_guest_memory(test: &str, protection: &str) -> bool {
    let offered = credguard_vmm::memory::host_has_guest_memfd().expect("asking KVM for guest_memfd");
    assert_eq!(
        protection.starts_with("guest_memfd,"),
        offered,
        "KVM_CAP_GUEST_MEMFD is {} but Status says {protection:?}",
        u8::from(offered)
    );
    if offered {
        return true;
    }
    assert!(
        protection.starts_with("anonymous memory,") && protection.contains("mlocked on fault"),
        "without guest_memfd, Status must say so: {protection:?}"
    );
    assert_ne!(
        std::env::var("CREDGUARD_REQUIRE_GUEST_MEMFD").as_deref(),
        Ok("1"),
        "{test}: CREDGUARD_REQUIRE_GUEST_MEMFD=1 but this host has no guest_memfd"
    );
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    let line = format!(
        "SKIPPED: no guest_memfd on this host ({test}: the VMM part; its memory outside guest RAM is still scanned)\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// The VMM's mappings of guest RAM: the guest_memfd pieces, or without guest_memfd the one
/// anonymous mapping of all of it.
fn guest_ram_mappings(pid: u32, hidden: bool) -> Vec<Mapping> {
    let all = readable_mappings(pid);
    let guest: Vec<Mapping> = if hidden {
        all.into_iter().filter(|m| m.line.contains("kvm-gmem")).collect()
    } else {
        // "start-end perms offset dev inode" and no path: anonymous.
        all.into_iter()
            .filter(|m| m.end - m.start == abi::DEFAULT_RAM_SIZE && m.line.split_whitespace().count() == 5)
            .collect()
    };
    assert!(
        hidden || guest.len() == 1,
        "expected one anonymous mapping of guest RAM in the VMM, found {}",
        guest.len()
    );
    guest
}

#[test]
fn memory_scan_finds_no_secret_in_proxy_or_vmm() {
    if !kvm_or_skip("memory_scan_finds_no_secret_in_proxy_or_vmm") {
        return;
    }
    let stack = Stack::start("scan", "");
    let status = stack.wait_ready();
    let protection = status["protection"].as_str().unwrap_or_default().to_owned();
    assert!(
        protection.contains("seccomp on") && protection.contains("dumpable off") && protection.contains(", W^X,"),
        "Status: {status}"
    );
    let hidden = hidden_guest_memory("memory_scan_finds_no_secret_in_proxy_or_vmm", &protection);

    // Once through the proxy in the clear (it must wipe them), once sealed to the enclave.
    let (code, out, err) = stack.ctl(
        None,
        &["--seal", "never", "logon", "scanpw", "--domain", "CORP"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = stack.ctl(
        None,
        &["--seal", "require", "logon", "scanpw2", "--domain", "CORP"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = stack.ctl(
        None,
        &["--seal", "never", "logon", "scanhash", "--domain", "CORP", "--nt-hash"],
        &format!("{NT_HASH_HEX}\n"),
    );
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = stack.ctl(
        None,
        &[
            "logon",
            "scankey",
            "--realm",
            "EXAMPLE.TEST",
            "--kdc",
            "127.0.0.1:88",
            "--key-enctype",
            "18",
        ],
        &format!("{KEY_HEX}\n"),
    );
    assert_eq!(code, 0, "{out} {err}");
    // More traffic through the same buffers after the secrets went by.
    for _ in 0..3 {
        let (code, _, err) = stack.ctl(None, &["sessions"], "");
        assert_eq!(code, 0, "{err}");
    }

    let vmm = stack.vmm_pid().expect("VMM running");
    let proxy = stack.proxy_pid().expect("proxy running");
    let needles = needles();
    // Control: the scanner finds the secrets where they are (this test process holds them).
    let (own, _) = scan(std::process::id(), &needles);
    assert!(
        own.iter().any(|h| h.starts_with("password (UTF-8)")) && own.iter().any(|h| h.starts_with("NT hash at")),
        "the scanner is blind: {own:?}"
    );
    // The proxy, in full, on every host.
    let (hits, read) = scan(proxy, &needles);
    assert!(read > 1 << 20, "read only {read} bytes of the proxy");
    assert!(hits.is_empty(), "secrets in the proxy's memory:\n{}", hits.join("\n"));

    if !hidden {
        // Guest RAM is mapped whole in the VMM here, so it holds the secrets (the control: the
        // scan finds them there); the rest of the VMM must not.
        let guest = guest_ram_mappings(vmm, false);
        let (in_guest, _) = scan(vmm, &needles);
        assert!(
            in_guest.iter().any(|h| h.starts_with("password (UTF-8)")),
            "the scanner is blind to the guest RAM the VMM maps: {in_guest:?}"
        );
        let (hits, read) = scan_except(vmm, &needles, &[guest[0].start]);
        assert!(read > 1 << 20, "read only {read} bytes of the VMM");
        assert!(hits.is_empty(), "secrets in the VMM's own memory:\n{}", hits.join("\n"));
        return;
    }
    let mapped = guest_mapped_bytes(vmm);
    assert!(
        mapped > 0 && mapped <= abi::DEFAULT_RAM_SIZE / 4,
        "the VMM maps {mapped} bytes of the guest_memfd; the heap and stack must be hidden"
    );
    // The hidden part is not even readable through /proc/PID/mem: the heap's first page.
    let mem = std::fs::File::open(format!("/proc/{vmm}/mem")).unwrap();
    let gmem = guest_ram_mappings(vmm, true)
        .into_iter()
        .next()
        .expect("a guest_memfd mapping");
    // There the VMM has only a PROT_NONE reservation (KVM's view of the slot): a forced read gets
    // an error or zero pages, never the guest's heap (whose first page holds allocator state).
    let heap_hva = gmem.start + abi::HEAP_GPA;
    let mut page = [0u8; 4096];
    if mem.read_at(&mut page, heap_hva).is_ok() {
        assert!(
            page.iter().all(|&b| b == 0),
            "the guest heap is readable through the VMM"
        );
    }
    let (hits, read) = scan(vmm, &needles);
    assert!(read > 1 << 20, "read only {read} bytes of the VMM");
    assert!(hits.is_empty(), "secrets in the VMM's memory:\n{}", hits.join("\n"));
}

/// The entries the VMM writes into the guest's low page table for the image's first eight pages
/// (the ring-0 code), from the dev image's segments, as `credguard-vmm` builds them.
fn image_page_table_entries() -> [u64; 8] {
    let signed = dev_image().verify().expect("the dev image verifies");
    let layout = credguard_vmm::boot::image_layout(signed.bytes()).expect("the dev image's layout");
    let table: std::collections::BTreeMap<u64, u64> =
        boot_tables::page_table_entries(abi::DEFAULT_RAM_SIZE, &layout.segments)
            .into_iter()
            .collect();
    std::array::from_fn(|k| {
        let at = abi::PT_LOW_GPA + (abi::IMAGE_BASE_GPA / abi::PAGE_SIZE + k as u64) * 8;
        let entry = table.get(&at).copied().unwrap_or(0);
        assert_ne!(entry & boot_tables::pte::PRESENT, 0, "image page {k} is mapped");
        entry
    })
}

/// Whether the ELF core file `core` holds the guest's low page table: a page of some loaded
/// segment whose entries for the image's first eight pages are `entries`, as the VMM wrote them
/// into the guest (the guest's MMU may since have set their accessed and dirty bits). Guest RAM is
/// mapped page-aligned, so a dump of it has the table at a page boundary; the VMM itself never
/// holds the table in this layout (it keeps `(gpa, value)` pairs).
fn holds_guest_page_table(core: &[u8], entries: &[u64; 8]) -> bool {
    const ACCESSED_DIRTY: u64 = 0x60;
    let u64_at = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(core.get(at..at + 8)?.try_into().ok()?)) };
    let u16_at = |at: usize| -> Option<u16> { Some(u16::from_le_bytes(core.get(at..at + 2)?.try_into().ok()?)) };
    let index = (abi::IMAGE_BASE_GPA / abi::PAGE_SIZE * 8) as usize;
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        panic!("not an ELF core file");
    };
    (0..usize::from(phnum)).any(|i| {
        let ph = phoff as usize + i * usize::from(phentsize);
        let (Some(kind), Some(offset), Some(filesz)) = (u64_at(ph), u64_at(ph + 8), u64_at(ph + 32)) else {
            return false;
        };
        if kind & 0xffff_ffff != 1 {
            return false; // not PT_LOAD
        }
        (0..filesz as usize / 4096).any(|page| {
            let at = offset as usize + page * 4096 + index;
            (0..8).all(|k| u64_at(at + k * 8).is_some_and(|v| v & !ACCESSED_DIRTY == entries[k]))
        })
    })
}

fn gcore(pid: u32, out: &Path, include_excluded: bool) -> Vec<u8> {
    let setting = if include_excluded { "on" } else { "off" };
    let status = Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", &format!("set dump-excluded-mappings {setting}")])
        .args(["-ex", &format!("gcore {}", out.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running gdb");
    assert!(status.success(), "gdb gcore failed: {status}");
    let mut core = Vec::new();
    std::fs::File::open(out).unwrap().read_to_end(&mut core).unwrap();
    core
}

#[test]
fn vmm_core_dump_holds_no_guest_memory() {
    if !kvm_or_skip("vmm_core_dump_holds_no_guest_memory") {
        return;
    }
    if Command::new("gdb").arg("--version").output().is_err() {
        assert!(
            std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "gdb is missing and CREDGUARD_REQUIRE_TOOLS=1"
        );
        eprintln!("!!! SKIPPED vmm_core_dump_holds_no_guest_memory: gdb (gcore) is missing");
        return;
    }
    let stack = Stack::start("core", "");
    let status = stack.wait_ready();
    let vmm = stack.vmm_pid().expect("VMM running");
    // Holds with or without guest_memfd: MADV_DONTDUMP applies to the anonymous fallback too.
    let hidden = status["protection"]
        .as_str()
        .is_some_and(|p| p.starts_with("guest_memfd,"));
    let guest: Vec<u64> = guest_ram_mappings(vmm, hidden).iter().map(|m| m.start).collect();

    // The guest RAM the VMM maps is marked "dd" (MADV_DONTDUMP) and locked ("lo"; without
    // guest_memfd locked on fault, "lf", too).
    let smaps = std::fs::read_to_string(format!("/proc/{vmm}/smaps")).unwrap();
    let mut guest_flags = Vec::new();
    let mut in_guest = false;
    for line in smaps.lines() {
        let start = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?)));
        if let Some((start, _)) = start {
            in_guest = guest.contains(&start);
        }
        if in_guest && let Some(flags) = line.strip_prefix("VmFlags:") {
            guest_flags.push(flags.to_owned());
        }
    }
    assert!(!guest_flags.is_empty(), "no guest RAM mapping in the VMM");
    for flags in &guest_flags {
        let flags: Vec<&str> = flags.split_whitespace().collect();
        assert!(flags.contains(&"dd"), "guest mapping without MADV_DONTDUMP: {flags:?}");
        assert!(flags.contains(&"lo"), "guest mapping not mlocked: {flags:?}");
        assert!(
            hidden || flags.contains(&"lf"),
            "guest mapping not locked on fault: {flags:?}"
        );
    }

    // Ask for everything, shared file-backed mappings included (the guest_memfd is one), so that
    // MADV_DONTDUMP alone keeps guest memory out.
    std::fs::write(format!("/proc/{vmm}/coredump_filter"), "0x7f").expect("setting coredump_filter");
    let dir = temp_dir("core-files");
    let entries = image_page_table_entries();
    let found = |core: &[u8]| holds_guest_page_table(core, &entries);
    // Control: a dump that includes the excluded mappings does hold guest memory.
    let control = gcore(vmm, &dir.join("control"), true);
    assert!(
        found(&control),
        "the control dump lacks the guest's page tables: the check is blind"
    );
    let core = gcore(vmm, &dir.join("core"), false);
    assert!(!found(&core), "the VMM's core dump holds guest memory");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `credguard-vmm run` with the debug-only self-test that makes the `role` thread do a
/// forbidden system call; returns how it ended.
fn vmm_with_forbidden_call(role: &str, boot_mode: &str) -> std::process::ExitStatus {
    let dev = dev_image();
    let dir = temp_dir(&format!("seccomp-{role}"));
    let mut child = Command::new(support::vmm_bin())
        .args(["run", "--image"])
        .arg(&dev.image)
        .arg("--manifest")
        .arg(&dev.manifest)
        .arg("--trusted-key")
        .arg(&dev.trusted_key)
        .arg("--vsock-socket")
        .arg(dir.join("vsock.sock"))
        .args(["--boot-mode", boot_mode, "--bench-iterations", "100000"])
        .env("CREDGUARD_LOG", "warn")
        .env("CREDGUARD_VMM_SECCOMP_SELFTEST", role)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the VMM");
    let status = retry(Duration::from_secs(20), || match child.try_wait() {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err("still running"),
        Err(_) => Err("wait failed"),
    });
    let _ = std::fs::remove_dir_all(&dir);
    status
}

#[test]
fn seccomp_kills_a_vmm_thread_making_a_forbidden_call() {
    if !kvm_or_skip("seccomp_kills_a_vmm_thread_making_a_forbidden_call") {
        return;
    }
    for (role, mode) in [
        ("vcpu", "service"),
        ("vsock", "service"),
        ("signals", "service"),
        ("main", "service"),
        ("doorbell", "doorbell-bench"),
    ] {
        let status = vmm_with_forbidden_call(role, mode);
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "the {role} thread's forbidden call did not end the VMM by SIGSYS: {status}"
        );
    }
}

#[test]
fn memory_scan_after_ntlm_and_kerberos_finds_no_secret() {
    let test = "memory_scan_after_ntlm_and_kerberos_finds_no_secret";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(kdc) = TestKdc::start("scan-krb") else { return };
    let relay = KdcRelay::start(kdc.get("KDC"));
    let config = format!("[kerberos]\ndefault_kdc = \"{}\"\n", relay.addr);
    // Logged: the proxy's audit log and the VMM's whole log (the enclave's console included) are
    // searched too.
    let stack = Stack::start_logged("scan-krb", &config);
    let status = stack.wait_ready();
    let hidden = hidden_guest_memory(test, status["protection"].as_str().unwrap_or_default());
    let password = kdc.get("PASSWORD");
    let realm = kdc.get("REALM");

    // The password goes through the proxy in the clear (it must wipe it) for one session, and
    // sealed to the enclave for the other.
    let mut sessions = Vec::new();
    for seal in ["never", "require"] {
        let (code, out, err) = stack.ctl(
            None,
            &["--seal", seal, "logon", "alice", "--domain", "CORP", "--realm", realm],
            &format!("{password}\n"),
        );
        assert_eq!(code, 0, "{out} {err}");
        sessions.push(json(&out)["session_id"].as_str().unwrap().to_string());
    }
    let challenge = hex_string(&credguard_enclave::ntlm::sample::windows_challenge());
    for session in &sessions {
        let (code, out, err) = stack.ctl(None, &["kerberos-tgt", session], "");
        assert_eq!(code, 0, "{out} {err}");
        let (code, out, err) = stack.ctl(None, &["kerberos-ticket", session, kdc.get("SPN")], "");
        assert_eq!(code, 0, "{out} {err}");
        let (code, out, err) = stack.ctl(None, &["ntlm", "negotiate", session], "");
        assert_eq!(code, 0, "{out} {err}");
        let context = json(&out)["context_id"].as_str().unwrap().to_string();
        let (code, out, err) = stack.ctl(
            None,
            &["ntlm", "authenticate", &context, "--challenge-hex", &challenge],
            "",
        );
        assert_eq!(code, 0, "{out} {err}");
    }

    let long_term = kdc.long_term_keys("alice");
    let replies = relay.replies.lock().unwrap().clone();
    let tgt_keys: Vec<Vec<u8>> = replies.iter().filter_map(|r| tgt_session_key(r, &long_term)).collect();
    assert_eq!(
        tgt_keys.len(),
        2,
        "one AS-REP per session, each decrypted ({} replies)",
        replies.len()
    );

    // The user-to-user ticket each new TGT brings (for the user's SID) is opened and dropped in
    // the enclave: its key is never outside either.
    let u2u_keys: Vec<Vec<u8>> = replies.iter().filter_map(|r| u2u_session_key(r, &tgt_keys)).collect();
    assert_eq!(u2u_keys.len(), 2, "one user-to-user ticket per session");
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("password (UTF-8)".into(), password.as_bytes().to_vec()),
        ("password (UTF-16LE)".into(), utf16le(password)),
        ("NT hash".into(), nt_hash(password)),
    ];
    for key in &u2u_keys {
        needles.push(("user-to-user session key".into(), key.clone()));
    }
    for (enctype, key) in &long_term {
        needles.push((format!("long-term key (enctype {enctype})"), key.clone()));
    }
    for key in &tgt_keys {
        needles.push(("TGT session key".into(), key.clone()));
    }
    let needles: Vec<(&str, Vec<u8>)> = needles.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    // Control: the scanner finds them where they are (this test process holds them).
    let (own, _) = scan(std::process::id(), &needles);
    for what in [
        "password (UTF-8)",
        "NT hash",
        "long-term key",
        "TGT session key",
        "user-to-user session key",
    ] {
        assert!(
            own.iter().any(|h| h.starts_with(what)),
            "the scanner is blind to the {what}: {own:?}"
        );
    }
    let vmm = stack.vmm_pid().expect("VMM running");
    let proxy = stack.proxy_pid().expect("proxy running");
    // With guest_memfd all of the VMM; without, all but guest RAM, which it maps whole then.
    let vmm_skipped: Vec<u64> = if hidden {
        Vec::new()
    } else {
        guest_ram_mappings(vmm, false).iter().map(|m| m.start).collect()
    };
    for (who, pid, skipped) in [("proxy", proxy, &[][..]), ("VMM", vmm, &vmm_skipped[..])] {
        let (hits, read) = scan_except(pid, &needles, skipped);
        assert!(read > 1 << 20, "read only {read} bytes of the {who}");
        assert!(hits.is_empty(), "secrets in the {who}'s memory:\n{}", hits.join("\n"));
    }
    // The logs are text: look for every secret as it could be printed (raw, hex, UTF-16LE).
    let vmm_log = std::fs::read(stack.vmm_log()).unwrap_or_default();
    let proxy_log = stack.proxy_log_text().into_bytes();
    assert!(
        String::from_utf8_lossy(&vmm_log).contains("sealing key attested"),
        "the VMM log (where the enclave's console goes too) holds its \"enclave up\" line"
    );
    assert!(
        String::from_utf8_lossy(&proxy_log).contains("ntlm_authenticate"),
        "the proxy log holds the audit records"
    );
    for (name, needle) in &needles {
        for (form, bytes) in [("raw", needle.clone()), ("hex", hex_string(needle).into_bytes())] {
            for (log, text) in [("VMM", &vmm_log), ("proxy", &proxy_log)] {
                assert!(
                    !text.windows(bytes.len()).any(|w| w == bytes.as_slice()),
                    "{name} ({form}) in the {log} log"
                );
            }
        }
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// MD4 of the UTF-16LE password, with the enclave crate's own code (checked against the MS-NLMP
/// vectors in its unit tests).
fn nt_hash(password: &str) -> Vec<u8> {
    credguard_enclave::credentials::nt_hash(password).to_vec()
}

#[test]
fn sealed_logon_is_attested_single_use_and_bound_to_its_names() {
    use credguard_client::{self as client, sealed};
    use credguard_proto::{enclave, lsa};
    use tonic::Code;
    if !kvm_or_skip("sealed_logon_is_attested_single_use_and_bound_to_its_names") {
        return;
    }
    let stack = Stack::start("sealed", "");
    stack.wait_ready();

    // A client with another attestation key (as if the proxy swapped in a key of its own) refuses
    // to send the password at all.
    let fake_pub = stack.dir.join("fake.pub");
    std::fs::write(&fake_pub, format!("{}\n", "11".repeat(32))).unwrap();
    let fake = fake_pub.to_str().unwrap();
    let (code, _, err) = stack.ctl(
        None,
        &["--attestation-pub", fake, "logon", "eve", "--domain", "CORP"],
        "pw\n",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not verify") && err.contains("refusing"), "{err}");
    // The genuine key verifies; the status says so.
    let (code, out, err) = stack.ctl(None, &["status"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        json(&out)["attestation"].as_str().unwrap().starts_with("verified"),
        "{out}"
    );

    support::runtime().block_on(async {
        let mut c = client::connect(&stack.api).await.unwrap();
        let status = c.status(lsa::StatusRequest {}).await.unwrap().into_inner();
        let attested = sealed::verify(&status, &stack.expectations()).unwrap();
        let secret = || enclave::sealed_logon_secret::Secret::Password("Sealed-Pw-1".into());
        let nonce = c
            .get_sealing_nonce(lsa::GetSealingNonceRequest {})
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let seal_for = support::seal_for_me(&nonce, "sam", "CORP", "");
        let one = sealed::seal(&attested.public_key, secret(), false, &seal_for).unwrap();
        let logon = |user: &str, s: lsa::SealedSecret| lsa::LogonRequest {
            user: user.into(),
            domain: "CORP".into(),
            secret: Some(lsa::logon_request::Secret::Sealed(s)),
            ..Default::default()
        };
        // Relabelled for another user: does not open (and is not burnt by the attempt).
        let e = c.logon(logon("mallory", one.clone())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("does not open"), "{e:?}");
        let id = c
            .logon(logon("sam", one.clone()))
            .await
            .unwrap()
            .into_inner()
            .session_id;
        let info = c.list_sessions(lsa::ListSessionsRequest {}).await.unwrap().into_inner();
        let s = info.sessions.iter().find(|s| s.session_id == id).unwrap();
        assert!(s.sealed && s.secret_kind == "password", "{s:?}");
        // Replayed: refused by the enclave.
        let e = c.logon(logon("sam", one.clone())).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("replayed"), "{e:?}");
        // A replayed session id after logoff: gone.
        c.logoff(lsa::LogoffRequest { session_id: id.clone() }).await.unwrap();
        let e = c
            .ntlm_negotiate(lsa::NtlmNegotiateRequest { session_id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        // Sealed to another key (another boot): a clear refusal.
        let other = sealed::seal(&[7; 32], secret(), false, &seal_for).unwrap();
        let e = c.logon(logon("sam", other)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("another boot"), "{e:?}");
    });
}

/// Whether Python grpcio (and its protoc) can run; a loud skip otherwise, or a failure with
/// CREDGUARD_REQUIRE_TOOLS=1.
fn have_python_grpcio(test: &str) -> bool {
    let have = Command::new("python3").args(["-c", "import grpc, grpc_tools"]).status();
    if matches!(have, Ok(s) if s.success()) {
        return true;
    }
    assert!(
        std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "python3 grpcio/grpcio-tools are missing and CREDGUARD_REQUIRE_TOOLS=1"
    );
    eprintln!("!!! SKIPPED {test}: pip install grpcio grpcio-tools");
    false
}

#[test]
fn plaintext_logon_over_a_long_lived_connection_leaves_nothing_in_the_proxy() {
    use std::io::{BufRead, BufReader, Write};
    let test = "plaintext_logon_over_a_long_lived_connection_leaves_nothing_in_the_proxy";
    if !kvm_or_skip(test) || !have_python_grpcio(test) {
        return;
    }
    let stack = Stack::start("long-lived", "");
    stack.wait_ready();
    let root = env!("CARGO_MANIFEST_DIR");
    // A client library's way: one channel, kept open, plaintext logons (password, NT hash).
    let mut client = Command::new("python3")
        .arg(format!("{root}/tests/python/long_lived_client.py"))
        .arg(&stack.api)
        .arg(format!("{root}/proto"))
        .args(["longlived", PASSWORD, NT_HASH_HEX])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running long_lived_client.py");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line from the client").unwrap();
    assert!(first.starts_with("LOGGED-ON "), "{first}");

    let needles = needles();
    let (own, _) = scan(std::process::id(), &needles);
    assert!(
        own.iter().any(|h| h.starts_with("password (UTF-16LE)")) && own.iter().any(|h| h.starts_with("NT hash at")),
        "the scanner is blind: {own:?}"
    );
    let proxy = stack.proxy_pid().expect("proxy running");
    // The proxy lets go of the connection's buffers once the logon's answer is written; wait for
    // that (while the client keeps its channel), then nothing may be left.
    let start = std::time::Instant::now();
    let hits = loop {
        let (hits, read) = scan(proxy, &needles);
        assert!(read > 1 << 20, "read only {read} bytes of the proxy");
        if hits.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break hits;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        hits.is_empty(),
        "secrets in the proxy's memory with the client still connected:\n{}",
        hits.join("\n")
    );

    // The client's next calls on the same channel work.
    writeln!(client.stdin.as_mut().unwrap(), "go").unwrap();
    let last = lines.next().expect("a second line from the client").unwrap();
    assert!(last.starts_with("OK "), "{last}");
    assert!(client.wait().unwrap().success());
}

/// `/proc/PID/status` of `pid`, as (key, value) lines.
fn proc_status(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading /proc/PID/status")
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_owned(), v.trim().to_owned())))
        .collect()
}

/// A proxy alone (no VMM: it serves, reporting the enclave unreachable) with the debug-only seccomp
/// self-test `selftest`, its stderr in `log`.
fn proxy_with_selftest(dir: &Path, selftest: &str, log: &Path) -> std::process::Child {
    Command::new(support::proxy_bin())
        .arg("--socket")
        .arg(dir.join("lsa.sock"))
        .arg("--vmm-socket")
        .arg(dir.join("no-vmm.sock"))
        .arg("--vault-dir")
        .arg(dir.join("vault"))
        .env("CREDGUARD_LOG", "info")
        .env("CREDGUARD_PROXY_SECCOMP_SELFTEST", selftest)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("starting the proxy")
}

#[test]
fn the_proxy_process_is_hardened_and_its_seccomp_filter_kills_exec() {
    if !kvm_or_skip("the_proxy_process_is_hardened_and_its_seccomp_filter_kills_exec") {
        return;
    }
    let stack = Stack::start("hardened", "");
    let status = stack.wait_ready();
    // Status says what the proxy runs with; the kernel agrees.
    let protection = status["proxy_protection"].as_str().unwrap_or_default();
    for part in [
        "dumpable off",
        "no core dump",
        "memory locked",
        "no new privileges",
        "seccomp on",
    ] {
        assert!(protection.contains(part), "{part:?} missing from {status}");
    }
    let proxy = stack.proxy_pid().expect("proxy running");
    let kernel = proc_status(proxy);
    let field = |k: &str| kernel.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(field("Seccomp"), Some("2"), "{kernel:?}");
    assert_eq!(field("Seccomp_filters"), Some("3"), "{kernel:?}");
    assert_eq!(field("NoNewPrivs"), Some("1"), "{kernel:?}");
    let locked_kb: u64 = field("VmLck")
        .and_then(|v| v.trim_end_matches(" kB").parse().ok())
        .expect("VmLck");
    assert!(locked_kb > 0, "no memory locked: {kernel:?}");
    let limits = std::fs::read_to_string(format!("/proc/{proxy}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    // And it still does its work (every other end-to-end test runs under the filter too).
    let (code, out, err) = stack.ctl(None, &["--seal", "never", "logon", "hardy", "--domain", "CORP"], "pw\n");
    assert_eq!(code, 0, "{out} {err}");

    // A proxy that tries to execute a program once filtered dies of SIGSYS...
    let dir = temp_dir("proxy-selftest");
    let mut exec = proxy_with_selftest(&dir.join("exec"), "execve", &dir.join("exec.log"));
    let status = retry(Duration::from_secs(20), || match exec.try_wait() {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err("still running"),
        Err(_) => Err("wait failed"),
    });
    let log = std::fs::read_to_string(dir.join("exec.log")).unwrap_or_default();
    assert!(log.contains("seccomp self-test"), "the self-test did not run: {log}");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "exec did not kill the proxy: {status}\n{log}"
    );

    // ...while a call outside the list only fails (EPERM), and the proxy keeps serving.
    std::fs::create_dir_all(dir.join("unlisted")).unwrap();
    let mut unlisted = proxy_with_selftest(&dir.join("unlisted"), "unlisted", &dir.join("unlisted.log"));
    let log = retry(Duration::from_secs(20), || {
        let log = std::fs::read_to_string(dir.join("unlisted.log")).unwrap_or_default();
        if log.contains("still serving") {
            Ok(log)
        } else {
            Err(log)
        }
    });
    assert!(log.contains("chroot returned -1 (Operation not permitted"), "{log}");
    let api = dir.join("unlisted").join("lsa.sock");
    let served = support::runtime().block_on(async {
        let mut c = credguard_client::connect(&api).await.expect("connecting");
        c.status(credguard_proto::lsa::StatusRequest {})
            .await
            .map(|r| r.into_inner())
    });
    let served = served.expect("Status after the refused call");
    assert!(served.proxy_protection.contains("seccomp on"), "{served:?}");
    let _ = unlisted.kill();
    let _ = unlisted.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
