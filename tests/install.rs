//! The service as an admin meets it: `scripts/install.sh` run for real, then the installed units'
//! `ExecStart=` lines with the installed configuration, as their users, as systemd would run them,
//! until the installed `credguardctl`, with no option, gets the status from an ordinary uid. It
//! all happens in a private mount namespace (`tests/install/run-installed.sh`), so the host's
//! /etc, /usr/local and /run stay as they were.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{json, kvm_or_skip, temp_dir};

#[test]
fn the_installed_units_start_and_credguardctl_gets_the_status_with_its_defaults() {
    let test = "installed_layout";
    if !kvm_or_skip(test) {
        return;
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let work = temp_dir("installed-layout");
    // The binaries this test run built, and the PAM module (cargo builds a cdylib only on demand).
    let module = support::build_pam_module();
    let bin_dir = module.parent().unwrap();
    assert_eq!(
        support::ctl_bin().parent(),
        Some(bin_dir),
        "the module and the binaries differ in place"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(format!("{repo}/tests/install/run-installed.sh"))
        .arg(repo)
        .arg(&work)
        .arg(bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the installed layout did not come up:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last line is credguardctl's JSON status; the rest is install.sh talking.
    let status_start = stdout.rfind("\n{").map_or(0, |i| i + 1);
    let status = json(&stdout[status_start..]);
    assert_eq!(status["state"], "ready", "{status}");
    // The installed keys: the VMM's attestation verifies against the public half install.sh made,
    // and the image is the dev-signed production image, not a test build.
    assert_eq!(
        status["attestation"], "verified with /etc/credguard/attestation.pub",
        "{status}"
    );
    assert_eq!(status["test_image"], false, "{status}");
    // The socket-activated KCM daemon answered MIT's klist for that uid: its cache is empty (no
    // logon), which only the daemon can say.
    let klist = stdout.lines().find(|l| l.starts_with("klist: ")).unwrap_or_default();
    assert!(
        klist.contains("KCM:65534"),
        "klist through the installed KCM socket: {klist:?}"
    );
    // The host was not touched: no user was added to the real /etc/passwd.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !passwd.contains("credguard-proxy"),
        "install.sh changed the host's /etc/passwd"
    );
}
