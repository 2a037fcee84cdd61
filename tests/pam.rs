//! pam_credguard.so end to end: `pamtester` (Linux-PAM's own library, through libpam-wrapper so
//! the PAM configuration lives in the test's directory) runs the built module as root against the
//! real stack and the test MIT KDC. The PAM user `alice` is uid 4242 through nss_wrapper (a passwd
//! file of the test's own, so the host's user database is not touched); the module logs on for
//! that uid with `credguard-on-behalf-of-uid`.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::json;
use support::kcm::{kcm_stack, mit, text};
use support::kdc::tools_missing;
use support::{Stack, dev_image};

/// The uid nss_wrapper gives the PAM user `alice`.
const ALICE_UID: u32 = 4242;
/// The PAM service the test writes.
const SERVICE: &str = "credguard-test";
const PAM_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so";
const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

/// Builds the module (cargo does not build a dependency's cdylib) in this test's profile; returns
/// the path of `libpam_credguard.so`.
fn build_module() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "pam-credguard", "--lib", "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("running cargo build");
    assert!(out.status.success(), "building pam-credguard failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.file_name().is_some_and(|n| n == "libpam_credguard.so"))
        .expect("cargo named no libpam_credguard.so")
}

/// The test's PAM and NSS configuration, in `stack`'s directory.
struct PamSetup {
    services: PathBuf,
    passwd: PathBuf,
    group: PathBuf,
    state_dir: PathBuf,
    session_env: PathBuf,
}

fn pam_setup(stack: &Stack, realm: &str) -> PamSetup {
    pam_setup_with(stack, realm, "")
}

/// As [`pam_setup`], with `extra` module options. Without a `keytab=` in them, the module is
/// pointed at a keytab that does not exist (so a host's own /etc/krb5.keytab never interferes).
fn pam_setup_with(stack: &Stack, realm: &str, extra: &str) -> PamSetup {
    use std::os::unix::fs::PermissionsExt;
    let module = build_module();
    let dir = stack.dir.join("pam");
    let services = dir.join("pam.d");
    std::fs::create_dir_all(&services).unwrap();
    let passwd = dir.join("passwd");
    std::fs::write(
        &passwd,
        format!("root:x:0:0:root:/root:/bin/sh\nalice:x:{ALICE_UID}:{ALICE_UID}:alice:/nonexistent:/bin/false\n"),
    )
    .unwrap();
    let group = dir.join("group");
    std::fs::write(&group, format!("root:x:0:\nalice:x:{ALICE_UID}:\n")).unwrap();
    let state_dir = dir.join("state");
    let session_env = dir.join("session-env");
    let dump_env = dir.join("dump-env.sh");
    std::fs::write(&dump_env, format!("#!/bin/sh\nenv > {}\n", session_env.display())).unwrap();
    std::fs::set_permissions(&dump_env, std::fs::Permissions::from_mode(0o755)).unwrap();
    let keytab = if extra.contains("keytab=") {
        String::new()
    } else {
        format!("keytab={}", dir.join("no.keytab").display())
    };
    let options = format!(
        "socket={} attestation_pub={} signer_pub={} realm={realm} state_dir={} debug {keytab} {extra}",
        stack.api.display(),
        stack.attestation_pub().display(),
        dev_image().trusted_key.display(),
        state_dir.display(),
    );
    let module = module.display();
    std::fs::write(
        services.join(SERVICE),
        format!(
            "auth required {module} {options}\n\
             account required pam_permit.so\n\
             session required {module} {options}\n\
             session optional pam_exec.so type=open_session {}\n",
            dump_env.display()
        ),
    )
    .unwrap();
    PamSetup {
        services,
        passwd,
        group,
        state_dir,
        session_env,
    }
}

/// `pamtester SERVICE alice OPERATIONS...` as root with `password` on stdin.
fn pamtester(setup: &PamSetup, password: &str, operations: &[&str]) -> Output {
    let mut child = Command::new("pamtester")
        .arg("-v")
        .arg(SERVICE)
        .arg("alice")
        .args(operations)
        .env("LD_PRELOAD", format!("{PAM_WRAPPER} {NSS_WRAPPER}"))
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", &setup.services)
        .env("NSS_WRAPPER_PASSWD", &setup.passwd)
        .env("NSS_WRAPPER_GROUP", &setup.group)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running pamtester");
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes());
    child.wait_with_output().unwrap()
}

/// The ids of uid `uid`'s sessions, and which is its default (listed by root).
fn sessions_of(stack: &Stack, uid: u32) -> (Vec<String>, Option<String>) {
    let (code, out, err) = stack.ctl(None, &["sessions"], "");
    assert_eq!(code, 0, "sessions: {err}");
    let list = json(&out);
    let mine: Vec<_> = list.as_array().unwrap().iter().filter(|s| s["uid"] == uid).collect();
    let ids = mine
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_string())
        .collect();
    let default = mine
        .iter()
        .find(|s| s["default"] == true)
        .map(|s| s["session_id"].as_str().unwrap().to_string());
    (ids, default)
}

fn tools_present(test: &str) -> bool {
    let pamtester = Command::new("pamtester").arg("--version").output().is_ok();
    let missing: Vec<_> = [
        ("pamtester", pamtester),
        (PAM_WRAPPER, Path::new(PAM_WRAPPER).exists()),
        (NSS_WRAPPER, Path::new(NSS_WRAPPER).exists()),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return true;
    }
    tools_missing(
        test,
        &format!("{missing:?} missing (apt-get install pamtester libpam-wrapper libnss-wrapper)"),
    );
    false
}

#[test]
fn pam_logon_makes_the_uids_default_session_and_a_wrong_password_or_a_dead_proxy_fails() {
    let test = "pam_logon";
    if !tools_present(test) {
        return;
    }
    let Some((kdc, mut stack, conf)) = kcm_stack(test) else {
        return;
    };
    let setup = pam_setup(&stack, kdc.get("REALM"));
    let password = kdc.get("PASSWORD");

    // The right password: auth logs alice on for her uid and the KDC accepts it; the session
    // stage makes it her default and points Kerberos at KCM.
    let out = pamtester(&setup, password, &["authenticate", "open_session"]);
    assert!(out.status.success(), "pamtester: {}", text(&out));
    let (ids, default) = sessions_of(&stack, ALICE_UID);
    assert_eq!(ids.len(), 1, "one session for uid {ALICE_UID}: {ids:?}");
    let first = ids[0].clone();
    assert_eq!(default.as_deref(), Some(first.as_str()));
    let env = std::fs::read_to_string(&setup.session_env).unwrap();
    assert!(env.lines().any(|l| l == "KRB5CCNAME=KCM:"), "session env: {env}");
    assert_eq!(
        std::fs::read_to_string(setup.state_dir.join(&first)).unwrap().trim(),
        "1",
        "one PAM session counted"
    );
    // Her own credguardctl and MIT's programs (through KCM) see it; the enclave gets tickets
    // with the TGT the module's logon made.
    let (code, out, err) = stack.ctl(Some(ALICE_UID), &["default"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["session_id"].as_str(), Some(first.as_str()));
    let kvno = mit(&conf, Some(ALICE_UID), &["kvno", kdc.get("SPN")], "");
    assert!(kvno.status.success(), "kvno as uid {ALICE_UID}: {}", text(&kvno));
    let klist = text(&mit(&conf, Some(ALICE_UID), &["klist"], ""));
    assert!(klist.contains(&format!("alice@{}", kdc.get("REALM"))), "{klist}");

    // A second login that closes its session: its own logon becomes the default while open and
    // is logged off at close (its last PAM session); the first stays, and is the default again.
    let out = pamtester(&setup, password, &["authenticate", "open_session", "close_session"]);
    assert!(out.status.success(), "pamtester: {}", text(&out));
    let (ids, default) = sessions_of(&stack, ALICE_UID);
    assert_eq!(
        ids,
        std::slice::from_ref(&first),
        "the second logon was logged off at close"
    );
    assert_eq!(default.as_deref(), Some(first.as_str()));
    let counts: Vec<_> = std::fs::read_dir(&setup.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        counts,
        [std::ffi::OsString::from(&first)],
        "the closed logon's count is gone"
    );

    // A wrong password: PAM_AUTH_ERR, and no session is left behind.
    let out = pamtester(&setup, "Wrong-Passw0rd", &["authenticate"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("Authentication failure"), "{}", text(&out));
    assert_eq!(sessions_of(&stack, ALICE_UID).0, std::slice::from_ref(&first));

    // credguard down: PAM_AUTHINFO_UNAVAIL, so the other modules of a real stack log the user in.
    stack.kill_proxy();
    let out = pamtester(&setup, password, &["authenticate"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Authentication service cannot retrieve authentication info"),
        "{}",
        text(&out)
    );
}

#[test]
fn with_a_host_keytab_the_kdc_must_prove_itself() {
    let test = "pam_kdc_proof";
    if !tools_present(test) {
        return;
    }
    let Some((kdc, stack, _conf)) = kcm_stack(test) else {
        return;
    };
    let realm = kdc.get("REALM");
    let password = kdc.get("PASSWORD");
    // The host's keytab holds host/svc's key: the KDC's ticket to it opens, auth succeeds.
    let genuine = pam_setup_with(
        &stack,
        realm,
        &format!("keytab={} verify_host={}", kdc.get("KEYTAB"), kdc.get("SPN")),
    );
    let out = pamtester(&genuine, password, &["authenticate"]);
    assert!(out.status.success(), "pamtester: {}", text(&out));
    assert_eq!(sessions_of(&stack, ALICE_UID).0.len(), 1);
    // A keytab with another key for that name: as if the KDC were an impostor that does not know
    // the host's key. The password was right, yet auth fails, and the session is closed.
    let impostor = stack.dir.join("impostor.keytab");
    let made = Command::new("ktutil")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let script = format!(
                "add_entry -password -p {}@{realm} -k 2 -e aes256-cts-hmac-sha1-96\nNot-The-Host-Key\nwkt {}\nquit\n",
                kdc.get("SPN"),
                impostor.display()
            );
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .expect("ktutil");
    assert!(made.success() && impostor.exists(), "ktutil made no keytab");
    let spoofed = pam_setup_with(
        &stack,
        realm,
        &format!("keytab={} verify_host={}", impostor.display(), kdc.get("SPN")),
    );
    let out = pamtester(&spoofed, password, &["authenticate"]);
    assert!(!out.status.success(), "a KDC that cannot prove itself: {}", text(&out));
    assert!(text(&out).contains("Authentication failure"), "{}", text(&out));
    assert_eq!(
        sessions_of(&stack, ALICE_UID).0.len(),
        1,
        "the refused logon was closed"
    );
}
