//! The enclave service: framed request bytes in, framed reply bytes out.
//!
//! Nothing here trusts its input: any byte sequence from the host either yields replies or a
//! [`WireError`] after which the caller closes that stream. Nothing here panics on input.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::abi::MEASUREMENT_LEN;
use credguard_proto::enclave::{
    Frame, LogoffReply, LogoffRequest, LogonReply, LogonRequest, METHOD_KERBEROS_AS, METHOD_KERBEROS_TGS,
    METHOD_LEGACY_AUTHENTICATE, METHOD_LOGOFF, METHOD_LOGON, METHOD_NTLM_AUTHENTICATE, METHOD_NTLM_NEGOTIATE,
    METHOD_STATUS, StatusReply, StatusRequest,
};
use credguard_proto::wire::{FrameDecoder, WireError, encode_frame};
use prost::Message;
use rand_core::TryCryptoRng;
use zeroize::Zeroize;

use crate::credentials::{CredentialStore, LogonRefused, SESSION_HANDLE_LEN, credential_from};

/// gRPC status code OK.
pub const CODE_OK: i32 = 0;
/// gRPC status code INVALID_ARGUMENT: the payload does not decode as the method's request.
pub const CODE_INVALID_ARGUMENT: i32 = 3;
/// gRPC status code NOT_FOUND: no such session.
pub const CODE_NOT_FOUND: i32 = 5;
/// gRPC status code RESOURCE_EXHAUSTED: the enclave holds as many sessions as it can.
pub const CODE_RESOURCE_EXHAUSTED: i32 = 8;
/// gRPC status code FAILED_PRECONDITION: refused by one of the enclave's rules.
pub const CODE_FAILED_PRECONDITION: i32 = 9;
/// gRPC status code UNIMPLEMENTED: no such method.
pub const CODE_UNIMPLEMENTED: i32 = 12;
/// gRPC status code INTERNAL: the enclave itself failed (e.g. its random source).
pub const CODE_INTERNAL: i32 = 13;

/// Longest prefix of an unknown method name echoed back in an error message.
const MAX_ECHOED_METHOD: usize = 80;

/// One open stream: bytes received but not yet a whole frame.
#[derive(Default)]
pub struct Connection {
    decoder: FrameDecoder,
}

impl Connection {
    /// A stream with nothing buffered.
    pub const fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(),
        }
    }

    /// Bytes buffered towards the next frame.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }
}

/// Who this enclave is, as the VMM launched it.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// SHA-384 of the signed image.
    pub measurement: [u8; MEASUREMENT_LEN],
    /// Fingerprint of the key that signed the image.
    pub signer: [u8; 16],
}

/// State shared by all streams.
pub struct Service<R> {
    identity: Identity,
    boot_id: [u8; 16],
    tsc_khz: u64,
    start_tsc: u64,
    requests_served: u64,
    rng: R,
    credentials: CredentialStore,
    ntlm: crate::ntlm::NtlmContexts,
    kerberos: crate::kerberos::KerberosSessions,
    protection: String,
}

/// The random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomSourceFailed;

impl<R: TryCryptoRng> Service<R> {
    /// The service of the enclave `identity`, whose service started at TSC `start_tsc` on a TSC of
    /// `tsc_khz` kHz, drawing session handles and its boot id from `rng`.
    pub fn new(identity: Identity, tsc_khz: u64, start_tsc: u64, mut rng: R) -> Result<Self, RandomSourceFailed> {
        let mut boot_id = [0u8; 16];
        rng.try_fill_bytes(&mut boot_id).map_err(|_| RandomSourceFailed)?;
        Ok(Self {
            identity,
            boot_id,
            tsc_khz,
            start_tsc,
            requests_served: 0,
            rng,
            credentials: CredentialStore::new(),
            ntlm: crate::ntlm::NtlmContexts::new(),
            kerberos: crate::kerberos::KerberosSessions::new(),
            protection: String::new(),
        })
    }

    /// This boot's random identifier.
    pub fn boot_id(&self) -> [u8; 16] {
        self.boot_id
    }

    /// Logon sessions held.
    pub fn sessions(&self) -> usize {
        self.credentials.len()
    }

    /// Requests answered so far.
    pub fn requests_served(&self) -> u64 {
        self.requests_served
    }

    /// Feeds `bytes` received on `conn`, appending a framed reply to `out` for every whole request
    /// frame; returns how many were answered. After an error the stream is out of sync and must be
    /// closed; replies appended to `out` before the error are still valid.
    pub fn on_bytes(
        &mut self,
        conn: &mut Connection,
        bytes: &[u8],
        now_tsc: u64,
        out: &mut Vec<u8>,
    ) -> Result<usize, WireError> {
        conn.decoder.push(bytes);
        let mut answered = 0;
        while let Some(mut request) = conn.decoder.next_frame()? {
            let reply = self.dispatch(&request, now_tsc);
            // A logon's payload holds its secret, now copied into the credential store.
            request.payload.zeroize();
            encode_frame(&reply, out);
            answered += 1;
        }
        Ok(answered)
    }

    /// Sets the protection line `Status` reports (from the boot info; see
    /// `abi::describe_protection`).
    pub fn set_protection(&mut self, protection: String) {
        self.protection = protection;
    }

    /// The reply to one request frame.
    pub fn dispatch(&mut self, request: &Frame, now_tsc: u64) -> Frame {
        self.requests_served = self.requests_served.saturating_add(1);
        let call_id = request.call_id;
        match request.method.as_str() {
            METHOD_STATUS => match StatusRequest::decode(request.payload.as_slice()) {
                Ok(StatusRequest {}) => {
                    let uptime_ms = crate::cycles_to_ms(now_tsc.wrapping_sub(self.start_tsc), self.tsc_khz);
                    let reply = StatusReply {
                        version: String::from(crate::VERSION),
                        measurement: self.identity.measurement.to_vec(),
                        uptime_ms,
                        requests_served: self.requests_served,
                        boot_id: self.boot_id.to_vec(),
                        signer: hex(&self.identity.signer),
                        sessions: self.credentials.len() as u64,
                        protection: self.protection.clone(),
                    };
                    ok(call_id, reply.encode_to_vec())
                }
                Err(_) => error(
                    call_id,
                    CODE_INVALID_ARGUMENT,
                    String::from("payload is not a StatusRequest"),
                ),
            },
            METHOD_LOGON => self.logon(call_id, &request.payload),
            METHOD_LOGOFF => match LogoffRequest::decode(request.payload.as_slice()) {
                Ok(r) if self.credentials.remove(&r.session_handle) => {
                    self.ntlm.forget_session(&r.session_handle);
                    self.kerberos.forget_session(&r.session_handle);
                    ok(call_id, LogoffReply {}.encode_to_vec())
                }
                Ok(_) => error(call_id, CODE_NOT_FOUND, String::from("no such session in this enclave")),
                Err(_) => error(
                    call_id,
                    CODE_INVALID_ARGUMENT,
                    String::from("payload is not a LogoffRequest"),
                ),
            },
            METHOD_KERBEROS_AS => kerberos_reply(
                call_id,
                crate::kerberos::as_step(
                    &mut self.credentials,
                    &mut self.kerberos,
                    &mut self.rng,
                    &request.payload,
                ),
            ),
            METHOD_KERBEROS_TGS => kerberos_reply(
                call_id,
                crate::kerberos::tgs_step(&self.credentials, &mut self.kerberos, &mut self.rng, &request.payload),
            ),
            METHOD_NTLM_NEGOTIATE => ntlm_reply(
                call_id,
                crate::ntlm::negotiate(&self.credentials, &mut self.ntlm, &mut self.rng, &request.payload),
            ),
            METHOD_NTLM_AUTHENTICATE => ntlm_reply(
                call_id,
                crate::ntlm::authenticate(&self.credentials, &mut self.ntlm, &mut self.rng, &request.payload),
            ),
            METHOD_LEGACY_AUTHENTICATE => ntlm_reply(
                call_id,
                Err(crate::ntlm::legacy_authenticate(&self.credentials, &request.payload)),
            ),
            method => {
                let shown = truncate_chars(method, MAX_ECHOED_METHOD);
                let ellipsis = if shown.len() < method.len() { "..." } else { "" };
                error(
                    call_id,
                    CODE_UNIMPLEMENTED,
                    format!("unknown method {shown:?}{ellipsis}"),
                )
            }
        }
    }
}

impl<R: TryCryptoRng> Service<R> {
    fn logon(&mut self, call_id: u64, payload: &[u8]) -> Frame {
        let Ok(mut req) = LogonRequest::decode(payload) else {
            return error(
                call_id,
                CODE_INVALID_ARGUMENT,
                String::from("payload is not a LogonRequest"),
            );
        };
        let cred = credential_from(&mut req);
        // Whatever happened, no secret stays in the decoded request (credential_from took it).
        let cred = match cred {
            Ok(c) => c,
            Err(e) => return refused(call_id, e),
        };
        let mut handle = [0u8; SESSION_HANDLE_LEN];
        if self.rng.try_fill_bytes(&mut handle).is_err() {
            return error(
                call_id,
                CODE_INTERNAL,
                String::from("the enclave's random source failed"),
            );
        }
        match self.credentials.insert(handle, cred) {
            Ok(()) => ok(
                call_id,
                LogonReply {
                    session_handle: handle.to_vec(),
                }
                .encode_to_vec(),
            ),
            Err(e) => refused(call_id, e),
        }
    }
}

fn refused(call_id: u64, e: LogonRefused) -> Frame {
    match e {
        LogonRefused::Invalid(m) => error(call_id, CODE_INVALID_ARGUMENT, m),
        LogonRefused::Rule(m) => error(call_id, CODE_FAILED_PRECONDITION, m),
        LogonRefused::Full => error(
            call_id,
            CODE_RESOURCE_EXHAUSTED,
            String::from("the enclave holds as many sessions as it can"),
        ),
    }
}

fn kerberos_reply(call_id: u64, result: Result<Vec<u8>, crate::kerberos::KerberosError>) -> Frame {
    match result {
        Ok(payload) => ok(call_id, payload),
        Err(e) => error(call_id, e.code(), e.message()),
    }
}

fn ntlm_reply(call_id: u64, result: Result<Vec<u8>, crate::ntlm::NtlmError>) -> Frame {
    match result {
        Ok(payload) => ok(call_id, payload),
        Err(e) => error(call_id, e.code(), e.message()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn ok(call_id: u64, payload: Vec<u8>) -> Frame {
    Frame {
        call_id,
        method: String::new(),
        payload,
        code: CODE_OK,
        message: String::new(),
    }
}

fn error(call_id: u64, code: i32, message: String) -> Frame {
    Frame {
        call_id,
        method: String::new(),
        payload: Vec::new(),
        code,
        message,
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const KHZ: u64 = 1_000_000; // 1 GHz: 1 ms = 1e6 cycles

    /// A deterministic counter "RNG", so that tests see predictable handles.
    struct Counter(u8);

    impl rand_core::TryRng for Counter {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.try_next_u64()? as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            let mut b = [0u8; 8];
            self.try_fill_bytes(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            for d in dst {
                self.0 = self.0.wrapping_add(1);
                *d = self.0;
            }
            Ok(())
        }
    }

    impl rand_core::TryCryptoRng for Counter {}

    fn service() -> Service<Counter> {
        let identity = Identity {
            measurement: [0xab; MEASUREMENT_LEN],
            signer: [0x5a; 16],
        };
        Service::new(identity, KHZ, 5_000, Counter(0)).unwrap()
    }

    fn logon_payload(user: &str, password: &str) -> Vec<u8> {
        use credguard_proto::enclave::logon_request::Secret;
        LogonRequest {
            user: user.to_string(),
            domain: "D".to_string(),
            realm: String::new(),
            secret: Some(Secret::Password(password.to_string())),
        }
        .encode_to_vec()
    }

    #[test]
    fn logon_and_logoff() {
        let mut svc = service();
        let reply = svc.dispatch(&request(1, METHOD_LOGON, logon_payload("alice", "pw")), 0);
        assert_eq!(reply.code, CODE_OK, "{}", reply.message);
        let handle = LogonReply::decode(reply.payload.as_slice()).unwrap().session_handle;
        assert_eq!(handle.len(), 16);
        assert_ne!(handle, svc.boot_id().to_vec());
        assert_eq!(svc.sessions(), 1);
        // Nothing in any reply is the secret.
        let status = svc.dispatch(&request(2, METHOD_STATUS, vec![]), 0);
        let st = StatusReply::decode(status.payload.as_slice()).unwrap();
        assert_eq!(st.sessions, 1);
        assert_eq!(st.signer, "5a".repeat(16));
        assert_eq!(st.boot_id, svc.boot_id().to_vec());
        let off = LogoffRequest {
            session_handle: handle.clone(),
        }
        .encode_to_vec();
        assert_eq!(svc.dispatch(&request(3, METHOD_LOGOFF, off.clone()), 0).code, CODE_OK);
        assert_eq!(svc.dispatch(&request(4, METHOD_LOGOFF, off), 0).code, CODE_NOT_FOUND);
        assert_eq!(svc.sessions(), 0);
    }

    #[test]
    fn logon_refusals_have_codes() {
        use credguard_proto::enclave::{Key, logon_request::Secret};
        let mut svc = service();
        let r = svc.dispatch(&request(1, METHOD_LOGON, logon_payload("", "pw")), 0);
        assert_eq!(r.code, CODE_INVALID_ARGUMENT);
        let des = LogonRequest {
            user: "u".to_string(),
            domain: String::new(),
            realm: "R".to_string(),
            secret: Some(Secret::Key(Key {
                enctype: 1,
                value: vec![0; 8],
            })),
        };
        let r = svc.dispatch(&request(2, METHOD_LOGON, des.encode_to_vec()), 0);
        assert_eq!(r.code, CODE_FAILED_PRECONDITION);
        assert!(r.message.contains("DES"));
        let r = svc.dispatch(&request(3, METHOD_LOGON, vec![0xff]), 0);
        assert_eq!(r.code, CODE_INVALID_ARGUMENT);
        assert_eq!(svc.sessions(), 0);
    }

    fn framed(frames: &[Frame]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for f in frames {
            encode_frame(f, &mut bytes);
        }
        bytes
    }

    fn request(call_id: u64, method: &str, payload: Vec<u8>) -> Frame {
        Frame {
            call_id,
            method: method.to_string(),
            payload,
            code: 0,
            message: String::new(),
        }
    }

    fn replies(bytes: &[u8]) -> Vec<Frame> {
        let mut dec = FrameDecoder::new();
        dec.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            out.push(f);
        }
        assert_eq!(dec.buffered(), 0);
        out
    }

    #[test]
    fn status_round_trip() {
        let mut svc = service();
        let mut conn = Connection::new();
        let req = framed(&[request(42, METHOD_STATUS, StatusRequest {}.encode_to_vec())]);
        let mut out = Vec::new();
        assert_eq!(
            svc.on_bytes(&mut conn, &req, 5_000 + 7 * 1_000_000 + 1, &mut out),
            Ok(1)
        );
        let got = replies(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].call_id, 42);
        assert_eq!(got[0].code, CODE_OK);
        assert!(got[0].method.is_empty());
        let status = StatusReply::decode(got[0].payload.as_slice()).unwrap();
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(status.measurement, vec![0xab; 48]);
        assert_eq!(status.uptime_ms, 7);
        assert_eq!(status.requests_served, 1);
    }

    #[test]
    fn byte_by_byte_and_pipelined() {
        let mut svc = service();
        let mut conn = Connection::new();
        let req = framed(&[
            request(1, METHOD_STATUS, vec![]),
            request(2, "/nope.Svc/Missing", vec![]),
            request(3, METHOD_STATUS, vec![]),
        ]);
        let mut out = Vec::new();
        let mut answered = 0;
        for b in &req {
            answered += svc
                .on_bytes(&mut conn, core::slice::from_ref(b), 6_000, &mut out)
                .unwrap();
        }
        assert_eq!(answered, 3);
        assert_eq!(conn.buffered(), 0);
        let got = replies(&out);
        assert_eq!(got.iter().map(|f| f.call_id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got.iter().map(|f| f.code).collect::<Vec<_>>(), vec![0, 12, 0]);
        let last = StatusReply::decode(got[2].payload.as_slice()).unwrap();
        assert_eq!(last.requests_served, 3);
    }

    #[test]
    fn unknown_method_is_unimplemented() {
        let mut svc = service();
        let reply = svc.dispatch(&request(9, "/credguard.enclave.v1.Enclave/Nope", vec![]), 0);
        assert_eq!(reply.code, CODE_UNIMPLEMENTED);
        assert_eq!(reply.call_id, 9);
        assert!(reply.message.contains("Nope"), "{}", reply.message);
        assert!(reply.payload.is_empty());
        let long = "é".repeat(500);
        let reply = svc.dispatch(&request(10, &long, vec![]), 0);
        assert_eq!(reply.code, CODE_UNIMPLEMENTED);
        assert!(reply.message.len() < 200);
        assert!(reply.message.ends_with("..."));
    }

    #[test]
    fn bad_payload_is_invalid_argument() {
        let mut svc = service();
        // Field 1 with wire type 7 (invalid).
        let reply = svc.dispatch(&request(5, METHOD_STATUS, vec![0x0f, 0xff]), 0);
        assert_eq!(reply.code, CODE_INVALID_ARGUMENT);
        assert_eq!(reply.call_id, 5);
        // A truncated length-delimited field.
        let reply = svc.dispatch(&request(6, METHOD_STATUS, vec![0x0a, 0x05, 1]), 0);
        assert_eq!(reply.code, CODE_INVALID_ARGUMENT);
        // Unknown fields are fine (forward compatibility).
        let reply = svc.dispatch(&request(7, METHOD_STATUS, vec![0x08, 0x01]), 0);
        assert_eq!(reply.code, CODE_OK);
    }

    #[test]
    fn garbage_is_a_stream_error() {
        let mut svc = service();
        let mut out = Vec::new();
        let mut conn = Connection::new();
        assert_eq!(
            svc.on_bytes(&mut conn, &[0, 0, 0, 0, 2, 0xff, 0xff], 0, &mut out),
            Err(WireError::Decode)
        );
        let mut conn = Connection::new();
        assert_eq!(
            svc.on_bytes(&mut conn, &[1, 0, 0, 0, 0], 0, &mut out),
            Err(WireError::Compressed)
        );
        let mut conn = Connection::new();
        assert!(matches!(
            svc.on_bytes(&mut conn, &[0, 0xff, 0xff, 0xff, 0xff], 0, &mut out),
            Err(WireError::TooLong(_))
        ));
        assert!(out.is_empty());

        // A good frame followed by garbage: the good reply stays in `out`.
        let mut conn = Connection::new();
        let mut bytes = framed(&[request(1, METHOD_STATUS, vec![])]);
        bytes.extend_from_slice(&[7, 7, 7, 7, 7, 7]);
        assert_eq!(svc.on_bytes(&mut conn, &bytes, 0, &mut out), Err(WireError::Compressed));
        assert_eq!(replies(&out).len(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: xorshift bytes, sometimes behind a valid header.
        let mut svc = service();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                let mut framed = vec![0];
                framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                framed.append(&mut bytes);
                bytes = framed;
            }
            let mut conn = Connection::new();
            let mut out = Vec::new();
            let _ = svc.on_bytes(&mut conn, &bytes, next(), &mut out);
        }
    }
}
