//! The state machine against a fake backend: the exchange, session choice, name checks, and a
//! `BH` with a reason for every malformed line and message.

use super::*;
use base64::Engine;

const NEGOTIATE: &[u8] = b"NTLMSSP\0\x01\0\0\0negotiate";

/// A CHALLENGE-shaped message (only its signature and type matter to the helper).
fn challenge() -> Vec<u8> {
    let mut m = b"NTLMSSP\0\x02\0\0\0".to_vec();
    m.extend_from_slice(&[0; 40]);
    m
}

/// An AUTHENTICATE-shaped message with negotiated flags 0xe2888215.
fn authenticate() -> Vec<u8> {
    let mut m = b"NTLMSSP\0\x03\0\0\0".to_vec();
    m.resize(60, 0);
    m.extend_from_slice(&0xe288_8215u32.to_le_bytes());
    m.resize(88, 0);
    m
}

#[derive(Default)]
struct Fake {
    sessions: Vec<Session>,
    calls: Vec<String>,
    next_context: u32,
    fail_negotiate: Option<String>,
    fail_authenticate: Option<String>,
}

impl Backend for Fake {
    fn sessions(&mut self) -> Result<Vec<Session>, BackendError> {
        self.calls.push("sessions".into());
        Ok(self.sessions.clone())
    }

    fn negotiate(&mut self, session_id: &str) -> Result<Negotiated, BackendError> {
        self.calls.push(format!("negotiate {session_id}"));
        if let Some(e) = &self.fail_negotiate {
            return Err(BackendError(e.clone()));
        }
        self.next_context += 1;
        Ok(Negotiated {
            context_id: format!("ctx{}", self.next_context),
            negotiate_message: NEGOTIATE.to_vec(),
        })
    }

    fn authenticate(&mut self, context_id: &str, challenge: Vec<u8>, spn: &str) -> Result<Vec<u8>, BackendError> {
        self.calls
            .push(format!("authenticate {context_id} {} {spn}", challenge.len()));
        match &self.fail_authenticate {
            Some(e) => Err(BackendError(e.clone())),
            None => Ok(authenticate()),
        }
    }
}

fn session(id: &str, user: &str, domain: &str, uid: u32, is_default: bool) -> Session {
    Session {
        id: id.into(),
        user: user.into(),
        domain: domain.into(),
        uid,
        is_default,
    }
}

/// Alice (uid 1000) has two sessions, s2 her default; Bob (uid 1001) has one.
fn helper(options: Options) -> Helper<Fake> {
    let fake = Fake {
        sessions: vec![
            session("s1", "alice", "CORP", 1000, false),
            session("s2", "Alice", "corp", 1000, true),
            session("s3", "bob", "CORP", 1001, true),
        ],
        ..Default::default()
    };
    Helper::new(fake, Options { uid: 1000, ..options })
}

fn tt(m: &[u8]) -> String {
    format!("TT {}", base64::engine::general_purpose::STANDARD.encode(m))
}

fn say(h: &mut Helper<Fake>, line: &str) -> String {
    h.handle_line(line.as_bytes()).to_string()
}

fn b64(m: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(m)
}

#[test]
fn yr_tt_kk_then_gf() {
    let mut h = helper(Options {
        target_spn: "HTTP/web.corp.test".into(),
        ..Default::default()
    });
    assert_eq!(say(&mut h, "YR"), format!("YR {}", b64(NEGOTIATE)));
    assert_eq!(say(&mut h, &tt(&challenge())), format!("KK {}", b64(&authenticate())));
    assert_eq!(say(&mut h, "GF"), "GF 0xe2888215");
    assert_eq!(
        h.backend.calls,
        ["sessions", "negotiate s2", "authenticate ctx1 52 HTTP/web.corp.test"]
    );
    // The exchange is over: another TT needs another YR, which starts a new context.
    assert!(say(&mut h, &tt(&challenge())).starts_with("BH the exchange is finished"));
    assert!(say(&mut h, "YR").starts_with("YR "));
    assert!(say(&mut h, &tt(&challenge())).starts_with("KK "));
    assert_eq!(
        h.backend.calls.last().unwrap(),
        "authenticate ctx2 52 HTTP/web.corp.test"
    );
}

#[test]
fn out_of_order_and_malformed_requests_get_bh_and_the_helper_goes_on() {
    let mut h = helper(Options::default());
    assert!(say(&mut h, &tt(&challenge())).starts_with("BH no NTLM exchange in progress"));
    assert!(say(&mut h, "GF").starts_with("BH no finished exchange"));
    assert!(say(&mut h, "YR").starts_with("YR "));
    // Messages that are not a CHALLENGE: BH, and the context is kept for the right one.
    let mut negotiate_type = challenge();
    negotiate_type[8] = 1;
    let mut too_big = challenge();
    too_big.resize(MAX_NTLM_CHALLENGE_LEN + 1, 0);
    for (line, says) in [
        (tt(b"garbage, not NTLM"), "not an NTLM message"),
        (tt(b"NTLMSSP\0"), "not an NTLM message"),
        (tt(&negotiate_type), "type 1 is not a CHALLENGE"),
        (tt(&too_big), "exceeds the limit"),
        ("TT %%%".into(), "not base64"),
        ("TT".into(), "needs a base64"),
        ("".into(), "unknown request"),
        ("HELLO".into(), "unknown request"),
        ("PW c2VjcmV0".into(), "takes no password"),
        ("GK".into(), "session keys"),
    ] {
        let r = say(&mut h, &line);
        assert!(r.starts_with("BH ") && r.contains(says), "{line:.40}: {r}");
    }
    let r = h.handle_line(&[b'T', b'T', b' ', 0xc3, 0x28]).to_string();
    assert!(r.starts_with("BH ") && r.contains("UTF-8"), "{r}");
    assert!(say(&mut h, &tt(&challenge())).starts_with("KK "));
    assert_eq!(
        h.backend.calls.iter().filter(|c| c.starts_with("authenticate")).count(),
        1
    );
}

#[test]
fn the_enclaves_refusal_is_a_bh_with_its_reason_and_uses_the_context() {
    let mut h = helper(Options::default());
    h.backend.fail_authenticate =
        Some("credguard refused (FailedPrecondition): refused by the\nNTLMv2-only rule".into());
    assert!(say(&mut h, "YR").starts_with("YR "));
    let r = say(&mut h, &tt(&challenge()));
    assert_eq!(
        r,
        "BH credguard refused (FailedPrecondition): refused by the NTLMv2-only rule"
    );
    assert!(say(&mut h, &tt(&challenge())).starts_with("BH no NTLM exchange in progress"));
    h.backend.fail_negotiate = Some("cannot reach credguard at /run/credguard/lsa.sock".into());
    assert_eq!(
        say(&mut h, "YR"),
        "BH cannot reach credguard at /run/credguard/lsa.sock"
    );
    assert!(say(&mut h, &tt(&challenge())).starts_with("BH no NTLM exchange"));
}

#[test]
fn the_session_is_the_callers_default_or_the_one_named() {
    let mut h = helper(Options::default());
    say(&mut h, "YR");
    assert_eq!(h.backend.calls[1], "negotiate s2");
    let mut h = helper(Options {
        session: Some("s1".into()),
        ..Default::default()
    });
    say(&mut h, "YR");
    assert_eq!(h.backend.calls[1], "negotiate s1");
    // Another uid's session, even named, is not the caller's: root sees it listed, but it is not
    // root's session.
    for named in ["s3", "nope"] {
        let mut h = helper(Options {
            session: Some(named.into()),
            ..Default::default()
        });
        let r = say(&mut h, "YR");
        assert!(r.starts_with("BH CREDGUARD_SESSION names none of your"), "{r}");
        assert!(!r.contains(named), "no session id in a reason: {r}");
        assert_eq!(h.backend.calls, ["sessions"]);
    }
    let mut h = helper(Options::default());
    h.options.uid = 1002;
    let r = say(&mut h, "YR");
    assert!(
        r.contains("you have no credguard logon session") && r.contains("credguardctl logon"),
        "{r}"
    );
    assert!(!r.contains("1002"), "no uid in a reason: {r}");
}

#[test]
fn username_and_domain_must_name_the_session() {
    let opts = |user: &str, domain: &str| Options {
        username: Some(user.into()),
        domain: Some(domain.into()),
        ..Default::default()
    };
    for (user, domain) in [
        ("alice", "CORP"),
        ("ALICE", "Corp"),
        ("alice", ""),
        ("", ""),
        ("CORP\\alice", ""),
        ("corp/Alice", "CORP"),
    ] {
        let r = say(&mut helper(opts(user, domain)), "YR");
        assert!(r.starts_with("YR "), "{user:?} {domain:?}: {r}");
    }
    for (user, domain, says) in [
        (
            "bob",
            "CORP",
            "--username does not match the user of your credguard session",
        ),
        (
            "alice",
            "OTHER",
            "--domain does not match the domain of your credguard session",
        ),
        ("OTHER\\alice", "", "--domain does not match"),
        ("CORP\\bob", "CORP", "--username does not match"),
    ] {
        let mut h = helper(opts(user, domain));
        let r = say(&mut h, "YR");
        assert!(r.starts_with("BH ") && r.contains(says), "{user:?} {domain:?}: {r}");
        // A reason may reach the server (curl 7.88 sends it as its token): it names neither the
        // session's user nor its domain.
        let lower = r.to_lowercase();
        assert!(!lower.contains("alice") && !lower.contains("corp"), "{r}");
        assert!(!h.backend.calls.iter().any(|c| c.starts_with("negotiate")));
    }
}

#[test]
fn an_unsupported_protocol_gets_bh_for_every_line() {
    let mut h = helper(Options {
        unsupported: Some("credguard-ntlm-auth speaks only ntlmssp-client-1".into()),
        ..Default::default()
    });
    for line in ["YR", "TT TlRMTVNTUAA=", "GF"] {
        assert_eq!(say(&mut h, line), "BH credguard-ntlm-auth speaks only ntlmssp-client-1");
    }
    assert!(h.backend.calls.is_empty());
}
