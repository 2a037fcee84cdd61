//! A caller's own NEGOTIATE for the MIC, and the workstation name: what they change in the
//! AUTHENTICATE (the MIC's input, the Workstation field) and what no hostile value of them can
//! change (NTLMv2, extended session security, the MIC, the negotiated flags).

use super::*;
use crate::ntlm::sample::{CLIENT_WORKSTATION, windows_negotiate};
use credguard_proto::checks::{MAX_NTLM_NEGOTIATE_LEN, MAX_NTLM_WORKSTATION_LEN};

/// A store with one NT hash session, a context on it, and a Windows-shaped CHALLENGE.
struct Setup {
    store: CredentialStore,
    ctxs: NtlmContexts,
    rng: Counter,
    nt: [u8; 16],
    challenge: Vec<u8>,
}

impl Setup {
    fn new() -> Setup {
        let nt = *nt_hash("Password");
        Setup {
            store: store_with([9; 16], Some(nt)),
            ctxs: NtlmContexts::new(),
            rng: Counter(0x9e37_79b9_7f4a_7c15),
            nt,
            challenge: crate::ntlm::sample::windows_challenge(),
        }
    }

    /// A new context: its id and the NEGOTIATE the enclave built for it.
    fn context(&mut self) -> (Vec<u8>, Vec<u8>) {
        let r = negotiate(&self.store, &mut self.ctxs, &mut self.rng, neg_req(&[9; 16])).unwrap();
        (r.context_id, r.negotiate_message)
    }

    /// Answers the CHALLENGE on a new context with `negotiate_message` and `workstation`.
    fn answer(&mut self, negotiate_message: &[u8], workstation: &str) -> Result<Vec<u8>, NtlmError> {
        let (id, _) = self.context();
        let mut req = auth_req(&id, &self.challenge);
        req.negotiate_message = negotiate_message.to_vec();
        req.workstation = workstation.into();
        authenticate(&self.store, &mut self.ctxs, &mut self.rng, req).map(|r| r.authenticate_message)
    }

    /// Whether `auth`'s MIC is right over `negotiate` (the acceptor's check, without panicking).
    fn mic_covers(&self, auth: &[u8], negotiate: &[u8]) -> bool {
        let key = ntowfv2(&self.nt, "User", "Domain");
        let proof: [u8; 16] = field(auth, 20)[..16].try_into().unwrap();
        let sbk = session_base_key(&key, &proof);
        let exported = rc4k(&sbk, &field(auth, 52).try_into().unwrap());
        let mut zeroed = auth.to_vec();
        zeroed[MIC_OFFSET..MIC_OFFSET + 16].fill(0);
        let mut mac = <hmac::Hmac<md5::Md5> as hmac::KeyInit>::new_from_slice(&exported).unwrap();
        for part in [negotiate, &self.challenge[..], &zeroed] {
            hmac::Mac::update(&mut mac, part);
        }
        hmac::Mac::finalize(mac).into_bytes()[..] == auth[MIC_OFFSET..MIC_OFFSET + 16]
    }
}

fn flags_of(auth: &[u8]) -> u32 {
    u32::from_le_bytes(auth[60..64].try_into().unwrap())
}

/// The AV pairs inside an AUTHENTICATE's NTLMv2 response.
fn response_flags(auth: &[u8]) -> Option<u32> {
    let ntr = field(auth, 20);
    let pairs = parse_av_pairs(&ntr[44..]).unwrap();
    let p = pairs.iter().find(|p| p.id == av::FLAGS)?;
    Some(u32::from_le_bytes(p.value.try_into().unwrap()))
}

#[test]
fn the_mic_covers_the_callers_negotiate_when_given() {
    let mut s = Setup::new();
    let theirs = windows_negotiate();
    assert_eq!(parse_negotiate(&theirs), Ok(0xe208_8297));
    let auth = s.answer(&theirs, "").unwrap();
    let exported = verify(&auth, &theirs, &s.challenge, &s.nt, "User", "Domain");
    assert_ne!(exported, [0; 16]);
    assert!(!s.mic_covers(&auth, &negotiate_message()), "not over the enclave's own");
    // Without it, the MIC covers the context's own NEGOTIATE, as before.
    let (id, ours) = s.context();
    let a = authenticate(&s.store, &mut s.ctxs, &mut s.rng, auth_req(&id, &s.challenge)).unwrap();
    assert_eq!(ours, negotiate_message());
    verify(&a.authenticate_message, &ours, &s.challenge, &s.nt, "User", "Domain");
    assert!(!s.mic_covers(&a.authenticate_message, &theirs));
    // Its flags change nothing: the same negotiated flags (never its OEM or LM_KEY), an NTLMv2
    // response with the MIC bit.
    assert_eq!(flags_of(&auth), flags_of(&a.authenticate_message));
    assert_eq!(flags_of(&auth) & (flags::OEM | flags::LM_KEY), 0);
    assert!(field(&auth, 20).len() > 24, "an NTLMv2 response");
    assert_eq!(response_flags(&auth).map(|f| f & AV_FLAG_MIC), Some(AV_FLAG_MIC));
}

#[test]
fn hostile_negotiates_are_refused_or_change_nothing() {
    let good = windows_negotiate();
    let with = |at: usize, bytes: &[u8]| {
        let mut m = good.clone();
        m[at..at + bytes.len()].copy_from_slice(bytes);
        m
    };
    let set_flags = |f: u32| with(12, &f.to_le_bytes());
    let mut big = good.clone();
    big.resize(MAX_NTLM_NEGOTIATE_LEN + 1, 0);
    let malformed = [
        with(0, b"NTLMSSPX"),
        with(8, &2u32.to_le_bytes()),
        with(8, &3u32.to_le_bytes()),
        good[..31].to_vec(),
        good[..12].to_vec(),
        with(16, &[0xff, 0xff]),
        with(20, &0xffff_fff0u32.to_le_bytes()),
        with(28, &8u32.to_le_bytes()),
        big,
    ];
    let mut s = Setup::new();
    for m in &malformed {
        assert!(matches!(s.answer(m, ""), Err(NtlmError::Invalid(_))), "{m:02x?}");
    }
    // Not asking for NTLMv2 (no extended session security, no Unicode, no NTLM): refused.
    for drop in [flags::EXTENDED_SESSIONSECURITY, flags::UNICODE, flags::NTLM] {
        match s.answer(&set_flags(0xe208_8297 & !drop), "") {
            Err(NtlmError::Refused(m)) => assert!(m.contains("NTLMv2-only rule"), "{m}"),
            other => panic!("{drop:#x}: {other:?}"),
        }
    }
    // Asking for less (no key exchange, sign or seal) or for old things (LM_KEY, OEM, 56-bit):
    // accepted as MIC input, and the AUTHENTICATE is exactly what the CHALLENGE and the rules make.
    let reference = s.answer(&good, "").unwrap();
    let odd = set_flags(NEGOTIATE_REQUIRED_FLAGS | flags::LM_KEY | flags::OEM | flags::N56 | flags::REQUEST_TARGET);
    let auth = s.answer(&odd, "").unwrap();
    verify(&auth, &odd, &s.challenge, &s.nt, "User", "Domain");
    assert_eq!(flags_of(&auth), flags_of(&reference));
    assert_ne!(flags_of(&auth) & flags::EXTENDED_SESSIONSECURITY, 0);
    assert_eq!(response_flags(&auth), response_flags(&reference));
    assert_eq!(field(&auth, 20).len(), field(&reference, 20).len());
}

#[test]
fn random_negotiates_never_panic() {
    let good = windows_negotiate();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut m = good.clone();
        if round % 3 == 0 {
            m = (0..next() % 80).map(|_| next() as u8).collect();
        } else {
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            m.truncate((next() as usize) % (m.len() + 8));
        }
        if let Ok(flags) = parse_negotiate(&m) {
            accepted += 1;
            assert_eq!(flags & NEGOTIATE_REQUIRED_FLAGS, NEGOTIATE_REQUIRED_FLAGS);
        }
    }
    assert!(accepted > 0, "some mutations stay valid");
}

#[test]
fn the_workstation_name_is_sent_and_checked() {
    let mut s = Setup::new();
    let auth = s.answer(&[], CLIENT_WORKSTATION).unwrap();
    assert_eq!(field(&auth, 44), utf16(CLIENT_WORKSTATION).as_slice());
    // The MIC covers the message with its workstation.
    verify(&auth, &negotiate_message(), &s.challenge, &s.nt, "User", "Domain");
    let none = s.answer(&[], "").unwrap();
    assert!(field(&none, 44).is_empty());
    let longest = "W".repeat(MAX_NTLM_WORKSTATION_LEN);
    let auth = s.answer(&windows_negotiate(), &longest).unwrap();
    assert_eq!(field(&auth, 44), utf16(&longest).as_slice());
    let too_long = "W".repeat(MAX_NTLM_WORKSTATION_LEN + 1);
    for bad in [
        "WS 01",
        "WS\r\nX",
        "WS\u{0}",
        "WS\\01",
        "w\u{e9}",
        "WS/1",
        too_long.as_str(),
    ] {
        assert!(matches!(s.answer(&[], bad), Err(NtlmError::Invalid(_))), "{bad:?}");
    }
}
