//! `credguard-vmm verify` and `run` refuse tampered images, before any guest exists.
//!
//! These tests need no KVM: every refusal happens before the VMM opens /dev/kvm.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use credguard_image::dev::{self, DevImage};
use credguard_image::{Manifest, SigningKey, default_manifest_path};

fn dev_image() -> &'static DevImage {
    static IMAGE: OnceLock<DevImage> = OnceLock::new();
    IMAGE.get_or_init(|| dev::ensure_enclave_built().expect("building the enclave"))
}

/// A copy of the dev image and its manifest in a fresh directory.
fn copy_image(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = std::env::temp_dir().join(format!("credguard-vmm-cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    let image = d.join("enclave.elf");
    fs::copy(&dev_image().image, &image).unwrap();
    fs::copy(&dev_image().manifest, default_manifest_path(&image)).unwrap();
    (d, image.clone(), default_manifest_path(&image))
}

fn vmm(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_credguard-vmm"))
        .args(args)
        .output()
        .expect("running credguard-vmm")
}

fn verify(image: &Path, key: &Path) -> Output {
    vmm(&[
        "verify".as_ref(),
        image.as_os_str(),
        "--trusted-key".as_ref(),
        key.as_os_str(),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn verify_accepts_the_signed_image_and_prints_its_measurement() {
    let (_d, image, _) = copy_image("good");
    let o = verify(&image, &dev_image().trusted_key);
    assert!(o.status.success(), "{}", stderr(&o));
    let signed = dev_image().verify().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&signed.measurement().to_string()));
}

#[test]
fn verify_refuses_a_flipped_byte() {
    let (_d, image, _) = copy_image("flip");
    let mut b = fs::read(&image).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    fs::write(&image, b).unwrap();
    let o = verify(&image, &dev_image().trusted_key);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("enclave.elf") && e.contains("measurement"), "{e}");
}

#[test]
fn verify_refuses_a_truncated_image() {
    let (_d, image, _) = copy_image("trunc");
    let b = fs::read(&image).unwrap();
    fs::write(&image, &b[..b.len() / 2]).unwrap();
    let o = verify(&image, &dev_image().trusted_key);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("the manifest says"), "{}", stderr(&o));
}

#[test]
fn verify_refuses_another_trusted_key() {
    let (d, image, _) = copy_image("key");
    let other = d.join("other.pub");
    SigningKey::generate(&d.join("other.pk8"), &other).unwrap();
    let o = verify(&image, &other);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("signed by key"), "{}", stderr(&o));
}

#[test]
fn verify_refuses_a_manifest_made_for_another_image() {
    let (d, image, manifest) = copy_image("other");
    // A validly signed manifest, but of a different image.
    let other = d.join("other.elf");
    let mut b = fs::read(&image).unwrap();
    b.push(0);
    fs::write(&other, &b).unwrap();
    dev::ensure_dev_key().unwrap().sign_file(&other, &manifest).unwrap();
    let m: Manifest = serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m.image, "other.elf");
    let o = verify(&image, &dev_image().trusted_key);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("enclave.elf"), "{}", stderr(&o));
}

#[test]
fn run_refuses_a_tampered_image_before_boot() {
    let (d, image, manifest) = copy_image("run");
    let mut b = fs::read(&image).unwrap();
    b[0x1000] ^= 0x80;
    fs::write(&image, b).unwrap();
    let sock = d.join("vsock.sock");
    let o = vmm(&[
        "run".as_ref(),
        "--image".as_ref(),
        image.as_os_str(),
        "--manifest".as_ref(),
        manifest.as_os_str(),
        "--trusted-key".as_ref(),
        dev_image().trusted_key.as_os_str(),
        "--vsock-socket".as_ref(),
        sock.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("enclave.elf") && e.contains("measurement"), "{e}");
    assert!(!sock.exists(), "no vsock socket: nothing was set up");
}

#[test]
fn verify_and_run_refuse_without_a_trusted_key() {
    let (d, image, manifest) = copy_image("nokey");
    let o = vmm(&["verify".as_ref(), image.as_os_str()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--trusted-key"), "{}", stderr(&o));
    let sock = d.join("vsock.sock");
    let o = vmm(&[
        "run".as_ref(),
        "--image".as_ref(),
        image.as_os_str(),
        "--manifest".as_ref(),
        manifest.as_os_str(),
        "--vsock-socket".as_ref(),
        sock.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("no trusted key") && e.contains("--trusted-key"), "{e}");
    assert!(!sock.exists(), "no vsock socket: nothing was set up");
}

#[test]
fn verify_takes_the_trusted_key_from_the_config_file() {
    let (d, image, _) = copy_image("config");
    let config = d.join("credguard.toml");
    fs::write(
        &config,
        format!(
            "[api]\nsocket = \"/run/credguard/lsa.sock\"\n\n[vmm]\ntrusted_key = \"{}\"\n",
            dev_image().trusted_key.display()
        ),
    )
    .unwrap();
    let o = vmm(&[
        "verify".as_ref(),
        image.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // An unknown key in [vmm] is refused, naming it.
    fs::write(&config, "[vmm]\nrequire_hidden_memroy = true\n").unwrap();
    let o = vmm(&[
        "verify".as_ref(),
        image.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("require_hidden_memroy"), "{}", stderr(&o));
}

/// `run` with hidden memory required, by the flag or by the config file: refused with status 2
/// and nothing set up where KVM offers no guest_memfd (this test's host, or no /dev/kvm at all);
/// started where it does.
#[test]
fn run_requires_hidden_memory_when_asked() {
    let has_guest_memfd = credguard_vmm::memory::host_has_guest_memfd().unwrap_or(false);
    let (d, image, manifest) = copy_image("hidden");
    let config = d.join("credguard.toml");
    fs::write(&config, "[vmm]\nrequire_hidden_memory = true\n").unwrap();
    for how in ["--require-hidden-memory", "--config"] {
        let sock = d.join("vsock.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_credguard-vmm"));
        cmd.args(["run", "--no-supervise", "--image"])
            .arg(&image)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--trusted-key")
            .arg(&dev_image().trusted_key)
            .arg("--vsock-socket")
            .arg(&sock);
        match how {
            "--config" => cmd.arg("--config").arg(&config),
            flag => cmd.arg(flag),
        };
        if has_guest_memfd {
            let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
            let start = std::time::Instant::now();
            while !sock.exists() && start.elapsed() < std::time::Duration::from_secs(20) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let still_running = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                sock.exists() && still_running,
                "{how}: the VMM did not start with guest_memfd"
            );
            let _ = fs::remove_file(&sock);
        } else {
            let o = cmd.output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{how}: {}", stderr(&o));
            let e = stderr(&o);
            assert!(
                e.contains("--require-hidden-memory") && e.contains("guest_memfd"),
                "{how}: {e}"
            );
            assert!(!sock.exists(), "{how}: no vsock socket: nothing was set up");
        }
    }
}

#[test]
fn verify_refuses_a_manifest_with_a_changed_signer_or_an_extra_field() {
    let (_d, image, manifest) = copy_image("strict");
    let text = fs::read_to_string(&manifest).unwrap();
    let m: Manifest = serde_json::from_str(&text).unwrap();
    let changed = text.replace(&m.signer, &"0".repeat(m.signer.len()));
    assert_ne!(changed, text);
    let extra = text.trim_end().strip_suffix('}').unwrap().to_owned() + ",\n  \"note\": \"x\"\n}\n";
    for (what, bad) in [("signer", changed), ("note", extra)] {
        fs::write(&manifest, bad).unwrap();
        let o = verify(&image, &dev_image().trusted_key);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("not a valid enclave manifest") && e.contains(what),
            "{what}: {e}"
        );
    }
}
