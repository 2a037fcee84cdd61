//! MIT krb5's own programs (`klist`, `kvno`, `kdestroy`, `kinit`) and Python `gssapi` with
//! `KRB5CCNAME=KCM:` and `kcm_socket` pointing at credguard-kcm.
//!
//! - [`daemon_binary_serves_klist_kvno_kdestroy`] runs the shipped `credguard-kcm` binary, started
//!   by `systemd-socket-activate` as `credguard-kcm.socket` would (fd 3), in front of a stand-in
//!   proxy (`support::FakeLsa`: the real one needs the enclave VM and does not honour
//!   on-behalf-of calls yet). Its tickets are well-formed DER that no key opens: enough for
//!   `kvno` and `klist`, not for a service.
//! - [`real_kdc_tickets_for_kvno_and_gssapi`] serves the daemon's core in this process over a
//!   backend that gets real tickets from the test MIT KDC (`scripts/test-kdc.sh`) with MIT's
//!   `kvno` and a TGT in a file only this test reads — the stand-in for the enclave — so that MIT's
//!   GSS initiator makes a context a real acceptor accepts, with nothing but the KCM cache.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use credguard_kcm::backend::{Backend, BackendError, DefaultSession, TgtTimes};
use credguard_kcm::ccache::CcacheFile;
use credguard_kcm::server::{self, KcmServer, ServerConfig};
use support::{FakeLsa, FakeSession, TempDir, have_python_gssapi, have_tools, krb5_conf, my_uid, on_path, run, text};

/// A child process killed when dropped (only the one this test started).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An MIT tool with the KCM cache of `conf`.
fn mit(tool: &str, conf: &Path) -> Command {
    let mut c = Command::new(tool);
    c.env("KRB5_CONFIG", conf)
        .env("KRB5CCNAME", "KCM:")
        .env_remove("KRB5_KTNAME")
        .env_remove("KRB5_CLIENT_KTNAME")
        .stdin(Stdio::null());
    c
}

/// Starts the shipped binary on `socket` in front of the API at `api`: through
/// `systemd-socket-activate` (fd 3, as the systemd unit does) when it is installed, else on a
/// socket it binds itself.
fn start_daemon(socket: &Path, api: &Path) -> Daemon {
    let bin = env!("CARGO_BIN_EXE_credguard-kcm");
    let mut cmd = if on_path("systemd-socket-activate") {
        let mut c = Command::new("systemd-socket-activate");
        c.arg("-l").arg(socket).arg(bin);
        c
    } else {
        let mut c = Command::new(bin);
        c.arg("--socket").arg(socket);
        c
    };
    cmd.arg("--api-socket").arg(api).arg("--verbose").stdin(Stdio::null());
    let child = cmd.spawn().expect("starting credguard-kcm");
    let daemon = Daemon(child);
    for _ in 0..500 {
        if socket.exists() {
            return daemon;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", socket.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_binary_serves_klist_kvno_kdestroy() {
    let test = "daemon_binary_serves_klist_kvno_kdestroy";
    if !have_tools(test, &["klist", "kvno", "kdestroy"]) {
        return;
    }
    let dir = TempDir::new("binary");
    let uid = my_uid();
    let lsa = FakeLsa::default();
    {
        let mut st = lsa.state.lock().unwrap();
        st.sessions = vec![FakeSession {
            session_id: "s-alice".into(),
            uid,
            user: "alice".into(),
            realm: "EXAMPLE.TEST".into(),
            is_default: true,
        }];
        st.unknown_spns = vec!["HTTP/nosuch.example.test".into()];
    }
    let api = dir.join("lsa.sock");
    lsa.serve(&api);
    let socket = dir.join("kcm.sock");
    let _daemon = start_daemon(&socket, &api);
    let conf = dir.join("krb5.conf");
    krb5_conf(&conf, &socket, "EXAMPLE.TEST", "");

    // klist: the principal and the keyless TGT entry, no TGT on the host.
    let out = run(mit("klist", &conf)).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(listing.contains(&format!("Ticket cache: KCM:{uid}")), "{listing}");
    assert!(listing.contains("Default principal: alice@EXAMPLE.TEST"), "{listing}");
    assert!(listing.contains("krbtgt/EXAMPLE.TEST@EXAMPLE.TEST"), "{listing}");
    assert!(!listing.contains("HTTP/"), "{listing}");

    // kvno: a ticket from credguard.
    let mut kvno = mit("kvno", &conf);
    kvno.arg("HTTP/web.example.test");
    let out = run(kvno).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("HTTP/web.example.test@EXAMPLE.TEST: kvno = 3"),
        "{}",
        text(&out)
    );
    let out = run(mit("klist", &conf)).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listing.contains("HTTP/web.example.test@EXAMPLE.TEST"), "{listing}");
    assert!(listing.contains("krbtgt/EXAMPLE.TEST@EXAMPLE.TEST"), "{listing}");
    // Cached: kvno again asks the proxy nothing.
    let mut kvno = mit("kvno", &conf);
    kvno.arg("HTTP/web.example.test");
    assert!(run(kvno).await.status.success());
    assert_eq!(lsa.count("KerberosGetServiceTicket"), 1);

    // The collection as klist -l and -A walk it (GET_CACHE_UUID_LIST, GET_CACHE_BY_UUID).
    let mut klist = mit("klist", &conf);
    klist.arg("-l");
    let out = run(klist).await;
    let caches = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        caches.contains("alice@EXAMPLE.TEST") && caches.contains(&format!("KCM:{uid}")),
        "{caches}"
    );
    let mut klist = mit("klist", &conf);
    klist.arg("-A");
    let out = run(klist).await;
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(all.contains("HTTP/web.example.test@EXAMPLE.TEST"), "{all}");

    // kvno krbtgt/REALM: refused.
    let mut kvno = mit("kvno", &conf);
    kvno.arg("krbtgt/EXAMPLE.TEST");
    let out = run(kvno).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Matching credential not found"),
        "{}",
        text(&out)
    );
    // A service the KDC does not know: MIT's own message.
    let mut kvno = mit("kvno", &conf);
    kvno.arg("HTTP/nosuch.example.test");
    let out = run(kvno).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Server not found in Kerberos database"),
        "{}",
        text(&out)
    );

    // kdestroy: the fetched tickets go; the session's principal and entry stay.
    let out = run(mit("kdestroy", &conf)).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = run(mit("klist", &conf)).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listing.contains("Default principal: alice@EXAMPLE.TEST"), "{listing}");
    assert!(!listing.contains("HTTP/web.example.test"), "{listing}");

    // Every call to the proxy named this uid.
    let calls = lsa.state.lock().unwrap().calls.clone();
    let me = uid.to_string();
    assert!(
        calls.iter().all(|(_, u)| u.as_deref() == Some(me.as_str())),
        "{calls:?}"
    );
}

/// Stands in for the enclave: a TGT in a file only this test reads, and MIT's `kvno` to get a
/// service ticket with it. The daemon sees only what the proxy would return.
struct KdcBackend {
    uid: u32,
    tgt_cache: PathBuf,
    krb5_config: PathBuf,
}

impl KdcBackend {
    fn tgt_file(&self) -> Result<CcacheFile, BackendError> {
        let bytes = std::fs::read(&self.tgt_cache).map_err(|e| BackendError::BadReply(e.to_string()))?;
        CcacheFile::parse(&bytes).map_err(|e| BackendError::BadReply(e.to_string()))
    }
}

impl Backend for KdcBackend {
    async fn default_session(&self, uid: u32) -> Result<Option<DefaultSession>, BackendError> {
        if uid != self.uid {
            return Ok(None);
        }
        let file = self.tgt_file()?;
        let tgt = file.credentials.iter().find(|c| c.is_tgt()).map(|t| TgtTimes {
            start: i64::from(t.times.starttime),
            end: i64::from(t.times.endtime),
            renew_till: i64::from(t.times.renew_till),
            enctype: t.key.enctype,
        });
        Ok(Some(DefaultSession {
            session_id: "kdc".into(),
            client_principal: file.principal.to_string(),
            realm: file.principal.realm.clone(),
            tgt,
        }))
    }

    async fn service_ticket(&self, _uid: u32, _session: &str, spn: &str) -> Result<Vec<u8>, BackendError> {
        let mut kvno = Command::new("kvno");
        kvno.arg("-c")
            .arg(&self.tgt_cache)
            .arg(spn)
            .env("KRB5_CONFIG", &self.krb5_config);
        let out = run(kvno).await;
        if !out.status.success() {
            return Err(BackendError::Rpc {
                call: "kvno",
                code: tonic::Code::NotFound,
                message: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        let file = self.tgt_file()?;
        let cred = file
            .credentials
            .iter()
            .find(|c| !c.is_tgt() && !c.is_config() && c.server.spn() == spn)
            .cloned()
            .ok_or_else(|| BackendError::BadReply(format!("no {spn} in the file")))?;
        CcacheFile {
            principal: file.principal,
            credentials: vec![cred],
        }
        .to_bytes()
        .map_err(|e| BackendError::BadReply(e.to_string()))
    }
}

/// The test KDC, stopped when dropped.
struct Kdc {
    dir: PathBuf,
    env: std::collections::HashMap<String, String>,
}

impl Kdc {
    fn start(dir: &Path) -> Kdc {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-kdc.sh");
        let out = Command::new(script).arg("start").arg(dir).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Kdc {
            dir: dir.to_path_buf(),
            env,
        }
    }

    fn get(&self, k: &str) -> &str {
        &self.env[k]
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-kdc.sh");
        let _ = Command::new(script).arg("stop").arg(&self.dir).output();
    }
}

const GSSAPI_ROUND_TRIP: &str = r#"
import gssapi
target = gssapi.Name('host@svc.credguard.test', gssapi.NameType.hostbased_service)
flags = gssapi.RequirementFlag.mutual_authentication | gssapi.RequirementFlag.confidentiality | gssapi.RequirementFlag.integrity
initiator = gssapi.SecurityContext(name=target, usage='initiate', flags=flags)
acceptor = gssapi.SecurityContext(usage='accept')
reply = acceptor.step(initiator.step())
if not initiator.complete:
    initiator.step(reply)
assert initiator.complete and acceptor.complete
print('initiator', acceptor.initiator_name)
print('unwrapped', acceptor.unwrap(initiator.wrap(b'hello through credguard', True).message).message.decode())
print('back', initiator.unwrap(acceptor.wrap(b'and back', True).message).message.decode())
"#;

#[tokio::test(flavor = "multi_thread")]
async fn real_kdc_tickets_for_kvno_and_gssapi() {
    let test = "real_kdc_tickets_for_kvno_and_gssapi";
    if !have_tools(
        test,
        &["krb5kdc", "kdb5_util", "kadmin.local", "kinit", "kvno", "klist"],
    ) || !have_python_gssapi(test)
    {
        return;
    }
    let dir = TempDir::new("kdc");
    let kdc = Kdc::start(&dir.join("kdc"));
    let realm = kdc.get("REALM").to_string();
    let kdc_conf = PathBuf::from(kdc.get("KRB5_CONFIG"));

    // The stand-in enclave's TGT, in a file the KCM clients never see.
    let tgt_cache = dir.join("enclave-tgt.ccache");
    let mut kinit = Command::new("kinit");
    kinit
        .arg("-c")
        .arg(&tgt_cache)
        .arg(format!("alice@{realm}"))
        .env("KRB5_CONFIG", &kdc_conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = kinit.spawn().unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{}", kdc.get("PASSWORD")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let socket = dir.join("kcm.sock");
    let listener = server::bind_socket(&socket).unwrap();
    let backend = KdcBackend {
        uid: my_uid(),
        tgt_cache: tgt_cache.clone(),
        krb5_config: kdc_conf.clone(),
    };
    let kcm = KcmServer::new(backend, ServerConfig::default());
    tokio::spawn(kcm.serve(listener, std::future::pending()));
    let conf = dir.join("krb5.conf");
    let kdc_sections = std::fs::read_to_string(&kdc_conf).unwrap();
    let rest = kdc_sections
        .split_once("[realms]")
        .map(|(_, r)| format!("[realms]{r}"))
        .unwrap();
    krb5_conf(&conf, &socket, &realm, &rest);

    // kvno through KCM: a real ticket, no TGT anywhere the client can read.
    let spn = kdc.get("SPN").to_string();
    let mut kvno = mit("kvno", &conf);
    kvno.arg(&spn);
    let out = run(kvno).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{spn}@{realm}: kvno = ")),
        "{}",
        text(&out)
    );
    let out = run(mit("klist", &conf)).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains(&format!("Default principal: alice@{realm}")),
        "{listing}"
    );
    assert!(listing.contains(&format!("krbtgt/{realm}@{realm}")), "{listing}");
    assert!(listing.contains(&format!("{spn}@{realm}")), "{listing}");
    eprintln!("klist through KCM:\n{listing}");

    // MIT's GSS initiator with only the KCM cache; MIT's acceptor with the service's keytab.
    let mut py = mit("python3", &conf);
    py.args(["-c", GSSAPI_ROUND_TRIP]).env("KRB5_KTNAME", kdc.get("KEYTAB"));
    let out = run(py).await;
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("python gssapi through KCM:\n{said}");
    assert!(said.contains(&format!("initiator alice@{realm}")), "{said}");
    assert!(said.contains("unwrapped hello through credguard"), "{said}");
    assert!(said.contains("back and back"), "{said}");

    // kvno krbtgt/REALM through KCM: refused, though a real KDC is there.
    let mut kvno = mit("kvno", &conf);
    kvno.arg(format!("krbtgt/{realm}"));
    let out = run(kvno).await;
    assert!(!out.status.success(), "{}", text(&out));

    // kinit into KCM: the KDC gives a TGT, the daemon refuses to keep it.
    let mut kinit = mit("kinit", &conf);
    kinit
        .arg(format!("alice@{realm}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = kinit.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", kdc.get("PASSWORD")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Credentials cache permissions incorrect"),
        "{}",
        text(&out)
    );
    let out = run(mit("klist", &conf)).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains(&format!("{spn}@{realm}")),
        "the refused kinit changed nothing: {listing}"
    );
}
