//! Kerberos on the proxy's side: the network and the files, never a secret.
//!
//! The enclave builds and reads every Kerberos message; the proxy carries them to and from the KDC
//! (UDP first, TCP when the reply does not fit or UDP fails), gives the enclave the time, reacts
//! to "no valid TGT" by running the AS exchange first (which also renews a TGT near its end), and
//! returns each service ticket also as an MIT credential cache, which the caller writes itself:
//! the proxy never opens a path a caller names.

use std::net::SocketAddr;
use std::time::Duration;

use credguard_proto::enclave as wire;
use credguard_proto::lsa;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, lookup_host};
use tracing::info;

use crate::core::LsaCore;
use crate::error::LsaError;
use crate::sessions::{Caller, LogonSession};

/// How long one KDC round trip may take.
const KDC_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest KDC reply accepted over TCP.
const MAX_TCP_REPLY: usize = 1 << 20;
/// Steps of one exchange at most (no preauth, preauth, one skew retry, and a spare).
const MAX_STEPS: usize = 5;
/// The enclave's refusal to use a session without a valid TGT starts with this.
const NO_TGT: &str = "no valid TGT in this session";
/// The rule a delegation request breaks.
pub const DELEGATION_REFUSED: &str = "unconstrained delegation is never allowed: credguard never forwards a TGT";
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
}

impl From<KdcTransportError> for LsaError {
    fn from(e: KdcTransportError) -> Self {
        LsaError::Unavailable(e.to_string())
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `reply` is a KRB-ERROR with code 52 (KRB_ERR_RESPONSE_TOO_BIG). A byte search instead
/// of a decoder: the proxy parses no Kerberos; a false match only costs a TCP retry.
fn is_too_big(reply: &[u8]) -> bool {
    reply.first() == Some(&0x7e) && reply.windows(5).any(|w| w == [0xa6, 0x03, 0x02, 0x01, 52])
}

/// Sends `request` to the KDC at `kdc` (`host:port`) and returns its reply.
pub async fn kdc_exchange(kdc: &str, request: &[u8]) -> Result<Vec<u8>, KdcTransportError> {
    let addrs: Vec<SocketAddr> = lookup_host(kdc)
        .await
        .map_err(|_| KdcTransportError::Resolve(kdc.into()))?
        .collect();
    let addr = *addrs.first().ok_or_else(|| KdcTransportError::Resolve(kdc.into()))?;
    let udp_err = match udp_exchange(addr, request).await {
        Ok(reply) if !is_too_big(&reply) => return Ok(reply),
        Ok(_) => "reply too big for UDP".to_string(),
        Err(e) => e.to_string(),
    };
    tcp_exchange(addr, request)
        .await
        .map_err(|e| KdcTransportError::Unreachable {
            addr: kdc.into(),
            detail: format!("udp: {udp_err}; tcp: {e}"),
        })
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

async fn tcp_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut msg = Vec::with_capacity(4 + request.len());
        msg.extend_from_slice(&(request.len() as u32).to_be_bytes());
        msg.extend_from_slice(request);
        s.write_all(&msg).await?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_TCP_REPLY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "KDC reply too large",
            ));
        }
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(KDC_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

fn kdc_of(core: &LsaCore, s: &LogonSession) -> Result<String, LsaError> {
    if s.realm.is_empty() {
        return Err(LsaError::FailedPrecondition(
            "the session has no Kerberos realm: log on with --realm".into(),
        ));
    }
    if !s.kdc.is_empty() {
        return Ok(s.kdc.clone());
    }
    core.config()
        .kerberos
        .default_kdc
        .clone()
        .ok_or_else(|| LsaError::FailedPrecondition("no KDC: give one at logon or set kerberos.default_kdc".into()))
}

/// `KerberosGetTgt`.
pub async fn get_tgt(
    core: &LsaCore,
    caller: Caller,
    req: lsa::KerberosGetTgtRequest,
) -> Result<lsa::KerberosGetTgtReply, LsaError> {
    let s = core.session(caller, &req.session_id)?;
    let kdc = kdc_of(core, &s)?;
    let r = as_exchange(core, &s, &kdc).await?;
    info!(%caller, session = %s.session_id, principal = %r.client_principal, enctype = r.enctype, "kerberos tgt");
    Ok(lsa::KerberosGetTgtReply {
        client_principal: r.client_principal,
        realm: r.realm,
        enctype: r.enctype,
        start_time: r.start_time,
        end_time: r.end_time,
        renew_till: r.renew_till,
    })
}

async fn as_exchange(core: &LsaCore, s: &LogonSession, kdc: &str) -> Result<wire::KerberosAsReply, LsaError> {
    let mut kdc_reply = Vec::new();
    for _ in 0..MAX_STEPS {
        let step = wire::KerberosAsRequest {
            session_handle: s.handle.clone(),
            now_unix: now_unix(),
            allow_rc4: core.config().kerberos.allow_rc4,
            kdc_reply: std::mem::take(&mut kdc_reply),
        };
        let r: wire::KerberosAsReply = core
            .link()
            .call_as(s.owner, wire::METHOD_KERBEROS_AS, step.encode_to_vec())
            .await?;
        if r.kdc_request.is_empty() {
            return Ok(r);
        }
        kdc_reply = kdc_exchange(kdc, &r.kdc_request).await?;
    }
    Err(LsaError::Unavailable(
        "the AS exchange did not finish: the KDC keeps asking".into(),
    ))
}

/// `KerberosGetServiceTicket`.
pub async fn get_service_ticket(
    core: &LsaCore,
    caller: Caller,
    req: lsa::KerberosGetServiceTicketRequest,
) -> Result<lsa::KerberosGetServiceTicketReply, LsaError> {
    if req.delegate {
        // The enclave refuses it too; saying so here saves a round trip.
        return Err(LsaError::FailedPrecondition(DELEGATION_REFUSED.into()));
    }
    if req.spn.is_empty() || req.spn.len() > 512 || req.spn.chars().any(char::is_control) {
        return Err(LsaError::InvalidArgument(
            "spn must be service/host or service@host".into(),
        ));
    }
    if !req.ccache_path.is_empty() {
        return Err(LsaError::FailedPrecondition(CCACHE_PATH_REFUSED.into()));
    }
    let s = core.session(caller, &req.session_id)?;
    let kdc = kdc_of(core, &s)?;
    let mut got_tgt = false;
    let r = loop {
        match tgs_exchange(core, &s, &kdc, &req).await {
            Err(LsaError::FailedPrecondition(m)) if m.starts_with(NO_TGT) && !got_tgt => {
                // No TGT yet, or one near its end: get a fresh one (renewal), then retry once.
                as_exchange(core, &s, &kdc).await?;
                got_tgt = true;
            }
            other => break other?,
        }
    };
    let ccache = ccache_v4(&r)?;
    info!(%caller, session = %s.session_id, spn = %req.spn, enctype = r.enctype, "kerberos service ticket");
    Ok(lsa::KerberosGetServiceTicketReply {
        ap_req: r.ap_req,
        gss_token: r.gss_token,
        ticket: r.ticket,
        session_key: r.session_key,
        enctype: r.enctype,
        end_time: r.end_time,
        ccache,
    })
}

async fn tgs_exchange(
    core: &LsaCore,
    s: &LogonSession,
    kdc: &str,
    req: &lsa::KerberosGetServiceTicketRequest,
) -> Result<wire::KerberosTgsReply, LsaError> {
    let mut kdc_reply = Vec::new();
    for _ in 0..MAX_STEPS {
        let step = wire::KerberosTgsRequest {
            session_handle: s.handle.clone(),
            now_unix: now_unix(),
            allow_rc4: core.config().kerberos.allow_rc4,
            spn: req.spn.clone(),
            mutual: req.mutual,
            delegate: req.delegate,
            kdc_reply: std::mem::take(&mut kdc_reply),
        };
        let r: wire::KerberosTgsReply = core
            .link()
            .call_as(s.owner, wire::METHOD_KERBEROS_TGS, step.encode_to_vec())
            .await?;
        if r.kdc_request.is_empty() {
            return Ok(r);
        }
        kdc_reply = kdc_exchange(kdc, &r.kdc_request).await?;
    }
    Err(LsaError::Unavailable(
        "the TGS exchange did not finish: the KDC keeps asking".into(),
    ))
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
pub fn ccache_v4(r: &wire::KerberosTgsReply) -> Result<Vec<u8>, LsaError> {
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
        let r = wire::KerberosTgsReply {
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
        assert!(ccache_v4(&wire::KerberosTgsReply::default()).is_err());
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
