//! A KDC relay that keeps every reply, and the DER walking that opens the replies with the keys
//! the test learns from kadmin: how the memory scans learn the session keys they look for (the
//! TGT's, which must never leave the enclave; a service ticket's, which the client program holds).

use std::io::Read;
use std::time::Duration;

/// A KDC relay on loopback (UDP and TCP on one port) that keeps a copy of every reply, so the test
/// can learn the TGT session key the way an eavesdropper with the user's long-term key would.
pub struct KdcRelay {
    /// Where it listens (UDP and TCP).
    pub addr: std::net::SocketAddr,
    /// Every reply of the KDC so far, as sent.
    pub replies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// Every request to the KDC so far, as sent.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl KdcRelay {
    /// Relays to the KDC at `kdc` (`host:port`) from a free port on loopback.
    pub fn start(kdc: &str) -> KdcRelay {
        use std::io::Write;
        use std::net::{TcpListener, TcpStream, UdpSocket};
        let kdc: std::net::SocketAddr = kdc.parse().unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).unwrap();
        let replies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = replies.clone();
        let asked = requests.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                asked.lock().unwrap().push(buf[..n].to_vec());
                let up = UdpSocket::bind("127.0.0.1:0").unwrap();
                up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                up.send_to(&buf[..n], kdc).unwrap();
                let mut reply = vec![0u8; 65536];
                if let Ok((m, _)) = up.recv_from(&mut reply) {
                    seen.lock().unwrap().push(reply[..m].to_vec());
                    let _ = udp.send_to(&reply[..m], from);
                }
            }
        });
        let seen = replies.clone();
        let asked = requests.clone();
        std::thread::spawn(move || {
            for conn in tcp.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut up = TcpStream::connect(kdc).unwrap();
                let mut len = [0u8; 4];
                if conn.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
                conn.read_exact(&mut req).unwrap();
                asked.lock().unwrap().push(req.clone());
                up.write_all(&len).unwrap();
                up.write_all(&req).unwrap();
                up.read_exact(&mut len).unwrap();
                let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
                up.read_exact(&mut reply).unwrap();
                seen.lock().unwrap().push(reply.clone());
                let _ = conn.write_all(&len);
                let _ = conn.write_all(&reply);
            }
        });
        KdcRelay {
            addr,
            replies,
            requests,
        }
    }
}

/// One DER TLV: (tag, contents, rest).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let len = b.get(2..2 + n)?.iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, 2 + n)
    };
    Some((tag, b.get(hdr..hdr + len)?, b.get(hdr + len..)?))
}

/// The child of a DER SEQUENCE's contents with context tag `[n]`, unwrapped.
fn context_child(mut seq: &[u8], n: u8) -> Option<&[u8]> {
    while let Some((tag, content, rest)) = der(seq) {
        if tag == 0xa0 + n {
            return Some(content);
        }
        seq = rest;
    }
    None
}

/// The plaintext of an EncryptedData (RFC 4120: etype [0], cipher [2]; the contents of its
/// SEQUENCE), decrypted under key usage `usage` with the one of `keys` of its enctype.
fn decrypt_part(encrypted: &[u8], keys: &[(i32, Vec<u8>)], usage: u32) -> Option<Vec<u8>> {
    use credguard_enclave::kerberos::crypto::{Key, decrypt};
    let (0x02, etype, _) = der(context_child(encrypted, 0)?)? else {
        return None;
    };
    let etype = etype.iter().fold(0i32, |a, &x| (a << 8) | x as i32);
    let (0x04, cipher, _) = der(context_child(encrypted, 2)?)? else {
        return None;
    };
    let (_, key) = keys.iter().find(|(e, _)| *e == etype)?;
    decrypt(&Key::new(etype, key).ok()?, usage, cipher)
        .ok()
        .map(|plain| plain.to_vec())
}

/// The key value of the EncryptionKey (keytype [0], keyvalue [1]) at context tag `[n]` of the
/// SEQUENCE inside the APPLICATION-tagged `part` (an EncASRepPart or EncTicketPart).
fn key_of(part: &[u8], n: u8) -> Option<Vec<u8>> {
    let (_, part, _) = der(part)?;
    let (0x30, part, _) = der(part)? else { return None };
    let (0x30, key, _) = der(context_child(part, n)?)? else {
        return None;
    };
    let (0x04, value, _) = der(context_child(key, 1)?)? else {
        return None;
    };
    Some(value.to_vec())
}

/// The TGT session key in an AS-REP, decrypted with the client's long-term keys (RFC 4120:
/// AS-REP ::= [APPLICATION 11] KDC-REP; enc-part [6] under key usage 3; EncASRepPart's key [0]).
pub fn tgt_session_key(as_rep: &[u8], keys: &[(i32, Vec<u8>)]) -> Option<Vec<u8>> {
    let (0x6b, rep, _) = der(as_rep)? else { return None };
    let (0x30, rep, _) = der(rep)? else { return None };
    let (0x30, enc, _) = der(context_child(rep, 6)?)? else {
        return None;
    };
    key_of(&decrypt_part(enc, keys, 3)?, 0)
}

/// The session key of the service ticket in a TGS-REP, from the ticket itself, decrypted with the
/// service's long-term keys (RFC 4120: TGS-REP ::= [APPLICATION 13] KDC-REP; ticket [5] ::=
/// [APPLICATION 1] with enc-part [3] under key usage 2; EncTicketPart's key [1]). `None` for any
/// other reply, or a ticket of another service.
pub fn service_session_key(tgs_rep: &[u8], service_keys: &[(i32, Vec<u8>)]) -> Option<Vec<u8>> {
    let (0x6d, rep, _) = der(tgs_rep)? else { return None };
    let (0x30, rep, _) = der(rep)? else { return None };
    let (0x61, ticket, _) = der(context_child(rep, 5)?)? else {
        return None;
    };
    let (0x30, ticket, _) = der(ticket)? else { return None };
    let (0x30, enc, _) = der(context_child(ticket, 3)?)? else {
        return None;
    };
    key_of(&decrypt_part(enc, service_keys, 2)?, 1)
}

/// The components of the server name of the ticket in a TGS-REP (ticket [5] ::= [APPLICATION 1]
/// with sname [2] ::= PrincipalName, name-string [1]); `None` for any other reply.
pub fn ticket_sname(tgs_rep: &[u8]) -> Option<Vec<String>> {
    let (0x6d, rep, _) = der(tgs_rep)? else { return None };
    let (0x30, rep, _) = der(rep)? else { return None };
    let (0x61, ticket, _) = der(context_child(rep, 5)?)? else {
        return None;
    };
    let (0x30, ticket, _) = der(ticket)? else { return None };
    let (0x30, sname, _) = der(context_child(ticket, 2)?)? else {
        return None;
    };
    let (0x30, mut parts, _) = der(context_child(sname, 1)?)? else {
        return None;
    };
    let mut out = Vec::new();
    while let Some((_, part, rest)) = der(parts) {
        out.push(String::from_utf8_lossy(part).into_owned());
        parts = rest;
    }
    Some(out)
}

/// The decrypted EncTicketPart (DER) of the ticket in a TGS-REP, under one of `keys` (key usage
/// 2): for a user-to-user ticket, the TGT's session key.
pub fn ticket_part(tgs_rep: &[u8], keys: &[(i32, Vec<u8>)]) -> Option<Vec<u8>> {
    let (0x6d, rep, _) = der(tgs_rep)? else { return None };
    let (0x30, rep, _) = der(rep)? else { return None };
    let (0x61, ticket, _) = der(context_child(rep, 5)?)? else {
        return None;
    };
    let (0x30, ticket, _) = der(ticket)? else { return None };
    let (0x30, enc, _) = der(context_child(ticket, 3)?)? else {
        return None;
    };
    decrypt_part(enc, keys, 2)
}

/// The AD-WIN2K-PAC (type 128) inside an AD-IF-RELEVANT (type 1) of an EncTicketPart's
/// authorization-data [10].
pub fn pac_of_ticket_part(part: &[u8]) -> Option<Vec<u8>> {
    let (_, part, _) = der(part)?;
    let (0x30, part, _) = der(part)? else { return None };
    let (0x30, mut ad, _) = der(context_child(part, 10)?)? else {
        return None;
    };
    // AuthorizationData ::= SEQUENCE OF SEQUENCE { ad-type [0] Int32, ad-data [1] OCTET STRING }
    let entry = |e: &[u8]| -> Option<(i64, Vec<u8>)> {
        let (0x02, ty, _) = der(context_child(e, 0)?)? else {
            return None;
        };
        let (0x04, data, _) = der(context_child(e, 1)?)? else {
            return None;
        };
        Some((ty.iter().fold(0i64, |a, &x| (a << 8) | x as i64), data.to_vec()))
    };
    while let Some((0x30, e, rest)) = der(ad) {
        ad = rest;
        let Some((1, data)) = entry(e) else { continue };
        let (0x30, mut inner, _) = der(&data)? else { continue };
        while let Some((0x30, i, rest)) = der(inner) {
            inner = rest;
            if let Some((128, pac)) = entry(i) {
                return Some(pac);
            }
        }
    }
    None
}

/// The session key of a user-to-user ticket in a TGS-REP (encrypted in a TGT's session key: one
/// of `tgt_keys`), from the ticket itself; `None` for any other reply.
pub fn u2u_session_key(tgs_rep: &[u8], tgt_keys: &[Vec<u8>]) -> Option<Vec<u8>> {
    tgt_keys.iter().find_map(|k| {
        let keys = [17, 18, 19, 20].map(|e| (e, k.clone()));
        key_of(&ticket_part(tgs_rep, &keys)?, 1)
    })
}

impl KdcRelay {
    /// TGS-REPs (APPLICATION 13) for services this relay has passed on: not the user-to-user ones
    /// for `user`'s own name, which follow each TGT (the user's SID from the PAC).
    pub fn service_tgs_reps(&self, user: &str) -> usize {
        self.replies
            .lock()
            .map(|replies| {
                replies
                    .iter()
                    .filter(|r| r.first() == Some(&0x6d))
                    .filter(|r| ticket_sname(r).is_some_and(|s| s != [user]))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// The padata types of an AS-REQ or TGS-REQ (KDC-REQ padata [3]) or an AS-REP or TGS-REP
/// (KDC-REP padata [2]), in order.
pub fn padata_types(msg: &[u8]) -> Vec<i32> {
    let field = match msg.first() {
        Some(0x6a | 0x6c) => 3,
        Some(0x6b | 0x6d) => 2,
        _ => return Vec::new(),
    };
    let Some((_, outer, _)) = der(msg) else {
        return Vec::new();
    };
    let Some((0x30, body, _)) = der(outer) else {
        return Vec::new();
    };
    let Some((0x30, mut list, _)) = context_child(body, field).and_then(der) else {
        return Vec::new();
    };
    let mut types = Vec::new();
    while let Some((0x30, pa, rest)) = der(list) {
        if let Some((0x02, t, _)) = context_child(pa, 1).and_then(der) {
            types.push(t.iter().fold(0i32, |a, &x| (a << 8) | x as i32));
        }
        list = rest;
    }
    types
}

/// The client name of an AS-REQ (req-body [4], cname [1], name-string [1]), components joined
/// by `/`.
pub fn as_req_client(msg: &[u8]) -> Option<String> {
    let (0x6a, outer, _) = der(msg)? else { return None };
    let (0x30, req, _) = der(outer)? else { return None };
    let (0x30, body, _) = der(context_child(req, 4)?)? else {
        return None;
    };
    let (0x30, name, _) = der(context_child(body, 1)?)? else {
        return None;
    };
    let (0x30, mut parts, _) = der(context_child(name, 1)?)? else {
        return None;
    };
    let mut out = Vec::new();
    while let Some((0x1b, part, rest)) = der(parts) {
        out.push(String::from_utf8_lossy(part).into_owned());
        parts = rest;
    }
    Some(out.join("/"))
}
