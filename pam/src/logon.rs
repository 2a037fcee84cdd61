//! What the module asks of credguard's API, for a uid (`credguard-on-behalf-of-uid`): a sealed
//! logon and its TGT at `auth`, the default session at `open_session`, the logoff at
//! `close_session`.

use std::time::Duration;

use credguard_client::sealed::{self, Expectations, SealFor};
use credguard_proto::attest::{Owner, SealPurpose, SealedNames};
use credguard_proto::enclave::sealed_logon_secret::Secret;
use credguard_proto::lsa;
use credguard_proto::lsa::lsa_client::LsaClient;
use tonic::Code;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::options::Options;

/// The metadata the proxy honours from root to act for another uid.
pub const ON_BEHALF_OF_UID: &str = "credguard-on-behalf-of-uid";

/// How long one PAM call may wait for credguard (connect, attestation, logon, the KDC): a login
/// prompt must not hang on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a step failed. Messages never hold the password (it is sealed before any call that can
/// fail with a message from the proxy, and the proxy never echoes secrets).
#[derive(Debug, thiserror::Error)]
pub enum LogonError {
    /// The API socket does not answer, or the enclave is down.
    #[error("credguard is unavailable: {0}")]
    Unavailable(String),
    /// The attestation or signer key cannot be read, or the enclave's attestation does not
    /// verify: the password is not sent.
    #[error("the enclave cannot be trusted with the password: {0}")]
    Untrusted(String),
    /// The KDC refused the password.
    #[error("the KDC refused the password")]
    WrongPassword,
    /// The KDC does not know the principal.
    #[error("the KDC does not know {0}")]
    UnknownPrincipal(String),
    /// The KDC refuses the account (disabled, locked out, expired: the message says which).
    #[error("{0}")]
    AccountRefused(String),
    /// No KDC of the realm answered.
    #[error("no KDC of the realm is reachable: {0}")]
    KdcUnreachable(String),
    /// The host keytab exists, but the KDC that accepted the password could not prove it is the
    /// realm's (its ticket to the host's service does not open with the keytab): maybe spoofed.
    #[error("the KDC could not prove itself with the host keytab: {0}")]
    KdcNotVerified(String),
    /// Anything else the API refused.
    #[error("{call} failed: {code:?}: {message}")]
    Refused {
        /// The call.
        call: &'static str,
        /// Its status code.
        code: Code,
        /// Its message.
        message: String,
    },
}

/// What `auth` achieved.
#[derive(Debug)]
pub enum Authenticated {
    /// The KDC accepted the password: the enclave holds the TGT of `principal`.
    Kerberos {
        /// The session.
        session_id: String,
        /// The client principal of the TGT.
        principal: String,
    },
    /// The KDC said the password has expired, and the enclave proved it right with a
    /// `kadmin/changepw` ticket: the session holds the old password until `chauthtok` changes it.
    Expired {
        /// The session.
        session_id: String,
    },
    /// No Kerberos check was made (no realm configured, or `optional_kerberos` and no KDC
    /// reachable): the session holds the password for NTLM only.
    Unchecked {
        /// The session.
        session_id: String,
        /// Why.
        reason: String,
    },
}

fn refused(call: &'static str) -> impl FnOnce(tonic::Status) -> LogonError {
    move |s| match s.code() {
        Code::Unavailable => LogonError::Unavailable(format!("{call}: {}", s.message())),
        code => LogonError::Refused {
            call,
            code,
            message: s.message().to_owned(),
        },
    }
}

/// `message` with the metadata naming `uid`, unless this process is that uid already (a screen
/// locker running as the user): the proxy lets only root act for others.
fn on_behalf_of<T>(uid: u32, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    // SAFETY: geteuid cannot fail and has no preconditions.
    if uid == unsafe { libc::geteuid() } {
        return req;
    }
    // A decimal number is always valid ASCII metadata.
    if let Ok(v) = uid.to_string().parse() {
        req.metadata_mut().insert(ON_BEHALF_OF_UID, v);
    }
    req
}

/// Runs `f` on a current-thread runtime of its own, bounded by [`CALL_TIMEOUT`]: the module runs
/// inside `login`/`sshd`, which have no runtime, and keeps no thread after it returns.
pub fn block_on<T, E: From<LogonError>>(f: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LogonError::Unavailable(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        tokio::time::timeout(CALL_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(LogonError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}")).into()))
    })
}

async fn connect(opts: &Options) -> Result<LsaClient<Channel>, LogonError> {
    credguard_client::connect(&opts.socket)
        .await
        .map_err(|e| LogonError::Unavailable(format!("cannot connect to {}: {e}", opts.socket.display())))
}

/// What the module requires of the enclave, from the installed keys (as `credguardctl`).
fn expectations(opts: &Options) -> Result<Expectations, LogonError> {
    let untrusted = |e: sealed::SealError| LogonError::Untrusted(e.to_string());
    let attestation_pub = sealed::read_attestation_public_key(&opts.attestation_pub).map_err(untrusted)?;
    let signer = if opts.signer_pub.exists() {
        Some(sealed::signer_fingerprint(
            &sealed::read_public_key(&opts.signer_pub).map_err(untrusted)?,
        ))
    } else {
        None
    };
    Ok(Expectations {
        attestation_pub,
        attestation_pub_path: opts.attestation_pub.clone(),
        signer,
        signer_path: opts.signer_pub.clone(),
        measurement: None,
        require_hidden_memory: false,
        allow_test_image: false,
    })
}

/// A connection to the proxy whose enclave attested as the installed keys require.
struct AttestedLink {
    c: LsaClient<Channel>,
    public_key: [u8; credguard_proto::attest::PUBLIC_KEY_LEN],
    boot_id: Vec<u8>,
}

async fn connect_attested(opts: &Options) -> Result<AttestedLink, LogonError> {
    let expect = expectations(opts)?;
    let mut c = connect(opts).await?;
    let status = c
        .status(lsa::StatusRequest {})
        .await
        .map_err(refused("Status"))?
        .into_inner();
    if status.state != "ready" {
        return Err(LogonError::Unavailable(
            "the enclave is not reachable (the proxy is reconnecting)".into(),
        ));
    }
    let attested = sealed::verify(&status, &expect).map_err(|e| LogonError::Untrusted(e.to_string()))?;
    Ok(AttestedLink {
        c,
        public_key: attested.public_key,
        boot_id: status.boot_id,
    })
}

impl AttestedLink {
    /// Seals `password` (taken; wiped once sealed) for `purpose`, for `uid`'s `user`.
    async fn seal(
        &mut self,
        opts: &Options,
        purpose: SealPurpose,
        user: &str,
        uid: u32,
        password: Zeroizing<String>,
    ) -> Result<lsa::SealedSecret, LogonError> {
        // The nonce is issued to the uid the sealed secret is for: it opens only for that caller.
        let nonce = self
            .c
            .get_sealing_nonce(on_behalf_of(uid, lsa::GetSealingNonceRequest {}))
            .await
            .map_err(refused("GetSealingNonce"))?
            .into_inner();
        if nonce.boot_id != self.boot_id {
            return Err(LogonError::Unavailable("the enclave restarted while sealing".into()));
        }
        let seal_for = SealFor {
            purpose,
            owner: Owner::uid(uid),
            sealing_nonce: &nonce.nonce,
            names: SealedNames {
                user,
                domain: &opts.domain,
                realm: &opts.realm,
                target: "",
            },
        };
        // `seal` takes its own copy and wipes it and its encoding; ours goes with `password`'s drop.
        let secret = Secret::Password(password.as_str().to_owned());
        drop(password);
        sealed::seal(&self.public_key, secret, false, &seal_for).map_err(|e| LogonError::Untrusted(e.to_string()))
    }

    /// A sealed logon of `user` for `uid`; `make_default` as `LogonRequest.keep_default` inverted.
    async fn logon(
        &mut self,
        opts: &Options,
        user: &str,
        uid: u32,
        password: Zeroizing<String>,
        make_default: bool,
    ) -> Result<String, LogonError> {
        let sealed = self.seal(opts, SealPurpose::Logon, user, uid, password).await?;
        let logon = lsa::LogonRequest {
            user: user.to_owned(),
            domain: opts.domain.clone(),
            realm: opts.realm.clone(),
            kdc: String::new(),
            secret: Some(lsa::logon_request::Secret::Sealed(sealed)),
            keep_default: !make_default,
            machine_account: false,
        };
        Ok(self
            .c
            .logon(on_behalf_of(uid, logon))
            .await
            .map_err(refused("Logon"))?
            .into_inner()
            .session_id)
    }
}

/// `auth`: seals `password` (taken, and wiped once sealed) to the attested enclave for `uid`,
/// logs `user` on in the realm for that uid, and gets the TGT so the KDC judges the password.
/// A session the KDC refused is logged off again.
pub async fn authenticate(
    opts: &Options,
    user: &str,
    uid: u32,
    password: Zeroizing<String>,
) -> Result<Authenticated, LogonError> {
    let mut a = connect_attested(opts).await?;
    let session_id = a.logon(opts, user, uid, password, true).await?;
    if opts.realm.is_empty() {
        return Ok(Authenticated::Unchecked {
            session_id,
            reason: "no realm= given: the password was not checked".into(),
        });
    }
    let err = match get_tgt(&mut a.c, opts, uid, &session_id).await {
        Ok(principal) => return Ok(Authenticated::Kerberos { session_id, principal }),
        Err(TgtError::KdcNotVerified(e)) => {
            close_refused(&mut a.c, uid, &session_id).await;
            return Err(e);
        }
        Err(TgtError::Kdc(s)) => s,
    };
    if err.code() == Code::Unavailable && opts.optional_kerberos {
        return Ok(Authenticated::Unchecked {
            session_id,
            reason: format!("optional_kerberos: {}", err.message()),
        });
    }
    if is_password_expired(&err) {
        return expired(&mut a.c, user, uid, session_id).await;
    }
    // The session is of no use with a password the KDC refused (or could not check): close it.
    close_refused(&mut a.c, uid, &session_id).await;
    Err(tgt_refused(opts, user, err))
}

/// What a KDC's refusal of the session's TGT means for the login.
fn tgt_refused(opts: &Options, user: &str, err: tonic::Status) -> LogonError {
    match err.code() {
        Code::Unauthenticated => LogonError::WrongPassword,
        Code::NotFound => LogonError::UnknownPrincipal(format!("{user}@{}", opts.realm)),
        Code::Unavailable => LogonError::KdcUnreachable(err.message().to_owned()),
        Code::PermissionDenied => LogonError::AccountRefused(err.message().to_owned()),
        _ => refused("KerberosGetTgt")(err),
    }
}

/// The proxy's FAILED_PRECONDITION for a KDC's KEY_EXPIRED (`ErrorReason::PASSWORD_EXPIRED`).
fn is_password_expired(s: &tonic::Status) -> bool {
    s.code() == Code::FailedPrecondition && s.message().starts_with("password expired")
}

/// The KDC says the password has expired, which MIT's KDC says before it checks the password:
/// the enclave proves it with a `kadmin/changepw` ticket, and the session waits for the change.
async fn expired(
    c: &mut LsaClient<Channel>,
    user: &str,
    uid: u32,
    session_id: String,
) -> Result<Authenticated, LogonError> {
    let check = lsa::ChangePasswordRequest {
        session_id: session_id.clone(),
        new_password: None,
        check_only: true,
    };
    let err = match c.change_password(on_behalf_of(uid, check)).await {
        Ok(r) if r.get_ref().verified => return Ok(Authenticated::Expired { session_id }),
        Ok(_) => LogonError::Refused {
            call: "ChangePassword",
            code: Code::Internal,
            message: "the check of the expired password was not answered".into(),
        },
        Err(s) if s.code() == Code::Unauthenticated => LogonError::WrongPassword,
        Err(s) if s.code() == Code::NotFound => LogonError::UnknownPrincipal(user.to_owned()),
        Err(s) => refused("ChangePassword")(s),
    };
    close_refused(c, uid, &session_id).await;
    Err(err)
}

/// Why the session got no TGT.
enum TgtError {
    /// The KDC (through the proxy) refused or could not be reached.
    Kdc(tonic::Status),
    /// The TGT came, but the KDC could not prove itself with the host keytab.
    KdcNotVerified(LogonError),
}

/// The session's TGT (the KDC judges its password), then the KDC's proof with the host keytab;
/// the client principal.
async fn get_tgt(c: &mut LsaClient<Channel>, opts: &Options, uid: u32, session_id: &str) -> Result<String, TgtError> {
    let req = lsa::KerberosGetTgtRequest {
        session_id: session_id.to_owned(),
    };
    let principal = c
        .kerberos_get_tgt(on_behalf_of(uid, req))
        .await
        .map_err(TgtError::Kdc)?
        .into_inner()
        .client_principal;
    check_kdc(c, opts, uid, session_id)
        .await
        .map_err(TgtError::KdcNotVerified)?;
    Ok(principal)
}

/// Why a password change failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The current password is wrong (the KDC refused it for `kadmin/changepw`).
    #[error("the current password is wrong")]
    WrongPassword,
    /// The change or the logon after it was refused, or credguard could not be asked.
    #[error(transparent)]
    Failed(#[from] LogonError),
}

/// Which password a change starts from.
pub enum ChangeFrom {
    /// The session `auth` made with a password the KDC said has expired.
    Expired(String),
    /// The current password, which a session of its own (not the default) holds for the change.
    Current(Zeroizing<String>),
}

/// `chauthtok`: changes `user`'s password through the enclave to `new_password` (taken, wiped
/// once sealed). An expired session then gets its TGT with the new password (and the KDC proves
/// itself as at `auth`); a session made for the change only is logged off.
pub async fn change_password(
    opts: &Options,
    user: &str,
    uid: u32,
    from: ChangeFrom,
    new_password: Zeroizing<String>,
) -> Result<(), ChangeError> {
    let mut a = connect_attested(opts).await?;
    let (session_id, made_for_change) = match from {
        ChangeFrom::Expired(id) => (id, false),
        ChangeFrom::Current(old) => (a.logon(opts, user, uid, old, false).await?, true),
    };
    let result = change_in(&mut a, opts, user, uid, &session_id, new_password).await;
    if made_for_change {
        close_refused(&mut a.c, uid, &session_id).await;
        return result;
    }
    result?;
    match get_tgt(&mut a.c, opts, uid, &session_id).await {
        Ok(_) => Ok(()),
        Err(TgtError::KdcNotVerified(e)) => Err(e.into()),
        Err(TgtError::Kdc(s)) => Err(tgt_refused(opts, user, s).into()),
    }
}

async fn change_in(
    a: &mut AttestedLink,
    opts: &Options,
    user: &str,
    uid: u32,
    session_id: &str,
    new_password: Zeroizing<String>,
) -> Result<(), ChangeError> {
    let sealed = a
        .seal(opts, SealPurpose::PasswordChange, user, uid, new_password)
        .await?;
    let req = lsa::ChangePasswordRequest {
        session_id: session_id.to_owned(),
        new_password: Some(sealed),
        check_only: false,
    };
    match a.c.change_password(on_behalf_of(uid, req)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::Unauthenticated => Err(ChangeError::WrongPassword),
        Err(s) => Err(refused("ChangePassword")(s).into()),
    }
}

/// Logs off a session `auth` refuses after all (best effort: the refusal stands either way).
async fn close_refused(c: &mut LsaClient<Channel>, uid: u32, session_id: &str) {
    let req = lsa::LogoffRequest {
        session_id: session_id.to_owned(),
    };
    let _ = c.logoff(on_behalf_of(uid, req)).await;
}

/// With a host keytab: the enclave gets a ticket to the host's own service with the new TGT, and
/// the AP-REQ must open with the keytab, which only a KDC that knows the host's key can make so.
/// Without one, nothing proves the KDC genuine (see the README).
async fn check_kdc(c: &mut LsaClient<Channel>, opts: &Options, uid: u32, session_id: &str) -> Result<(), LogonError> {
    if !opts.keytab.exists() {
        return Ok(());
    }
    let spn = match &opts.verify_host {
        Some(s) => s.clone(),
        None => format!("host/{}", host_name()),
    };
    let reply = c
        .kerberos_get_service_ticket(on_behalf_of(
            uid,
            lsa::KerberosGetServiceTicketRequest {
                session_id: session_id.to_owned(),
                spn: spn.clone(),
                ..Default::default()
            },
        ))
        .await
        .map_err(|e| LogonError::KdcNotVerified(format!("no ticket to {spn}: {}", e.message())))?
        .into_inner();
    let server = format!("{spn}@{}", opts.realm);
    crate::kdc_check::verify_ap_req(&opts.keytab, &server, &reply.ap_req)
        .map_err(|e| LogonError::KdcNotVerified(e.to_string()))
}

/// This host's name, as `gethostname` gives it.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::from("localhost");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `open_session`: makes `session_id` the default session of `uid` (the one its `KCM:` cache
/// serves).
pub async fn make_default(opts: &Options, uid: u32, session_id: &str) -> Result<(), LogonError> {
    let mut c = connect(opts).await?;
    c.set_default_session(on_behalf_of(
        uid,
        lsa::SetDefaultSessionRequest {
            session_id: session_id.to_owned(),
        },
    ))
    .await
    .map_err(refused("SetDefaultSession"))?;
    Ok(())
}

/// `close_session` of the last PAM session of a logon, or a failed `auth`: logs `session_id` of
/// `uid` off (a session already gone counts as logged off).
pub async fn logoff(opts: &Options, uid: u32, session_id: &str) -> Result<(), LogonError> {
    let mut c = connect(opts).await?;
    match c
        .logoff(on_behalf_of(
            uid,
            lsa::LogoffRequest {
                session_id: session_id.to_owned(),
            },
        ))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(refused("Logoff")(s)),
    }
}
