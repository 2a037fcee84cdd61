//! PACs crafted here, as Samba lays them out, and hostile ones.

use alloc::vec::Vec;

use super::{MAX_PAC_BUFFERS, NoSid, user_sid};

/// S-1-5-21-1111-2222-3333-1104, binary.
pub(crate) fn alice_sid() -> Vec<u8> {
    let mut s = alloc::vec![1u8, 5, 0, 0, 0, 0, 0, 5];
    for sub in [21u32, 1111, 2222, 3333, 1104] {
        s.extend_from_slice(&sub.to_le_bytes());
    }
    s
}

/// A PAC_UPN_DNS_INFO with `flags`, UPN `alice@corp.test`, DNS domain `CORP.TEST` and, with the
/// S flag, SamName `alice` and `sid` (UTF-16 names, as Samba writes them).
pub(crate) fn upn_dns_info(flags: u32, sid: &[u8]) -> Vec<u8> {
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
    let (upn, dns, sam) = (utf16("alice@corp.test"), utf16("CORP.TEST"), utf16("alice"));
    let fixed = if flags & 2 != 0 { 20 } else { 12 };
    let mut tail = Vec::new();
    let mut field = |data: &[u8], out: &mut Vec<u8>| {
        let at = (fixed + tail.len()) as u16;
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        tail.extend_from_slice(data);
    };
    let mut b = Vec::new();
    field(&upn, &mut b);
    field(&dns, &mut b);
    b.extend_from_slice(&flags.to_le_bytes());
    if flags & 2 != 0 {
        field(&sam, &mut b);
        field(sid, &mut b);
    }
    b.extend_from_slice(&tail);
    b
}

/// A PAC of `buffers` (type, contents), each 8-byte aligned after the table, as MS-PAC lays
/// them out.
pub(crate) fn pac(buffers: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(buffers.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut at = 8 + 16 * buffers.len();
    let mut data = Vec::new();
    for (ty, b) in buffers {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&(at as u64).to_le_bytes());
        data.extend_from_slice(b);
        while data.len() % 8 != 0 {
            data.push(0);
        }
        at = 8 + 16 * buffers.len() + data.len();
    }
    out.extend_from_slice(&data);
    out
}

/// A PAC as Samba 4.17 sends one: LOGON_INFO, CLIENT_INFO, UPN_DNS_INFO with the S flag, the
/// checksums (contents do not matter here).
fn samba_like() -> Vec<u8> {
    pac(&[
        (1, alloc::vec![0xcc; 480]),
        (10, alloc::vec![0x11; 20]),
        (12, upn_dns_info(0x3, &alice_sid())),
        (17, alloc::vec![0x22; 16]),
        (6, alloc::vec![0x33; 16]),
        (7, alloc::vec![0x44; 16]),
    ])
}

#[test]
fn the_sid_of_upn_dns_info_with_the_s_flag() {
    assert_eq!(user_sid(&samba_like()).unwrap(), "S-1-5-21-1111-2222-3333-1104");
    // Alone, too, and with a well-known SID.
    let well_known = [1u8, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    assert_eq!(
        user_sid(&pac(&[(12, upn_dns_info(0x2, &well_known))])).unwrap(),
        "S-1-5-18"
    );
    // An identifier authority of 2^32 or more is written in hex (MS-DTYP 2.4.2.1).
    let big = [1u8, 1, 0, 1, 0, 0, 0, 0, 7, 0, 0, 0];
    assert_eq!(
        user_sid(&pac(&[(12, upn_dns_info(0x2, &big))])).unwrap(),
        "S-1-0x000100000000-7"
    );
}

#[test]
fn no_s_flag_or_no_upn_dns_info_gives_no_sid() {
    assert_eq!(user_sid(&pac(&[(12, upn_dns_info(0x1, &[]))])), Err(NoSid::SFlagUnset));
    assert_eq!(
        user_sid(&pac(&[(1, alloc::vec![0; 64]), (6, alloc::vec![0; 16])])),
        Err(NoSid::NoUpnDnsInfo { logon_info: true })
    );
    // MIT's minimal PAC: client info and checksums only.
    assert_eq!(
        user_sid(&pac(&[(10, alloc::vec![0; 20]), (6, alloc::vec![0; 16])])),
        Err(NoSid::NoUpnDnsInfo { logon_info: false })
    );
    assert!(matches!(user_sid(&pac(&[])), Err(NoSid::NoUpnDnsInfo { .. })));
}

fn malformed(p: &[u8]) {
    assert!(matches!(user_sid(p), Err(NoSid::Malformed(_))), "{:?}", user_sid(p));
}

#[test]
fn every_truncation_gives_no_sid_without_panic() {
    let full = samba_like();
    for n in 0..full.len() {
        assert!(user_sid(&full[..n]).is_err(), "{n} bytes");
    }
}

#[test]
fn offsets_outside_the_pac_or_over_its_table_give_no_sid() {
    let good = pac(&[(12, upn_dns_info(0x2, &alice_sid()))]);
    // The entry: type at 8, size at 12, offset at 16.
    let with = |at: usize, bytes: &[u8]| {
        let mut p = good.clone();
        p[at..at + bytes.len()].copy_from_slice(bytes);
        p
    };
    malformed(&with(16, &u64::MAX.to_le_bytes()));
    malformed(&with(16, &(good.len() as u64).to_le_bytes()));
    malformed(&with(12, &u32::MAX.to_le_bytes()));
    // Over the buffer table itself.
    malformed(&with(16, &0u64.to_le_bytes()));
    malformed(&with(16, &8u64.to_le_bytes()));
    // Offset + size wraps around (on 64 bits; on 32 bits the offset is refused already).
    malformed(&with(16, &(u64::MAX - 2).to_le_bytes()));
    // An unknown version.
    malformed(&with(4, &1u32.to_le_bytes()));
}

#[test]
fn overlapping_buffers_give_no_sid() {
    let mut p = pac(&[(12, upn_dns_info(0x2, &alice_sid())), (6, alloc::vec![0; 16])]);
    // The second buffer's offset (at 8 + 16 + 8) := the first's.
    let first: [u8; 8] = p[16..24].try_into().unwrap();
    p[32..40].copy_from_slice(&first);
    malformed(&p);
    // Two UPN_DNS_INFO buffers: which one is the user's?
    malformed(&pac(&[
        (12, upn_dns_info(0x2, &alice_sid())),
        (12, upn_dns_info(0x2, &alice_sid())),
    ]));
}

#[test]
fn sid_fields_out_of_bounds_or_over_the_fixed_fields_give_no_sid() {
    let info = upn_dns_info(0x2, &alice_sid());
    let with = |at: usize, v: u16| {
        let mut b = info.clone();
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        pac(&[(12, b)])
    };
    // SidLength (16) and SidOffset (18).
    malformed(&with(16, u16::MAX));
    malformed(&with(16, 200));
    malformed(&with(18, u16::MAX));
    malformed(&with(18, 4));
    malformed(&with(18, 0));
    // A length that cuts the SID, or one more than it has.
    malformed(&with(16, 27));
    // The S flag on a buffer too short for its fields.
    malformed(&pac(&[(12, info[..14].to_vec())]));
}

#[test]
fn not_a_sid_gives_no_sid() {
    let sid_with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut s = alice_sid();
        f(&mut s);
        pac(&[(12, upn_dns_info(0x2, &s))])
    };
    malformed(&sid_with(&|s| s[0] = 2));
    // Sub-authority count disagreeing with the length, zero, or over 15.
    malformed(&sid_with(&|s| s[1] = 4));
    malformed(&sid_with(&|s| s[1] = 6));
    malformed(&sid_with(&|s| s[1] = 0));
    malformed(&sid_with(&|s| {
        s[1] = 16;
        s.resize(8 + 64, 0);
    }));
    malformed(&sid_with(&|s| s.truncate(0)));
}

#[test]
fn a_huge_buffer_count_gives_no_sid_at_once() {
    let mut p = pac(&[(12, upn_dns_info(0x2, &alice_sid()))]);
    p[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    malformed(&p);
    p[..4].copy_from_slice(&(MAX_PAC_BUFFERS + 1).to_le_bytes());
    malformed(&p);
    // Within the limit but more entries than the PAC holds.
    p[..4].copy_from_slice(&MAX_PAC_BUFFERS.to_le_bytes());
    malformed(&p);
    // The most buffers allowed, all real: still read.
    let mut many: Vec<(u32, Vec<u8>)> = (0..MAX_PAC_BUFFERS - 1).map(|_| (99, alloc::vec![0; 8])).collect();
    many.push((12, upn_dns_info(0x2, &alice_sid())));
    assert_eq!(user_sid(&pac(&many)).unwrap(), "S-1-5-21-1111-2222-3333-1104");
    // An oversized PAC.
    malformed(&alloc::vec![0; super::MAX_PAC_LEN + 1]);
}
