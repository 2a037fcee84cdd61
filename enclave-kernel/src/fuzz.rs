//! Entry points of the coverage-guided fuzz targets (`fuzz/`, run with `cargo afl`), in the crate
//! itself so that the regression tests replaying their corpus under `cargo test` go through
//! exactly the same code. Each takes arbitrary bytes and must return without panicking, whatever
//! they are; nothing here is used by the enclave at run time.

use alloc::vec::Vec;

use credguard_proto::abi::MEASUREMENT_LEN;
use credguard_proto::enclave::{
    EnclaveMethod, Frame, LogonReply, LogonRequest, NtlmAuthenticateRequest, NtlmNegotiateReply, NtlmNegotiateRequest,
    logon_request,
};
use credguard_proto::framing::encode_frame;
use prost::Message;

use crate::kerberos::messages::{self, KdcReply};
use crate::ntlm::message::parse_challenge;
// Deterministic, so that a crash found once replays the same way.
use crate::rng::CounterRng;
use crate::service::{Identity, RequestStream, Service};

const TSC_KHZ: u64 = 2_000_000;

/// The method ids a fuzzed frame may name: every method, in `enclave.proto`'s order (the corpus'
/// selectors count on it), and one id past the last, which names none.
fn method_ids() -> Vec<u32> {
    let mut ids: Vec<u32> = EnclaveMethod::ALL.iter().map(|m| m.id()).collect();
    ids.push(EnclaveMethod::ALL.len() as u32 + 1);
    ids
}

fn service() -> Option<Service<CounterRng>> {
    let identity = Identity {
        measurement: [0xab; MEASUREMENT_LEN],
        signer: [0x5a; 16],
    };
    Service::new(identity, TSC_KHZ, 1_000, CounterRng::default()).ok()
}

fn call(svc: &mut Service<CounterRng>, call_id: u64, method: EnclaveMethod, payload: Vec<u8>) -> Frame {
    let request = Frame {
        call_id,
        method_id: method.id(),
        payload,
        ..Default::default()
    };
    svc.dispatch(&request, call_id.saturating_mul(TSC_KHZ))
}

/// The enclave's request decoding: `data` as bytes arriving on a vsock stream.
///
/// The first byte chooses how the rest is used, so that the fuzzer reaches both the framing and
/// every method's payload decoding:
/// - bit 0 clear: the rest is the raw stream, fed in pieces of the sizes the second byte gives;
/// - bit 0 set: the rest is the payload of a well-framed request for method number
///   `selector >> 2` (after a logon and an NTLM negotiate); with bit 1 set, field 1 of the
///   payload is first set to the live session handle (or, for `NtlmAuthenticate`, the live
///   context id), which no fuzzer would guess, so that the handlers get past their lookups.
pub fn service_bytes(data: &[u8]) {
    let Some(mut svc) = service() else { return };
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut conn = RequestStream::new();
    let mut out = Vec::new();
    if selector & 1 == 0 {
        let Some((&chunk, stream)) = rest.split_first() else {
            return;
        };
        let chunk = usize::from(chunk).max(1);
        for (i, piece) in stream.chunks(chunk).enumerate() {
            if svc.on_bytes(&mut conn, piece, i as u64, &mut out).is_err() {
                // The stream is out of sync: the enclave closes it.
                return;
            }
        }
    } else {
        let (session, context) = open_session(&mut svc);
        let ids = method_ids();
        let method_id = ids[usize::from(selector >> 2) % ids.len()];
        let mut payload = Vec::new();
        if selector & 2 != 0 {
            let id = if method_id == EnclaveMethod::NtlmAuthenticate.id() {
                context
            } else {
                session
            };
            // Field 1, length-delimited; the fuzzed bytes after it may add or override fields.
            payload.push(0x0a);
            payload.push(id.len() as u8);
            payload.extend_from_slice(&id);
        }
        payload.extend_from_slice(rest);
        let frame = Frame {
            call_id: 3,
            method_id,
            payload,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        encode_frame(&frame, &mut bytes);
        let _ = svc.on_bytes(&mut conn, &bytes, 3, &mut out);
    }
}

/// Logs on with a password and opens an NTLM context: (session handle, context id), empty if
/// either failed.
fn open_session(svc: &mut Service<CounterRng>) -> (Vec<u8>, Vec<u8>) {
    let logon = LogonRequest {
        user: "fuzz".into(),
        domain: "D".into(),
        secret: Some(logon_request::Secret::Password("pw".into())),
        ..Default::default()
    };
    let reply = call(svc, 1, EnclaveMethod::Logon, logon.encode_to_vec());
    let session = LogonReply::decode(reply.payload.as_slice())
        .map(|r| r.session_handle)
        .unwrap_or_default();
    let negotiate = NtlmNegotiateRequest {
        session_handle: session.clone(),
    };
    let reply = call(svc, 2, EnclaveMethod::NtlmNegotiate, negotiate.encode_to_vec());
    let context = NtlmNegotiateReply::decode(reply.payload.as_slice())
        .map(|r| r.context_id)
        .unwrap_or_default();
    (session, context)
}

/// The NTLM CHALLENGE parser, then the whole `NtlmAuthenticate` computation on what it accepts;
/// and the NEGOTIATE parser (a caller's own NEGOTIATE, for the MIC) on the same bytes.
pub fn ntlm_challenge(data: &[u8]) {
    let _ = crate::ntlm::message::parse_negotiate(data);
    let Ok(challenge) = parse_challenge(data) else { return };
    let _ = challenge.timestamp();
    let Some(mut svc) = service() else { return };
    let logon = LogonRequest {
        user: "fuzz".into(),
        domain: "D".into(),
        secret: Some(logon_request::Secret::NtHash(alloc::vec![7; 16])),
        ..Default::default()
    };
    let reply = call(&mut svc, 1, EnclaveMethod::Logon, logon.encode_to_vec());
    let Ok(session) = LogonReply::decode(reply.payload.as_slice()) else {
        return;
    };
    let negotiate = NtlmNegotiateRequest {
        session_handle: session.session_handle,
    };
    let reply = call(&mut svc, 2, EnclaveMethod::NtlmNegotiate, negotiate.encode_to_vec());
    let Ok(context) = NtlmNegotiateReply::decode(reply.payload.as_slice()) else {
        return;
    };
    let authenticate = NtlmAuthenticateRequest {
        context_id: context.context_id,
        challenge_message: data.to_vec(),
        target_spn: "HTTP/fuzz.test".into(),
        ..Default::default()
    };
    let _ = call(
        &mut svc,
        3,
        EnclaveMethod::NtlmAuthenticate,
        authenticate.encode_to_vec(),
    );
}

/// Kerberos: a KDC's reply (KRB-ERROR, AS-REP, TGS-REP) and what is decoded from it (the
/// ETYPE-INFO2 of an error), and `data` as a decrypted EncKDCRepPart; a service's AP-REP (raw, in
/// its GSS token or in an SPNEGO negTokenResp) and `data` as a decrypted EncAPRepPart.
pub fn kerberos_reply(data: &[u8]) {
    match messages::parse_kdc_reply(data) {
        Ok(KdcReply::Error(e)) => {
            let _ = messages::etype_info2(&e);
        }
        Ok(KdcReply::Rep(_)) | Err(_) => {}
    }
    let _ = messages::enc_kdc_rep_part(data, 0x1234_5678);
    let _ = messages::parse_ap_rep(data);
    let _ = messages::enc_ap_rep_part(data);
    // A kpasswd server's reply: its framing and its KRB-ERROR form (the encrypted parts need keys
    // no input has).
    if let Ok(key) = crate::kerberos::crypto::Key::new(18, &[0x42; 32]) {
        let _ = crate::kerberos::kpasswd::change_reply(data, &key, &key);
    }
}

#[cfg(test)]
mod tests {
    //! The fuzz targets' seed and regression corpora (`fuzz/corpus/<target>/`,
    //! `fuzz/regressions/<target>/`), replayed through the same entry points on every
    //! `cargo test`, and short property tests.

    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// Every file of the target's corpora; fails if there are none (a missing corpus would make
    /// the replay test pass without testing anything).
    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut files = Vec::new();
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_file() {
                    let bytes = std::fs::read(&path).unwrap();
                    files.push((path, bytes));
                }
            }
        }
        assert!(!files.is_empty(), "no corpus for {target} under {}", fuzz.display());
        files
    }

    fn replay(target: &str, f: fn(&[u8])) {
        for (path, bytes) in corpus(target) {
            // A panic names the file to reproduce with.
            let r = std::panic::catch_unwind(|| f(&bytes));
            assert!(r.is_ok(), "{target}: {} panics", path.display());
        }
    }

    #[test]
    fn enclave_request_corpus_replays() {
        replay("enclave_request", service_bytes);
    }

    #[test]
    fn ntlm_challenge_corpus_replays() {
        replay("ntlm_challenge", ntlm_challenge);
    }

    #[test]
    fn kerberos_reply_corpus_replays() {
        replay("kerberos_reply", kerberos_reply);
    }

    /// The sample CHALLENGE is accepted, so the NTLM target reaches the computation.
    #[test]
    fn the_ntlm_seed_reaches_authenticate() {
        let sample = crate::ntlm::sample::windows_challenge();
        assert!(parse_challenge(&sample).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn service_survives_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            service_bytes(&data);
        }

        #[test]
        fn ntlm_challenge_survives_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            ntlm_challenge(&data);
        }

        /// Mutations of a valid CHALLENGE: one byte changed anywhere, or the message cut short.
        #[test]
        fn ntlm_challenge_survives_mutations(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut m = crate::ntlm::sample::windows_challenge();
            let i = at.index(m.len());
            m[i] = byte;
            ntlm_challenge(&m);
            m.truncate(cut.index(m.len()));
            ntlm_challenge(&m);
        }

        #[test]
        fn kerberos_reply_survives_any_bytes(tag in prop::sample::select(vec![0x7eu8, 0x6b, 0x6d, 0x79, 0x7a, 0x6f, 0x7b, 0x60, 0xa1]), data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = vec![tag];
            bytes.extend_from_slice(&data);
            kerberos_reply(&bytes);
        }
    }
}
