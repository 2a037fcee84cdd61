//! Where tickets come from: the [`Backend`] trait the server calls, and [`GrpcBackend`], its
//! implementation over the LSA proxy's API socket (`credguard.v1.Lsa`).
//!
//! The daemon asks only two things: which credguard session is a uid's default (with the times
//! of its TGT, never the TGT), and a service ticket of that session for an SPN (the enclave does
//! the TGS exchange). Every call is made for the KCM caller's uid, named in the gRPC metadata
//! [`ON_BEHALF_OF_UID`]; the proxy honours it only from peers it trusts.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;

use credguard_proto::lsa;
use credguard_proto::lsa::lsa_client::LsaClient;
use tonic::transport::Channel;
use tracing::debug;

use crate::protocol::code;

/// The gRPC metadata key naming the uid a call is made for.
pub const ON_BEHALF_OF_UID: &str = "credguard-on-behalf-of-uid";
/// A TGT's times are asked again this long before it ends (the proxy renews it then).
const TGT_REFRESH_MARGIN_SECS: i64 = 300;

/// The times of a session's TGT (the TGT and its key stay in the enclave).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TgtTimes {
    /// Start of validity, Unix seconds.
    pub start: i64,
    /// End of validity, Unix seconds.
    pub end: i64,
    /// Renewable until, Unix seconds (0 if not renewable).
    pub renew_till: i64,
    /// Encryption type of the TGT's session key.
    pub enctype: i32,
}

/// A uid's default credguard session, as the KCM cache shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultSession {
    /// The session's identifier.
    pub session_id: String,
    /// The client principal, e.g. `alice@EXAMPLE.TEST`.
    pub client_principal: String,
    /// The realm.
    pub realm: String,
    /// The TGT's times, if the session has (or could get) one now.
    pub tgt: Option<TgtTimes>,
}

/// Why the backend could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The API socket cannot be reached.
    #[error("cannot reach the credguard API at {path}: {detail}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The proxy answered with an error.
    #[error("{call}: {code:?}: {message}")]
    Rpc {
        /// The call.
        call: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The proxy's message (never a secret).
        message: String,
    },
    /// The proxy's answer makes no sense.
    #[error("{0}")]
    BadReply(String),
}

impl BackendError {
    /// The KCM error code that tells an MIT program the most: a KDC's error code as MIT's own
    /// (`KDC error 7` is "Server not found in Kerberos database"), an unreachable KDC or proxy as
    /// [`code::KRB5_KDC_UNREACH`], anything else as "not found".
    pub fn kcm_code(&self) -> i32 {
        match self {
            BackendError::Rpc { code: c, message, .. } => {
                if let Some(n) = kdc_error_number(message) {
                    return code::KDC_ERROR_BASE + n;
                }
                match c {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => code::KRB5_KDC_UNREACH,
                    _ => code::KRB5_CC_NOTFOUND,
                }
            }
            BackendError::Connect { .. } => code::KRB5_KDC_UNREACH,
            BackendError::BadReply(_) => code::KRB5_CC_NOTFOUND,
        }
    }
}

/// The KRB-ERROR code in an enclave message "KDC error N (NAME) in the ... exchange".
fn kdc_error_number(message: &str) -> Option<i32> {
    let rest = message.split("KDC error ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: i32 = digits.parse().ok()?;
    // RFC 4120 codes are small; MIT's table has room for 0..=127.
    (1..128).contains(&n).then_some(n)
}

/// What the KCM server needs from credguard.
pub trait Backend: Send + Sync + 'static {
    /// `uid`'s default credguard session, if it has one with a Kerberos realm.
    fn default_session(&self, uid: u32) -> impl Future<Output = Result<Option<DefaultSession>, BackendError>> + Send;

    /// A service ticket for `spn` (`HTTP/web.example.test`) from `uid`'s session `session_id`:
    /// an MIT v4 ccache file holding that ticket only.
    fn service_ticket(
        &self,
        uid: u32,
        session_id: &str,
        spn: &str,
    ) -> impl Future<Output = Result<Vec<u8>, BackendError>> + Send;
}

/// What was last learnt of a session's TGT.
#[derive(Clone, Debug)]
struct KnownTgt {
    uid: u32,
    principal: String,
    realm: String,
    times: TgtTimes,
}

/// [`Backend`] over the proxy's API socket.
pub struct GrpcBackend {
    socket: PathBuf,
    channel: tokio::sync::Mutex<Option<Channel>>,
    // The TGT's times per session, so that listing a cache does not make the enclave run an AS
    // exchange every time (`KerberosGetTgt` gets a fresh TGT).
    tgts: Mutex<HashMap<String, KnownTgt>>,
}

impl std::fmt::Debug for GrpcBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBackend")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `req` with the metadata naming `uid`.
fn on_behalf_of<T>(uid: u32, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    // A decimal number is always valid ASCII metadata.
    if let Ok(v) = uid.to_string().parse() {
        req.metadata_mut().insert(ON_BEHALF_OF_UID, v);
    }
    req
}

fn rpc_error(call: &'static str) -> impl FnOnce(tonic::Status) -> BackendError {
    move |s| BackendError::Rpc {
        call,
        code: s.code(),
        message: s.message().to_string(),
    }
}

impl GrpcBackend {
    /// A backend that connects to the API at `socket` when first asked (and again after the
    /// connection fails), so the daemon can start before the proxy.
    pub fn new(socket: PathBuf) -> Self {
        GrpcBackend {
            socket,
            channel: tokio::sync::Mutex::new(None),
            tgts: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self) -> Result<LsaClient<Channel>, BackendError> {
        let mut guard = self.channel.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(LsaClient::new(c.clone()));
        }
        let channel = credguard_client::channel(&self.socket)
            .await
            .map_err(|e| BackendError::Connect {
                path: self.socket.clone(),
                detail: e.to_string(),
            })?;
        *guard = Some(channel.clone());
        Ok(LsaClient::new(channel))
    }

    /// Forgets the connection after a transport failure, so the next call connects anew.
    async fn reset_if_unavailable(&self, e: &BackendError) {
        if matches!(
            e,
            BackendError::Rpc {
                code: tonic::Code::Unavailable,
                ..
            }
        ) {
            *self.channel.lock().await = None;
        }
    }

    async fn list_default(&self, uid: u32) -> Result<Option<lsa::SessionInfo>, BackendError> {
        let mut client = self.client().await?;
        let reply = client
            .list_sessions(on_behalf_of(uid, lsa::ListSessionsRequest {}))
            .await
            .map_err(rpc_error("ListSessions"))?
            .into_inner();
        // Root's view has every uid's sessions: only the one of `uid` counts.
        Ok(reply.sessions.into_iter().find(|s| s.uid == uid && s.is_default))
    }

    async fn tgt(&self, uid: u32, session_id: &str) -> Result<KnownTgt, BackendError> {
        let now = now_unix();
        let known = self.tgts.lock().ok().and_then(|m| m.get(session_id).cloned());
        if let Some(k) = known.filter(|k| k.times.end - TGT_REFRESH_MARGIN_SECS > now) {
            return Ok(k);
        }
        let mut client = self.client().await?;
        let r = client
            .kerberos_get_tgt(on_behalf_of(
                uid,
                lsa::KerberosGetTgtRequest {
                    session_id: session_id.to_string(),
                },
            ))
            .await
            .map_err(rpc_error("KerberosGetTgt"))?
            .into_inner();
        if r.client_principal.is_empty() || r.realm.is_empty() {
            return Err(BackendError::BadReply(
                "KerberosGetTgt named no principal or realm".into(),
            ));
        }
        let k = KnownTgt {
            uid,
            principal: r.client_principal,
            realm: r.realm,
            times: TgtTimes {
                start: r.start_time,
                end: r.end_time,
                renew_till: r.renew_till,
                enctype: r.enctype,
            },
        };
        if let Ok(mut m) = self.tgts.lock() {
            m.insert(session_id.to_string(), k.clone());
        }
        Ok(k)
    }

    /// Forgets what is known of `uid`'s sessions other than `keep` (ended, or no longer the
    /// default), so the map holds at most one entry per uid.
    fn forget_sessions(&self, uid: u32, keep: Option<&str>) {
        if let Ok(mut m) = self.tgts.lock() {
            m.retain(|id, k| k.uid != uid || Some(id.as_str()) == keep);
        }
    }
}

impl Backend for GrpcBackend {
    async fn default_session(&self, uid: u32) -> Result<Option<DefaultSession>, BackendError> {
        let listed = self.list_default(uid).await;
        if let Err(e) = &listed {
            self.reset_if_unavailable(e).await;
        }
        let info = listed?.filter(|s| !s.realm.is_empty());
        self.forget_sessions(uid, info.as_ref().map(|s| s.session_id.as_str()));
        // No default session, or an NTLM-only one: nothing for a Kerberos cache.
        let Some(info) = info else {
            return Ok(None);
        };
        match self.tgt(uid, &info.session_id).await {
            Ok(k) => Ok(Some(DefaultSession {
                session_id: info.session_id,
                client_principal: k.principal,
                realm: k.realm,
                tgt: Some(k.times),
            })),
            Err(e) => {
                // No TGT now (the KDC is down, the password expired): the cache still shows the
                // session's principal; retrievals will say why they fail.
                debug!(uid, error = %e, "no TGT for the default session");
                self.reset_if_unavailable(&e).await;
                Ok(Some(DefaultSession {
                    client_principal: format!("{}@{}", info.user, info.realm),
                    session_id: info.session_id,
                    realm: info.realm,
                    tgt: None,
                }))
            }
        }
    }

    async fn service_ticket(&self, uid: u32, session_id: &str, spn: &str) -> Result<Vec<u8>, BackendError> {
        let mut client = self.client().await?;
        let r = client
            .kerberos_get_service_ticket(on_behalf_of(
                uid,
                lsa::KerberosGetServiceTicketRequest {
                    session_id: session_id.to_string(),
                    spn: spn.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .map_err(rpc_error("KerberosGetServiceTicket"));
        match r {
            Ok(reply) => Ok(reply.into_inner().ccache),
            Err(e) => {
                self.reset_if_unavailable(&e).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdc_errors_become_mit_codes() {
        let e = BackendError::Rpc {
            call: "KerberosGetServiceTicket",
            code: tonic::Code::NotFound,
            message: "KDC error 7 (KDC_ERR_S_PRINCIPAL_UNKNOWN) in the TGS exchange".into(),
        };
        // MIT: KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN, "Server not found in Kerberos database".
        assert_eq!(e.kcm_code(), -1765328377);
        let down = BackendError::Rpc {
            call: "x",
            code: tonic::Code::Unavailable,
            message: "KDC 127.0.0.1:88 is unreachable".into(),
        };
        assert_eq!(down.kcm_code(), code::KRB5_KDC_UNREACH);
        let other = BackendError::Rpc {
            call: "x",
            code: tonic::Code::PermissionDenied,
            message: "KDC error 99999".into(),
        };
        assert_eq!(other.kcm_code(), code::KRB5_CC_NOTFOUND);
        assert_eq!(kdc_error_number("KDC error 24 (x)"), Some(24));
        assert_eq!(kdc_error_number("no"), None);
    }

    #[test]
    fn calls_name_the_uid() {
        let req = on_behalf_of(1234, lsa::ListSessionsRequest {});
        assert_eq!(
            req.metadata().get(ON_BEHALF_OF_UID).and_then(|v| v.to_str().ok()),
            Some("1234")
        );
    }

    #[tokio::test]
    async fn unreachable_api_is_an_error_not_a_panic() {
        let b = GrpcBackend::new(std::env::temp_dir().join(format!("credguard-kcm-none-{}.sock", std::process::id())));
        let e = b.default_session(1000).await.unwrap_err();
        assert!(matches!(e, BackendError::Connect { .. }), "{e}");
        assert_eq!(e.kcm_code(), code::KRB5_KDC_UNREACH);
        assert!(b.service_ticket(1000, "s", "HTTP/x").await.is_err());
    }
}
