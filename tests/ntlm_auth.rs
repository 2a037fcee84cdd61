//! `credguard-ntlm-auth` end to end, with the real enclave under KVM, the VMM and the proxy:
//!
//! - the helper driven line by line as Samba's `ntlm_auth` callers drive it (`YR`, `TT` with a
//!   real CHALLENGE from pyspnego, `KK` back and accepted by pyspnego), every malformed line and
//!   message answered `BH` while the helper goes on, and the session rules (the caller's default
//!   session, `CREDGUARD_SESSION`, `--username`, another uid);
//! - `curl --ntlm-wb` (Debian 12's curl 7.88) against a small HTTP server on loopback that
//!   demands NTLM and checks the AUTHENTICATE with pyspnego: 200 with the right credentials, 401
//!   otherwise and after logoff. curl runs the helper from the path compiled into it,
//!   `/usr/bin/ntlm_auth` (`NTLM_WB_FILE`; `lib/curl_ntlm_wb.c` reads no environment variable
//!   or PATH for it outside curl's debug builds), so the test puts the helper there in a private
//!   mount namespace (`unshare -m`): bound over Samba's helper if one is installed, else through
//!   a read-only overlay of `/usr/bin`. The host's `/usr/bin` is untouched.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::Engine;
use support::pyspnego::{Acceptor, TARGET_INFO, crafted_challenge, hex, pyspnego_or_skip};
use support::{Stack, json, kvm_or_skip, ntlm_auth_bin};

fn b64(m: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(m)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// UNICODE | NTLM | SIGN | SEAL | ALWAYS_SIGN | TARGET_INFO | 128 | KEY_EXCH: no extended session
/// security, so an NTLMv1-only CHALLENGE.
const NTLMV1_FLAGS: u32 = 0x0000_0001 | 0x0200 | 0x10 | 0x20 | 0x8000 | 0x0080_0000 | 0x2000_0000 | 0x4000_0000;

/// The helper as a caller runs it: its standard input and output are the line protocol.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    /// Runs the helper as `uid` with `args`, pointed at the stack's API, with `session` as
    /// `CREDGUARD_SESSION`.
    fn start(stack: &Stack, uid: u32, args: &[&str], session: Option<&str>) -> Helper {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ])
        .arg(ntlm_auth_bin())
        .args(args)
        .env("CREDGUARD_SOCKET", &stack.api)
        .env_remove("CREDGUARD_SESSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        if let Some(s) = session {
            cmd.env("CREDGUARD_SESSION", s);
        }
        let mut child = cmd.spawn().expect("starting credguard-ntlm-auth");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Helper { child, stdin, stdout }
    }

    /// Sends one request line (raw bytes) and returns the reply line.
    fn say(&mut self, line: &[u8]) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        assert!(reply.ends_with('\n'), "one whole line per request: {reply:?}");
        reply.trim_end().to_string()
    }

    /// `YR`, then `TT` with the acceptor's CHALLENGE; returns the acceptor's verdict on the `KK`.
    fn exchange(&mut self, users: &Path) -> String {
        let yr = self.say(b"YR");
        let negotiate = unb64(yr.strip_prefix("YR ").unwrap_or_else(|| panic!("{yr}")));
        let mut acceptor = Acceptor::start(users, b"");
        let challenge = hex::decode(acceptor.exchange(&negotiate)).unwrap();
        let kk = self.say(format!("TT {}", b64(&challenge)).as_bytes());
        let authenticate = unb64(kk.strip_prefix("KK ").unwrap_or_else(|| panic!("{kk}")));
        acceptor.exchange(&authenticate)
    }

    /// Closes its input: it must exit cleanly, having written nothing more.
    fn finish(mut self) {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "nothing after the last reply");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs `user` on as `uid` with `password` (and `extra` arguments); returns the session id.
fn logon(stack: &Stack, uid: u32, user: &str, password: &str, extra: &[&str]) -> String {
    let mut args = vec!["logon", user, "--domain", "CORP"];
    args.extend_from_slice(extra);
    let (code, out, err) = stack.ctl(Some(uid), &args, &format!("{password}\n"));
    assert_eq!(code, 0, "{err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

const CLIENT_ARGS: [&str; 3] = ["--helper-protocol", "ntlmssp-client-1", "--use-cached-creds"];

#[test]
fn the_helper_speaks_ntlmssp_client_1_line_by_line() {
    let test = "the_helper_speaks_ntlmssp_client_1_line_by_line";
    if !kvm_or_skip(test) || !pyspnego_or_skip(test) {
        return;
    }
    let stack = Stack::start("ntlm-auth-lines", "");
    stack.wait_ready();
    let users = stack.dir.join("ntlm-users");
    std::fs::write(&users, "CORP:alice:Alice-Passw0rd\nCORP:bob:Bob-Passw0rd\n").unwrap();
    let uid = 64220;
    let alice_args = [&CLIENT_ARGS[..], &["--username", "alice", "--domain", "CORP"]].concat();
    let mut h = Helper::start(&stack, uid, &alice_args, None);

    // No session yet: BH, and the helper goes on.
    let r = h.say(b"YR");
    assert!(r.starts_with("BH you have no credguard logon session"), "{r}");
    logon(&stack, uid, "alice", "Alice-Passw0rd", &[]);
    let verdict = h.exchange(&users);
    assert!(verdict.starts_with("ACCEPTED "), "{verdict}");
    let r = h.say(b"GF");
    assert!(r.starts_with("GF 0x") && r.len() == 13, "{r}");
    malformed_lines_get_bh(&mut h, &users);
    // After all of it, the helper still answers: a whole exchange, then a clean exit at EOF.
    let verdict = h.exchange(&users);
    assert!(verdict.starts_with("ACCEPTED "), "{verdict}");
    h.finish();

    sessions_are_chosen_by_the_rules(&stack, uid, &users);
}

/// Each bad line or message gets `BH <reason>`; the reasons say what was wrong.
fn malformed_lines_get_bh(h: &mut Helper, users: &Path) {
    let good_shape = crafted_challenge(NTLMV1_FLAGS | 0x0008_0000, TARGET_INFO);
    let r = h.say(format!("TT {}", b64(&good_shape)).as_bytes());
    assert!(r.starts_with("BH the exchange is finished"), "{r}");
    assert!(h.say(b"YR").starts_with("YR "));
    let mut negotiate_type = good_shape.clone();
    negotiate_type[8] = 1;
    let long = vec![b'A'; 200_000];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"TT !!!not base64!!!".to_vec(), "not base64"),
        (
            format!("TT {}", b64(b"hello, not NTLM")).into_bytes(),
            "not an NTLM message",
        ),
        (
            format!("TT {}", b64(&negotiate_type)).into_bytes(),
            "is not a CHALLENGE",
        ),
        (b"TT".to_vec(), "needs a base64"),
        (vec![b'T', b'T', b' ', 0xff, 0xfe], "not UTF-8"),
        ([b"TT ".as_slice(), &long].concat(), "longer than"),
        (b"".to_vec(), "unknown request"),
        (b"HELLO".to_vec(), "unknown request"),
        (b"PW QWxpY2UtUGFzc3cwcmQ=".to_vec(), "takes no password"),
        (b"GK".to_vec(), "session keys"),
        (b"YR extra".to_vec(), "no argument"),
        (b"KK AAAA".to_vec(), "not a request"),
    ];
    for (line, says) in &cases {
        let r = h.say(line);
        assert!(
            r.starts_with("BH ") && r.contains(says),
            "{:.40?}: {r}",
            String::from_utf8_lossy(line)
        );
    }
    // The context survived those (none reached the enclave): the enclave refuses an NTLMv1-only
    // CHALLENGE by its rule, which uses the context up.
    let v1 = crafted_challenge(NTLMV1_FLAGS, TARGET_INFO);
    let r = h.say(format!("TT {}", b64(&v1)).as_bytes());
    assert!(r.starts_with("BH ") && r.contains("NTLMv2-only rule"), "{r}");
    let r = h.say(format!("TT {}", b64(&good_shape)).as_bytes());
    assert!(r.starts_with("BH no NTLM exchange in progress"), "{r}");
    // A CHALLENGE-shaped message the enclave finds malformed: its reason, through the API.
    assert!(h.say(b"YR").starts_with("YR "));
    let mut far = good_shape.clone();
    far[44..48].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let r = h.say(format!("TT {}", b64(&far)).as_bytes());
    assert!(r.starts_with("BH credguard NtlmAuthenticate: InvalidArgument"), "{r}");
    // And the acceptor rejects an AUTHENTICATE of the wrong password (the check is real).
    let wrong = users.with_extension("wrong");
    std::fs::write(&wrong, "CORP:alice:Not-Alice-Passw0rd\n").unwrap();
    let verdict = h.exchange(&wrong);
    assert!(verdict.starts_with("REJECTED"), "{verdict}");
}

/// The default session of the helper's own uid answers, or the one `CREDGUARD_SESSION` names;
/// `--username` must name its user; another uid's sessions never answer.
fn sessions_are_chosen_by_the_rules(stack: &Stack, uid: u32, users: &Path) {
    // Bob's session, not the default (Alice's stays it).
    let bob = logon(stack, uid, "bob", "Bob-Passw0rd", &["--no-default"]);
    let bob_args = [&CLIENT_ARGS[..], &["--username=bob", "--domain=corp"]].concat();
    let mut h = Helper::start(stack, uid, &bob_args, None);
    let r = h.say(b"YR");
    assert!(r.starts_with("BH --username does not match"), "{r}");
    h.finish();
    let mut h = Helper::start(stack, uid, &bob_args, Some(&bob));
    let verdict = h.exchange(users);
    assert!(verdict.starts_with("ACCEPTED "), "{verdict}");
    h.finish();
    // `DOMAIN\user` names the domain too (winbind's form of a Unix user name, as Firefox passes
    // $USER).
    let mut h = Helper::start(
        stack,
        uid,
        &[&CLIENT_ARGS[..], &["--username", "CORP\\alice"]].concat(),
        None,
    );
    assert!(h.exchange(users).starts_with("ACCEPTED "));
    h.finish();
    // Another uid: none of these sessions is its own, named or not.
    let other = uid + 1;
    for session in [None, Some(bob.as_str())] {
        let mut h = Helper::start(stack, other, &CLIENT_ARGS, session);
        let r = h.say(b"YR");
        assert!(
            r.starts_with("BH you have no credguard logon session") || r.starts_with("BH CREDGUARD_SESSION names none"),
            "{r}"
        );
        h.finish();
    }
    // Another helper protocol: BH for every line, never a crash.
    let mut h = Helper::start(stack, uid, &["--helper-protocol=squid-2.5-ntlmssp"], None);
    for line in [&b"YR"[..], b"KK AAAA"] {
        let r = h.say(line);
        assert!(r.starts_with("BH credguard-ntlm-auth speaks only"), "{r}");
    }
    h.finish();
}

// ----- curl --ntlm-wb -----

/// Whether this machine's curl has NTLM_WB, and we are root (for the mount namespace); a loud
/// skip otherwise, or a failure with CREDGUARD_REQUIRE_TOOLS=1.
fn curl_ntlm_wb_or_skip(test: &str) -> bool {
    let features = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let has_wb = features
        .lines()
        .any(|l| l.starts_with("Features:") && l.split_whitespace().any(|f| f == "NTLM_WB"));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_wb && root && unshare {
        return true;
    }
    let why = format!("curl with NTLM_WB: {has_wb}, root: {root}, unshare: {unshare}");
    assert!(
        std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{test}: {why}, and CREDGUARD_REQUIRE_TOOLS=1"
    );
    eprintln!("!!! SKIPPED {test}: {why}");
    false
}

/// The Python HTTP server that demands NTLM (tests/python/ntlm_http_server.py).
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(users: &Path) -> HttpServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ntlm_http_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("NTLM_USER_FILE", users)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the HTTP server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the server said {line:?}"));
        // Its verdict lines are not needed: curl gets each in the body.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts the helper at /usr/bin/ntlm_auth for this process tree only, then runs curl as `$2`.
const IN_PRIVATE_MOUNTS: &str = r#"set -e
helper="$1"; uid="$2"; shift 2
if [ -e /usr/bin/ntlm_auth ]; then
  mount --bind "$helper" /usr/bin/ntlm_auth
else
  mount -t overlay overlay -o "lowerdir=$(dirname "$helper"):/usr/bin" /usr/bin
fi
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups curl "$@"
"#;

/// `curl --ntlm-wb -u USER: URL` as `uid`, with the helper as its ntlm_auth, pointed at the
/// stack's API; returns (HTTP status, body).
fn curl(stack: &Stack, helper: &Path, uid: u32, user: &str, port: u16) -> (String, String) {
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", IN_PRIVATE_MOUNTS, "sh"])
        .arg(helper)
        .arg(uid.to_string())
        .args(["-q", "-s", "-S", "--ntlm-wb", "-u"])
        .arg(format!("{user}:"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .env("CREDGUARD_SOCKET", &stack.api)
        .env_remove("CREDGUARD_SESSION")
        .output()
        .expect("running unshare and curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl as {user}: {}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.to_string(), body.trim().to_string())
}

/// The helper in a directory of its own, named `ntlm_auth` (a link: any uid can run it).
fn helper_named_ntlm_auth(dir: &Path) -> PathBuf {
    let d = dir.join("ntlm-auth-helper");
    std::fs::create_dir_all(&d).unwrap();
    let link = d.join("ntlm_auth");
    std::os::unix::fs::symlink(ntlm_auth_bin(), &link).unwrap();
    link
}

#[test]
fn curl_ntlm_wb_signs_on_through_the_helper() {
    let test = "curl_ntlm_wb_signs_on_through_the_helper";
    if !kvm_or_skip(test) || !pyspnego_or_skip(test) || !curl_ntlm_wb_or_skip(test) {
        return;
    }
    let samba_helper = Path::new("/usr/bin/ntlm_auth").exists();
    let stack = Stack::start("ntlm-auth-curl", "[ntlm]\nworkstation = \"CURL-WS\"\n");
    stack.wait_ready();
    let users = stack.dir.join("ntlm-users");
    std::fs::write(&users, "CORP:alice:Alice-Passw0rd\n").unwrap();
    let server = HttpServer::start(&users);
    let helper = helper_named_ntlm_auth(&stack.dir);
    let uid = 64230;
    let session = logon(&stack, uid, "alice", "Alice-Passw0rd", &[]);

    // The right credentials: 200, for the account and workstation the server verified.
    for user in ["CORP\\alice", "alice"] {
        let (code, body) = curl(&stack, &helper, uid, user, server.port);
        assert_eq!(
            (code.as_str(), body.as_str()),
            ("200", "ACCEPTED CORP\\alice workstation=CURL-WS"),
            "{user}"
        );
    }
    // Another account asked for: the helper refuses it, the server never sees an AUTHENTICATE.
    let (code, body) = curl(&stack, &helper, uid, "bob", server.port);
    assert_eq!(code, "401", "{body}");
    // The server's account has another password: the server rejects the AUTHENTICATE.
    std::fs::write(&users, "CORP:alice:Not-Alice-Passw0rd\n").unwrap();
    let (code, body) = curl(&stack, &helper, uid, "alice", server.port);
    assert_eq!(code, "401", "{body}");
    assert!(body.starts_with("REJECTED"), "{body}");
    std::fs::write(&users, "CORP:alice:Alice-Passw0rd\n").unwrap();
    assert_eq!(curl(&stack, &helper, uid, "alice", server.port).0, "200");

    // After logoff: no session, no sign-on.
    let (code, _, err) = stack.ctl(Some(uid), &["logoff", &session], "");
    assert_eq!(code, 0, "{err}");
    let (code, body) = curl(&stack, &helper, uid, "alice", server.port);
    assert_eq!(code, "401", "{body}");
    assert!(!body.starts_with("ACCEPTED"), "{body}");
    // The host's /usr/bin is as it was.
    assert_eq!(Path::new("/usr/bin/ntlm_auth").exists(), samba_helper);
}
