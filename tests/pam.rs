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
use support::kcm::{kcm_stack, kcm_stack_configured, kcm_stack_with_kpasswd, mit, text};
use support::kdc::tools_missing;
use support::{Stack, dev_image};

/// The uid nss_wrapper gives the PAM user `alice`.
const ALICE_UID: u32 = 4242;
/// The uid nss_wrapper gives `aliceexpired`, whose password the test KDC says has expired.
const EXPIRED_UID: u32 = 4243;
/// The PAM service the test writes.
const SERVICE: &str = "credguard-test";
const PAM_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so";
const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

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
    pam_setup_stacked(stack, realm, extra, &StackExtras::default())
}

/// As [`pam_setup_with`], with `extras` lines in the stack.
fn pam_setup_stacked(stack: &Stack, realm: &str, extra: &str, extras: &StackExtras) -> PamSetup {
    use std::os::unix::fs::PermissionsExt;
    let module = support::build_pam_module();
    let dir = stack.dir.join("pam");
    let services = dir.join("pam.d");
    std::fs::create_dir_all(&services).unwrap();
    let passwd = dir.join("passwd");
    std::fs::write(
        &passwd,
        format!(
            "root:x:0:0:root:/root:/bin/sh\n\
             alice:x:{ALICE_UID}:{ALICE_UID}:alice:/nonexistent:/bin/false\n\
             aliceexpired:x:{EXPIRED_UID}:{EXPIRED_UID}:aliceexpired:/nonexistent:/bin/false\n"
        ),
    )
    .unwrap();
    let group = dir.join("group");
    std::fs::write(
        &group,
        format!("root:x:0:\nalice:x:{ALICE_UID}:\naliceexpired:x:{EXPIRED_UID}:\n"),
    )
    .unwrap();
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
    let StackExtras {
        auth_before,
        auth_after,
        session_after,
    } = extras;
    std::fs::write(
        services.join(SERVICE),
        format!(
            "{auth_before}auth required {module} {options}\n{auth_after}\
             account required pam_permit.so\n\
             account required {module} {options}\n\
             password required {module} {options}\n\
             session required {module} {options}\n\
             session optional pam_exec.so type=open_session {}\n{session_after}",
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

/// Lines a test adds to the stack around the module.
#[derive(Default)]
struct StackExtras {
    /// Before the module's `auth`.
    auth_before: String,
    /// After the module's `auth`.
    auth_after: String,
    /// After the module's `session`.
    session_after: String,
}

/// `pamtester -v SERVICE USER OPERATIONS...` as root, answering each prompt (its output ends with
/// ": ") with the next of `answers`; stdin closes after the last. Returns whether it succeeded and
/// everything it printed.
fn pamtester_answering(setup: &PamSetup, user: &str, answers: &[&str], operations: &[&str]) -> (bool, String) {
    use std::io::Read;
    let mut child = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\" 2>&1", "pamtester", "-v", SERVICE, user])
        .args(operations)
        .env("LD_PRELOAD", format!("{PAM_WRAPPER} {NSS_WRAPPER}"))
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", &setup.services)
        .env("NSS_WRAPPER_PASSWD", &setup.passwd)
        .env("NSS_WRAPPER_GROUP", &setup.group)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running pamtester");
    let mut stdin = (!answers.is_empty()).then(|| child.stdin.take().unwrap());
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().unwrap();
    let (mut seen, mut answered, mut buf) = (String::new(), 0, [0u8; 4096]);
    loop {
        let n = stdout.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.ends_with(": ")
            && let Some(mut pipe) = stdin.take()
        {
            let _ = pipe.write_all(format!("{}\n", answers[answered]).as_bytes());
            answered += 1;
            if answered < answers.len() {
                stdin = Some(pipe);
            }
        }
    }
    let status = child.wait().unwrap();
    (status.success(), seen)
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

#[test]
fn an_expired_password_is_changed_at_chauthtok_through_kpasswd_and_the_new_one_logs_on() {
    let test = "pam_expired";
    if !tools_present(test) {
        return;
    }
    let Some((kdc, stack, conf)) = kcm_stack_with_kpasswd(test) else {
        return;
    };
    let realm = kdc.get("REALM");
    let setup = pam_setup(&stack, realm);
    let old = kdc.get("PASSWORD");
    let new = "Pam-Changed-Passw0rd-2026";
    let user = "aliceexpired";

    // MIT's KDC says "expired" whatever the password: the enclave's kadmin/changepw check tells a
    // wrong one, which fails auth and leaves no session.
    let (ok, out) = pamtester_answering(&setup, user, &["Wrong-Passw0rd"], &["authenticate"]);
    assert!(!ok, "a wrong expired password: {out}");
    assert!(out.contains("Authentication failure"), "{out}");
    assert!(sessions_of(&stack, EXPIRED_UID).0.is_empty());
    // The right one: auth succeeds, and the account stage asks for a new password.
    let (ok, out) = pamtester_answering(&setup, user, &[old], &["authenticate", "acct_mgmt"]);
    assert!(!ok, "acct_mgmt must ask for a change: {out}");
    assert!(out.contains("successfully authenticated"), "{out}");
    assert!(out.contains("new one required"), "{out}");
    let (waiting, _) = sessions_of(&stack, EXPIRED_UID);
    assert_eq!(waiting.len(), 1, "the expired logon waits for its change");
    // A mistyped retype changes nothing.
    let ops = ["authenticate", "chauthtok(PAM_CHANGE_EXPIRED_AUTHTOK)"];
    let (ok, out) = pamtester_answering(&setup, user, &[old, new, "Not-The-Same-1"], &ops);
    assert!(!ok, "{out}");
    assert!(out.contains("do not match"), "{out}");

    // The login as login(1) runs it: auth, the change through kpasswd, the session.
    let ops = ["authenticate", "chauthtok(PAM_CHANGE_EXPIRED_AUTHTOK)", "open_session"];
    let (ok, out) = pamtester_answering(&setup, user, &[old, new, new], &ops);
    assert!(ok, "the change at chauthtok: {out}");
    assert!(!out.contains(new) && !out.contains(old), "{out}");
    let (_, default) = sessions_of(&stack, EXPIRED_UID);
    let default = default.expect("the changed logon is the uid's default");
    assert!(!waiting.contains(&default));
    // Its TGT came with the new password: KCM gets a service ticket with it.
    let kvno = mit(&conf, Some(EXPIRED_UID), &["kvno", kdc.get("SPN")], "");
    assert!(kvno.status.success(), "kvno after the change: {}", text(&kvno));

    // The new password logs on; the old one does not.
    let (ok, out) = pamtester_answering(&setup, user, &[new], &["authenticate", "acct_mgmt"]);
    assert!(ok, "the new password: {out}");
    let (ok, out) = pamtester_answering(&setup, user, &[old], &["authenticate"]);
    assert!(!ok, "the old password: {out}");
    assert!(out.contains("Authentication failure"), "{out}");
}

#[test]
fn passwd_changes_a_current_password_given_at_the_prompt() {
    let test = "pam_passwd";
    if !tools_present(test) {
        return;
    }
    let Some((kdc, stack, _conf)) = kcm_stack_with_kpasswd(test) else {
        return;
    };
    let setup = pam_setup(&stack, kdc.get("REALM"));
    let old = kdc.get("PASSWORD");
    let new = "Passwd-Changed-Passw0rd-2026";
    // A wrong current password: the change is refused, and its session of its own is gone.
    let (ok, out) = pamtester_answering(&setup, "alice", &["Wrong-Passw0rd", new, new], &["chauthtok"]);
    assert!(!ok, "{out}");
    assert!(out.contains("current password is wrong"), "{out}");
    assert!(sessions_of(&stack, ALICE_UID).0.is_empty());
    // The right one: changed, and no session is left behind (nor made the default).
    let (ok, out) = pamtester_answering(&setup, "alice", &[old, new, new], &["chauthtok"]);
    assert!(ok, "passwd: {out}");
    assert!(sessions_of(&stack, ALICE_UID).0.is_empty());
    let (ok, out) = pamtester_answering(&setup, "alice", &[new], &["authenticate"]);
    assert!(ok, "the new password: {out}");
}

#[test]
fn the_stacks_password_is_used_with_use_first_pass_and_never_asked_for_again() {
    let test = "pam_first_pass";
    if !tools_present(test) {
        return;
    }
    let Some((kdc, stack, _conf)) = kcm_stack(test) else {
        return;
    };
    let realm = kdc.get("REALM");
    // No earlier module: use_first_pass fails without asking.
    let alone = pam_setup_with(&stack, realm, "use_first_pass");
    let (ok, out) = pamtester_answering(&alone, "alice", &[], &["authenticate"]);
    assert!(!ok, "{out}");
    assert!(!out.contains("Password: "), "use_first_pass must not ask: {out}");
    // pam_unix before it asks (and fails: alice has no shadow entry here), leaving the password
    // in PAM_AUTHTOK, which the module takes.
    let extras = StackExtras {
        auth_before: "auth optional pam_unix.so\n".into(),
        ..Default::default()
    };
    let stacked = pam_setup_stacked(&stack, realm, "use_first_pass", &extras);
    let (ok, out) = pamtester_answering(&stacked, "alice", &[kdc.get("PASSWORD")], &["authenticate"]);
    assert!(ok, "use_first_pass after pam_unix: {out}");
    assert_eq!(out.matches("assword: ").count(), 1, "asked once: {out}");
    assert_eq!(sessions_of(&stack, ALICE_UID).0.len(), 1);
}

#[test]
fn optional_kerberos_logs_on_for_ntlm_only_when_no_kdc_answers() {
    let test = "pam_optional_kerberos";
    if !tools_present(test) {
        return;
    }
    if !support::kvm_or_skip(test) {
        return;
    }
    let Some(kdc) = support::kdc::TestKdc::start(test) else {
        return;
    };
    // Port 9 (discard) on loopback: nothing listens, so no KDC of the realm answers.
    let config = "[kerberos]\ndefault_kdc = \"127.0.0.1:9\"\n";
    let (stack, _conf) = kcm_stack_configured(test, &kdc, config);
    let realm = kdc.get("REALM");
    let strict = pam_setup_with(&stack, realm, "");
    let (ok, out) = pamtester_answering(&strict, "alice", &["Any-Passw0rd"], &["authenticate"]);
    assert!(!ok, "no KDC, no optional_kerberos: {out}");
    assert!(out.contains("cannot retrieve authentication info"), "{out}");
    assert!(sessions_of(&stack, ALICE_UID).0.is_empty());
    let optional = pam_setup_with(&stack, realm, "optional_kerberos");
    let (ok, out) = pamtester_answering(&optional, "alice", &["Any-Passw0rd"], &["authenticate"]);
    assert!(ok, "optional_kerberos: {out}");
    let (code, list, err) = stack.ctl(None, &["sessions"], "");
    assert_eq!(code, 0, "{err}");
    let list = json(&list);
    let mine: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["uid"] == ALICE_UID)
        .collect();
    assert_eq!(mine.len(), 1, "{list}");
    assert_eq!(mine[0]["secret_kind"], "password", "an NTLM-capable session: {list}");
}

/// A scanner pam_exec runs inside the stack: counts the needle (read from a file the PAM process
/// never sees) in its parent's (pamtester's) readable memory, into `out`.
const SCANNER: &str = r#"import os, sys
needle = open(sys.argv[1], 'rb').read()
pid, found = os.getppid(), 0
with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/mem', 'rb', 0) as mem:
    for line in maps:
        fields = line.split()
        if 'r' not in fields[1] or line.rstrip().endswith(('[vvar]', '[vsyscall]', '[vvar_vclock]')):
            continue
        lo, hi = (int(x, 16) for x in fields[0].split('-'))
        try:
            mem.seek(lo)
            found += mem.read(hi - lo).count(needle)
        except (OSError, ValueError, OverflowError):
            pass
open(sys.argv[2], 'w').write(str(found))
"#;

#[test]
fn after_authenticate_the_pam_process_holds_no_password() {
    let test = "pam_memory";
    if !tools_present(test) {
        return;
    }
    let Some((kdc, stack, _conf)) = kcm_stack(test) else {
        return;
    };
    let password = kdc.get("PASSWORD");
    let dir = stack.dir.join("scan");
    std::fs::create_dir_all(&dir).unwrap();
    let scanner = dir.join("scan.py");
    std::fs::write(&scanner, SCANNER).unwrap();
    let needle = dir.join("needle");
    std::fs::write(&needle, password).unwrap();
    let (at_auth, at_session) = (dir.join("at-auth"), dir.join("at-session"));
    let scan = |out: &Path| {
        format!(
            "pam_exec.so /usr/bin/python3 {} {} {}\n",
            scanner.display(),
            needle.display(),
            out.display()
        )
    };
    let extras = StackExtras {
        // The positive control: right after the module's auth, libpam still holds PAM_AUTHTOK.
        auth_after: format!("auth optional {}", scan(&at_auth)),
        session_after: format!(
            "session optional {}",
            scan(&at_session).replacen("pam_exec.so", "pam_exec.so type=open_session", 1)
        ),
        ..Default::default()
    };
    let setup = pam_setup_stacked(&stack, kdc.get("REALM"), "", &extras);
    let (ok, out) = pamtester_answering(&setup, "alice", &[password], &["authenticate", "open_session"]);
    assert!(ok, "pamtester: {out}");
    let count = |p: &Path| -> u32 {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{}: {e}: {out}", p.display()))
            .trim()
            .parse()
            .unwrap()
    };
    // During auth the one copy is libpam's PAM_AUTHTOK (the module's own, and the conversation's
    // reply, are wiped already); Linux-PAM overwrites it when pam_authenticate returns.
    assert_eq!(
        count(&at_auth),
        1,
        "the scan finds PAM_AUTHTOK's copy, and only it, during auth"
    );
    assert_eq!(
        count(&at_session),
        0,
        "a copy of the password left in the PAM process after auth"
    );
}
