//! `credguard-vmm verify` and `run` refuse tampered images, before any guest exists.
//!
//! These tests need no KVM: every refusal happens before the VMM opens /dev/kvm.

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
