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
pub fn block_on<T>(f: impl Future<Output = Result<T, LogonError>>) -> Result<T, LogonError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LogonError::Unavailable(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        tokio::time::timeout(CALL_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(LogonError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}"))))
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

/// `auth`: seals `password` (taken, and wiped once sealed) to the attested enclave for `uid`,
/// logs `user` on in the realm for that uid, and gets the TGT so the KDC judges the password.
/// A session the KDC refused is logged off again.
pub async fn authenticate(
    opts: &Options,
    user: &str,
    uid: u32,
    password: Zeroizing<String>,
) -> Result<Authenticated, LogonError> {
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
    // The nonce is issued to the uid the sealed secret is for: it opens only for that caller.
    let nonce = c
        .get_sealing_nonce(on_behalf_of(uid, lsa::GetSealingNonceRequest {}))
        .await
        .map_err(refused("GetSealingNonce"))?
        .into_inner();
    if nonce.boot_id != status.boot_id {
        return Err(LogonError::Unavailable("the enclave restarted while sealing".into()));
    }
    let seal_for = SealFor {
        purpose: SealPurpose::Logon,
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
    let sealed = sealed::seal(&attested.public_key, secret, false, &seal_for)
        .map_err(|e| LogonError::Untrusted(e.to_string()))?;
    let logon = lsa::LogonRequest {
        user: user.to_owned(),
        domain: opts.domain.clone(),
        realm: opts.realm.clone(),
        kdc: String::new(),
        secret: Some(lsa::logon_request::Secret::Sealed(sealed)),
    };
    let session_id = c
        .logon(on_behalf_of(uid, logon))
        .await
        .map_err(refused("Logon"))?
        .into_inner()
        .session_id;
    if opts.realm.is_empty() {
        return Ok(Authenticated::Unchecked {
            session_id,
            reason: "no realm= given: the password was not checked".into(),
        });
    }
    let tgt = c
        .kerberos_get_tgt(on_behalf_of(
            uid,
            lsa::KerberosGetTgtRequest {
                session_id: session_id.clone(),
            },
        ))
        .await;
    let err = match tgt {
        Ok(r) => {
            let principal = r.into_inner().client_principal;
            if let Err(e) = check_kdc(&mut c, opts, uid, &session_id).await {
                close_refused(&mut c, uid, &session_id).await;
                return Err(e);
            }
            return Ok(Authenticated::Kerberos { session_id, principal });
        }
        Err(s) => s,
    };
    if err.code() == Code::Unavailable && opts.optional_kerberos {
        return Ok(Authenticated::Unchecked {
            session_id,
            reason: format!("optional_kerberos: {}", err.message()),
        });
    }
    // The session is of no use with a password the KDC refused (or could not check): close it.
    close_refused(&mut c, uid, &session_id).await;
    Err(match err.code() {
        Code::Unauthenticated => LogonError::WrongPassword,
        Code::NotFound => LogonError::UnknownPrincipal(format!("{user}@{}", opts.realm)),
        Code::Unavailable => LogonError::KdcUnreachable(err.message().to_owned()),
        _ => refused("KerberosGetTgt")(err),
    })
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
