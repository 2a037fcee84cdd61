//! The Python client package (`clients/python`, `pip install ./clients/python`) against the Rust
//! side: its known answers checked by the enclave's own `SealingKey::open` and the Rust client's
//! `verify`, then the package pip-installed in a venv and used against the real stack as installed
//! (secrets in the clear refused): a sealed logon, an NTLM handshake that pyspnego accepts, a
//! Kerberos service ticket that MIT's acceptor accepts, and the refusals and typed errors.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use credguard_client::sealed;
use credguard_enclave::rng::CounterRng;
use credguard_enclave::sealing::SealingKey;
use credguard_proto::attest::{self, Owner, SealPurpose, SealedNames};
use credguard_proto::enclave::{self, sealed_logon_secret::Secret};
use credguard_proto::lsa;
use credguard_proto::vmm_status::{self, Attested};
use support::kdc::{TestKdc, tools_missing};
use support::{Stack, dev_image, json, kvm_or_skip};

const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python");

type Section = HashMap<String, String>;

/// `clients/python/tests/vectors.txt`: `[name]` sections of `key = value` lines, in file order.
fn vectors() -> Vec<(String, Section)> {
    let text = std::fs::read_to_string(format!("{PACKAGE}/tests/vectors.txt")).unwrap();
    let mut sections: Vec<(String, Section)> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_string(), Section::new()));
        } else {
            let (k, v) = line.split_once('=').unwrap();
            sections.last_mut().unwrap().1.insert(k.trim().into(), v.trim().into());
        }
    }
    sections
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn purpose(label: &str) -> SealPurpose {
    [SealPurpose::Logon, SealPurpose::VaultSave, SealPurpose::PasswordChange]
        .into_iter()
        .find(|p| p.label() == label.as_bytes())
        .unwrap_or_else(|| panic!("no purpose {label}"))
}

/// Opens one sealed secret of the vectors with the enclave's own code, after its nonce is issued.
fn open_vector(key: &mut SealingKey, rng: &mut CounterRng, name: &str, v: &Section) {
    let owner = Owner(v["owner"].parse().unwrap());
    let nonce = key.issue_nonce(owner, rng).unwrap();
    assert_eq!(hex(&nonce), v["sealing_nonce"], "{name}");
    let names = SealedNames {
        user: &v["user"],
        domain: &v["domain"],
        realm: &v["realm"],
        target: &v["target"],
    };
    let purpose = purpose(&v["purpose"]);
    assert_eq!(
        hex(&attest::sealed_secret_aad(purpose, owner, &nonce, &names)),
        v["aad"],
        "{name}"
    );
    let epk: [u8; 32] = unhex(&v["ephemeral_public"]).try_into().unwrap();
    assert_eq!(
        hex(&attest::sealed_logon_info(&epk, &key.public_key())),
        v["info"],
        "{name}"
    );
    let sealed = enclave::SealedSecret {
        ephemeral_public_key: epk.to_vec(),
        nonce: unhex(&v["aes_nonce"]),
        ciphertext: unhex(&v["ciphertext"]),
        enclave_public_key: key.public_key().to_vec(),
        sealing_nonce: nonce.to_vec(),
    };
    let other = if purpose == SealPurpose::Logon {
        SealPurpose::VaultSave
    } else {
        SealPurpose::Logon
    };
    assert!(
        key.open(&sealed, other, owner, &names).is_err(),
        "{name}: another purpose"
    );
    let opened = key
        .open(&sealed, purpose, owner, &names)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(opened.refuse_rc4, v["refuse_rc4"] == "true", "{name}");
    match (opened.secret, v["secret_kind"].as_str()) {
        (Secret::Password(p), "password") => assert_eq!(p, v["secret"], "{name}"),
        (Secret::NtHash(h), "nt_hash") => assert_eq!(hex(&h), v["secret"], "{name}"),
        (Secret::Key(k), "key") => {
            assert_eq!(k.enctype.to_string(), v["key_enctype"], "{name}");
            assert_eq!(hex(&k.value), v["secret"], "{name}");
        }
        (_, kind) => panic!("{name}: not a {kind}"),
    }
}

/// The vectors' attestation: the Rust client computes the same message and verifies it.
fn verify_attestation_vector(a: &Section, enclave_public: &str) {
    let num = |k: &str| a[k].parse::<u64>().unwrap();
    let reasons: Vec<String> = a["restart_reasons"]
        .split(',')
        .map(|r| String::from_utf8(unhex(r)).unwrap())
        .collect();
    let facts = Attested {
        measurement: unhex(&a["measurement"]).try_into().unwrap(),
        signer: unhex(&a["signer"]).try_into().unwrap(),
        boot_id: unhex(&a["boot_id"]).try_into().unwrap(),
        public_key: unhex(&a["public_key"]).try_into().unwrap(),
        protection_bits: num("protection_bits"),
        host_mapped_bytes: num("host_mapped_bytes"),
        ram_size: num("ram_size"),
        policy_bits: num("policy_bits"),
        enclave_flags: num("enclave_flags"),
        restarts: num("restarts"),
        restart_reasons: reasons.clone(),
    };
    assert_eq!(hex(&vmm_status::attestation_message(&facts)), a["message"]);
    assert_eq!(sealed::signer_fingerprint(&unhex(&a["signer_public"])), a["signer"]);
    let status = lsa::StatusReply {
        measurement: a["measurement"].clone(),
        signer: a["signer"].clone(),
        boot_id: unhex(&a["boot_id"]),
        enclave_public_key: unhex(&a["public_key"]),
        attestation_signature: unhex(&a["signature"]),
        protection_bits: facts.protection_bits,
        host_mapped_bytes: facts.host_mapped_bytes,
        ram_size: facts.ram_size,
        policy_bits: facts.policy_bits,
        enclave_flags: facts.enclave_flags,
        enclave_restarts: facts.restarts,
        enclave_restart_reasons: reasons,
        ..Default::default()
    };
    let expect = sealed::Expectations {
        attestation_pub: unhex(&a["attestation_public"]).try_into().unwrap(),
        attestation_pub_path: "vectors.txt".into(),
        signer: Some(a["signer"].clone()),
        signer_path: "signer_public".into(),
        measurement: Some(a["measurement"].clone()),
        require_hidden_memory: true,
        allow_test_image: false,
    };
    let attested = sealed::verify(&status, &expect).unwrap();
    assert_eq!(hex(&attested.public_key), enclave_public);
}

/// No KVM needed: what the Python package seals, the enclave's own code opens, for every kind
/// of secret, purpose and owner in the vectors; what it signs as the VMM, the Rust client
/// verifies. The Python side (clients/python/tests/test_vectors.py) checks it still computes them.
#[test]
fn the_enclave_opens_and_the_rust_client_verifies_the_python_packages_known_answers() {
    let vectors = vectors();
    let section = |name: &str| &vectors.iter().find(|(n, _)| n == name).unwrap().1;
    // The enclave they were sealed to: CounterRng::starting_at(0) makes its key, then its nonces.
    let mut rng = CounterRng::starting_at(0);
    let mut key = SealingKey::generate(&mut rng).unwrap();
    assert_eq!(hex(&key.public_key()), section("enclave")["public"]);
    let seals: Vec<_> = vectors.iter().filter(|(n, _)| n.starts_with("seal.")).collect();
    assert_eq!(seals.len(), 4);
    for (name, v) in seals {
        open_vector(&mut key, &mut rng, name, v);
    }
    verify_attestation_vector(section("attestation"), &section("enclave")["public"]);
}

/// Whether what the end-to-end test runs is installed: a loud skip, or a failure with
/// CREDGUARD_REQUIRE_TOOLS=1.
fn python_tools_or_skip(test: &str) -> bool {
    let check = "import setuptools, venv, pip, grpc, google.protobuf, cryptography, spnego, Cryptodome, gssapi";
    let ok = Command::new("python3")
        .args(["-c", check])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tools_missing(
            test,
            "python3 venv, pip, setuptools, grpcio, protobuf, cryptography, pyspnego, pycryptodomex or gssapi is missing",
        );
    }
    ok
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pip install` of a copy of the package (a build writes into the tree it builds) into a fresh
/// venv that sees the system's packages, offline: the dependencies and the build backend are the
/// system's. The venv gets no pip of its own (`--without-pip`): Python 3.11's bundled setuptools
/// would hide the system's newer one from the build.
fn install_package(dir: &Path) -> PathBuf {
    let copy = dir.join("package");
    run(Command::new("cp").arg("-r").arg(PACKAGE).arg(&copy));
    let venv = dir.join("venv");
    run(Command::new("python3")
        .args(["-m", "venv", "--system-site-packages", "--without-pip"])
        .arg(&venv));
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(["--no-build-isolation", "--no-index"])
        .arg(&copy));
    venv
}

/// Runs tests/python/credguard_package.py with the venv's Python; returns what it saw.
fn run_package_script(stack: &Stack, kdc: &TestKdc, venv: &Path) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let users = stack.dir.join("ntlm-users");
    std::fs::write(&users, format!("CORP:alice:{}\n", kdc.get("PASSWORD"))).unwrap();
    let args = serde_json::json!({
        "user": "alice", "domain": "CORP", "realm": kdc.get("REALM"), "kdc": kdc.get("KDC"),
        "password": kdc.get("PASSWORD"), "spn": kdc.get("SPN"), "keytab": kdc.get("KEYTAB"),
        "ntlm_users": users,
        // The example's functions, from the copy `install_package` built (nothing is written to the tree).
        "examples_dir": stack.dir.join("package/examples"),
        // Real keys, but not the VMM's attestation key nor the image signer's.
        "other_attestation_pub": dev_image().trusted_key, "other_signer_pub": stack.attestation_pub(),
    });
    let out = Command::new(venv.join("bin/python"))
        .arg(format!("{root}/tests/python/credguard_package.py"))
        .arg(args.to_string())
        .env("CREDGUARD_SOCKET", &stack.api)
        .env("CREDGUARD_ATTESTATION_PUB", stack.attestation_pub())
        .env("CREDGUARD_SIGNER_PUB", &dev_image().trusted_key)
        .env("CREDGUARD_ALLOW_TEST_IMAGE", "0")
        .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&stack.dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "credguard_package.py failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains(kdc.get("PASSWORD")) && !stderr.contains(kdc.get("PASSWORD")));
    json(&stdout)
}

#[test]
fn the_python_package_logs_on_sealed_and_does_ntlm_and_kerberos() {
    let test = "python_package_end_to_end";
    if !kvm_or_skip(test) || !python_tools_or_skip(test) {
        return;
    }
    let Some(kdc) = TestKdc::start(test) else {
        return;
    };
    let config = format!(
        "[api]\nallow_plaintext_secrets = false\n\n[kerberos]\ndefault_kdc = \"{}\"\n",
        kdc.get("KDC")
    );
    let stack = Stack::start_as_installed("python-package", &config);
    let status = stack.wait_ready();
    let venv = install_package(&stack.dir);
    let seen = run_package_script(&stack, &kdc, &venv);

    // The package that ran is the one pip installed, and it checked this enclave's attestation.
    let package = seen["package"].as_str().unwrap();
    assert!(Path::new(package).starts_with(&venv), "{package}");
    assert_eq!(seen["attested"]["measurement"], status["measurement"]);
    assert_eq!(seen["attested"]["public_key"].as_str().unwrap().len(), 64);

    // Logged on sealed (the proxy refuses anything else here).
    assert_eq!(seen["session"]["sealed"], true, "{seen}");
    assert_eq!(seen["session"]["secret_kind"], "password");

    // NTLM: pyspnego accepts it and derives the same session key.
    let ntlm = &seen["ntlm"];
    let key = ntlm["exported_session_key"].as_str().unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(ntlm["verdict"], format!("ACCEPTED {key}"), "{seen}");

    // Kerberos: MIT's acceptor takes the token, with the service's keytab.
    let realm = kdc.get("REALM");
    assert_eq!(seen["tgt_principal"], format!("alice@{realm}"));
    let krb = &seen["kerberos"];
    assert_eq!(krb["exit"], 0, "{krb}");
    assert_eq!(krb["initiator"], format!("alice@{realm}"));
    assert_eq!(krb["complete"], true);
    assert_eq!(krb["mutual_reply"], true);
    assert_eq!(krb["delegate_flag"], false);

    check_refusals(&seen["errors"]);
    // The refused logons made no session; the one session is gone after its logoff.
    assert_eq!(seen["sessions_before_logoff"], serde_json::json!([seen["session_id"]]));
    assert_eq!(seen["sessions_after_logoff"], serde_json::json!([]));
}

/// The refusals the script provoked: typed, from the right side, saying why.
fn check_refusals(errors: &serde_json::Value) {
    let says = |name: &str, typ: &str, code: Option<&str>, words: &[&str]| {
        let e = &errors[name];
        assert_eq!(e["type"], typ, "{name}: {e}");
        assert_eq!(e["sealing"], code.is_none(), "{name}: {e}");
        assert_eq!(e["code"].as_str(), code, "{name}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(words.iter().all(|w| message.contains(w)), "{name}: {message}");
    };
    says(
        "wrong_attestation_key",
        "BadAttestation",
        None,
        &["does not verify", "refusing"],
    );
    says("wrong_signer", "UnexpectedSigner", None, &["pinned signer"]);
    says(
        "plaintext",
        "FailedPrecondition",
        Some("FAILED_PRECONDITION"),
        &["allow_plaintext_secrets"],
    );
    says("unknown_session", "NotFound", Some("NOT_FOUND"), &[]);
    says(
        "delegation",
        "FailedPrecondition",
        Some("FAILED_PRECONDITION"),
        &["delegation"],
    );
    says("wrong_password", "Unauthenticated", Some("UNAUTHENTICATED"), &[]);
}
