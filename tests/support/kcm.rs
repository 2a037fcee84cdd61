//! The stack with its KCM daemon, and MIT's programs pointed at it (`KRB5CCNAME=KCM:`), for the
//! end-to-end tests of credguard-kcm (tests/kcm.rs, tests/kcm_programs.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::kdc::TestKdc;
use super::{Stack, json, kvm_or_skip};

/// A krb5.conf for MIT's programs: the test KDC's, with the cache in the stack's KCM daemon.
pub fn kcm_krb5_conf(kdc: &TestKdc, stack: &Stack, socket: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let base = std::fs::read_to_string(kdc.get("KRB5_CONFIG")).unwrap();
    let conf = base.replacen(
        "[libdefaults]\n",
        &format!(
            "[libdefaults]\n kcm_socket = {}\n default_ccache_name = KCM:\n",
            socket.display()
        ),
        1,
    );
    let path = stack.dir.join("krb5-kcm.conf");
    std::fs::write(&path, conf).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// `program` with `args`, run as `uid` (via setpriv) or as this process.
pub fn as_uid(uid: Option<u32>, program: &str, args: &[&str]) -> Command {
    match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ]);
            c.arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

/// Runs an MIT program (as `uid`, or as this process) with `conf`, `KRB5CCNAME=KCM:` and `stdin`.
pub fn mit(conf: &Path, uid: Option<u32>, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = as_uid(uid, args[0], &args[1..])
        .env("KRB5_CONFIG", conf)
        .env("KRB5CCNAME", "KCM:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running an MIT program");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A program's stdout and stderr, for assertions and their messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A stack with the KDC, its KCM daemon and the krb5.conf pointing at it; `None` after a loud
/// skip when KVM or the KDC is missing.
pub fn kcm_stack(test: &str) -> Option<(TestKdc, Stack, PathBuf)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let kdc = TestKdc::start(test)?;
    let (stack, conf) = kcm_stack_via(test, &kdc, kdc.get("KDC"));
    Some((kdc, stack, conf))
}

/// A stack whose enclave reaches `kdc` at `kdc_addr` (the KDC itself, or a relay in front of
/// it), with its KCM daemon and the krb5.conf pointing at it. MIT's programs get the KDC's
/// address from that krb5.conf, but with a KCM cache they never need it.
pub fn kcm_stack_via(test: &str, kdc: &TestKdc, kdc_addr: &str) -> (Stack, PathBuf) {
    kcm_stack_configured(test, kdc, &format!("[kerberos]\ndefault_kdc = \"{kdc_addr}\"\n"))
}

/// As [`kcm_stack`], with the realm's kpasswd server (the test KDC's kadmind) in the realm table.
pub fn kcm_stack_with_kpasswd(test: &str) -> Option<(TestKdc, Stack, PathBuf)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let kdc = TestKdc::start(test)?;
    let config = format!(
        "[kerberos]\ndefault_kdc = \"{}\"\n[kerberos.realms.\"{}\"]\nkpasswd = [\"{}\"]\n",
        kdc.get("KDC"),
        kdc.get("REALM"),
        kdc.get("KPASSWD")
    );
    let (stack, conf) = kcm_stack_configured(test, &kdc, &config);
    Some((kdc, stack, conf))
}

/// A stack with `config`, its KCM daemon and the krb5.conf pointing at it.
pub fn kcm_stack_configured(test: &str, kdc: &TestKdc, config: &str) -> (Stack, PathBuf) {
    let mut stack = Stack::start(&test.replace('_', "-"), config);
    stack.wait_ready();
    let socket = stack.start_kcm();
    let conf = kcm_krb5_conf(kdc, &stack, &socket);
    (stack, conf)
}

/// Logs `alice` on (as `uid`, or as this process) with `credguardctl logon`, which makes the
/// session that uid's default, the one its KCM cache shows; returns the session id.
pub fn logon(stack: &Stack, kdc: &TestKdc, uid: Option<u32>) -> String {
    let (code, out, err) = stack.ctl(
        uid,
        &["logon", "alice", "--realm", kdc.get("REALM")],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "logon: {err}");
    let out = json(&out);
    assert_eq!(out["default"], true, "a logon becomes the uid's default session");
    out["session_id"].as_str().unwrap().to_string()
}
