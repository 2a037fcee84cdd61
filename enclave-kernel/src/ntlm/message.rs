//! NTLM messages (MS-NLMP 2.2) and the NTLMv2 computations (MS-NLMP 3.3.2), as pure functions.
//!
//! Nothing here keeps state or draws random numbers: the caller passes the NT hash, the client
//! challenge, the random session key and the time, which keeps every function testable against
//! the specification's vectors. Parsing never panics: every offset and length of a CHALLENGE is
//! checked against the message before it is used.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::checks::{MAX_NTLM_CHALLENGE_LEN, MAX_NTLM_NEGOTIATE_LEN};
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use zeroize::Zeroizing;

use super::NtlmError;

/// `NTLMSSP\0`, the first eight bytes of every NTLM message.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// Largest target info accepted, in bytes: with the pairs credguard adds, the NTLMv2 response
/// must still fit the 16-bit length of an AUTHENTICATE field.
pub const MAX_TARGET_INFO_LEN: usize = 60 * 1024;

/// NEGOTIATE flags (MS-NLMP 2.2.2.5).
pub mod flags {
    /// Unicode strings.
    pub const UNICODE: u32 = 0x0000_0001;
    /// OEM strings.
    pub const OEM: u32 = 0x0000_0002;
    /// The server should send its name.
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    /// Message integrity.
    pub const SIGN: u32 = 0x0000_0010;
    /// Message confidentiality.
    pub const SEAL: u32 = 0x0000_0020;
    /// LAN Manager session key (NTLMv1 era).
    pub const LM_KEY: u32 = 0x0000_0080;
    /// NTLM authentication.
    pub const NTLM: u32 = 0x0000_0200;
    /// Dummy signatures even without SIGN.
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    /// Extended session security (NTLM2 session security; always with NTLMv2).
    pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    /// The CHALLENGE carries target info.
    pub const TARGET_INFO: u32 = 0x0080_0000;
    /// The Version field is present.
    pub const VERSION: u32 = 0x0200_0000;
    /// 128-bit session keys.
    pub const N128: u32 = 0x2000_0000;
    /// Key exchange: an encrypted random session key is sent.
    pub const KEY_EXCH: u32 = 0x4000_0000;
    /// 56-bit session keys.
    pub const N56: u32 = 0x8000_0000;
}

/// What credguard asks for in its NEGOTIATE: Unicode, NTLM with extended session security, sign
/// and seal with 128-bit keys and key exchange. Never OEM, LM_KEY or anything NTLMv1-only.
pub const CLIENT_FLAGS: u32 = flags::UNICODE
    | flags::REQUEST_TARGET
    | flags::SIGN
    | flags::SEAL
    | flags::NTLM
    | flags::ALWAYS_SIGN
    | flags::EXTENDED_SESSIONSECURITY
    | flags::TARGET_INFO
    | flags::VERSION
    | flags::N128
    | flags::KEY_EXCH
    | flags::N56;

/// Version announced (MS-NLMP 2.2.2.10): 10.0, build 0, NTLMSSP revision 15. Informational only.
const VERSION: [u8; 8] = [10, 0, 0, 0, 0, 0, 0, 0x0f];

/// AV_PAIR identifiers (MS-NLMP 2.2.2.1).
pub mod av {
    /// End of the list.
    pub const EOL: u16 = 0;
    /// The server's NetBIOS computer name.
    pub const NB_COMPUTER_NAME: u16 = 1;
    /// The server's NetBIOS domain name.
    pub const NB_DOMAIN_NAME: u16 = 2;
    /// Flags (bit 0x2: a MIC is present).
    pub const FLAGS: u16 = 6;
    /// FILETIME of the server (or client).
    pub const TIMESTAMP: u16 = 7;
    /// Single host data.
    pub const SINGLE_HOST: u16 = 8;
    /// The SPN of the target, from the client.
    pub const TARGET_NAME: u16 = 9;
    /// MD5 of the channel bindings, from the client.
    pub const CHANNEL_BINDINGS: u16 = 10;
}

/// `MsvAvFlags` bit: the AUTHENTICATE carries a MIC.
pub const AV_FLAG_MIC: u32 = 0x0000_0002;

/// One AV_PAIR of a target info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvPair<'a> {
    /// Its AvId.
    pub id: u16,
    /// Its value.
    pub value: &'a [u8],
}

/// A CHALLENGE_MESSAGE that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// The server's negotiate flags.
    pub flags: u32,
    /// The 8-byte server challenge.
    pub server_challenge: [u8; 8],
    /// The server's target info, without its EOL.
    pub target_info: Vec<AvPair<'a>>,
}

impl Challenge<'_> {
    /// The server's `MsvAvTimestamp`, if it sent one.
    pub fn timestamp(&self) -> Option<[u8; 8]> {
        self.target_info
            .iter()
            .find(|p| p.id == av::TIMESTAMP)
            .and_then(|p| <[u8; 8]>::try_from(p.value).ok())
    }
}

/// The NEGOTIATE_MESSAGE credguard sends: no domain or workstation (they come in the
/// AUTHENTICATE), flags [`CLIENT_FLAGS`], and a Version.
pub fn negotiate_message() -> Vec<u8> {
    const HEADER: u32 = 40;
    let mut m = Vec::with_capacity(HEADER as usize);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&CLIENT_FLAGS.to_le_bytes());
    // DomainNameFields and WorkstationFields: empty, pointing at the end of the header.
    for _ in 0..2 {
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&HEADER.to_le_bytes());
    }
    m.extend_from_slice(&VERSION);
    m
}

fn u16_at(m: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(m.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(m: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(m.get(at..at + 4)?.try_into().ok()?))
}

/// The payload a (len, maxlen, offset) field at `at` of the `kind` message (`CHALLENGE`,
/// `NEGOTIATE`) points to, checked to lie within `m` and after the fixed header of `header_len`
/// bytes.
fn payload<'a>(m: &'a [u8], at: usize, header_len: usize, kind: &str, name: &str) -> Result<&'a [u8], NtlmError> {
    let (Some(len), Some(offset)) = (u16_at(m, at), u32_at(m, at + 4)) else {
        return Err(NtlmError::Invalid(format!("{kind} is truncated in its {name} field")));
    };
    let len = usize::from(len);
    if len == 0 {
        return Ok(&[]);
    }
    let offset = offset as usize;
    if offset < header_len {
        return Err(NtlmError::Invalid(format!(
            "{kind} {name} offset {offset} points into the {header_len}-byte header"
        )));
    }
    match offset.checked_add(len) {
        Some(end) if end <= m.len() => Ok(&m[offset..end]),
        _ => Err(NtlmError::Invalid(format!(
            "{kind} {name} ({len} bytes at offset {offset}) lies outside the {}-byte message",
            m.len()
        ))),
    }
}

/// What a NEGOTIATE must ask for to be the start of an NTLMv2 exchange: NTLM with extended
/// session security, in Unicode (every modern client's NEGOTIATE does; they may ask for OEM and
/// LM_KEY too, which the server then declines in favour of these).
pub const NEGOTIATE_REQUIRED_FLAGS: u32 = flags::NTLM | flags::EXTENDED_SESSIONSECURITY | flags::UNICODE;

/// Parses a NEGOTIATE_MESSAGE a caller sent itself (SPNEGO, gss-ntlmssp) and hands in for the
/// MIC; returns its flags. Malformed: [`NtlmError::Invalid`]; one that does not ask for
/// [`NEGOTIATE_REQUIRED_FLAGS`]: [`NtlmError::Refused`]. Its only use is as MIC input: nothing in
/// it changes the flags, the response or the rules of the AUTHENTICATE, which the CHALLENGE and
/// the enclave decide.
pub fn parse_negotiate(m: &[u8]) -> Result<u32, NtlmError> {
    // Signature, type, flags, DomainNameFields, WorkstationFields; a Version may follow.
    const HEADER: usize = 32;
    if m.len() > MAX_NTLM_NEGOTIATE_LEN {
        return Err(NtlmError::Invalid(format!(
            "NEGOTIATE of {} bytes exceeds the limit of {MAX_NTLM_NEGOTIATE_LEN} bytes",
            m.len()
        )));
    }
    if m.len() < HEADER {
        return Err(NtlmError::Invalid(format!(
            "NEGOTIATE is truncated: {} bytes, its header alone is {HEADER}",
            m.len()
        )));
    }
    if &m[..8] != SIGNATURE {
        return Err(NtlmError::Invalid(
            "not an NTLM message: the signature is not NTLMSSP".into(),
        ));
    }
    let msg_type = u32_at(m, 8).unwrap_or(0);
    if msg_type != 1 {
        return Err(NtlmError::Invalid(format!(
            "NTLM message type {msg_type} is not a NEGOTIATE (1)"
        )));
    }
    let flags = u32_at(m, 12).unwrap_or(0);
    payload(m, 16, HEADER, "NEGOTIATE", "DomainName")?;
    payload(m, 24, HEADER, "NEGOTIATE", "Workstation")?;
    if flags & NEGOTIATE_REQUIRED_FLAGS != NEGOTIATE_REQUIRED_FLAGS {
        return Err(NtlmError::Refused(format!(
            "refused by the NTLMv2-only rule: the NEGOTIATE (flags {flags:#010x}) does not ask for NTLM with \
             extended session security in Unicode"
        )));
    }
    Ok(flags)
}

/// Parses a target info: AV_PAIRs up to `MsvAvEOL`, each within bounds, no AvId twice, and
/// the fixed-size ones of their size. Bytes after the EOL are ignored (not sent back).
pub fn parse_av_pairs(ti: &[u8]) -> Result<Vec<AvPair<'_>>, NtlmError> {
    let mut pairs: Vec<AvPair<'_>> = Vec::new();
    let mut at = 0usize;
    loop {
        let (Some(id), Some(len)) = (u16_at(ti, at), u16_at(ti, at + 2)) else {
            return Err(NtlmError::Invalid("CHALLENGE target info ends without MsvAvEOL".into()));
        };
        let len = usize::from(len);
        let start = at + 4;
        let Some(value) = ti.get(start..start + len) else {
            return Err(NtlmError::Invalid(format!(
                "CHALLENGE target info: AV pair {id} of {len} bytes runs past the end"
            )));
        };
        if id == av::EOL {
            if len != 0 {
                return Err(NtlmError::Invalid("CHALLENGE target info: MsvAvEOL has a value".into()));
            }
            return Ok(pairs);
        }
        let size_ok = match id {
            av::TIMESTAMP => len == 8,
            av::FLAGS => len == 4,
            av::CHANNEL_BINDINGS => len == 16,
            _ => true,
        };
        if !size_ok {
            return Err(NtlmError::Invalid(format!(
                "CHALLENGE target info: AV pair {id} has the wrong length {len}"
            )));
        }
        if pairs.iter().any(|p| p.id == id) {
            return Err(NtlmError::Invalid(format!(
                "CHALLENGE target info: AV pair {id} appears twice"
            )));
        }
        pairs.push(AvPair { id, value });
        at = start + len;
    }
}

/// Parses a CHALLENGE_MESSAGE strictly (malformed: [`NtlmError::Invalid`]) and applies
/// credguard's rule (NTLMv2 only: a CHALLENGE that would need NTLMv1 or LM is
/// [`NtlmError::Refused`]).
pub fn parse_challenge(m: &[u8]) -> Result<Challenge<'_>, NtlmError> {
    // Signature, type, TargetNameFields, flags, server challenge.
    const MIN_HEADER: usize = 32;
    // ... plus Reserved and TargetInfoFields, which NTLMv2 needs.
    const FULL_HEADER: usize = 48;
    // Real ones are a few hundred bytes; the bound keeps a hostile server from making the enclave
    // copy and hash megabytes.
    if m.len() > MAX_NTLM_CHALLENGE_LEN {
        return Err(NtlmError::Invalid(format!(
            "CHALLENGE of {} bytes exceeds the limit of {MAX_NTLM_CHALLENGE_LEN} bytes",
            m.len()
        )));
    }
    if m.len() < MIN_HEADER {
        return Err(NtlmError::Invalid(format!(
            "CHALLENGE is truncated: {} bytes, its header alone is {MIN_HEADER}",
            m.len()
        )));
    }
    if &m[..8] != SIGNATURE {
        return Err(NtlmError::Invalid(
            "not an NTLM message: the signature is not NTLMSSP".into(),
        ));
    }
    let msg_type = u32_at(m, 8).unwrap_or(0);
    if msg_type != 2 {
        return Err(NtlmError::Invalid(format!(
            "NTLM message type {msg_type} is not a CHALLENGE (2)"
        )));
    }
    let flags = u32_at(m, 20).unwrap_or(0);
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(&m[24..32]);
    // An old-style CHALLENGE stops before TargetInfoFields: that server offers no NTLMv2.
    let (header_len, target_info) = if m.len() >= FULL_HEADER {
        (
            FULL_HEADER,
            Some(payload(m, 40, FULL_HEADER, "CHALLENGE", "TargetInfo")?),
        )
    } else if m.len() == MIN_HEADER || m.len() == 40 {
        (m.len(), None)
    } else {
        return Err(NtlmError::Invalid(format!(
            "CHALLENGE is truncated: {} bytes, in the middle of its header",
            m.len()
        )));
    };
    // Not used, but its bounds are checked like every other field's.
    payload(m, 12, header_len, "CHALLENGE", "TargetName")?;
    let target_info = match target_info {
        Some(ti) if ti.len() > MAX_TARGET_INFO_LEN => {
            return Err(NtlmError::Invalid(format!(
                "CHALLENGE target info of {} bytes exceeds the limit of {MAX_TARGET_INFO_LEN} bytes",
                ti.len()
            )));
        }
        Some(ti) if !ti.is_empty() => parse_av_pairs(ti)?,
        _ => Vec::new(),
    };

    if flags & flags::UNICODE == 0 {
        return Err(NtlmError::Refused(
            "refused: the server's CHALLENGE does not accept Unicode; credguard sends NTLMv2 in Unicode only".into(),
        ));
    }
    if flags & flags::EXTENDED_SESSIONSECURITY == 0 {
        return Err(NtlmError::Refused(
            "refused by the NTLMv2-only rule: the server's CHALLENGE does not offer extended session security, \
             so it would need an NTLMv1 or LM response, which credguard never computes from a protected credential"
                .into(),
        ));
    }
    if target_info.is_empty() {
        return Err(NtlmError::Refused(
            "refused by the NTLMv2-only rule: the server's CHALLENGE carries no target info, so it would need an \
             NTLMv1 or LM response, which credguard never computes from a protected credential"
                .into(),
        ));
    }
    Ok(Challenge {
        flags,
        server_challenge,
        target_info,
    })
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 16]> {
    let mut out = Zeroizing::new([0u8; 16]);
    // HMAC takes keys of any length: this cannot fail.
    if let Ok(mut mac) = <Hmac<Md5> as KeyInit>::new_from_slice(key) {
        for p in parts {
            mac.update(p);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn utf16le(s: &str) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(s.len() * 2));
    for unit in s.encode_utf16() {
        v.extend_from_slice(&unit.to_le_bytes());
    }
    v
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash over UTF-16LE(uppercase(user) ||
/// domain). This is the NTLMv2 hash: a long-term secret, it never leaves the enclave.
pub fn ntowfv2(nt_hash: &[u8; 16], user: &str, domain: &str) -> Zeroizing<[u8; 16]> {
    let mut who = Zeroizing::new(String::with_capacity(user.len() + domain.len()));
    who.extend(user.chars().flat_map(char::to_uppercase));
    who.push_str(domain);
    hmac_md5(nt_hash, &[&utf16le(&who)])
}

/// The NTLMv2 client challenge structure "temp" (MS-NLMP 2.2.2.7 and 3.3.2): version 1.1,
/// `time` (FILETIME, little-endian), the client challenge, and the AV pairs (with their EOL).
pub fn ntlmv2_temp(time: [u8; 8], client_challenge: [u8; 8], av_pairs: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(28 + av_pairs.len() + 4);
    t.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    t.extend_from_slice(&time);
    t.extend_from_slice(&client_challenge);
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(av_pairs);
    t.extend_from_slice(&[0; 4]);
    t
}

/// NTProofStr = HMAC-MD5(NTOWFv2, server challenge || temp).
pub fn nt_proof_str(response_key: &[u8; 16], server_challenge: &[u8; 8], temp: &[u8]) -> [u8; 16] {
    *hmac_md5(response_key, &[server_challenge, temp])
}

/// SessionBaseKey = HMAC-MD5(NTOWFv2, NTProofStr); for NTLMv2 it is also the key exchange key.
pub fn session_base_key(response_key: &[u8; 16], nt_proof: &[u8; 16]) -> Zeroizing<[u8; 16]> {
    hmac_md5(response_key, &[nt_proof])
}

/// The LMv2 response: HMAC-MD5(NTOWFv2, server challenge || client challenge) || client challenge.
pub fn lmv2_response(response_key: &[u8; 16], server_challenge: &[u8; 8], client_challenge: &[u8; 8]) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..16].copy_from_slice(&*hmac_md5(response_key, &[server_challenge, client_challenge]));
    out[16..].copy_from_slice(client_challenge);
    out
}

/// RC4K(key, data) (MS-NLMP 6): encrypts the 16-byte random session key under the key exchange key.
pub fn rc4k(key: &[u8; 16], data: &[u8; 16]) -> [u8; 16] {
    use rc4::{KeyInit as _, StreamCipher as _};
    let mut out = *data;
    // RC4 accepts keys of 1 to 256 bytes: a 16-byte key cannot fail.
    if let Ok(mut c) = rc4::Rc4::new_from_slice(key) {
        c.apply_keystream(&mut out);
    }
    out
}

/// The target info credguard sends back inside the NTLMv2 response: the server's pairs (its
/// `MsvAvTimestamp` included), `MsvAvFlags` with the MIC bit (merged with the server's flags),
/// `MsvAvTimestamp` from `now` if the server sent none, `MsvAvChannelBindings` (MD5 of the
/// bindings, or zeros), `MsvAvTargetName` if an SPN is given, then `MsvAvEOL`.
pub fn client_target_info(
    challenge: &Challenge<'_>,
    now_filetime: u64,
    channel_bindings: Option<&[u8]>,
    target_spn: Option<&str>,
) -> Vec<u8> {
    fn push(out: &mut Vec<u8>, id: u16, value: &[u8]) {
        out.extend_from_slice(&id.to_le_bytes());
        // Values are bounded by the 64 KiB CHALLENGE and the SPN limit: they fit in a u16.
        out.extend_from_slice(&(value.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&value[..value.len().min(usize::from(u16::MAX))]);
    }
    let mut out = Vec::new();
    let mut av_flags = AV_FLAG_MIC;
    for p in &challenge.target_info {
        match p.id {
            av::FLAGS => {
                av_flags |= u32::from_le_bytes(p.value.try_into().unwrap_or([0; 4]));
            }
            // Client-side pairs are ours to set, whatever the server put there.
            av::CHANNEL_BINDINGS | av::TARGET_NAME | av::SINGLE_HOST => {}
            _ => push(&mut out, p.id, p.value),
        }
    }
    if challenge.timestamp().is_none() {
        push(&mut out, av::TIMESTAMP, &now_filetime.to_le_bytes());
    }
    push(&mut out, av::FLAGS, &av_flags.to_le_bytes());
    let cbt: [u8; 16] = match channel_bindings {
        Some(cb) if !cb.is_empty() => Md5::digest(cb).into(),
        _ => [0; 16],
    };
    push(&mut out, av::CHANNEL_BINDINGS, &cbt);
    if let Some(spn) = target_spn.filter(|s| !s.is_empty()) {
        push(&mut out, av::TARGET_NAME, &utf16le(spn));
    }
    push(&mut out, av::EOL, &[]);
    out
}

/// What an AUTHENTICATE is made from.
pub struct AuthenticateInput<'a> {
    /// User name, as logged on.
    pub user: &'a str,
    /// NetBIOS domain, as logged on.
    pub domain: &'a str,
    /// The session's NT hash.
    pub nt_hash: &'a [u8; 16],
    /// The NEGOTIATE the client sent (for the MIC): this context's, or the caller's own.
    pub negotiate: &'a [u8],
    /// The workstation name (checked by `checks::ntlm_workstation`; empty: none).
    pub workstation: &'a str,
    /// The server's CHALLENGE, as received (for the MIC).
    pub challenge_message: &'a [u8],
    /// The same, parsed.
    pub challenge: &'a Challenge<'a>,
    /// Fresh random client challenge.
    pub client_challenge: [u8; 8],
    /// Fresh random session key (used only under key exchange).
    pub random_session_key: [u8; 16],
    /// Current time as FILETIME, used when the server sent no timestamp. Not a secret.
    pub now_filetime: u64,
    /// `gss_channel_bindings_struct`, if any.
    pub channel_bindings: Option<&'a [u8]>,
    /// Target SPN, if any.
    pub target_spn: Option<&'a str>,
}

/// An AUTHENTICATE_MESSAGE and the context's exported session key.
pub struct Authenticated {
    /// The AUTHENTICATE_MESSAGE.
    pub message: Vec<u8>,
    /// The exported session key (per context; not a long-term secret).
    pub exported_session_key: Zeroizing<[u8; 16]>,
}

/// Offset of the MIC in the AUTHENTICATE credguard builds (after the Version).
pub const MIC_OFFSET: usize = 72;
/// Length of that AUTHENTICATE's fixed header (Version and MIC included).
pub const AUTHENTICATE_HEADER_LEN: usize = 88;

/// Builds the AUTHENTICATE_MESSAGE per MS-NLMP 3.1.5.1.2 with an NTLMv2 response and a MIC.
pub fn authenticate_message(input: &AuthenticateInput<'_>) -> Authenticated {
    let ch = input.challenge;
    let response_key = ntowfv2(input.nt_hash, input.user, input.domain);
    let server_ts = ch.timestamp();
    let time = server_ts.unwrap_or(input.now_filetime.to_le_bytes());
    let av_pairs = client_target_info(ch, input.now_filetime, input.channel_bindings, input.target_spn);
    let temp = ntlmv2_temp(time, input.client_challenge, &av_pairs);
    let proof = nt_proof_str(&response_key, &ch.server_challenge, &temp);
    let mut nt_response = Vec::with_capacity(16 + temp.len());
    nt_response.extend_from_slice(&proof);
    nt_response.extend_from_slice(&temp);
    // With a server timestamp the LMv2 response is zeros (MS-NLMP 3.1.5.1.2), so that it cannot
    // be replayed without the timestamp check.
    let lm_response = match server_ts {
        Some(_) => [0u8; 24],
        None => lmv2_response(&response_key, &ch.server_challenge, &input.client_challenge),
    };
    let key_exchange_key = session_base_key(&response_key, &proof);

    let negotiated = ch.flags & CLIENT_FLAGS;
    let key_exch = negotiated & flags::KEY_EXCH != 0 && negotiated & (flags::SIGN | flags::SEAL) != 0;
    let (exported, encrypted_key) = if key_exch {
        let enc = rc4k(&key_exchange_key, &input.random_session_key);
        (Zeroizing::new(input.random_session_key), Some(enc))
    } else {
        (Zeroizing::new(*key_exchange_key), None)
    };

    let domain = utf16le(input.domain);
    let user = utf16le(input.user);
    let workstation = utf16le(input.workstation);
    let payloads: [&[u8]; 6] = [
        &domain,
        &user,
        &workstation,
        &lm_response,
        &nt_response,
        encrypted_key.as_ref().map_or(&[][..], |k| &k[..]),
    ];
    let mut m = Vec::with_capacity(AUTHENTICATE_HEADER_LEN + payloads.iter().map(|p| p.len()).sum::<usize>());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&3u32.to_le_bytes());
    // Field order in the header: LM, NT, domain, user, workstation, encrypted key.
    let mut offsets = [0u32; 6];
    let mut at = AUTHENTICATE_HEADER_LEN as u32;
    for (i, p) in payloads.iter().enumerate() {
        offsets[i] = at;
        at += p.len() as u32;
    }
    for i in [3usize, 4, 0, 1, 2, 5] {
        let len = payloads[i].len() as u16;
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&offsets[i].to_le_bytes());
    }
    m.extend_from_slice(&negotiated.to_le_bytes());
    m.extend_from_slice(&VERSION);
    m.extend_from_slice(&[0u8; 16]); // the MIC, filled in below
    for p in payloads {
        m.extend_from_slice(p);
    }
    let mic = hmac_md5(&*exported, &[input.negotiate, input.challenge_message, &m]);
    m[MIC_OFFSET..MIC_OFFSET + 16].copy_from_slice(&*mic);
    Authenticated {
        message: m,
        exported_session_key: exported,
    }
}
