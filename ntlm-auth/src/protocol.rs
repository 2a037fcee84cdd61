//! The `ntlmssp-client-1` line protocol of Samba's `ntlm_auth`, as its callers speak it.
//!
//! Each request is one line: a two-letter code, then a space and a base64 argument for some.
//! - `YR`: start a new exchange; the answer is `YR <NEGOTIATE>`.
//! - `TT <CHALLENGE>`: the server's challenge; the answer is `KK <AUTHENTICATE>`.
//! - `GF`: the negotiated flags of the finished exchange, as `GF 0x%08x`.
//! - anything else, and any failure: `BH <reason>` (Samba's "broken helper"), after which the
//!   helper goes on reading.
//!
//! Samba 3 answered the CHALLENGE with `KK`, Samba 4 with `AF`. curl (`lib/curl_ntlm_wb.c`) and
//! libsoup accept both, but Firefox's `nsAuthSambaNTLM` accepted only `KK` for most of its
//! history: `KK` works with every caller. `PW` (a password for the helper) and `GK` (the session key) are refused:
//! credguard takes no password here and hands out no key through this channel.

use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Base64 as servers and callers write it: the standard alphabet, padding or not.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A request line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `YR`: start a new exchange.
    Start,
    /// `TT <base64>`: the server's CHALLENGE (decoded, not yet checked).
    Challenge(Vec<u8>),
    /// `GF`: the negotiated flags.
    Flags,
    /// A request this helper does not serve, with the reason it says so.
    Refused(String),
}

/// Parses one request line (its end already removed). A malformed line is a
/// [`Request::Refused`] with the reason, never an error the caller must handle apart.
pub fn parse_request(line: &[u8]) -> Request {
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Refused("the request is not UTF-8 text".into());
    };
    let (code, arg) = match line.split_once(' ') {
        Some((code, arg)) => (code, Some(arg)),
        None => (line, None),
    };
    match (code, arg) {
        ("YR", None) => Request::Start,
        ("YR", Some(_)) => Request::Refused("YR takes no argument in ntlmssp-client-1".into()),
        ("TT", Some(arg)) => match B64.decode(arg.trim()) {
            Ok(m) if !m.is_empty() => Request::Challenge(m),
            Ok(_) => Request::Refused("TT needs a base64 CHALLENGE message".into()),
            Err(e) => Request::Refused(format!("TT: the CHALLENGE is not base64 ({e})")),
        },
        ("TT", None) => Request::Refused("TT needs a base64 CHALLENGE message".into()),
        ("GF", None) => Request::Flags,
        ("PW", _) => Request::Refused(
            "credguard-ntlm-auth takes no password: it answers from your credguard logon session (credguardctl logon)"
                .into(),
        ),
        ("GK", _) => Request::Refused("credguard-ntlm-auth does not hand out session keys".into()),
        ("KK" | "AF" | "NA" | "OK" | "BH" | "UG" | "SF" | "GF", _) => Request::Refused(format!(
            "{code} is not a request credguard-ntlm-auth serves in ntlmssp-client-1 (YR, TT, GF)"
        )),
        _ => Request::Refused("unknown request: ntlmssp-client-1 requests are YR, TT <base64> and GF".into()),
    }
}

/// Longest reason written after `BH`, in characters.
const MAX_REASON_CHARS: usize = 512;

/// A reply line.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `YR <NEGOTIATE>`.
    Negotiate(Vec<u8>),
    /// `KK <AUTHENTICATE>`.
    Authenticate(Vec<u8>),
    /// `GF 0x%08x`.
    Flags(u32),
    /// `BH <reason>`.
    BrokenHelper(String),
}

impl Reply {
    /// `BH` with `reason`.
    pub fn bh(reason: impl Into<String>) -> Reply {
        Reply::BrokenHelper(reason.into())
    }
}

impl fmt::Display for Reply {
    /// The line, without its `\n`. A reason is kept to one line of printable text, so that no
    /// message (from the API, or echoing the caller's input) can forge a reply line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Negotiate(m) => write!(f, "YR {}", B64.encode(m)),
            Reply::Authenticate(m) => write!(f, "KK {}", B64.encode(m)),
            Reply::Flags(flags) => write!(f, "GF 0x{flags:08x}"),
            Reply::BrokenHelper(reason) => {
                let reason: String = reason
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                write!(f, "BH {reason}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(line: &str) -> String {
        match parse_request(line.as_bytes()) {
            Request::Refused(r) => r,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn requests_are_parsed() {
        assert_eq!(parse_request(b"YR"), Request::Start);
        assert_eq!(parse_request(b"GF"), Request::Flags);
        assert_eq!(
            parse_request(b"TT TlRMTVNTUAA="),
            Request::Challenge(b"NTLMSSP\0".to_vec())
        );
        // Without padding, as some servers send it.
        assert_eq!(
            parse_request(b"TT TlRMTVNTUAA"),
            Request::Challenge(b"NTLMSSP\0".to_vec())
        );
    }

    #[test]
    fn malformed_and_unserved_requests_are_refused_with_a_reason() {
        for (line, says) in [
            ("", "unknown request"),
            ("yr", "unknown request"),
            ("YRX", "unknown request"),
            ("YR TlRMTVNTUAA=", "no argument"),
            ("TT", "needs a base64"),
            ("TT ", "needs a base64"),
            ("TT !!!!", "not base64"),
            ("TT TlRMTVNTUAA=\u{1}", "not base64"),
            ("PW c2VjcmV0", "takes no password"),
            ("GK", "session keys"),
            ("KK TlRMTVNTUAA=", "not a request"),
            ("AF TlRMTVNTUAA=", "not a request"),
            ("GF now", "not a request"),
        ] {
            let r = refused(line);
            assert!(r.contains(says), "{line:?}: {r}");
        }
        assert!(matches!(parse_request(&[b'T', b'T', b' ', 0xff]), Request::Refused(_)));
    }

    #[test]
    fn replies_are_single_lines() {
        assert_eq!(Reply::Negotiate(b"NTLMSSP\0".to_vec()).to_string(), "YR TlRMTVNTUAA=");
        assert_eq!(Reply::Authenticate(vec![1, 2]).to_string(), "KK AQI=");
        assert_eq!(Reply::Flags(0xe288_8215).to_string(), "GF 0xe2888215");
        assert_eq!(Reply::bh("no\nKK AAAA").to_string(), "BH no KK AAAA");
        let long = Reply::bh("x".repeat(10_000)).to_string();
        assert_eq!(long.len(), 3 + MAX_REASON_CHARS);
    }
}
