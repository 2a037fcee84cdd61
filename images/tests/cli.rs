//! `credguard-image sign --upgrade-from`: the allowance is written into the manifest, covered by
//! the signature, shown by `verify`, and taken from a measurement or from an old manifest.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn image_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_credguard-image"))
        .args(args)
        .output()
        .expect("running credguard-image");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sign_with_upgrade_from_a_measurement_or_an_old_manifest() {
    let dir = std::env::temp_dir().join(format!("credguard-image-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.pk8");
    let public = dir.join("k.pk8.pub");
    assert_eq!(image_cli(&["keygen", s(&key)]).0, 0);

    // The old image and its manifest.
    let old = dir.join("old.elf");
    std::fs::write(&old, b"\x7fELF the old enclave image").unwrap();
    let (code, out, err) = image_cli(&["sign", s(&old), "--key", s(&key)]);
    assert_eq!(code, 0, "{err}");
    let old_measurement = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("measurement: ")
        .trim()
        .to_string();
    assert_eq!(old_measurement.len(), 96, "{out}");
    let old_manifest = dir.join("old.elf.manifest.json");

    // The new image, allowed to open the old one's vault: by manifest path, then by hex.
    let new = dir.join("new.elf");
    std::fs::write(&new, b"\x7fELF the new enclave image").unwrap();
    let new_manifest = dir.join("new.elf.manifest.json");
    for arg in [s(&old_manifest).to_string(), old_measurement.clone()] {
        let (code, out, err) = image_cli(&["sign", s(&new), "--key", s(&key), "--upgrade-from", &arg]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("upgrade from: {old_measurement}")), "{out}");
        let (code, out, err) = image_cli(&["verify", s(&new), "--trusted-key", s(&public)]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("upgrade from: {old_measurement}")), "{out}");
    }
    // Editing the allowance out of the manifest breaks the signature.
    let text = std::fs::read_to_string(&new_manifest).unwrap();
    assert!(text.contains("upgrade_from"));
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m.as_object_mut().unwrap().remove("upgrade_from");
    std::fs::write(&new_manifest, m.to_string()).unwrap();
    let (code, _, err) = image_cli(&["verify", s(&new), "--trusted-key", s(&public)]);
    assert_eq!(code, 2);
    assert!(err.contains("signature does not verify"), "{err}");

    // Neither a measurement nor a manifest: a clear error, nothing written.
    let (code, _, err) = image_cli(&["sign", s(&new), "--key", s(&key), "--upgrade-from", "nonsense"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--upgrade-from is neither a measurement nor a readable manifest"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
