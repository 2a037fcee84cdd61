//! Kerberos on the proxy's side: the network and the files, never a secret.
//!
//! The enclave builds and reads every Kerberos message; the proxy carries them to and from the KDC
//! (UDP first, TCP when the reply does not fit or UDP fails), gives the enclave the time, reacts
//! to "no valid TGT" by running the AS exchange first (which also renews a TGT near its end), and
//! returns each service ticket also as an MIT credential cache, which the caller writes itself:
//! the proxy never opens a path a caller names.

use std::net::SocketAddr;
use std::time::Duration;

use credguard_proto::checks::{self, MAX_KDC_REPLY_LEN};
use credguard_proto::enclave;
use credguard_proto::lsa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, lookup_host};
use tracing::{debug, info};

use crate::core::LsaCore;
use crate::error::LsaError;
use crate::kdcs::KdcAddr;
use crate::sessions::{Caller, LogonSession};

/// How long one KDC round trip may take.
const KDC_TIMEOUT: Duration = Duration::from_secs(3);
/// Steps of one exchange at most (no preauth, preauth, one skew retry, and a spare).
const MAX_STEPS: usize = 5;
/// Steps of one TGS exchange at most: a request and a skew retry at the session realm's KDC and
/// at each realm a referral leads to (the enclave follows at most [`checks::MAX_REFERRAL_HOPS`]).
const MAX_TGS_STEPS: usize = 2 * (1 + checks::MAX_REFERRAL_HOPS) + 1;
/// The answer to a request that still names a ccache file for the proxy to write.
pub const CCACHE_PATH_REFUSED: &str = "ccache_path is no longer supported: the proxy writes no file for a caller; \
     write the reply's `ccache` field (an MIT ccache of this service ticket) yourself, mode 0600 \
     (credguardctl kerberos-ticket --ccache FILE does)";

/// Why a KDC exchange failed at the transport level.
#[derive(Debug, thiserror::Error)]
pub enum KdcTransportError {
    /// The address does not resolve.
    #[error("KDC {0} does not resolve")]
    Resolve(String),
    /// Neither UDP nor TCP got an answer.
    #[error("KDC {addr} is unreachable ({detail})")]
    Unreachable {
        /// The KDC.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The KDC announced a reply larger than [`MAX_KDC_REPLY_LEN`] (which the enclave refuses too).
    #[error("KDC {addr} sent a reply of {len} bytes, over the limit of {MAX_KDC_REPLY_LEN} bytes")]
    TooLarge {
        /// The KDC.
        addr: String,
        /// The announced length.
        len: usize,
    },
}

impl From<KdcTransportError> for LsaError {
    fn from(e: KdcTransportError) -> Self {
        match e {
            KdcTransportError::TooLarge { .. } => LsaError::ResourceExhausted(e.to_string()),
            _ => LsaError::Unavailable(e.to_string()),
        }
    }
}

/// Why a reply over TCP was not read.
enum TcpFailure {
    Io(std::io::Error),
    TooLarge(usize),
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `reply` is a KRB-ERROR with code 52 (KRB_ERR_RESPONSE_TOO_BIG). A byte search instead
/// of a decoder: the proxy parses no Kerberos; a false match only costs a TCP retry.
fn is_too_big(reply: &[u8]) -> bool {
    reply.first() == Some(&0x7e) && reply.windows(5).any(|w| w == [0xa6, 0x03, 0x02, 0x01, 52])
}

/// The first address `server` (`host:port`) resolves to.
async fn resolve(server: &str) -> Result<SocketAddr, KdcTransportError> {
    let addrs: Vec<SocketAddr> = lookup_host(server)
        .await
        .map_err(|_| KdcTransportError::Resolve(server.into()))?
        .collect();
    addrs
        .first()
        .copied()
        .ok_or_else(|| KdcTransportError::Resolve(server.into()))
}

/// Sends `request` to the KDC at `kdc` (`host:port`) and returns its reply.
pub async fn kdc_exchange(kdc: &str, request: &[u8]) -> Result<Vec<u8>, KdcTransportError> {
    let addr = resolve(kdc).await?;
    exchange_at(kdc, addr, request).await
}

/// Sends `request` to `addr` (named `name` in errors), UDP first, then TCP with the 4-byte length
/// prefix (RFC 4120 7.2.2; kpasswd frames TCP the same way, RFC 3244 section 2).
async fn exchange_at(name: &str, addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>, KdcTransportError> {
    let kdc = name;
    let udp_err = match udp_exchange(addr, request).await {
        Ok(reply) if !is_too_big(&reply) => return Ok(reply),
        Ok(_) => "reply too big for UDP".to_string(),
        Err(e) => e.to_string(),
    };
    tcp_exchange(addr, request).await.map_err(|e| match e {
        TcpFailure::TooLarge(len) => KdcTransportError::TooLarge { addr: kdc.into(), len },
        TcpFailure::Io(e) => KdcTransportError::Unreachable {
            addr: kdc.into(),
            detail: format!("udp: {udp_err}; tcp: {e}"),
        },
    })
}

/// Sends `request` to `kdc`: at the address DNS gave for it, else at what its name resolves to.
pub async fn kdc_exchange_to(kdc: &KdcAddr, request: &[u8]) -> Result<Vec<u8>, KdcTransportError> {
    match kdc.addr {
        Some(addr) => exchange_at(&kdc.to_string(), addr, request).await,
        None => kdc_exchange(&kdc.name, request).await,
    }
}

/// Sends `request` to the first of `kdcs` that answers, starting at `*preferred` (which then
/// names the one that did, so the later steps of an exchange go to the same KDC). A KDC that
/// does not answer (timeout, refused, no address) passes the request to the next; one that
/// announces a reply over the limit ends the exchange.
pub async fn kdc_exchange_any(
    kdcs: &[KdcAddr],
    preferred: &mut usize,
    request: &[u8],
) -> Result<Vec<u8>, KdcTransportError> {
    let mut last = None;
    for i in 0..kdcs.len() {
        let at = (*preferred + i) % kdcs.len();
        match kdc_exchange_to(&kdcs[at], request).await {
            Ok(reply) => {
                *preferred = at;
                return Ok(reply);
            }
            Err(e @ KdcTransportError::TooLarge { .. }) => return Err(e),
            Err(e) => {
                debug!(kdc = %kdcs[at], error = %e, "KDC did not answer: trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| KdcTransportError::Resolve("(no KDC configured)".into())))
}

async fn udp_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(addr).await?;
    sock.send(request).await?;
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(KDC_TIMEOUT, sock.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    buf.truncate(n);
    Ok(buf)
}

async fn tcp_exchange(addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>, TcpFailure> {
    let io = async {
        let mut s = TcpStream::connect(addr).await.map_err(TcpFailure::Io)?;
        s.set_nodelay(true).map_err(TcpFailure::Io)?;
        let mut msg = Vec::with_capacity(4 + request.len());
        msg.extend_from_slice(&(request.len() as u32).to_be_bytes());
        msg.extend_from_slice(request);
        s.write_all(&msg).await.map_err(TcpFailure::Io)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.map_err(TcpFailure::Io)?;
        let len = u32::from_be_bytes(len) as usize;
        // Refused before anything is allocated for it.
        if len > MAX_KDC_REPLY_LEN {
            return Err(TcpFailure::TooLarge(len));
        }
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await.map_err(TcpFailure::Io)?;
        Ok(buf)
    };
    tokio::time::timeout(KDC_TIMEOUT, io)
        .await
        .map_err(|_| TcpFailure::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))?
}

/// The KDCs of a session, in the order to try them: the one named at logon (checked then against
/// the configuration, see [`check_logon_kdc`]), else the realm's as [`crate::kdcs`] finds them.
async fn kdcs_of(core: &LsaCore, s: &LogonSession) -> Result<Vec<KdcAddr>, LsaError> {
    has_realm(s)?;
    if !s.kdc.is_empty() {
        return Ok(core.kdcs().named(&s.realm, &s.kdc).await);
    }
    core.kdcs().kdcs(&s.realm).await
}

fn has_realm(s: &LogonSession) -> Result<(), LsaError> {
    if s.realm.is_empty() {
        return Err(LsaError::FailedPrecondition(
            "the session has no Kerberos realm: log on with --realm".into(),
        ));
    }
    Ok(())
}

/// The session's KDCs, looked up (see [`kdcs_of`]) the first time a message must go to one: a
/// ticket the enclave kept costs no DNS query either, and is served while the KDCs are away.
async fn kdcs_once<'a>(
    core: &LsaCore,
    s: &LogonSession,
    kdcs: &'a mut Option<Vec<KdcAddr>>,
) -> Result<&'a [KdcAddr], LsaError> {
    if kdcs.is_none() {
        *kdcs = Some(kdcs_of(core, s).await?);
    }
    Ok(kdcs.get_or_insert_with(Vec::new))
}

/// Checks the KDC a logon (or a saved credential) names: any caller may name one the
/// configuration lists for the realm; only root may name another, so that no caller can make the
/// proxy send packets to a host and port of its choice.
/// KDCs found in DNS for the realm count as configured.
pub async fn check_logon_kdc(core: &LsaCore, caller: Caller, realm: &str, kdc: &str) -> Result<(), LsaError> {
    if kdc.is_empty() || caller.is_root() || core.kdcs().is_configured(realm, kdc).await {
        return Ok(());
    }
    Err(LsaError::PermissionDenied(format!(
        "kdc {kdc:?} is not a configured KDC of realm {realm:?}: only root may name another (configure it under \
         [kerberos.realms.\"{realm}\"], or leave kdc empty to use the configured or discovered ones)"
    )))
}

/// `KerberosGetTgt`.
pub async fn get_tgt(
    core: &LsaCore,
    caller: Caller,
    req: lsa::KerberosGetTgtRequest,
) -> Result<lsa::KerberosGetTgtReply, LsaError> {
    let s = core.session(caller, &req.session_id)?;
    let kdcs = kdcs_of(core, &s).await?;
    let turn = core.as_turn(&s.session_id);
    let _turn = turn.lock().await;
    let r = as_exchange(core, &s, &kdcs).await?;
    info!(%caller, session = %s.session_id, principal = %r.client_principal, enctype = r.enctype, "kerberos tgt");
    Ok(lsa::KerberosGetTgtReply {
        client_principal: r.client_principal,
        realm: r.realm,
        enctype: r.enctype,
        start_time: r.start_time,
        end_time: r.end_time,
        renew_till: r.renew_till,
        // What `as_exchange` just recorded on the session.
        user_sid: core
            .session(caller, &req.session_id)
            .map(|s| s.user_sid)
            .unwrap_or_default(),
    })
}

/// The AS exchange, driven by the enclave. A client referral (the enclave names another realm
/// in `kdc_realm`) sends the next requests to that realm's KDCs, and the session moves there once
/// the exchange ends with its TGT.
async fn as_exchange(core: &LsaCore, s: &LogonSession, kdcs: &[KdcAddr]) -> Result<enclave::KerberosAsReply, LsaError> {
    let mut kdc_reply = Vec::new();
    let mut kdc = 0;
    let mut other_realms = OtherRealms::default();
    for _ in 0..MAX_STEPS {
        let step = enclave::KerberosAsRequest {
            session_handle: s.handle.clone(),
            now_unix: now_unix(),
            kdc_reply: std::mem::take(&mut kdc_reply),
            fast: core.config().kerberos.fast_of(&s.realm).wire(),
        };
        let mut r = core.link().client(s.owner).kerberos_as(&step).await?;
        if r.kdc_request.is_empty() {
            if !r.realm.is_empty() && !r.realm.eq_ignore_ascii_case(&s.realm) {
                info!(session = %s.session_id, from = %s.realm, to = %r.realm, "client referral: the account lives in another realm");
                core.move_session_to_realm(&s.session_id, &r.realm);
                // Its SID is asked of the account's realm.
                if let Ok(moved) = core.session(s.owner, &s.session_id)
                    && let Ok(kdcs) = kdcs_of(core, &moved).await
                {
                    crate::user_sid::learn(core, &moved, &kdcs, r.user_sid_first.take()).await;
                }
                return Ok(r);
            }
            // Every new TGT (get_tgt, and the renewal before a TGS exchange): its user's SID.
            crate::user_sid::learn(core, s, kdcs, r.user_sid_first.take()).await;
            return Ok(r);
        }
        kdc_reply = if r.kdc_realm.is_empty() {
            kdc_exchange_any(kdcs, &mut kdc, &r.kdc_request).await?
        } else {
            other_realms.exchange(core, &r.kdc_realm, &r.kdc_request).await?
        };
    }
    Err(LsaError::Unavailable(
        "the AS exchange did not finish: the KDC keeps asking".into(),
    ))
}

/// `ChangePassword`: the enclave's AS exchange for `kadmin/changepw` with the KDCs, then its
/// change request to the realm's kpasswd server; with `check_only`, the AS exchange alone.
pub async fn change_password(
    core: &LsaCore,
    caller: Caller,
    req: lsa::ChangePasswordRequest,
) -> Result<lsa::ChangePasswordReply, LsaError> {
    let first = match (req.new_password, req.check_only) {
        (Some(_), true) => {
            return Err(LsaError::InvalidArgument(
                "check_only changes nothing: leave new_password out".into(),
            ));
        }
        (Some(sealed), false) => enclave::KerberosChangePasswordRequest {
            new_password: Some(sealed.into()),
            ..Default::default()
        },
        (None, true) => enclave::KerberosChangePasswordRequest {
            check_old_password: true,
            ..Default::default()
        },
        (None, false) => {
            return Err(LsaError::InvalidArgument(
                "new_password is required: the new password sealed to the enclave for a password change \
                 (credguardctl change-password seals it), or check_only"
                    .into(),
            ));
        }
    };
    let s = core.session(caller, &req.session_id)?;
    let kdcs = kdcs_of(core, &s).await?;
    // A check needs no kpasswd server.
    let kpasswd = if req.check_only {
        None
    } else {
        let servers = core.kdcs().kpasswd(&s.realm, &kdcs).await;
        Some(kpasswd_server(&servers).await?)
    };
    let turn = core.as_turn(&s.session_id);
    let _turn = turn.lock().await;
    let mut step = enclave::KerberosChangePasswordRequest {
        session_handle: s.handle.clone(),
        sender_address: kpasswd
            .as_ref()
            .map(|(_, _, sender)| sender.clone())
            .unwrap_or_default(),
        ..first
    };
    let mut kdc = 0;
    // The AS exchange's steps, and the kpasswd request.
    for _ in 0..=MAX_STEPS {
        step.now_unix = now_unix();
        let r = core.link().client(s.owner).kerberos_change_password(&step).await?;
        step.new_password = None;
        step.check_old_password = false;
        step.kdc_reply.clear();
        step.kpasswd_reply.clear();
        if r.old_password_verified {
            info!(%caller, session = %s.session_id, "kerberos password checked for a change");
            return Ok(lsa::ChangePasswordReply { verified: true });
        }
        if r.changed {
            let server = kpasswd.as_ref().map_or("", |(server, _, _)| server.as_str());
            info!(%caller, session = %s.session_id, kpasswd = %server, "kerberos password changed");
            return Ok(lsa::ChangePasswordReply { verified: false });
        }
        if !r.kdc_request.is_empty() {
            step.kdc_reply = kdc_exchange_any(&kdcs, &mut kdc, &r.kdc_request).await?;
        } else if let (false, Some((server, addr, _))) = (r.kpasswd_request.is_empty(), &kpasswd) {
            step.kpasswd_reply = exchange_at(server, *addr, &r.kpasswd_request).await?;
        } else {
            return Err(LsaError::Internal(
                "the enclave's password change step asked for nothing the proxy can send".into(),
            ));
        }
    }
    Err(LsaError::Unavailable(
        "the password change did not finish: the KDC keeps asking".into(),
    ))
}

/// The first of `servers` that resolves, its address, and the proxy's own IP address toward it
/// (the change request names it as its sender: MIT's kadmind compares).
async fn kpasswd_server(servers: &[KdcAddr]) -> Result<(String, SocketAddr, Vec<u8>), LsaError> {
    let mut last = None;
    for server in servers {
        let resolved = match server.addr {
            Some(a) => Ok(a),
            None => resolve(&server.name).await,
        };
        let addr = match resolved {
            Ok(a) => a,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let server = server.to_string();
        let local = local_ip_toward(addr)
            .await
            .map_err(|e| KdcTransportError::Unreachable {
                addr: server.clone(),
                detail: e.to_string(),
            })?;
        let sender = match local {
            std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
            std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        return Ok((server, addr, sender));
    }
    Err(last
        .unwrap_or_else(|| KdcTransportError::Resolve("(no kpasswd server configured)".into()))
        .into())
}

/// The local IP address the system routes packets to `addr` from (a connected UDP socket sends
/// nothing).
async fn local_ip_toward(addr: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(addr).await?;
    Ok(sock.local_addr()?.ip())
}

/// `KerberosGetServiceTicket`.
pub async fn get_service_ticket(
    core: &LsaCore,
    caller: Caller,
    req: lsa::KerberosGetServiceTicketRequest,
) -> Result<lsa::KerberosGetServiceTicketReply, LsaError> {
    // The enclave refuses both too; saying so here saves a round trip.
    checks::no_delegation(req.delegate)?;
    checks::spn(&req.spn)?;
    checks::channel_bindings(&req.channel_bindings)?;
    if !req.ccache_path.is_empty() {
        return Err(LsaError::FailedPrecondition(CCACHE_PATH_REFUSED.into()));
    }
    let s = core.session(caller, &req.session_id)?;
    has_realm(&s)?;
    let mut kdcs = None;
    let r = match tgs_exchange(core, &s, &mut kdcs, &req).await {
        Err(LsaError::NoTgt(_)) => {
            // No TGT yet, or one near its end: get a fresh one (renewal), then retry once. Calls
            // of the same session take turns, and one that waited may find the TGT already there.
            let turn = core.as_turn(&s.session_id);
            let _turn = turn.lock().await;
            match tgs_exchange(core, &s, &mut kdcs, &req).await {
                Err(LsaError::NoTgt(_)) => {
                    let tgt = as_exchange(core, &s, kdcs_once(core, &s, &mut kdcs).await?).await?;
                    if !tgt.realm.is_empty() && !tgt.realm.eq_ignore_ascii_case(&s.realm) {
                        // A client referral moved the session: its TGS goes to the new realm.
                        let moved = core.session(caller, &req.session_id)?;
                        tgs_exchange(core, &moved, &mut None, &req).await?
                    } else {
                        tgs_exchange(core, &s, &mut kdcs, &req).await?
                    }
                }
                other => other?,
            }
        }
        other => other?,
    };
    let (r, from_cache) = r;
    let ccache = ccache_v4(&r)?;
    info!(%caller, session = %s.session_id, spn = %req.spn, enctype = r.enctype, from_cache, "kerberos service ticket");
    Ok(lsa::KerberosGetServiceTicketReply {
        ap_req: r.ap_req,
        gss_token: r.gss_token,
        ticket: r.ticket,
        session_key: r.session_key,
        enctype: r.enctype,
        end_time: r.end_time,
        ccache,
        subkey: r.subkey,
        seq_number: r.seq_number,
        context_id: r.context_id,
        spnego_token: r.spnego_token,
        from_cache,
    })
}

/// `KerberosVerifyApRep`: the enclave checks the service's AP-REP against the session's AP-REQ.
pub async fn verify_ap_rep(
    core: &LsaCore,
    caller: Caller,
    req: lsa::KerberosVerifyApRepRequest,
) -> Result<lsa::KerberosVerifyApRepReply, LsaError> {
    if req.ap_rep.len() > checks::MAX_KDC_REPLY_LEN || req.context_id.len() > 64 {
        return Err(LsaError::InvalidArgument("ap_rep or context_id is too long".into()));
    }
    let s = core.session(caller, &req.session_id)?;
    let r = core
        .link()
        .client(s.owner)
        .kerberos_verify_ap_rep(&enclave::KerberosVerifyApRepRequest {
            session_handle: s.handle.clone(),
            now_unix: now_unix(),
            context_id: req.context_id,
            ap_rep: req.ap_rep,
        })
        .await?;
    info!(%caller, session = %s.session_id, "kerberos AP-REP verified");
    Ok(lsa::KerberosVerifyApRepReply {
        acceptor_subkey: r.acceptor_subkey,
        acceptor_subkey_enctype: r.acceptor_subkey_enctype,
        has_seq_number: r.has_seq_number,
        seq_number: r.seq_number,
    })
}

/// The TGS exchange, driven by the enclave; also says whether the enclave answered its first
/// step at once, from the service tickets the session keeps (then no KDC was asked). Each request
/// goes to the KDCs of the realm the enclave names (`kdc_realm`: a referral's or cross-realm
/// TGT's; empty, the session's).
async fn tgs_exchange(
    core: &LsaCore,
    s: &LogonSession,
    kdcs: &mut Option<Vec<KdcAddr>>,
    req: &lsa::KerberosGetServiceTicketRequest,
) -> Result<(enclave::KerberosTgsReply, bool), LsaError> {
    let mut kdc_reply = Vec::new();
    let mut kdc = 0;
    let mut other_realms = OtherRealms::default();
    for n in 0..MAX_TGS_STEPS {
        let step = enclave::KerberosTgsRequest {
            session_handle: s.handle.clone(),
            now_unix: now_unix(),
            spn: req.spn.clone(),
            mutual: req.mutual,
            delegate: req.delegate,
            kdc_reply: std::mem::take(&mut kdc_reply),
            channel_bindings: req.channel_bindings.clone(),
        };
        let r = core.link().client(s.owner).kerberos_tgs(&step).await?;
        if r.kdc_request.is_empty() {
            return Ok((r, n == 0));
        }
        kdc_reply = if r.kdc_realm.is_empty() || r.kdc_realm.eq_ignore_ascii_case(&s.realm) {
            let kdcs = kdcs_once(core, s, kdcs).await?;
            kdc_exchange_any(kdcs, &mut kdc, &r.kdc_request).await?
        } else {
            other_realms.exchange(core, &r.kdc_realm, &r.kdc_request).await?
        };
    }
    Err(LsaError::Unavailable(
        "the TGS exchange did not finish: the KDCs keep asking".into(),
    ))
}

/// The KDCs of the other realms one TGS exchange's referrals lead to, each looked up once (and
/// the one that answered, preferred for the later steps).
#[derive(Default)]
struct OtherRealms {
    found: std::collections::HashMap<String, (Vec<KdcAddr>, usize)>,
}

impl OtherRealms {
    /// Sends `request` to `realm`'s KDCs, as [`crate::kdcs::KdcLocator::kdcs`] finds them. A realm
    /// no source knows (a KDC may name any) is a clear FAILED_PRECONDITION, asked of nobody.
    async fn exchange(&mut self, core: &LsaCore, realm: &str, request: &[u8]) -> Result<Vec<u8>, LsaError> {
        checks::realm("kdc_realm", realm)?;
        let referred = |e: LsaError| match e {
            LsaError::FailedPrecondition(m) => {
                LsaError::FailedPrecondition(format!("the KDC referred this request to realm {realm:?}: {m}"))
            }
            LsaError::Unavailable(m) => {
                LsaError::Unavailable(format!("the KDC referred this request to realm {realm:?}: {m}"))
            }
            other => other,
        };
        if !self.found.contains_key(realm) {
            let kdcs = core.kdcs().kdcs(realm).await.map_err(referred)?;
            debug!(realm, kdcs = ?kdcs.iter().map(ToString::to_string).collect::<Vec<_>>(), "KDCs of a referred realm");
            self.found.insert(realm.to_string(), (kdcs, 0));
        }
        let Some((kdcs, preferred)) = self.found.get_mut(realm) else {
            return Err(LsaError::Internal(format!("the KDCs of {realm:?} went missing")));
        };
        kdc_exchange_any(kdcs, preferred, request)
            .await
            .map_err(|e| referred(e.into()))
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_data(out: &mut Vec<u8>, d: &[u8]) -> Result<(), LsaError> {
    let len = u32::try_from(d.len()).map_err(|_| LsaError::Internal("ccache field too long".into()))?;
    put_u32(out, len);
    out.extend_from_slice(d);
    Ok(())
}

/// A principal `a/b@REALM` in ccache form.
fn put_principal(out: &mut Vec<u8>, p: &str, name_type: u32) -> Result<(), LsaError> {
    let (name, realm) = p
        .rsplit_once('@')
        .ok_or_else(|| LsaError::Internal("the enclave returned a principal without a realm".into()))?;
    let parts: Vec<&str> = name.split('/').collect();
    put_u32(out, name_type);
    put_u32(out, parts.len() as u32);
    put_data(out, realm.as_bytes())?;
    for c in parts {
        put_data(out, c.as_bytes())?;
    }
    Ok(())
}

fn time32(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// An MIT credential cache (file format version 4) holding the service ticket only — never a TGT.
pub fn ccache_v4(r: &enclave::KerberosTgsReply) -> Result<Vec<u8>, LsaError> {
    let mut out = Vec::with_capacity(256 + r.ticket.len());
    put_u16(&mut out, 0x0504);
    // No header tags (no KDC time offset is recorded).
    put_u16(&mut out, 0);
    put_principal(&mut out, &r.client_principal, 1)?;
    put_principal(&mut out, &r.client_principal, 1)?;
    put_principal(&mut out, &r.server_principal, 2)?;
    let enctype = u16::try_from(r.enctype).map_err(|_| LsaError::Internal("bad enctype".into()))?;
    put_u16(&mut out, enctype);
    put_data(&mut out, &r.session_key)?;
    for t in [r.auth_time, r.start_time, r.end_time, r.renew_till] {
        put_u32(&mut out, time32(t));
    }
    out.push(0); // is_skey
    put_u32(&mut out, r.flags);
    put_u32(&mut out, 0); // addresses
    put_u32(&mut out, 0); // authdata
    put_data(&mut out, &r.ticket)?;
    put_data(&mut out, &[])?; // second ticket
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_big_detection() {
        assert!(is_too_big(&[0x7e, 0x10, 0xa6, 0x03, 0x02, 0x01, 52]));
        assert!(!is_too_big(&[0x6b, 0xa6, 0x03, 0x02, 0x01, 52]));
    }

    #[test]
    fn ccache_layout() {
        let r = enclave::KerberosTgsReply {
            ticket: vec![0x61, 0x00],
            session_key: vec![1; 32],
            enctype: 18,
            end_time: 2_000_000_000,
            client_principal: "alice@R".into(),
            server_principal: "host/svc@R".into(),
            ..Default::default()
        };
        let c = ccache_v4(&r).unwrap();
        assert_eq!(&c[..4], &[5, 4, 0, 0]);
        assert!(ccache_v4(&enclave::KerberosTgsReply::default()).is_err());
    }

    #[tokio::test]
    async fn the_sender_address_is_the_proxys_own_toward_the_server() {
        let (server, _, sender) = kpasswd_server(&[KdcAddr::named("127.0.0.1:464")]).await.unwrap();
        assert_eq!(server, "127.0.0.1:464");
        assert_eq!(sender, [127, 0, 0, 1]);
        let e = kpasswd_server(&[]).await.unwrap_err();
        assert!(matches!(e, LsaError::Unavailable(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_kdc_that_does_not_answer_passes_the_request_to_the_next() {
        // A KDC on UDP that answers every request with "reply".
        let kdc = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let live = kdc.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = kdc.recv_from(&mut buf).await {
                let _ = kdc.send_to(b"reply", from).await;
            }
        });
        let dead = {
            let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            sock.local_addr().unwrap()
        };
        let kdcs = [
            KdcAddr::named(dead.to_string()),
            // No address at all (the system resolver refuses it at once).
            KdcAddr::named("no port"),
            KdcAddr {
                name: "dc1.corp.test:88".into(),
                addr: Some(live),
            },
        ];
        let mut preferred = 0;
        assert_eq!(kdc_exchange_any(&kdcs, &mut preferred, b"req").await.unwrap(), b"reply");
        assert_eq!(preferred, 2, "the later steps go to the KDC that answered");
        let e = kdc_exchange_any(&kdcs[..2], &mut 0, b"req").await.unwrap_err();
        assert!(matches!(LsaError::from(e), LsaError::Unavailable(_)));
    }

    #[tokio::test]
    async fn unreachable_kdc_is_unavailable() {
        // A port nobody listens on: UDP gets ICMP refused, TCP a reset.
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        drop(sock);
        let e = kdc_exchange(&format!("127.0.0.1:{port}"), b"x").await.unwrap_err();
        assert!(matches!(LsaError::from(e), LsaError::Unavailable(_)));
    }
}
