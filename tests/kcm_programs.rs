//! Programs users already run, unchanged, use the enclave through credguard-kcm: each test sets
//! nothing but `KRB5CCNAME=KCM:` and a krb5.conf naming the daemon's socket, against the test MIT
//! KDC, with the real stack (enclave under KVM, proxy, KCM daemon) and no TGT on the host.
//!
//! - `curl --negotiate -u :` gets 200 from Apache with `mod_auth_gssapi` (Debian's packages, our
//!   own configuration in a temporary directory, on loopback), which logs alice as the user; a
//!   uid without a credguard session gets 401.
//! - MIT's GSS-API initiator through Python `gssapi`, in its own process, makes a context that
//!   MIT's acceptor (another Python process with the service's keytab) accepts; each side
//!   unwraps the other's sealed message.
//! - That client process, kept alive with its context, is scanned: no TGT session key, no
//!   long-term key and no password of alice's anywhere in its memory (nor in the KCM daemon's),
//!   while the service ticket's session key is found in both (the scan can find a key there).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use support::kcm::{kcm_stack, kcm_stack_via, logon, mit, text};
use support::kdc::{TestKdc, tools_missing};
use support::kdc_relay::{KdcRelay, service_session_key, tgt_session_key};
use support::memory::{assert_no_secrets, assert_scanner_sees, utf16le};
use support::{kvm_or_skip, retry, temp_dir};

/// Debian's Apache and where its modules are.
const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// The unprivileged uid Apache serves as (nobody).
const APACHE_UID: u32 = 65534;
/// The web service's host name, as curl asks for it (`--resolve` maps it to 127.0.0.1).
const WEB_HOST: &str = "web.credguard.test";
/// What the protected page says.
const PAGE: &str = "credguard-kcm let you in";
/// A uid with no credguard session.
const NO_SESSION_UID: u32 = 4399;

/// Whether Apache with `mod_auth_gssapi` and a curl with GSS-API can run here; a loud skip
/// otherwise, or a failure with CREDGUARD_REQUIRE_TOOLS=1.
fn have_apache_and_curl(test: &str) -> bool {
    let gssapi_module = Path::new(APACHE_MODULES).join("mod_auth_gssapi.so");
    let curl = Command::new("curl").arg("--version").output();
    let curl_features = curl
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let missing = if !Path::new(APACHE).exists() {
        "apache2 is missing (apt-get install apache2)"
    } else if !gssapi_module.exists() {
        "mod_auth_gssapi is missing (apt-get install libapache2-mod-auth-gssapi)"
    } else if !(curl_features.contains("GSS-API") && curl_features.contains("SPNEGO")) {
        "curl with GSS-API and SPNEGO is missing (apt-get install curl)"
    } else {
        return true;
    };
    tools_missing(test, missing);
    false
}

/// Whether Python's `gssapi` imports; a loud skip otherwise, or a failure with
/// CREDGUARD_REQUIRE_TOOLS=1.
fn have_python_gssapi(test: &str) -> bool {
    let have = Command::new("python3").args(["-c", "import gssapi"]).output();
    if matches!(have, Ok(o) if o.status.success()) {
        return true;
    }
    tools_missing(test, "python3 gssapi is missing (pip install gssapi)");
    false
}

/// Apache in the foreground (`-X`) with only our configuration: its own directory, a loopback
/// port, `mod_auth_gssapi` with the web service's keytab guarding the one page. Stopped when
/// dropped.
struct Apache {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Apache {
    fn start(test: &str, kdc: &TestKdc) -> Apache {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir(&format!("apache-{test}"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let htdocs = dir.join("htdocs");
        std::fs::create_dir(&htdocs).unwrap();
        std::fs::write(htdocs.join("index.html"), format!("{PAGE}\n")).unwrap();
        // Read by the worker, which serves as nobody: a copy only nobody reads.
        let keytab = dir.join("http.keytab");
        std::fs::copy(kdc.get("HTTP_KEYTAB"), &keytab).unwrap();
        std::os::unix::fs::chown(&keytab, Some(APACHE_UID), Some(APACHE_UID)).unwrap();
        std::fs::set_permissions(&keytab, std::fs::Permissions::from_mode(0o400)).unwrap();
        let port = free_port();
        let conf = dir.join("httpd.conf");
        std::fs::write(&conf, apache_conf(&dir, port, &keytab)).unwrap();
        let child = Command::new(APACHE)
            .arg("-X")
            .arg("-f")
            .arg(&conf)
            // The acceptor needs no KDC, only the realm's settings; no replay cache in /var/tmp.
            .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
            .env("KRB5RCACHETYPE", "none")
            .env_remove("KRB5CCNAME")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("starting apache2");
        let mut apache = Apache { child, dir, port };
        retry(Duration::from_secs(20), || {
            if let Ok(Some(status)) = apache.child.try_wait() {
                panic!("apache2 exited ({status}): {}", apache.logs());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
        });
        apache
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Its error log and stderr, for failure messages.
    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// `curl --negotiate -u :` of the page, as `uid` (or as this process), with only the KCM
    /// cache; returns (HTTP status, body, curl's whole output).
    fn curl(&self, conf: &Path, uid: Option<u32>) -> (String, String, String) {
        let resolve = format!("{WEB_HOST}:{}:127.0.0.1", self.port);
        let url = format!("http://{WEB_HOST}:{}/", self.port);
        let out = mit(
            conf,
            uid,
            &[
                "curl",
                "-sS",
                "--negotiate",
                "-u",
                ":",
                "--max-time",
                "60",
                "--resolve",
                &resolve,
                "-w",
                "\n%{http_code}",
                &url,
            ],
            "",
        );
        assert!(out.status.success(), "curl: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.to_string(), body.to_string(), text(&out))
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port free on loopback right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The whole configuration: nothing from /etc/apache2, the modules it needs and no more.
fn apache_conf(dir: &Path, port: u16, keytab: &Path) -> String {
    let dir = dir.display();
    let keytab = keytab.display();
    let modules = [
        "mpm_prefork",
        "authn_core",
        "authz_core",
        "authz_user",
        "dir",
        "auth_gssapi",
    ]
    .iter()
    .map(|m| format!("LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"))
    .collect::<String>();
    format!(
        r#"ServerRoot "{dir}"
Listen 127.0.0.1:{port}
ServerName {WEB_HOST}
User #{APACHE_UID}
Group #{APACHE_UID}
PidFile "{dir}/httpd.pid"
DefaultRuntimeDir "{dir}"
ErrorLog "{dir}/error.log"
LogLevel info
LogFormat "%h %u \"%r\" %>s" credguard
CustomLog "{dir}/access.log" credguard
{modules}DocumentRoot "{dir}/htdocs"
DirectoryIndex index.html
<Directory "{dir}/htdocs">
  AuthType GSSAPI
  AuthName "credguard"
  GssapiCredStore keytab:{keytab}
  GssapiAllowedMech krb5
  Require valid-user
</Directory>
"#
    )
}

#[test]
fn curl_negotiate_gets_200_from_apache_mod_auth_gssapi_through_kcm() {
    let test = "kcm_curl_apache";
    if !have_apache_and_curl(test) {
        return;
    }
    let Some((kdc, stack, conf)) = kcm_stack(test) else {
        return;
    };
    let apache = Apache::start(test, &kdc);
    logon(&stack, &kdc, None);

    // A uid without a credguard session has no credentials: curl gets no further than the
    // challenge.
    let (code, _, said) = apache.curl(&conf, Some(NO_SESSION_UID));
    assert_eq!(code, "401", "a uid without a session: {said}\n{}", apache.logs());

    let (code, body, said) = apache.curl(&conf, None);
    assert_eq!(code, "200", "curl: {said}\n{}", apache.logs());
    assert_eq!(body.trim(), PAGE, "{said}");
    // Apache authenticated alice by her service ticket; the other request stayed anonymous.
    // (Apache logs a request after its response is sent: wait for the line.)
    let authenticated = "alice@CREDGUARD.TEST \"GET / HTTP/1.1\" 200";
    let anonymous = "127.0.0.1 - \"GET / HTTP/1.1\" 401";
    let log = support::retry(std::time::Duration::from_secs(10), || {
        let log = apache.access_log();
        if log.contains(authenticated) && log.contains(anonymous) {
            Ok(log)
        } else {
            Err(log)
        }
    });
    assert!(log.contains(authenticated), "{log}");
    // The ticket came through the KCM cache, which the enclave filled: the daemon lists it.
    let listing = text(&mit(&conf, None, &["klist"], ""));
    assert!(
        listing.contains(&format!("{}@CREDGUARD.TEST", kdc.get("HTTP_SPN"))),
        "{listing}"
    );
}

/// One side of a GSS-API conversation (tests/python/gss_kcm_peer.py), driven line by line.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn start(mut cmd: Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running gss_kcm_peer.py");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Peer { child, stdin, lines }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// The next line, which must be `word` or start with `word` and a space; the rest of it.
    fn expect(&mut self, word: &str) -> String {
        let line = self.lines.next().expect("a line from the peer").unwrap();
        match line.strip_prefix(word) {
            Some("") => String::new(),
            Some(rest) if rest.starts_with(' ') => rest[1..].to_string(),
            _ => panic!("expected {word}, the peer said: {line}"),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gss_kcm_peer.py ROLE ARG` with the krb5.conf `conf` and no credentials of the caller's.
fn peer(role: &str, arg: &str, conf: &Path) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{}/tests/python/gss_kcm_peer.py", env!("CARGO_MANIFEST_DIR")))
        .args([role, arg])
        .env("KRB5_CONFIG", conf);
    for var in ["KRB5CCNAME", "KRB5_KTNAME", "KRB5_CLIENT_KTNAME"] {
        cmd.env_remove(var);
    }
    cmd
}

/// A context from an initiator with only `KRB5CCNAME=KCM:` to MIT's acceptor of the service
/// `host/svc.credguard.test` (its keytab, another process), and a sealed message each way.
/// Returns the initiator, still holding its context, waiting for a line to exit.
fn gssapi_through_kcm(kdc: &TestKdc, conf: &Path) -> Peer {
    let mut initiator = peer("initiate", "host@svc.credguard.test", conf);
    initiator.env("KRB5CCNAME", "KCM:");
    let mut initiator = Peer::start(initiator);
    let mut acceptor = peer("accept", kdc.get("KEYTAB"), Path::new(kdc.get("KRB5_CONFIG")));
    acceptor.env("KRB5CCNAME", "FILE:/dev/null");
    let mut acceptor = Peer::start(acceptor);

    let token = initiator.expect("TOKEN");
    acceptor.send(&format!("TOKEN {token}"));
    let accepted = acceptor.expect("ACCEPTED");
    let (who, reply) = accepted.split_once(' ').unwrap();
    assert_eq!(who, "alice@CREDGUARD.TEST", "the acceptor's view of the initiator");
    initiator.send(&format!("TOKEN {reply}"));
    let wrapped = initiator.expect("WRAPPED");
    acceptor.send(&format!("WRAPPED {wrapped}"));
    assert_eq!(
        acceptor.expect("UNWRAPPED"),
        "ping from the initiator through credguard-kcm"
    );
    let wrapped = acceptor.expect("WRAPPED");
    initiator.send(&format!("WRAPPED {wrapped}"));
    assert_eq!(initiator.expect("UNWRAPPED"), "pong from the acceptor");
    initiator
}

/// Lets the initiator end (it has held its context until now) and checks it ended well.
fn finish(mut initiator: Peer) {
    initiator.send("done");
    assert_eq!(initiator.expect("BYE"), "");
    assert!(initiator.child.wait().unwrap().success());
}

#[test]
fn python_gssapi_initiator_through_kcm_is_accepted_by_mit_and_wraps_both_ways() {
    let test = "kcm_python_gssapi";
    if !have_python_gssapi(test) {
        return;
    }
    let Some((kdc, stack, conf)) = kcm_stack(test) else {
        return;
    };
    logon(&stack, &kdc, None);
    finish(gssapi_through_kcm(&kdc, &conf));
    // The initiator's ticket came through the KCM cache; there is no TGT but the keyless entry.
    let listing = text(&mit(&conf, None, &["klist"], ""));
    assert!(listing.contains("host/svc.credguard.test@CREDGUARD.TEST"), "{listing}");
}

#[test]
fn memory_scan_of_a_gssapi_client_through_kcm_finds_no_tgt_key_nor_long_term_secret() {
    let test = "kcm_scan_client";
    if !kvm_or_skip(test) || !have_python_gssapi(test) {
        return;
    }
    let Some(kdc) = TestKdc::start(test) else { return };
    // The enclave reaches the KDC through a relay that keeps the replies, whose keys the test
    // then learns with the long-term keys from kadmin.
    let relay = KdcRelay::start(kdc.get("KDC"));
    let (stack, conf) = kcm_stack_via(test, &kdc, &relay.addr.to_string());
    logon(&stack, &kdc, None);
    let client = gssapi_through_kcm(&kdc, &conf);

    let alice = kdc.long_term_keys("alice");
    let service = kdc.long_term_keys(kdc.get("SPN"));
    let replies = relay.replies.lock().unwrap().clone();
    let tgt_keys: Vec<Vec<u8>> = replies.iter().filter_map(|r| tgt_session_key(r, &alice)).collect();
    let ticket_keys: Vec<Vec<u8>> = replies
        .iter()
        .filter_map(|r| service_session_key(r, &service))
        .collect();
    assert_eq!(tgt_keys.len(), 1, "one AS-REP, decrypted ({} replies)", replies.len());
    assert!(
        !ticket_keys.is_empty(),
        "no TGS-REP for the service ({} replies)",
        replies.len()
    );

    let password = kdc.get("PASSWORD");
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("password (UTF-8)".into(), password.as_bytes().to_vec()),
        ("password (UTF-16LE)".into(), utf16le(password)),
        ("TGT session key".into(), tgt_keys[0].clone()),
    ];
    for (enctype, key) in &alice {
        secrets.push((format!("long-term key (enctype {enctype})"), key.clone()));
    }
    let mut needles: Vec<(&str, Vec<u8>)> = secrets.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    for key in &ticket_keys {
        needles.push(("service ticket session key", key.clone()));
    }
    assert_scanner_sees(&needles);
    let kcm = stack.kcm_pid().expect("the KCM daemon runs");
    for (who, pid) in [("client", client.child.id()), ("KCM daemon", kcm)] {
        let hits = assert_no_secrets(who, pid, &needles, "service ticket session key");
        // The service ticket's key is there: the client made its context with it, the daemon
        // hands it out. So a key in this process is found by this scan.
        assert!(
            hits.iter().any(|h| h.starts_with("service ticket session key at ")),
            "the scanner finds no service ticket session key in the {who}: it proves nothing"
        );
    }
    finish(client);
}
