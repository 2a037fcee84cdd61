//! What the integration tests share: temporary directories, the tool check, a DER ticket, and
//! [`FakeLsa`], a stand-in `credguard.v1.Lsa` server on a Unix socket.
//!
//! The stand-in exists because the real proxy needs the enclave VM and does not honour
//! `credguard-on-behalf-of-uid` yet; it answers only the calls the daemon makes, and records
//! which uid each call was made for.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use credguard_kcm::ccache::{CcacheFile, Credential, Keyblock, NT_PRINCIPAL, NT_SRV_INST, Principal, Times};
use credguard_proto::lsa;
use credguard_proto::lsa::lsa_server::{Lsa, LsaServer};
use tonic::{Request, Response, Status};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory for `test`.
    pub fn new(test: &str) -> Self {
        let d = std::env::temp_dir().join(format!("credguard-kcm-it-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// A path inside.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether every tool is on the PATH (or in /usr/sbin); if not, says SKIPPED (or fails when
/// CREDGUARD_REQUIRE_TOOLS=1).
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{test}: {missing:?} missing and CREDGUARD_REQUIRE_TOOLS=1 (apt-get install krb5-user krb5-kdc krb5-admin-server python3-gssapi systemd)"
    );
    eprintln!("!!! SKIPPED {test}: {missing:?} missing");
    false
}

/// Whether `tool` is on the PATH (or in /usr/sbin).
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin")])
                .any(|d| d.join(tool).is_file())
        })
        .unwrap_or(false)
}

/// Whether Python's `gssapi` module imports.
pub fn have_python_gssapi(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gssapi"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: python3 gssapi missing and CREDGUARD_REQUIRE_TOOLS=1 (apt-get install python3-gssapi)"
        );
        eprintln!("!!! SKIPPED {test}: python3 gssapi missing");
    }
    ok
}

/// Runs `cmd` off the async runtime and returns its output.
pub async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("running a tool"))
        .await
        .unwrap()
}

/// stdout and stderr of `o`, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// This process's uid (what the daemon sees with SO_PEERCRED), from the owner of /proc/self.
pub fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER `Ticket` (RFC 4120) for `server` with key version `kvno` and a dummy cipher: MIT's
/// `kvno` decodes it to print the key version, and nothing can decrypt it.
pub fn der_ticket(server: &Principal, kvno: u8) -> Vec<u8> {
    let names: Vec<u8> = server.components.iter().flat_map(|c| der(0x1b, c.as_bytes())).collect();
    let sname = der(
        0x30,
        &[der(0xa0, &der(0x02, &[2])), der(0xa1, &der(0x30, &names))].concat(),
    );
    let enc_part = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[18])),
            der(0xa1, &der(0x02, &[kvno])),
            der(0xa2, &der(0x04, &[0x5a; 48])),
        ]
        .concat(),
    );
    let body = [
        der(0xa0, &der(0x02, &[5])),
        der(0xa1, &der(0x1b, server.realm.as_bytes())),
        der(0xa2, &sname),
        der(0xa3, &enc_part),
    ]
    .concat();
    der(0x61, &der(0x30, &body))
}

/// A one-ticket v4 ccache as the proxy returns it, for `client` and `spn@realm`.
pub fn service_ccache(client: &str, spn: &str, realm: &str, now: u32) -> Vec<u8> {
    let client = Principal::parse(client, NT_PRINCIPAL).unwrap();
    let server = Principal::parse(&format!("{spn}@{realm}"), NT_SRV_INST).unwrap();
    let cred = Credential {
        client: client.clone(),
        ticket: der_ticket(&server, 3),
        server,
        key: Keyblock {
            enctype: 18,
            key: vec![0x42; 32].into(),
        },
        times: Times {
            authtime: now,
            starttime: now,
            endtime: now + 36_000,
            renew_till: 0,
        },
        is_skey: false,
        flags: 0x0050_0000,
        addresses: Vec::new(),
        authdata: Vec::new(),
        second_ticket: Vec::new(),
    };
    CcacheFile {
        principal: client,
        credentials: vec![cred],
    }
    .to_bytes()
    .unwrap()
}

/// Unix seconds now.
pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// One session the fake proxy knows.
#[derive(Clone, Debug)]
pub struct FakeSession {
    /// Its identifier.
    pub session_id: String,
    /// Its owner.
    pub uid: u32,
    /// The user (`alice`).
    pub user: String,
    /// The realm.
    pub realm: String,
    /// Whether it is its uid's default.
    pub is_default: bool,
}

/// What the fake proxy saw and answers.
#[derive(Default)]
pub struct FakeLsaState {
    /// The sessions.
    pub sessions: Vec<FakeSession>,
    /// Each call: (method, the `credguard-on-behalf-of-uid` metadata).
    pub calls: Vec<(&'static str, Option<String>)>,
    /// SPNs for which the KDC "does not know the server".
    pub unknown_spns: Vec<String>,
}

/// A stand-in `credguard.v1.Lsa`: ListSessions, KerberosGetTgt, KerberosGetServiceTicket.
#[derive(Clone, Default)]
pub struct FakeLsa {
    /// Shared with the test.
    pub state: Arc<Mutex<FakeLsaState>>,
}

impl FakeLsa {
    fn record<T>(&self, method: &'static str, req: &Request<T>) -> Option<u32> {
        let uid = req
            .metadata()
            .get(credguard_kcm::backend::ON_BEHALF_OF_UID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.state.lock().unwrap().calls.push((method, uid.clone()));
        uid.and_then(|u| u.parse().ok())
    }

    fn session(&self, uid: Option<u32>, id: &str) -> Result<FakeSession, Status> {
        let state = self.state.lock().unwrap();
        state
            .sessions
            .iter()
            .find(|s| s.session_id == id && Some(s.uid) == uid)
            .cloned()
            .ok_or_else(|| Status::not_found("no such session"))
    }

    /// How many calls of `method` were made.
    pub fn count(&self, method: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(m, _)| *m == method)
            .count()
    }

    /// Serves it on `path` in the background.
    pub fn serve(&self, path: &Path) {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let svc = LsaServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake proxy"))
}

#[tonic::async_trait]
impl Lsa for FakeLsa {
    async fn status(&self, _: Request<lsa::StatusRequest>) -> Result<Response<lsa::StatusReply>, Status> {
        unimplemented()
    }
    async fn logon(&self, _: Request<lsa::LogonRequest>) -> Result<Response<lsa::LogonReply>, Status> {
        unimplemented()
    }
    async fn logoff(&self, _: Request<lsa::LogoffRequest>) -> Result<Response<lsa::LogoffReply>, Status> {
        unimplemented()
    }
    async fn list_sessions(
        &self,
        req: Request<lsa::ListSessionsRequest>,
    ) -> Result<Response<lsa::ListSessionsReply>, Status> {
        self.record("ListSessions", &req);
        // Like root's view: every uid's sessions (the daemon must pick its uid's).
        let sessions = self
            .state
            .lock()
            .unwrap()
            .sessions
            .iter()
            .map(|s| lsa::SessionInfo {
                session_id: s.session_id.clone(),
                user: s.user.clone(),
                realm: s.realm.clone(),
                uid: s.uid,
                secret_kind: "password".into(),
                is_default: s.is_default,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(lsa::ListSessionsReply { sessions }))
    }
    async fn ntlm_negotiate(
        &self,
        _: Request<lsa::NtlmNegotiateRequest>,
    ) -> Result<Response<lsa::NtlmNegotiateReply>, Status> {
        unimplemented()
    }
    async fn ntlm_authenticate(
        &self,
        _: Request<lsa::NtlmAuthenticateRequest>,
    ) -> Result<Response<lsa::NtlmAuthenticateReply>, Status> {
        unimplemented()
    }
    async fn legacy_authenticate(
        &self,
        _: Request<lsa::LegacyAuthenticateRequest>,
    ) -> Result<Response<lsa::LegacyAuthenticateReply>, Status> {
        unimplemented()
    }
    async fn kerberos_get_tgt(
        &self,
        req: Request<lsa::KerberosGetTgtRequest>,
    ) -> Result<Response<lsa::KerberosGetTgtReply>, Status> {
        let uid = self.record("KerberosGetTgt", &req);
        let s = self.session(uid, &req.get_ref().session_id)?;
        let now = i64::from(now());
        Ok(Response::new(lsa::KerberosGetTgtReply {
            client_principal: format!("{}@{}", s.user, s.realm),
            realm: s.realm,
            enctype: 18,
            start_time: now,
            end_time: now + 36_000,
            renew_till: now + 7 * 86_400,
            ..Default::default()
        }))
    }
    async fn kerberos_get_service_ticket(
        &self,
        req: Request<lsa::KerberosGetServiceTicketRequest>,
    ) -> Result<Response<lsa::KerberosGetServiceTicketReply>, Status> {
        let uid = self.record("KerberosGetServiceTicket", &req);
        let s = self.session(uid, &req.get_ref().session_id)?;
        let spn = req.get_ref().spn.clone();
        if self.state.lock().unwrap().unknown_spns.contains(&spn) {
            return Err(Status::not_found(
                "KDC error 7 (KDC_ERR_S_PRINCIPAL_UNKNOWN) in the TGS exchange",
            ));
        }
        let ccache = service_ccache(&format!("{}@{}", s.user, s.realm), &spn, &s.realm, now());
        Ok(Response::new(lsa::KerberosGetServiceTicketReply {
            ccache,
            ..Default::default()
        }))
    }
    async fn save_credential(
        &self,
        _: Request<lsa::SaveCredentialRequest>,
    ) -> Result<Response<lsa::SaveCredentialReply>, Status> {
        unimplemented()
    }
    async fn list_saved_credentials(
        &self,
        _: Request<lsa::ListSavedCredentialsRequest>,
    ) -> Result<Response<lsa::ListSavedCredentialsReply>, Status> {
        unimplemented()
    }
    async fn delete_saved_credential(
        &self,
        _: Request<lsa::DeleteSavedCredentialRequest>,
    ) -> Result<Response<lsa::DeleteSavedCredentialReply>, Status> {
        unimplemented()
    }
    async fn logon_saved(&self, _: Request<lsa::LogonSavedRequest>) -> Result<Response<lsa::LogonSavedReply>, Status> {
        unimplemented()
    }
    async fn get_sealing_nonce(
        &self,
        _: Request<lsa::GetSealingNonceRequest>,
    ) -> Result<Response<lsa::GetSealingNonceReply>, Status> {
        unimplemented()
    }

    async fn set_default_session(
        &self,
        _: Request<lsa::SetDefaultSessionRequest>,
    ) -> Result<Response<lsa::SetDefaultSessionReply>, Status> {
        unimplemented()
    }

    async fn change_password(
        &self,
        _: Request<lsa::ChangePasswordRequest>,
    ) -> Result<Response<lsa::ChangePasswordReply>, Status> {
        unimplemented()
    }

    async fn kerberos_verify_ap_rep(
        &self,
        _: Request<lsa::KerberosVerifyApRepRequest>,
    ) -> Result<Response<lsa::KerberosVerifyApRepReply>, Status> {
        unimplemented()
    }
}

/// A krb5.conf for MIT's programs: `kcm_socket` at `socket`, the default realm, and `extra`
/// appended to [libdefaults] (an existing krb5.conf's other sections may follow).
pub fn krb5_conf(path: &Path, socket: &Path, realm: &str, rest: &str) {
    let conf = format!(
        "[libdefaults]\n default_realm = {realm}\n kcm_socket = {}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n rdns = false\n{rest}",
        socket.display()
    );
    std::fs::write(path, conf).unwrap();
}

/// Maps of test → value, for tools' environments.
pub type Env = HashMap<String, String>;
