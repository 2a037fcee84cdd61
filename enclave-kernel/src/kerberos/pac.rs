//! The user's SID from a PAC (MS-PAC), the authorization data an Active Directory KDC puts in its
//! tickets.
//!
//! Written by hand: no crate reads the PAC in no_std, and the part used here is a table of
//! (type, size, offset) and one buffer of offsets and lengths. Every byte comes from the KDC and is
//! read as hostile: each offset and length is checked against its buffer before use, sizes and
//! counts are bounded, and anything malformed gives [`NoSid::Malformed`], never a panic.
//!
//! The SID is read from PAC_UPN_DNS_INFO (MS-PAC 2.10) when its flags carry the S bit (SamName and
//! SID present; Windows Server 2022 and Samba 4.15+ emit it), else from PAC_LOGON_INFO (MS-PAC 2.5:
//! an NDR-encoded KERB_VALIDATION_INFO, whose LogonDomainId and UserId make the SID), which every
//! Active Directory PAC has.

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
    /// The PAC has neither PAC_UPN_DNS_INFO nor PAC_LOGON_INFO (MIT's minimal PAC).
    NoUpnDnsInfo,
    /// Its PAC_UPN_DNS_INFO has no S flag (no SID in it), and it has no PAC_LOGON_INFO.
    SFlagUnset,
}

impl NoSid {
    /// Says why, for a log line (no secret: the PAC's layout only).
    pub fn reason(&self) -> String {
        match self {
            NoSid::Malformed(what) => format!("malformed PAC ({what})"),
            NoSid::NoUpnDnsInfo => "the PAC has no UPN_DNS_INFO and no LOGON_INFO".into(),
            NoSid::SFlagUnset => "the PAC's UPN_DNS_INFO carries no SID (no S flag), and it has no LOGON_INFO".into(),
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
    let upn = only(&table, PAC_UPN_DNS_INFO, "two UPN_DNS_INFO buffers")?;
    let logon = only(&table, PAC_LOGON_INFO, "two LOGON_INFO buffers")?;
    let from_upn = match upn {
        Some(b) => upn_dns_info_sid(&pac[b.start..b.end]),
        None => Err(NoSid::NoUpnDnsInfo),
    };
    match (from_upn, logon) {
        (Err(NoSid::SFlagUnset | NoSid::NoUpnDnsInfo), Some(b)) => logon_info_sid(&pac[b.start..b.end]),
        (result, _) => result,
    }
}

/// The one buffer of type `ty`, if any; two are an error (which one would be the user's?).
fn only(table: &[Buffer], ty: u32, two: &'static str) -> Result<Option<Buffer>, NoSid> {
    let mut found = table.iter().filter(|b| b.ty == ty);
    match (found.next(), found.next()) {
        (_, Some(_)) => Err(NoSid::Malformed(two)),
        (first, None) => Ok(first.copied()),
    }
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

/// A reader of NDR (MS-RPCE 2.2.5, little-endian, 4-byte pointers) that never reads past its
/// buffer.
struct Ndr<'a> {
    b: &'a [u8],
    at: usize,
}

const BAD_LOGON_INFO: NoSid = NoSid::Malformed("LOGON_INFO does not decode");

impl Ndr<'_> {
    fn align4(&mut self) {
        self.at = self.at.saturating_add(3) & !3;
    }

    fn u32(&mut self) -> Result<u32, NoSid> {
        self.align4();
        let v = u32_at(self.b, self.at).ok_or(BAD_LOGON_INFO)?;
        self.at += 4;
        Ok(v)
    }

    /// Skips `n` bytes, which must be there.
    fn skip(&mut self, n: usize) -> Result<&[u8], NoSid> {
        let end = self.at.checked_add(n).ok_or(BAD_LOGON_INFO)?;
        let bytes = self.b.get(self.at..end).ok_or(BAD_LOGON_INFO)?;
        self.at = end;
        Ok(bytes)
    }

    /// The referent of an RPC_UNICODE_STRING's buffer: a conformant varying array of UTF-16.
    fn skip_string(&mut self) -> Result<(), NoSid> {
        let (max, offset, actual) = (self.u32()?, self.u32()?, self.u32()?);
        if offset != 0 || actual > max {
            return Err(BAD_LOGON_INFO);
        }
        self.skip((actual as usize).checked_mul(2).ok_or(BAD_LOGON_INFO)?)
            .map(|_| ())
    }
}

/// Where KERB_VALIDATION_INFO's fields are (MS-PAC 2.5), from its start: the six
/// RPC_UNICODE_STRINGs' pointers (EffectiveName .. HomeDirectoryDrive), UserId, GroupCount's array
/// pointer (GroupIds), LogonServer's and LogonDomainName's pointers, LogonDomainId's pointer, and its
/// fixed size.
const KVI_STRINGS: [usize; 6] = [52, 60, 68, 76, 84, 92];
const KVI_USER_ID: usize = 100;
const KVI_GROUP_IDS: usize = 112;
const KVI_LATER_STRINGS: [usize; 2] = [140, 148];
const KVI_LOGON_DOMAIN_ID: usize = 152;
const KVI_LEN: usize = 216;

/// The SID of a PAC_LOGON_INFO: LogonDomainId, then UserId. The buffer is an NDR type
/// serialization (MS-RPCE 2.2.6: a common header, little-endian only here, and a private header),
/// then the referent id of the top-level pointer, KERB_VALIDATION_INFO, and the referents of its
/// pointers in field order, of which those before LogonDomainId are skipped.
pub fn logon_info_sid(b: &[u8]) -> Result<String, NoSid> {
    if b.get(..4) != Some(&[1, 0x10, 8, 0]) {
        return Err(NoSid::Malformed("LOGON_INFO is not little-endian NDR"));
    }
    let mut r = Ndr { b, at: 16 };
    if r.u32()? == 0 {
        return Err(BAD_LOGON_INFO);
    }
    let base = r.at;
    let field = |off: usize| u32_at(b, base + off).ok_or(BAD_LOGON_INFO);
    r.skip(KVI_LEN)?;
    for off in KVI_STRINGS {
        if field(off)? != 0 {
            r.skip_string()?;
        }
    }
    if field(KVI_GROUP_IDS)? != 0 {
        // GROUP_MEMBERSHIP: RelativeId and Attributes.
        let count = r.u32()? as usize;
        r.skip(count.checked_mul(8).ok_or(BAD_LOGON_INFO)?)?;
    }
    for off in KVI_LATER_STRINGS {
        if field(off)? != 0 {
            r.skip_string()?;
        }
    }
    if field(KVI_LOGON_DOMAIN_ID)? == 0 {
        return Err(NoSid::Malformed("LOGON_INFO has no LogonDomainId"));
    }
    // RPC_SID: its conformance (the sub-authority count) first, then the SID as MS-DTYP lays it out.
    let count = r.u32()? as usize;
    if count > MAX_SUB_AUTHORITIES {
        return Err(BAD_LOGON_INFO);
    }
    let domain = render_sid(r.skip(8 + 4 * count)?).ok_or(BAD_LOGON_INFO)?;
    Ok(format!("{domain}-{}", field(KVI_USER_ID)?))
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
