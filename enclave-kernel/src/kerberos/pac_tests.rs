//! PACs crafted here, as Samba lays them out, and hostile ones.

use alloc::vec::Vec;

use super::{MAX_PAC_BUFFERS, NoSid, logon_info_sid, user_sid};

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
        while !data.len().is_multiple_of(8) {
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
    // MIT's minimal PAC: client info and checksums only.
    assert_eq!(
        user_sid(&pac(&[(10, alloc::vec![0; 20]), (6, alloc::vec![0; 16])])),
        Err(NoSid::NoUpnDnsInfo)
    );
    assert_eq!(user_sid(&pac(&[])), Err(NoSid::NoUpnDnsInfo));
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

/// UTF-16LE.
fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A PAC_LOGON_INFO as MS-PAC 2.5 lays it out (NDR type serialization): EffectiveName `alice`,
/// two groups, LogonDomainName `CORP`, LogonDomainId S-1-5-21-1111-2222-3333, UserId 1104.
pub(crate) fn logon_info() -> Vec<u8> {
    let mut info = alloc::vec![0u8; 216];
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    // EffectiveName: Length, MaximumLength, pointer.
    info[48..50].copy_from_slice(&10u16.to_le_bytes());
    info[50..52].copy_from_slice(&10u16.to_le_bytes());
    put(&mut info, 52, 0x0002_0004);
    put(&mut info, 100, 1104);
    put(&mut info, 104, 513);
    put(&mut info, 108, 2);
    put(&mut info, 112, 0x0002_0008);
    info[144..146].copy_from_slice(&8u16.to_le_bytes());
    info[146..148].copy_from_slice(&8u16.to_le_bytes());
    put(&mut info, 148, 0x0002_000c);
    put(&mut info, 152, 0x0002_0010);
    let mut deferred = Vec::new();
    let string = |d: &mut Vec<u8>, s: &str| {
        let n = s.encode_utf16().count() as u32;
        for v in [n, 0, n] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&utf16(s));
        while !d.len().is_multiple_of(4) {
            d.push(0);
        }
    };
    string(&mut deferred, "alice");
    deferred.extend_from_slice(&2u32.to_le_bytes());
    for (rid, attrs) in [(513u32, 7u32), (512, 7)] {
        deferred.extend_from_slice(&rid.to_le_bytes());
        deferred.extend_from_slice(&attrs.to_le_bytes());
    }
    string(&mut deferred, "CORP");
    deferred.extend_from_slice(&4u32.to_le_bytes());
    deferred.extend_from_slice(&alice_sid()[..24]);
    // Four sub-authorities: the domain's.
    let count_at = deferred.len() - 23;
    deferred[count_at] = 4;
    let mut out = alloc::vec![1u8, 0x10, 8, 0, 0xcc, 0xcc, 0xcc, 0xcc];
    let body_len = (4 + info.len() + deferred.len()) as u32;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0x0002_0000u32.to_le_bytes());
    out.extend_from_slice(&info);
    out.extend_from_slice(&deferred);
    out
}

#[test]
fn without_upn_dns_infos_sid_the_sid_comes_from_logon_info() {
    assert_eq!(logon_info_sid(&logon_info()).unwrap(), "S-1-5-21-1111-2222-3333-1104");
    // LOGON_INFO alone, or with a UPN_DNS_INFO without the S flag.
    assert_eq!(
        user_sid(&pac(&[(1, logon_info()), (6, alloc::vec![0; 16])])).unwrap(),
        "S-1-5-21-1111-2222-3333-1104"
    );
    assert_eq!(
        user_sid(&pac(&[(1, logon_info()), (12, upn_dns_info(1, &[]))])).unwrap(),
        "S-1-5-21-1111-2222-3333-1104"
    );
    // UPN_DNS_INFO's SID first.
    let mut other = alice_sid();
    other[24..28].copy_from_slice(&2000u32.to_le_bytes());
    assert_eq!(
        user_sid(&pac(&[(1, logon_info()), (12, upn_dns_info(3, &other))])).unwrap(),
        "S-1-5-21-1111-2222-3333-2000"
    );
    malformed(&pac(&[(1, logon_info()), (1, logon_info())]));
}

#[test]
fn a_hostile_logon_info_gives_no_sid_without_panic() {
    let good = logon_info();
    for n in 0..good.len() {
        assert!(logon_info_sid(&good[..n]).is_err(), "{n} bytes");
    }
    let with = |at: usize, v: u32| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        logon_info_sid(&b)
    };
    let info = 20;
    let deferred = info + 216;
    for (at, v) in [
        // Big-endian NDR, a null top-level pointer, a null LogonDomainId.
        (0, 0x0008_0001),
        (16, 0),
        (info + 152, 0),
        // The first string's counts: actual over max, an offset.
        (deferred + 8, u32::MAX),
        (deferred + 8, 6),
        (deferred + 4, 1),
        // The group count, huge or past the end.
        (deferred + 24, u32::MAX),
        (deferred + 24, 0x1000_0000),
        (deferred + 24, 100),
        // The domain SID's count: over 15, or not the SID's own.
        (good.len() - 28, 16),
        (good.len() - 28, 3),
    ] {
        assert!(with(at, v).is_err(), "{at}: {v:#x}");
    }
    // A huge string, as announced by both its counts.
    let mut huge = good.clone();
    for at in [deferred, deferred + 8] {
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    assert!(logon_info_sid(&huge).is_err());
}

mod properties {
    //! Hostile PACs at random: any bytes, and mutations of a valid one, never panic.
    use proptest::prelude::*;

    use super::super::{logon_info_sid, user_sid};
    use super::{alice_sid, logon_info, pac, upn_dns_info};

    fn valid() -> Vec<u8> {
        pac(&[
            (1, logon_info()),
            (12, upn_dns_info(1, &[])),
            (99, upn_dns_info(3, &alice_sid())),
            (6, alloc::vec![0; 16]),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = user_sid(&data);
            let _ = logon_info_sid(&data);
        }

        /// A few bytes changed anywhere, then the PAC cut short.
        #[test]
        fn mutations(changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..5), cut in any::<prop::sample::Index>()) {
            let mut p = valid();
            for (at, byte) in changes {
                let i = at.index(p.len());
                p[i] = byte;
            }
            let _ = user_sid(&p);
            p.truncate(cut.index(p.len()));
            let _ = user_sid(&p);
        }

        /// The same on the LOGON_INFO alone, whose counts and pointers steer the reader.
        #[test]
        fn logon_info_mutations(changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..5)) {
            let mut b = logon_info();
            for (at, byte) in changes {
                let i = at.index(b.len());
                b[i] = byte;
            }
            let _ = logon_info_sid(&b);
        }
    }
}
