//! The vault (saved credentials) end to end: the real enclave under KVM, the VMM and the proxy as
//! processes, `credguardctl` as the client. A credential is saved, the whole stack restarted, and
//! the saved credential used for NTLM (checked by an independent acceptor, pyspnego) and Kerberos
//! (a throwaway MIT KDC, the GSS token checked by MIT's acceptor); another uid cannot list or use
//! it; blob files moved to another target or uid, or corrupted, are refused with clear errors; an
//! image with another measurement cannot open the vault unless its signed manifest allows the old
//! one (and then the blob is re-sealed); the vault directory holds no plaintext secret.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use credguard_lsa_proxy::vault::VaultStore;
use support::kdc::{TestKdc, tools_missing};
use support::{Stack, dev_image, json, kvm_or_skip, retry, temp_dir};

/// The NT hash of `password` (the enclave's own MD4 of UTF-16LE, as MS-NLMP defines it).
fn nt_hash_of(password: &str) -> Vec<u8> {
    credguard_enclave::credentials::nt_hash(password).to_vec()
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One NTLM handshake of `session` against pyspnego with the accounts in `users`: its verdict.
fn ntlm_verdict(stack: &Stack, session: &str, users: &Path) -> String {
    let (code, out, err) = stack.ctl(None, &["ntlm", "negotiate", session], "");
    assert_eq!(code, 0, "{err}");
    let neg = json(&out);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ntlm_acceptor.py");
    let mut acceptor = Command::new("python3")
        .arg(script)
        .env("NTLM_USER_FILE", users)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the acceptor");
    let mut stdin = acceptor.stdin.take().unwrap();
    let mut stdout = BufReader::new(acceptor.stdout.take().unwrap());
    let mut line = String::new();
    writeln!(stdin, "{}", neg["negotiate_message"].as_str().unwrap()).unwrap();
    stdin.flush().unwrap();
    stdout.read_line(&mut line).unwrap();
    let challenge = line.trim().to_string();
    let (code, out, err) = stack.ctl(
        None,
        &[
            "ntlm",
            "authenticate",
            neg["context_id"].as_str().unwrap(),
            "--challenge-hex",
            &challenge,
            "--target-spn",
            "HTTP/web.corp.test",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    writeln!(stdin, "{}", json(&out)["authenticate_message"].as_str().unwrap()).unwrap();
    stdin.flush().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let _ = acceptor.kill();
    let _ = acceptor.wait();
    line.trim().to_string()
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no file under `dir` holds `password` (UTF-8 or UTF-16LE) or its NT hash (raw or
/// hex); returns how many files were scanned.
fn assert_no_plaintext(dir: &Path, password: &str) -> usize {
    let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let nt = nt_hash_of(password);
    let nt_hex = nt.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let files = files_under(dir);
    for (p, bytes) in &files {
        for (what, needle) in [
            ("password (UTF-8)", password.as_bytes()),
            ("password (UTF-16LE)", &utf16[..]),
            ("NT hash", &nt[..]),
            ("NT hash (hex)", nt_hex.as_bytes()),
        ] {
            assert!(!contains(bytes, needle), "{} holds the {what}", p.display());
        }
    }
    files.len()
}

fn vault_config(vault: &Path, extra: &str) -> String {
    format!("{extra}\n[vault]\ndir = \"{}\"\n", vault.display())
}

/// Restarts the VMM and the proxy (same directories, same sealing secret) and waits until ready.
fn restart_everything(stack: &mut Stack) {
    stack.kill_proxy();
    stack.kill_vmm();
    stack.start_vmm();
    stack.start_proxy();
    stack.wait_ready();
}

#[test]
fn saved_credential_survives_a_restart_and_serves_ntlm_and_kerberos_for_its_owner_only() {
    let test = "vault_end_to_end";
    if !kvm_or_skip(test) {
        return;
    }
    if !python_has("spnego") || !python_has("Cryptodome") {
        tools_missing(test, "python3 pyspnego/pycryptodomex are missing");
        return;
    }
    let have_gssapi = python_has("gssapi");
    if !have_gssapi {
        tools_missing(
            test,
            "python3 gssapi is missing (the Kerberos token is then not accepted)",
        );
    }
    let Some(kdc) = TestKdc::start(test) else { return };
    let work = temp_dir("vault-e2e-work");
    let vault = work.join("vault");
    let sealing = work.join("sealing.secret");
    let config = vault_config(&vault, &format!("[kerberos]\ndefault_kdc = \"{}\"", kdc.get("KDC")));
    // The proxy's log (with the audit records) is kept; the VMM gets the sealing secret.
    let mut stack = Stack::start_logged("vault-e2e", &config);
    stack.kill_vmm();
    stack.vmm_args = vec!["--sealing-secret".into(), sealing.display().to_string()];
    stack.start_vmm();
    let status = stack.wait_ready();
    assert_eq!(status["vault_ready"], true, "{status}");
    let password = kdc.get("PASSWORD").to_string();
    let realm = kdc.get("REALM").to_string();

    // Save (the password read from stdin, sealed by ctl to the attested enclave so that the proxy
    // never sees it), then list: metadata only.
    let (code, out, err) = stack.ctl(
        None,
        &[
            "--seal",
            "require",
            "vault",
            "save",
            "fileserver.corp.test",
            "alice",
            "--domain",
            "CORP",
            "--realm",
            &realm,
            "--kdc",
            kdc.get("KDC"),
        ],
        &format!("{password}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let saved = json(&out);
    assert_eq!(saved["target"], "fileserver.corp.test");
    assert_eq!(saved["secret_kind"], "password");
    let (code, out, err) = stack.ctl(None, &["vault", "list"], "");
    assert_eq!(code, 0, "{err}");
    let list = json(&out);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["user"], "alice");
    assert!(!out.contains(&password));
    let me = list[0]["uid"].as_u64().unwrap() as u32;
    let record = VaultStore::new(&vault).path(me, "fileserver.corp.test");
    assert!(record.exists(), "{}", record.display());
    assert!(assert_no_plaintext(&vault, &password) >= 1);
    // The sealing secret file is the VMM's, root-only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sealing).unwrap().permissions().mode() & 0o777, 0o600);

    // Restart the whole stack; the saved credential still logs on, by target only.
    restart_everything(&mut stack);
    let (code, out, err) = stack.ctl(None, &["logon", "--saved", "fileserver.corp.test"], "");
    assert_eq!(code, 0, "{err}");
    let session = json(&out)["session_id"].as_str().unwrap().to_string();
    let (_, out, _) = stack.ctl(None, &["sessions"], "");
    assert!(out.contains(&session) && out.contains("alice"), "{out}");

    // NTLM: the independent acceptor takes the AUTHENTICATE message for the right password only.
    let users = work.join("ntlm-users");
    std::fs::write(&users, format!("CORP:alice:{password}\n")).unwrap();
    let verdict = ntlm_verdict(&stack, &session, &users);
    assert!(verdict.starts_with("ACCEPTED"), "{verdict}");
    std::fs::write(&users, "CORP:alice:Not-Her-Passw0rd\n").unwrap();
    let verdict = ntlm_verdict(&stack, &session, &users);
    assert!(verdict.starts_with("REJECTED"), "{verdict}");

    // Kerberos: a TGT and a service ticket from the test KDC (the KDC address came from the vault).
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &session], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["client_principal"], format!("alice@{realm}"));
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &session, kdc.get("SPN")], "");
    assert_eq!(code, 0, "{err}");
    let token = json(&out)["gss_token"].as_str().unwrap().to_string();
    if have_gssapi {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut child = Command::new("python3")
            .arg(format!("{root}/tests/python/gss_accept.py"))
            .arg(kdc.get("KEYTAB"))
            .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            json(&String::from_utf8_lossy(&out.stdout))["initiator"],
            format!("alice@{realm}")
        );
    }

    // Another uid sees nothing and cannot use it.
    let other = if me == 0 { 1000 } else { me + 1 };
    if me == 0 {
        let (code, out, err) = stack.ctl(Some(other), &["vault", "list"], "");
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out), serde_json::json!([]));
        let (code, _, err) = stack.ctl(Some(other), &["logon", "--saved", "fileserver.corp.test"], "");
        assert_eq!(code, 1);
        assert!(err.contains("NotFound") && err.contains("no saved credential"), "{err}");
        let (code, _, err) = stack.ctl(Some(other), &["vault", "delete", "fileserver.corp.test"], "");
        assert_eq!(code, 1);
        assert!(err.contains("NotFound"), "{err}");

        // The blob file copied into the other uid's directory: the enclave refuses it there.
        let theirs = VaultStore::new(&vault).path(other, "fileserver.corp.test");
        std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
        std::fs::copy(&record, &theirs).unwrap();
        let (code, _, err) = stack.ctl(Some(other), &["logon", "--saved", "fileserver.corp.test"], "");
        assert_eq!(code, 1);
        assert!(
            err.contains("PermissionDenied") && err.contains("does not open"),
            "{err}"
        );
        std::fs::remove_file(&theirs).unwrap();
    } else {
        eprintln!("!!! not root: the other-uid checks need setpriv as root; skipped");
    }

    // The blob file moved to another target's name: refused.
    let moved = VaultStore::new(&vault).path(me, "intranet.corp.test");
    std::fs::copy(&record, &moved).unwrap();
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", "intranet.corp.test"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("PermissionDenied") && err.contains("does not open"),
        "{err}"
    );
    // Its metadata edited (another user name): refused.
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&moved, text.replace("\"alice\"", "\"mallory\"")).unwrap();
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", "intranet.corp.test"], "");
    assert_eq!(code, 1);
    assert!(err.contains("PermissionDenied"), "{err}");
    // A truncated blob, and a file that is not a record: INVALID_ARGUMENT, and the stack lives on.
    let mut rec: serde_json::Value = json(&text);
    let blob = rec["sealed_blob"].as_str().unwrap().to_string();
    rec["sealed_blob"] = serde_json::Value::String(blob[..blob.len() / 2].to_string());
    std::fs::write(&moved, rec.to_string()).unwrap();
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", "intranet.corp.test"], "");
    assert_eq!(code, 1);
    assert!(err.contains("InvalidArgument"), "{err}");
    std::fs::write(&moved, b"\x00garbage").unwrap();
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", "intranet.corp.test"], "");
    assert_eq!(code, 1);
    assert!(err.contains("InvalidArgument") && err.contains("corrupt"), "{err}");
    std::fs::remove_file(&moved).unwrap();
    // Bad input to the API itself.
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", ""], "");
    assert_eq!(code, 1);
    assert!(err.contains("InvalidArgument") && err.contains("target"), "{err}");
    let (code, _, err) = stack.ctl(None, &["vault", "save", &"x".repeat(300), "alice"], "pw\n");
    assert_eq!(code, 1);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert_eq!(stack.wait_ready()["state"], "ready");

    // Every seal and every vault logon, refused or not, was audited by the enclave; the log
    // holds no secret.
    let log = stack.proxy_log_text();
    assert!(log.contains("operation=vault_seal"), "{log}");
    assert!(log.contains("operation=vault_logon"), "{log}");
    assert!(log.contains("fileserver.corp.test"), "{log}");
    assert!(!log.contains(&password), "the proxy logged the password");

    // Still no plaintext anywhere in the vault; then delete.
    assert_no_plaintext(&vault, &password);
    let (code, _, err) = stack.ctl(None, &["vault", "delete", "fileserver.corp.test"], "");
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = stack.ctl(None, &["vault", "list"], "");
    assert_eq!(json(&out).as_array().map(Vec::len), Some(0), "{out}");
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", "fileserver.corp.test"], "");
    assert_eq!(code, 1);
    assert!(err.contains("NotFound"), "{err}");
    drop(stack);
    let _ = std::fs::remove_dir_all(&work);
}

/// A VMM started by the test itself (another image, or another sealing secret), on the stack's
/// vsock socket so that the stack's proxy reaches it.
struct OwnVmm(Child);

impl OwnVmm {
    fn start(stack: &Stack, image: &Path, manifest: &Path, sealing: &Path) -> OwnVmm {
        let child = Command::new(support::vmm_bin())
            .args(["run", "--image"])
            .arg(image)
            .arg("--manifest")
            .arg(manifest)
            .arg("--trusted-key")
            .arg(&dev_image().trusted_key)
            .arg("--vsock-socket")
            .arg(&stack.vsock)
            .arg("--attestation-key")
            .arg(stack.dir.join("attestation.key"))
            .arg("--sealing-secret")
            .arg(sealing)
            .env("CREDGUARD_LOG", "warn")
            .spawn()
            .expect("starting the VMM");
        OwnVmm(child)
    }
}

impl Drop for OwnVmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the proxy reports an enclave of `measurement`.
fn wait_for_measurement(stack: &Stack, measurement: &str) {
    retry(Duration::from_secs(30), || {
        let (code, out, err) = stack.ctl(None, &["status"], "");
        if code == 0 && out.contains("\"state\":\"ready\"") && out.contains(measurement) {
            Ok(())
        } else {
            Err(format!("{code} {out} {err}"))
        }
    });
}

/// The measurement recorded in the header of a stored blob (bytes 5..53 of the blob).
fn blob_measurement(record: &Path) -> String {
    let rec = json(&std::fs::read_to_string(record).unwrap());
    rec["sealed_blob"].as_str().unwrap()[10..106].to_string()
}

#[test]
fn another_image_opens_the_vault_only_when_its_signed_manifest_allows_the_old_one() {
    let test = "vault_upgrade";
    if !kvm_or_skip(test) {
        return;
    }
    let work = temp_dir("vault-upgrade-work");
    let vault = work.join("vault");
    let sealing = work.join("sealing.secret");
    let config = vault_config(&vault, "");
    // First without a sealing secret: no vault, said so.
    let mut stack = Stack::start("vault-upgrade", &config);
    let status = stack.wait_ready();
    assert_eq!(status["vault_ready"], false);
    let hash = "a4f49c406510bdcab6824ee7c30fd852"; // MS-NLMP 4.2.1: NTOWFv1("Password")
    // Sent to the proxy in the clear this time (it wipes it after the forward).
    let save = [
        "--seal",
        "never",
        "vault",
        "save",
        "nas",
        "bob",
        "--domain",
        "CORP",
        "--nt-hash",
    ];
    let (code, _, err) = stack.ctl(None, &save, hash);
    assert_eq!(code, 1);
    assert!(
        err.contains("FailedPrecondition") && err.contains("no vault: the VMM was started without a sealing secret"),
        "{err}"
    );

    // With one: saved under the dev image's measurement.
    stack.kill_vmm();
    stack.vmm_args = vec!["--sealing-secret".into(), sealing.display().to_string()];
    stack.start_vmm();
    let old_measurement = stack.wait_ready()["measurement"].as_str().unwrap().to_string();
    let (code, out, err) = stack.ctl(None, &save, hash);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["secret_kind"], "nt_hash");
    let me = json(&stack.ctl(None, &["vault", "list"], "").1)[0]["uid"]
        .as_u64()
        .unwrap() as u32;
    let record = VaultStore::new(&vault).path(me, "nas");
    assert_eq!(blob_measurement(&record), old_measurement);
    let hash_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for (p, bytes) in files_under(&vault) {
        assert!(
            !contains(&bytes, &hash_bytes) && !contains(&bytes, hash.as_bytes()),
            "{}",
            p.display()
        );
    }

    // Another image: the same ELF with bytes appended (another measurement), signed by the
    // trusted (dev) key, without an upgrade allowance.
    let dev = dev_image();
    let image_b = work.join("enclave-b.elf");
    let manifest_b = work.join("enclave-b.elf.manifest.json");
    let mut bytes = std::fs::read(&dev.image).unwrap();
    bytes.extend_from_slice(b"\0credguard vault upgrade test: another measurement\0");
    std::fs::write(&image_b, &bytes).unwrap();
    let key = credguard_image::dev::ensure_dev_key().unwrap();
    key.sign_file(&image_b, &manifest_b).unwrap();
    let new_measurement = credguard_image::Measurement::of(&bytes).to_string();
    assert_ne!(new_measurement, old_measurement);
    stack.kill_vmm();
    {
        let _b = OwnVmm::start(&stack, &image_b, &manifest_b, &sealing);
        wait_for_measurement(&stack, &new_measurement);
        let (code, _, err) = stack.ctl(None, &["logon", "--saved", "nas"], "");
        assert_eq!(code, 1);
        assert!(
            err.contains("FailedPrecondition") && err.contains("another enclave image") && err.contains("upgrade_from"),
            "{err}"
        );
        assert_eq!(
            blob_measurement(&record),
            old_measurement,
            "a refused logon changes nothing"
        );
    }

    // The same image signed with an allowance for the old measurement (as
    // `credguard-image sign --upgrade-from OLD_MANIFEST` does): opens, and re-seals the blob.
    let old = credguard_image::upgrade_from_arg(dev.manifest.to_str().unwrap()).unwrap();
    assert_eq!(old.to_string(), old_measurement);
    key.sign_file_with(&image_b, &manifest_b, &[old]).unwrap();
    {
        let _b = OwnVmm::start(&stack, &image_b, &manifest_b, &sealing);
        wait_for_measurement(&stack, &new_measurement);
        let (code, out, err) = stack.ctl(None, &["logon", "--saved", "nas"], "");
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["session_id"].as_str().map(str::len), Some(32));
        assert_eq!(
            blob_measurement(&record),
            new_measurement,
            "re-sealed under the new image's key"
        );
        // And again, now under its own key.
        let (code, _, err) = stack.ctl(None, &["logon", "--saved", "nas"], "");
        assert_eq!(code, 0, "{err}");
    }

    // Back to the old image: it cannot open what the new one re-sealed (no downgrade).
    stack.start_vmm();
    wait_for_measurement(&stack, &old_measurement);
    let (code, _, err) = stack.ctl(None, &["logon", "--saved", "nas"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("FailedPrecondition") && err.contains("another enclave image"),
        "{err}"
    );

    // A stolen vault directory with another host's sealing secret (the right image): nothing opens.
    stack.kill_vmm();
    let thief = work.join("other-host.secret");
    {
        let _b = OwnVmm::start(&stack, &image_b, &manifest_b, &thief);
        wait_for_measurement(&stack, &new_measurement);
        let (code, _, err) = stack.ctl(None, &["logon", "--saved", "nas"], "");
        assert_eq!(code, 1);
        assert!(
            err.contains("PermissionDenied") && err.contains("does not open"),
            "{err}"
        );
    }
    drop(stack);
    let _ = std::fs::remove_dir_all(&work);
}
