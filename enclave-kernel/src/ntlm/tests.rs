//! MS-NLMP 4.2.4 (NTLMv2) vectors, the AUTHENTICATE's structure, the rules, and malformed
//! CHALLENGEs (deterministic fuzz: errors, never a panic).

use super::message::*;
use super::*;
use crate::credentials::{LogonCredential, nt_hash};
use alloc::vec;
use credguard_proto::checks::{MAX_NTLM_CHALLENGE_LEN, MAX_NTLM_TARGET_SPN_LEN};

mod negotiate;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr16(s: &str) -> [u8; 16] {
    unhex(s).try_into().unwrap()
}

/// MS-NLMP 4.2.4 target info: MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server", EOL.
const VECTOR_TARGET_INFO: &str = "02000c0044006f006d00610069006e00 01000c005300650072007600650072000000 0000";

/// MS-NLMP 4.2.4.2 CHALLENGE_MESSAGE (flags 0xe28a8233, TargetName "Server").
const VECTOR_CHALLENGE: &str = "4e544c4d53535000 02000000 0c000c0038000000 33828ae2 0123456789abcdef 0000000000000000 \
     2400240044000000 060070170000000f 53006500720076006500720002000c0044006f006d00610069006e00 \
     01000c00530065007200760065007200 00000000";

fn vector_challenge() -> Vec<u8> {
    unhex(VECTOR_CHALLENGE)
}

#[test]
fn ms_nlmp_4_2_4_ntlmv2_vectors() {
    let nt = nt_hash("Password");
    assert_eq!(*nt, arr16("a4f49c406510bdcab6824ee7c30fd852"));
    let key = ntowfv2(&nt, "User", "Domain");
    assert_eq!(*key, arr16("0c868a403bfd7a93a3001ef22ef02e3f"));
    let server_challenge = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    let client_challenge = [0xaa; 8];
    let temp = ntlmv2_temp([0; 8], client_challenge, &unhex(VECTOR_TARGET_INFO));
    assert!(temp.ends_with(&[0, 0, 0, 0, 0, 0, 0, 0]), "EOL then Z(4)");
    let proof = nt_proof_str(&key, &server_challenge, &temp);
    assert_eq!(proof, arr16("68cd0ab851e51c96aabc927bebef6a1c"));
    let sbk = session_base_key(&key, &proof);
    assert_eq!(*sbk, arr16("8de40ccadbc14a82f15cb0ad0de95ca3"));
    let lm = lmv2_response(&key, &server_challenge, &client_challenge);
    assert_eq!(lm.to_vec(), unhex("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"));
    assert_eq!(rc4k(&sbk, &[0x55; 16]), arr16("c5dad2544fc9799094ce1ce90bc9d03e"));
}

#[test]
fn parses_the_ms_nlmp_challenge() {
    let m = vector_challenge();
    let c = parse_challenge(&m).unwrap();
    assert_eq!(c.flags, 0xe28a_8233);
    assert_eq!(c.server_challenge, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    assert_eq!(c.target_info.len(), 2);
    assert_eq!(c.target_info[0].id, av::NB_DOMAIN_NAME);
    assert_eq!(c.target_info[1].id, av::NB_COMPUTER_NAME);
    assert_eq!(c.timestamp(), None);
}

#[test]
fn negotiate_message_is_well_formed() {
    let n = negotiate_message();
    assert_eq!(&n[..8], SIGNATURE);
    assert_eq!(u32::from_le_bytes(n[8..12].try_into().unwrap()), 1);
    let f = u32::from_le_bytes(n[12..16].try_into().unwrap());
    for need in [
        flags::UNICODE,
        flags::NTLM,
        flags::EXTENDED_SESSIONSECURITY,
        flags::KEY_EXCH,
        flags::N128,
        flags::SIGN,
        flags::SEAL,
        flags::ALWAYS_SIGN,
    ] {
        assert_ne!(f & need, 0, "{need:#x}");
    }
    assert_eq!(f & (flags::OEM | flags::LM_KEY), 0);
    assert_eq!(n.len(), 40);
}

/// A CHALLENGE as a modern server sends it: flags, target info (with a timestamp if `ts`).
fn challenge_msg(flags: u32, target_info: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 56, 0, 0, 0]); // TargetName: empty
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    m.extend_from_slice(&[0; 8]);
    let len = target_info.len() as u16;
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&56u32.to_le_bytes());
    m.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 15]);
    m.extend_from_slice(target_info);
    m
}

fn ti(pairs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (id, val) in pairs {
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(val.len() as u16).to_le_bytes());
        v.extend_from_slice(val);
    }
    v.extend_from_slice(&[0, 0, 0, 0]);
    v
}

const GOOD_FLAGS: u32 = 0xe28a_8235;

/// A field of an AUTHENTICATE: (len, offset) at `at`.
fn field(m: &[u8], at: usize) -> &[u8] {
    let len = u16::from_le_bytes(m[at..at + 2].try_into().unwrap()) as usize;
    let off = u32::from_le_bytes(m[at + 4..at + 8].try_into().unwrap()) as usize;
    &m[off..off + len]
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Checks an AUTHENTICATE against the NTLMv2 definitions (an acceptor's computation).
fn verify(auth: &[u8], negotiate: &[u8], challenge: &[u8], nt: &[u8; 16], user: &str, domain: &str) -> [u8; 16] {
    assert_eq!(&auth[..8], SIGNATURE);
    assert_eq!(u32::from_le_bytes(auth[8..12].try_into().unwrap()), 3);
    assert_eq!(field(auth, 28), utf16(domain).as_slice());
    assert_eq!(field(auth, 36), utf16(user).as_slice());
    let c = parse_challenge(challenge).unwrap();
    let key = ntowfv2(nt, user, domain);
    let ntr = field(auth, 20);
    let proof: [u8; 16] = ntr[..16].try_into().unwrap();
    assert_eq!(nt_proof_str(&key, &c.server_challenge, &ntr[16..]), proof, "NTProofStr");
    let sbk = session_base_key(&key, &proof);
    let flags = u32::from_le_bytes(auth[60..64].try_into().unwrap());
    let exported = if flags & flags::KEY_EXCH != 0 {
        let enc: [u8; 16] = field(auth, 52).try_into().unwrap();
        rc4k(&sbk, &enc)
    } else {
        assert!(field(auth, 52).is_empty());
        *sbk
    };
    let mut zeroed = auth.to_vec();
    zeroed[MIC_OFFSET..MIC_OFFSET + 16].fill(0);
    let mut mac = <hmac::Hmac<md5::Md5> as hmac::KeyInit>::new_from_slice(&exported).unwrap();
    hmac::Mac::update(&mut mac, negotiate);
    hmac::Mac::update(&mut mac, challenge);
    hmac::Mac::update(&mut mac, &zeroed);
    assert_eq!(
        &hmac::Mac::finalize(mac).into_bytes()[..],
        &auth[MIC_OFFSET..MIC_OFFSET + 16],
        "MIC"
    );
    exported
}

fn input<'a>(negotiate: &'a [u8], msg: &'a [u8], c: &'a Challenge<'a>, nt: &'a [u8; 16]) -> AuthenticateInput<'a> {
    AuthenticateInput {
        user: "User",
        domain: "Domain",
        nt_hash: nt,
        negotiate,
        workstation: "",
        challenge_message: msg,
        challenge: c,
        client_challenge: [0xaa; 8],
        random_session_key: [0x55; 16],
        now_filetime: 0x01d9_0000_0000_0000,
        channel_bindings: None,
        target_spn: None,
    }
}

#[test]
fn authenticate_has_ntlmv2_key_exchange_and_mic() {
    let nt = nt_hash("Password");
    let negotiate = negotiate_message();
    let ts = 0x01da_1234_5678_9abcu64.to_le_bytes();
    let msg = challenge_msg(GOOD_FLAGS, &ti(&[(2, &utf16("Domain")), (7, &ts)]));
    let c = parse_challenge(&msg).unwrap();
    let out = authenticate_message(&input(&negotiate, &msg, &c, &nt));
    let exported = verify(&out.message, &negotiate, &msg, &nt, "User", "Domain");
    assert_eq!(exported, [0x55; 16], "key exchange: the random key is exported");
    assert_eq!(*out.exported_session_key, exported);
    // Server timestamp: LMv2 is zeros and the blob's time is the server's.
    assert_eq!(field(&out.message, 12), &[0u8; 24][..]);
    let ntr = field(&out.message, 20);
    assert_eq!(&ntr[24..32], &ts);
    // The blob's AV pairs: the server's, MsvAvFlags with the MIC bit, zero channel bindings.
    let pairs = parse_av_pairs(&ntr[44..]).unwrap();
    let get = |id| pairs.iter().find(|p| p.id == id).map(|p| p.value);
    assert_eq!(get(av::FLAGS), Some(&AV_FLAG_MIC.to_le_bytes()[..]));
    assert_eq!(get(av::CHANNEL_BINDINGS), Some(&[0u8; 16][..]));
    assert_eq!(get(av::TIMESTAMP), Some(&ts[..]));
    assert_eq!(get(av::TARGET_NAME), None);
}

#[test]
fn no_server_timestamp_uses_the_given_time_and_lmv2() {
    let nt = nt_hash("Password");
    let negotiate = negotiate_message();
    // Without KEY_EXCH: the exported key is the session base key.
    let msg = challenge_msg(
        GOOD_FLAGS & !flags::KEY_EXCH,
        &ti(&[(1, &utf16("Server")), (6, &[1, 0, 0, 0])]),
    );
    let c = parse_challenge(&msg).unwrap();
    let mut inp = input(&negotiate, &msg, &c, &nt);
    let cb = b"channel bindings struct";
    inp.channel_bindings = Some(cb);
    inp.target_spn = Some("HTTP/web.test");
    let out = authenticate_message(&inp);
    verify(&out.message, &negotiate, &msg, &nt, "User", "Domain");
    let lm = field(&out.message, 12);
    let key = ntowfv2(&nt, "User", "Domain");
    assert_eq!(lm, &lmv2_response(&key, &c.server_challenge, &[0xaa; 8])[..]);
    let ntr = field(&out.message, 20);
    assert_eq!(&ntr[24..32], &inp.now_filetime.to_le_bytes());
    let pairs = parse_av_pairs(&ntr[44..]).unwrap();
    let get = |id| pairs.iter().find(|p| p.id == id).map(|p| p.value);
    assert_eq!(get(av::TIMESTAMP), Some(&inp.now_filetime.to_le_bytes()[..]));
    assert_eq!(
        get(av::FLAGS),
        Some(&(1 | AV_FLAG_MIC).to_le_bytes()[..]),
        "merged with the server's"
    );
    let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(cb).into();
    assert_eq!(get(av::CHANNEL_BINDINGS), Some(&md5[..]));
    assert_eq!(get(av::TARGET_NAME), Some(utf16("HTTP/web.test").as_slice()));
}

#[test]
fn ntlmv1_only_challenges_are_refused() {
    let good_ti = ti(&[(2, &utf16("D"))]);
    let no_ess = challenge_msg(GOOD_FLAGS & !flags::EXTENDED_SESSIONSECURITY, &good_ti);
    match parse_challenge(&no_ess) {
        Err(NtlmError::Refused(m)) => assert!(m.contains("NTLMv2-only rule"), "{m}"),
        other => panic!("{other:?}"),
    }
    let no_ti = challenge_msg(GOOD_FLAGS, &[]);
    assert!(matches!(parse_challenge(&no_ti), Err(NtlmError::Refused(_))));
    // An old-style 32-byte CHALLENGE (no TargetInfoFields at all).
    let old = &challenge_msg(GOOD_FLAGS, &good_ti)[..32];
    assert!(matches!(parse_challenge(old), Err(NtlmError::Refused(_))));
    let oem = challenge_msg((GOOD_FLAGS & !flags::UNICODE) | flags::OEM, &good_ti);
    assert!(matches!(parse_challenge(&oem), Err(NtlmError::Refused(_))));
}

#[test]
fn malformed_challenges_are_invalid() {
    let good = challenge_msg(GOOD_FLAGS, &ti(&[(2, &utf16("D"))]));
    assert!(parse_challenge(&good).is_ok());
    let invalid = |m: &[u8]| matches!(parse_challenge(m), Err(NtlmError::Invalid(_)));
    // Truncated anywhere.
    for n in 0..good.len() {
        let r = parse_challenge(&good[..n]);
        assert!(r.is_err(), "truncated to {n}");
    }
    // Wrong signature / type.
    let mut m = good.clone();
    m[0] = b'X';
    assert!(invalid(&m));
    let mut m = good.clone();
    m[8] = 3;
    assert!(invalid(&m));
    // Target info offset out of range, into the header, overflowing.
    for off in [u32::MAX, 0xffff_fff0, 10, 1000] {
        let mut m = good.clone();
        m[44..48].copy_from_slice(&off.to_le_bytes());
        assert!(invalid(&m), "offset {off}");
    }
    // Huge target info length.
    let mut m = good.clone();
    m[40..42].copy_from_slice(&0xffffu16.to_le_bytes());
    assert!(invalid(&m));
    // TargetName out of range.
    let mut m = good.clone();
    m[12..14].copy_from_slice(&4u16.to_le_bytes());
    m[16..20].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert!(invalid(&m));
    // A target info over its limit (but within the message limit).
    let mut big_ti = vec![2u8, 0, 0xff, 0xff];
    big_ti.extend(core::iter::repeat_n(b'a', 0xffff));
    big_ti.extend_from_slice(&[0, 0, 0, 0]);
    let m = challenge_msg(GOOD_FLAGS, &big_ti[..MAX_TARGET_INFO_LEN + 1]);
    assert!(invalid(&m));
    // The largest target info accepted still makes a well-formed AUTHENTICATE.
    let mut ti_max = vec![2u8, 0];
    ti_max.extend_from_slice(&((MAX_TARGET_INFO_LEN - 8) as u16).to_le_bytes());
    ti_max.extend(core::iter::repeat_n(b'a', MAX_TARGET_INFO_LEN - 8));
    ti_max.extend_from_slice(&[0, 0, 0, 0]);
    let m = challenge_msg(GOOD_FLAGS, &ti_max);
    let c = parse_challenge(&m).unwrap();
    let nt = [1u8; 16];
    let negotiate = negotiate_message();
    let mut inp = input(&negotiate, &m, &c, &nt);
    let spn = "s".repeat(MAX_NTLM_TARGET_SPN_LEN);
    inp.target_spn = Some(&spn);
    let out = authenticate_message(&inp);
    let ntr = field(&out.message, 20);
    assert!(ntr.len() > MAX_TARGET_INFO_LEN && ntr.len() <= 0xffff);
    assert_eq!(
        ntr.as_ptr() as usize + ntr.len(),
        out.message.as_ptr() as usize + out.message.len() - 16
    );
    // A whole message over the limit.
    let mut big = good.clone();
    big.resize(MAX_NTLM_CHALLENGE_LEN + 1, 0);
    assert!(invalid(&big));
    // AV pairs: no EOL, a pair past the end, a bad timestamp, a duplicate, an EOL with a value.
    for bad in [
        vec![2, 0, 2, 0, b'D', 0],
        vec![2, 0, 9, 0, b'D', 0, 0, 0, 0, 0],
        ti(&[(7, &[1, 2, 3])]),
        ti(&[(2, b"a\0"), (2, b"b\0")]),
        vec![0, 0, 1, 0, 0],
    ] {
        assert!(invalid(&challenge_msg(GOOD_FLAGS, &bad)), "{bad:?}");
    }
}

#[test]
fn random_challenges_never_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let good = challenge_msg(GOOD_FLAGS, &ti(&[(2, &utf16("D")), (7, &[1; 8])]));
    let nt = [7u8; 16];
    let negotiate = negotiate_message();
    let mut accepted = 0;
    for round in 0..20_000 {
        let m: Vec<u8> = if round % 3 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            // Mutations of a valid message: flip bytes, cut, or extend.
            let mut m = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            if round % 5 == 0 {
                m.truncate((next() as usize) % (m.len() + 1));
            }
            if round % 7 == 0 {
                m.extend((0..next() % 64).map(|_| next() as u8));
            }
            m
        };
        if let Ok(c) = parse_challenge(&m) {
            accepted += 1;
            let out = authenticate_message(&input(&negotiate, &m, &c, &nt));
            assert!(out.message.len() >= AUTHENTICATE_HEADER_LEN);
        }
    }
    assert!(accepted > 0, "some mutations stay valid and get answered");
}

// ----- the service-level operations -----

/// A deterministic xorshift "RNG" (its ids do not repeat within a test).
struct Counter(u64);

impl rand_core::TryRng for Counter {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            *d = self.try_next_u64()? as u8;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Counter {}

fn store_with(handle: [u8; 16], hash: Option<[u8; 16]>) -> CredentialStore {
    let mut s = CredentialStore::new();
    add_session(&mut s, handle, hash, 1000);
    s
}

fn add_session(s: &mut CredentialStore, handle: [u8; 16], hash: Option<[u8; 16]>, uid: u32) {
    s.insert(
        handle,
        LogonCredential {
            enterprise: false,
            owner: credguard_proto::attest::Owner::uid(uid),
            allow_rc4: false,
            id: [0; 16],
            user: "User".into(),
            domain: "Domain".into(),
            realm: String::new(),
            kind: "password",
            nt_hash: hash.map(Zeroizing::new),
            password: None,
            keys: Vec::new(),
        },
    )
    .unwrap();
}

fn neg_req(h: &[u8]) -> NtlmNegotiateRequest {
    NtlmNegotiateRequest {
        session_handle: h.to_vec(),
    }
}

fn auth_req(ctx: &[u8], challenge: &[u8]) -> NtlmAuthenticateRequest {
    NtlmAuthenticateRequest {
        context_id: ctx.to_vec(),
        challenge_message: challenge.to_vec(),
        channel_bindings: Vec::new(),
        target_spn: String::new(),
        now_filetime: 1,
        negotiate_message: Vec::new(),
        workstation: String::new(),
    }
}

#[test]
fn negotiate_then_authenticate_once() {
    let nt = *nt_hash("Password");
    let store = store_with([9; 16], Some(nt));
    let mut ctxs = NtlmContexts::new();
    let mut rng = Counter(0x9e37_79b9_7f4a_7c15);
    let r = negotiate(&store, &mut ctxs, &mut rng, neg_req(&[9; 16])).unwrap();
    assert_eq!(r.context_id.len(), 16);
    assert_eq!(r.negotiate_message, negotiate_message());
    let chal = challenge_msg(GOOD_FLAGS, &ti(&[(2, &utf16("Domain")), (7, &[3; 8])]));
    let a = authenticate(&store, &mut ctxs, &mut rng, auth_req(&r.context_id, &chal)).unwrap();
    let exported = verify(
        &a.authenticate_message,
        &r.negotiate_message,
        &chal,
        &nt,
        "User",
        "Domain",
    );
    assert_eq!(a.exported_session_key, exported.to_vec());
    // No reply carries the NT hash or the NTLMv2 hash.
    let v2 = ntowfv2(&nt, "User", "Domain");
    for secret in [&nt[..], &v2[..]] {
        assert!(!a.authenticate_message.windows(16).any(|w| w == secret));
        assert_ne!(a.exported_session_key, secret);
    }
    // One use only.
    let again = authenticate(&store, &mut ctxs, &mut rng, auth_req(&r.context_id, &chal));
    assert!(matches!(again, Err(NtlmError::NotFound(_))));
    assert!(ctxs.is_empty());
}

#[test]
fn context_rules() {
    let store = store_with([9; 16], Some([1; 16]));
    let mut ctxs = NtlmContexts::new();
    let mut rng = Counter(0x9e37_79b9_7f4a_7c15);
    assert!(matches!(
        negotiate(&store, &mut ctxs, &mut rng, neg_req(&[8; 16])),
        Err(NtlmError::NotFound(_))
    ));
    assert!(matches!(
        negotiate(&store, &mut ctxs, &mut rng, neg_req(&[8; 3])),
        Err(NtlmError::Invalid(_))
    ));
    let keyonly = store_with([9; 16], None);
    assert!(matches!(
        negotiate(&keyonly, &mut ctxs, &mut rng, neg_req(&[9; 16])),
        Err(NtlmError::Refused(_))
    ));
    // Bounded per owner: that owner's oldest context is evicted.
    let mut first = Vec::new();
    for i in 0..MAX_NTLM_CONTEXTS_PER_OWNER + 5 {
        let r = negotiate(&store, &mut ctxs, &mut rng, neg_req(&[9; 16])).unwrap();
        if i == 0 {
            first = r.context_id;
        }
    }
    assert_eq!(ctxs.len(), MAX_NTLM_CONTEXTS_PER_OWNER);
    let chal = challenge_msg(GOOD_FLAGS, &ti(&[(2, &utf16("D"))]));
    assert!(matches!(
        authenticate(&store, &mut ctxs, &mut rng, auth_req(&first, &chal)),
        Err(NtlmError::NotFound(_))
    ));
    ctxs.forget_session(&[9; 16]);
    assert!(ctxs.is_empty());
    // A refused CHALLENGE consumes its context too.
    let r = negotiate(&store, &mut ctxs, &mut rng, neg_req(&[9; 16])).unwrap();
    let id = r.context_id;
    let v1 = challenge_msg(GOOD_FLAGS & !flags::EXTENDED_SESSIONSECURITY, &ti(&[(2, &utf16("D"))]));
    let e = authenticate(&store, &mut ctxs, &mut rng, auth_req(&id, &v1)).unwrap_err();
    assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
    assert!(ctxs.is_empty());
}

#[test]
fn one_owner_never_evicts_another_owners_context() {
    let mut store = store_with([9; 16], Some([1; 16]));
    let mut ctxs = NtlmContexts::new();
    let mut rng = Counter(7);
    // Alice opens one context; mallory opens many, in many sessions.
    let r = negotiate(&store, &mut ctxs, &mut rng, neg_req(&[9; 16])).unwrap();
    let alices = r.context_id;
    let mallory_sessions = MAX_NTLM_CONTEXTS / MAX_NTLM_CONTEXTS_PER_OWNER;
    for s in 0..mallory_sessions {
        add_session(&mut store, [s as u8 + 100; 16], Some([2; 16]), 666);
    }
    for i in 0..2 * MAX_NTLM_CONTEXTS {
        let h = [(i % mallory_sessions) as u8 + 100; 16];
        negotiate(&store, &mut ctxs, &mut rng, neg_req(&h)).unwrap();
    }
    assert_eq!(
        ctxs.count_of(credguard_proto::attest::Owner::uid(666)),
        MAX_NTLM_CONTEXTS_PER_OWNER
    );
    let chal = challenge_msg(GOOD_FLAGS, &ti(&[(2, &utf16("D"))]));
    assert!(authenticate(&store, &mut ctxs, &mut rng, auth_req(&alices, &chal)).is_ok());
    // With the enclave full of other owners' contexts, a new one is refused, not evicted.
    let mut uid = 0u32;
    while ctxs.len() < MAX_NTLM_CONTEXTS {
        let h = [uid as u8 + 10; 16];
        add_session(&mut store, h, Some([3; 16]), 2000 + uid);
        while ctxs.count_of(credguard_proto::attest::Owner::uid(2000 + uid)) < MAX_NTLM_CONTEXTS_PER_OWNER
            && ctxs.len() < MAX_NTLM_CONTEXTS
        {
            negotiate(&store, &mut ctxs, &mut rng, neg_req(&h)).unwrap();
        }
        uid += 1;
    }
    let e = negotiate(&store, &mut ctxs, &mut rng, neg_req(&[9; 16])).unwrap_err();
    assert_eq!(e.code(), credguard_proto::rpc::code::RESOURCE_EXHAUSTED, "{e:?}");
}

#[test]
fn legacy_protocols_are_refused_for_every_credential() {
    let store = store_with([9; 16], Some([1; 16]));
    for (p, name) in [(1, "NTLMv1"), (2, "MS-CHAPv2"), (3, "Digest"), (4, "CredSSP")] {
        let req = LegacyAuthenticateRequest {
            session_handle: vec![9; 16],
            protocol: p,
            challenge: vec![0x11; 8],
        };
        match legacy_authenticate(&store, &req) {
            NtlmError::Refused(m) => {
                assert!(m.contains(name) && m.contains("secondary credential"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
    let unknown = LegacyAuthenticateRequest {
        session_handle: vec![9; 16],
        protocol: 0,
        challenge: vec![],
    };
    assert!(matches!(legacy_authenticate(&store, &unknown), NtlmError::Invalid(_)));
    let nosession = LegacyAuthenticateRequest {
        session_handle: vec![1; 16],
        protocol: 1,
        challenge: vec![],
    };
    assert!(matches!(
        legacy_authenticate(&store, &nosession),
        NtlmError::NotFound(_)
    ));
}
