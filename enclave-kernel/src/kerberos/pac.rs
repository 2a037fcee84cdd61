//! The user's SID from a PAC (MS-PAC), the authorization data an Active Directory KDC puts in its
//! tickets.
//!
//! Written by hand: no crate reads the PAC in no_std, and the part used here is a table of
//! (type, size, offset) and one buffer of offsets and lengths. Every byte comes from the KDC and is
//! read as hostile: each offset and length is checked against its buffer before use, sizes and
//! counts are bounded, and anything malformed gives [`NoSid::Malformed`], never a panic.
//!
//! The SID is read from PAC_UPN_DNS_INFO (MS-PAC 2.10) when its flags carry the S bit (SamName and
//! SID present; Windows Server 2022 and Samba 4.15+ emit it). PAC_LOGON_INFO (an NDR-encoded
//! KERB_VALIDATION_INFO with the domain SID and the user's RID) is not read: a PAC with no S bit
//! gives no SID.

use alloc::format;
use alloc::string::String;

/// PAC_LOGON_INFO (MS-PAC 2.4): where older KDCs put the SID only.
const PAC_LOGON_INFO: u32 = 1;
/// PAC_UPN_DNS_INFO (MS-PAC 2.10).
const PAC_UPN_DNS_INFO: u32 = 12;
/// UPN_DNS_INFO flag S: the SamName and SID fields follow.
const UPN_DNS_FLAG_S: u32 = 0x2;
/// The largest PAC read: far above a real one (a few KiB; a user in many groups tens of KiB),
/// and within what one KDC reply may carry anyway.
pub const MAX_PAC_LEN: usize = credguard_proto::checks::MAX_KDC_REPLY_LEN;
/// The most buffers a PAC may list: real ones have fewer than 20.
pub const MAX_PAC_BUFFERS: u32 = 64;
/// PACTYPE's header: cBuffers and Version.
const PAC_HEADER_LEN: usize = 8;
/// One PAC_INFO_BUFFER: ulType, cbBufferSize, Offset (64 bits).
const PAC_INFO_BUFFER_LEN: usize = 16;
/// A SID has at most 15 sub-authorities (MS-DTYP 2.4.2).
const MAX_SUB_AUTHORITIES: usize = 15;

/// Why a PAC gave no SID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSid {
    /// The PAC does not parse: what was wrong.
    Malformed(&'static str),
    /// The PAC has no PAC_UPN_DNS_INFO.
    NoUpnDnsInfo {
        /// It has a PAC_LOGON_INFO (whose SID this enclave does not read).
        logon_info: bool,
    },
    /// Its PAC_UPN_DNS_INFO has no S flag (no SID in it).
    SFlagUnset,
}

impl NoSid {
    /// Says why, for a log line (no secret: the PAC's layout only).
    pub fn reason(&self) -> String {
        match self {
            NoSid::Malformed(what) => format!("malformed PAC ({what})"),
            NoSid::NoUpnDnsInfo { logon_info: true } => {
                "the PAC has no UPN_DNS_INFO (its LOGON_INFO, not read here, has the SID)".into()
            }
            NoSid::NoUpnDnsInfo { logon_info: false } => "the PAC has no UPN_DNS_INFO and no LOGON_INFO".into(),
            NoSid::SFlagUnset => "the PAC's UPN_DNS_INFO carries no SID (no S flag)".into(),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// One PAC_INFO_BUFFER, checked: `start..end` lies in the PAC, after its buffer table.
#[derive(Clone, Copy)]
struct Buffer {
    ty: u32,
    start: usize,
    end: usize,
}

/// The PAC's buffer table, each entry within the PAC, none over the table or another.
fn buffers(pac: &[u8]) -> Result<alloc::vec::Vec<Buffer>, NoSid> {
    if pac.len() > MAX_PAC_LEN {
        return Err(NoSid::Malformed("larger than the enclave reads"));
    }
    let count = u32_at(pac, 0).ok_or(NoSid::Malformed("truncated header"))?;
    if u32_at(pac, 4) != Some(0) {
        return Err(NoSid::Malformed("unknown version"));
    }
    if count > MAX_PAC_BUFFERS {
        return Err(NoSid::Malformed("too many buffers"));
    }
    // At most 64 entries: the multiplication cannot overflow.
    let table_end = PAC_HEADER_LEN + PAC_INFO_BUFFER_LEN * count as usize;
    if table_end > pac.len() {
        return Err(NoSid::Malformed("truncated buffer table"));
    }
    let mut out = alloc::vec::Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let at = PAC_HEADER_LEN + PAC_INFO_BUFFER_LEN * i;
        let bad = NoSid::Malformed("a buffer lies outside the PAC");
        let (ty, size, offset) = match (u32_at(pac, at), u32_at(pac, at + 4), u64_at(pac, at + 8)) {
            (Some(t), Some(s), Some(o)) => (t, s, o),
            _ => return Err(bad),
        };
        let start = usize::try_from(offset).map_err(|_| bad.clone())?;
        let end = start.checked_add(size as usize).ok_or_else(|| bad.clone())?;
        if start < table_end || end > pac.len() {
            return Err(bad);
        }
        let b = Buffer { ty, start, end };
        if out.iter().any(|o: &Buffer| o.start < b.end && b.start < o.end) {
            return Err(NoSid::Malformed("buffers overlap"));
        }
        out.push(b);
    }
    Ok(out)
}

/// The user's SID in a PAC, as `S-1-5-21-...`.
pub fn user_sid(pac: &[u8]) -> Result<String, NoSid> {
    let table = buffers(pac)?;
    let mut upn = table.iter().filter(|b| b.ty == PAC_UPN_DNS_INFO);
    let Some(info) = upn.next() else {
        return Err(NoSid::NoUpnDnsInfo {
            logon_info: table.iter().any(|b| b.ty == PAC_LOGON_INFO),
        });
    };
    if upn.next().is_some() {
        return Err(NoSid::Malformed("two UPN_DNS_INFO buffers"));
    }
    upn_dns_info_sid(&pac[info.start..info.end])
}

/// The SID of a PAC_UPN_DNS_INFO with the S flag (MS-PAC 2.10): UpnLength, UpnOffset,
/// DnsDomainNameLength, DnsDomainNameOffset (u16 each), Flags (u32), then SamNameLength,
/// SamNameOffset, SidLength, SidOffset; offsets from the buffer's start.
fn upn_dns_info_sid(b: &[u8]) -> Result<String, NoSid> {
    const FIXED_LEN: usize = 20;
    let flags = u32_at(b, 8).ok_or(NoSid::Malformed("truncated UPN_DNS_INFO"))?;
    if flags & UPN_DNS_FLAG_S == 0 {
        return Err(NoSid::SFlagUnset);
    }
    let (len, offset) = match (u16_at(b, 16), u16_at(b, 18)) {
        (Some(l), Some(o)) => (usize::from(l), usize::from(o)),
        _ => return Err(NoSid::Malformed("truncated UPN_DNS_INFO")),
    };
    // Within the buffer, and not over its fixed fields.
    if offset < FIXED_LEN {
        return Err(NoSid::Malformed("the SID overlaps UPN_DNS_INFO's fields"));
    }
    let sid = b
        .get(offset..offset + len)
        .ok_or(NoSid::Malformed("the SID lies outside UPN_DNS_INFO"))?;
    render_sid(sid).ok_or(NoSid::Malformed("not a SID"))
}

/// A binary SID (MS-DTYP 2.4.2: revision 1, sub-authority count, 48-bit big-endian identifier
/// authority, sub-authorities as little-endian u32) in its string form (MS-DTYP 2.4.2.1).
fn render_sid(sid: &[u8]) -> Option<String> {
    let (&revision, rest) = sid.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count);
    if revision != 1 || count == 0 || count > MAX_SUB_AUTHORITIES || rest.len() != 6 + 4 * count {
        return None;
    }
    let authority = rest[..6].iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let mut s = if authority >> 32 == 0 {
        format!("S-1-{authority}")
    } else {
        format!("S-1-0x{authority:012X}")
    };
    for i in 0..count {
        let sub = u32_at(&rest[6..], 4 * i)?;
        s.push_str(&format!("-{sub}"));
    }
    Some(s)
}

#[cfg(test)]
#[path = "pac_tests.rs"]
pub(super) mod tests;
