//! Unit tests of the enclave service: frames in, frames out, no VM.

use super::*;
use alloc::string::ToString;
use alloc::vec;

use credguard_proto::enclave::{
    IssueSealingNonceRequest, KerberosAsRequest, KerberosTgsRequest, LegacyAuthenticateRequest, LegacyProtocol,
    LogoffRequest, LogonReply, LogonRequest, NtlmAuthenticateRequest, StatusReply, StatusRequest,
};
use credguard_proto::rpc::code::{
    FAILED_PRECONDITION as CODE_FAILED_PRECONDITION, INVALID_ARGUMENT as CODE_INVALID_ARGUMENT,
    NOT_FOUND as CODE_NOT_FOUND, OK as CODE_OK, RESOURCE_EXHAUSTED as CODE_RESOURCE_EXHAUSTED,
    UNIMPLEMENTED as CODE_UNIMPLEMENTED,
};
use prost::Message;

use crate::rng::CounterRng;

const KHZ: u64 = 1_000_000; // 1 GHz: 1 ms = 1e6 cycles

fn service() -> Service<CounterRng> {
    let identity = Identity {
        measurement: [0xab; MEASUREMENT_LEN],
        signer: [0x5a; 16],
    };
    Service::new(identity, KHZ, 5_000, CounterRng::starting_at(0)).unwrap()
}

fn logon_payload(user: &str, password: &str) -> Vec<u8> {
    use credguard_proto::enclave::logon_request::Secret;
    LogonRequest {
        default_realm: String::new(),
        user: user.to_string(),
        domain: "D".to_string(),
        realm: String::new(),
        secret: Some(Secret::Password(password.to_string())),
        operations_per_second: 0,
        owner: 1000,
        allow_rc4: false,
        machine_account: false,
    }
    .encode_to_vec()
}

#[test]
fn logon_and_logoff() {
    let mut svc = service();
    let reply = svc.dispatch(&request(1, EnclaveMethod::Logon, logon_payload("alice", "pw")), 0);
    assert_eq!(reply.code, CODE_OK, "{}", reply.message);
    let handle = LogonReply::decode(reply.payload.as_slice()).unwrap().session_handle;
    assert_eq!(handle.len(), 16);
    assert_ne!(handle, svc.boot_id().to_vec());
    assert_eq!(svc.sessions(), 1);
    // Nothing in any reply is the secret.
    let status = svc.dispatch(&request(2, EnclaveMethod::Status, vec![]), 0);
    let st = StatusReply::decode(status.payload.as_slice()).unwrap();
    assert_eq!(st.sessions, 1);
    assert_eq!(st.signer, "5a".repeat(16));
    assert_eq!(st.boot_id, svc.boot_id().to_vec());
    let off = LogoffRequest {
        session_handle: handle.clone(),
    }
    .encode_to_vec();
    assert_eq!(
        svc.dispatch(&request(3, EnclaveMethod::Logoff, off.clone()), 0).code,
        CODE_OK
    );
    assert_eq!(
        svc.dispatch(&request(4, EnclaveMethod::Logoff, off), 0).code,
        CODE_NOT_FOUND
    );
    assert_eq!(svc.sessions(), 0);
}

fn challenge_message() -> Vec<u8> {
    crate::ntlm::sample::windows_challenge()
}

fn logon_as(svc: &mut Service<CounterRng>, uid: u64, user: &str, password: &str, rate: u32, now: u64) -> Vec<u8> {
    use credguard_proto::enclave::logon_request::Secret;
    let req = LogonRequest {
        default_realm: String::new(),
        user: user.to_string(),
        domain: "D".to_string(),
        realm: String::new(),
        secret: Some(Secret::Password(password.to_string())),
        operations_per_second: rate,
        owner: uid,
        allow_rc4: false,
        machine_account: false,
    };
    let reply = svc.dispatch(&request(1, EnclaveMethod::Logon, req.encode_to_vec()), now);
    assert_eq!(reply.code, CODE_OK, "{}", reply.message);
    LogonReply::decode(reply.payload.as_slice()).unwrap().session_handle
}

fn ntlm_handshake(svc: &mut Service<CounterRng>, handle: &[u8], now: u64) -> Frame {
    use credguard_proto::enclave::{NtlmNegotiateReply, NtlmNegotiateRequest};
    let neg = NtlmNegotiateRequest {
        session_handle: handle.to_vec(),
    };
    let r = svc.dispatch(&request(2, EnclaveMethod::NtlmNegotiate, neg.encode_to_vec()), now);
    assert_eq!(r.code, CODE_OK, "{}", r.message);
    // Starting a context uses no secret: no record.
    assert!(r.audit.is_empty());
    let ctx = NtlmNegotiateReply::decode(r.payload.as_slice()).unwrap().context_id;
    let auth = NtlmAuthenticateRequest {
        context_id: ctx,
        challenge_message: challenge_message(),
        channel_bindings: Vec::new(),
        target_spn: String::new(),
        now_filetime: 0,
        ..Default::default()
    };
    svc.dispatch(&request(3, EnclaveMethod::NtlmAuthenticate, auth.encode_to_vec()), now)
}

fn legacy(svc: &mut Service<CounterRng>, handle: &[u8], now: u64) -> Frame {
    let req = LegacyAuthenticateRequest {
        session_handle: handle.to_vec(),
        protocol: LegacyProtocol::Ntlmv1 as i32,
        challenge: vec![1; 8],
    };
    svc.dispatch(&request(4, EnclaveMethod::LegacyAuthenticate, req.encode_to_vec()), now)
}

fn only_record(f: &Frame) -> &AuditRecord {
    assert_eq!(f.audit.len(), 1, "{:?}", f.audit);
    &f.audit[0]
}

#[test]
fn every_secret_use_yields_exactly_one_audit_record() {
    let mut svc = service();
    let t = 5_000 + 3 * 1_000_000; // 3 ms after the service started
    let logon = svc.dispatch(&request(1, EnclaveMethod::Logon, logon_payload("alice", "pw")), t);
    let handle = LogonReply::decode(logon.payload.as_slice()).unwrap().session_handle;
    let rec = only_record(&logon);
    assert_eq!((rec.operation.as_str(), rec.code), (operation::LOGON, CODE_OK));
    assert_eq!(rec.session_handle, handle);
    assert_eq!(rec.enclave_time_ms, 3);

    let auth = ntlm_handshake(&mut svc, &handle, t);
    assert_eq!(auth.code, CODE_OK, "{}", auth.message);
    let rec = only_record(&auth);
    assert_eq!(rec.operation, operation::NTLM_AUTHENTICATE);
    assert_eq!(rec.session_handle, handle);
    assert_eq!(rec.target, "server.corp.test");

    let refused = legacy(&mut svc, &handle, t);
    assert_eq!(refused.code, CODE_FAILED_PRECONDITION);
    let rec = only_record(&refused);
    assert_eq!(
        (rec.operation.as_str(), rec.code),
        (operation::LEGACY_REFUSED, CODE_FAILED_PRECONDITION)
    );
    assert_eq!(rec.target, "LEGACY_PROTOCOL_NTLMV1");

    let as_req = KerberosAsRequest {
        session_handle: handle.clone(),
        ..Default::default()
    };
    let r = svc.dispatch(&request(5, EnclaveMethod::KerberosAs, as_req.encode_to_vec()), t);
    let rec = only_record(&r);
    assert_eq!((rec.operation.as_str(), rec.code), (operation::KERBEROS_AS, r.code));
    assert_eq!(rec.session_handle, handle);

    let tgs_req = KerberosTgsRequest {
        session_handle: handle.clone(),
        spn: "HTTP/web.example.test".to_string(),
        ..Default::default()
    };
    let r = svc.dispatch(&request(6, EnclaveMethod::KerberosTgs, tgs_req.encode_to_vec()), t);
    let rec = only_record(&r);
    assert_eq!(
        (rec.operation.as_str(), rec.target.as_str()),
        (operation::KERBEROS_TGS, "HTTP/web.example.test")
    );
    // The user-to-user exchange for the SID uses the TGT: audited (not charged: it follows an AS
    // exchange, which was).
    let sid_req = credguard_proto::enclave::KerberosUserSidRequest {
        session_handle: handle.clone(),
        ..Default::default()
    };
    let r = svc.dispatch(&request(60, EnclaveMethod::KerberosUserSid, sid_req.encode_to_vec()), t);
    let rec = only_record(&r);
    assert_eq!(
        (rec.operation.as_str(), rec.code),
        (operation::KERBEROS_USER_SID, r.code)
    );
    assert_eq!(rec.session_handle, handle);

    // Calls that use no secret carry none.
    let st = svc.dispatch(&request(7, EnclaveMethod::Status, vec![]), t);
    assert!(st.audit.is_empty());
    let off = LogoffRequest {
        session_handle: handle.clone(),
    };
    assert!(
        svc.dispatch(&request(8, EnclaveMethod::Logoff, off.encode_to_vec()), t)
            .audit
            .is_empty()
    );
    // A refused logon is audited too (without a session).
    let bad = svc.dispatch(&request(9, EnclaveMethod::Logon, logon_payload("", "pw")), t);
    let rec = only_record(&bad);
    assert_eq!((rec.code, rec.session_handle.len()), (CODE_INVALID_ARGUMENT, 0));
    // No record carries the secret or its hash.
    let nt = crate::credentials::nt_hash("pw");
    for f in [&logon, &auth, &refused] {
        let bytes = f.audit.iter().map(|r| r.encode_to_vec()).collect::<Vec<_>>().concat();
        assert!(!bytes.windows(16).any(|w| w == nt.as_slice()));
        assert!(!bytes.windows(2).any(|w| w == b"pw"));
    }
}

#[test]
fn the_rate_limit_is_the_enclaves_per_user_and_credential_and_on_its_own_clock() {
    let mut svc = service();
    let t0 = 10 * 1_000_000_000;
    let slow = logon_as(&mut svc, 1000, "alice", "pw", 3, t0);
    let other = logon_as(&mut svc, 1001, "bob", "pw2", 3, t0);
    for _ in 0..3 {
        assert_eq!(legacy(&mut svc, &slow, t0).code, CODE_FAILED_PRECONDITION);
    }
    // The fourth in the same instant is over the limit: for NTLM as for legacy attempts.
    let r = legacy(&mut svc, &slow, t0);
    assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
    assert!(
        r.message
            .contains("rate limit of 3 operations per second per user and per credential"),
        "{}",
        r.message
    );
    assert_eq!(only_record(&r).code, CODE_RESOURCE_EXHAUSTED);
    let r = ntlm_handshake(&mut svc, &slow, t0);
    assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
    assert_eq!(only_record(&r).session_handle, slow);
    // Another user with another credential has their own buckets.
    assert_eq!(ntlm_handshake(&mut svc, &other, t0).code, CODE_OK);
    // Logging on again (even asking for more) or off does not refill alice's.
    let again = logon_as(&mut svc, 1000, "alice", "pw", 1000, t0);
    assert_eq!(legacy(&mut svc, &again, t0).code, CODE_RESOURCE_EXHAUSTED);
    let off = LogoffRequest {
        session_handle: slow.clone(),
    };
    assert_eq!(
        svc.dispatch(&request(8, EnclaveMethod::Logoff, off.encode_to_vec()), t0)
            .code,
        CODE_OK
    );
    let third = logon_as(&mut svc, 1000, "alice", "pw", 3, t0);
    assert_eq!(legacy(&mut svc, &third, t0).code, CODE_RESOURCE_EXHAUSTED);
    // Alice's credential under another uid (a proxy naming any uid): its bucket is empty too.
    let moved = logon_as(&mut svc, 4242, "alice", "pw", 3, t0);
    assert_eq!(legacy(&mut svc, &moved, t0).code, CODE_RESOURCE_EXHAUSTED);
    // One third of a second of enclave TSC later, one operation is allowed again.
    let t1 = t0 + 1_000_000_000 / 3 + 1;
    assert_eq!(ntlm_handshake(&mut svc, &third, t1).code, CODE_OK);
    assert_eq!(ntlm_handshake(&mut svc, &third, t1).code, CODE_RESOURCE_EXHAUSTED);

    // Asking for more than the ceiling gets the ceiling.
    let greedy = logon_as(&mut svc, 7, "carol", "pw3", u32::MAX, t0);
    let passed = (0..crate::ratelimit::MAX_OPERATIONS_PER_SECOND + 50)
        .filter(|_| legacy(&mut svc, &greedy, t0).code != CODE_RESOURCE_EXHAUSTED)
        .count();
    assert_eq!(passed, crate::ratelimit::MAX_OPERATIONS_PER_SECOND as usize);
}

#[test]
fn no_call_can_exhaust_the_heap() {
    static FREE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);
    let mut svc = service();
    svc.set_free_heap(|| FREE.load(core::sync::atomic::Ordering::Relaxed));
    let h = logon_as(&mut svc, 1000, "alice", "pw", 0, 0);
    FREE.store(MEMORY_HEADROOM - 1, core::sync::atomic::Ordering::Relaxed);
    let r = svc.dispatch(&request(2, EnclaveMethod::Logon, logon_payload("bob", "pw")), 0);
    assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
    assert!(r.message.contains("memory"), "{}", r.message);
    let neg = credguard_proto::enclave::NtlmNegotiateRequest {
        session_handle: h.clone(),
    };
    let r = svc.dispatch(&request(6, EnclaveMethod::NtlmNegotiate, neg.encode_to_vec()), 0);
    assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
    // Status and Logoff still work, so the memory can be freed.
    assert_eq!(
        svc.dispatch(&request(3, EnclaveMethod::Status, vec![]), 0).code,
        CODE_OK
    );
    let off = LogoffRequest { session_handle: h };
    assert_eq!(
        svc.dispatch(&request(4, EnclaveMethod::Logoff, off.encode_to_vec()), 0)
            .code,
        CODE_OK
    );
    FREE.store(MEMORY_HEADROOM, core::sync::atomic::Ordering::Relaxed);
    let r = svc.dispatch(&request(5, EnclaveMethod::Logon, logon_payload("bob", "pw")), 0);
    assert_eq!(r.code, CODE_OK);
}

#[test]
fn sealed_logons_are_bound_to_purpose_owner_and_a_fresh_nonce() {
    use crate::sealing::tests::{names, seal};
    use credguard_proto::enclave::sealed_logon_secret::Secret as Inner;
    use credguard_proto::enclave::{IssueSealingNonceReply, SealedSecret, logon_request::Secret};
    let mut svc = service();
    let nonce = |svc: &mut Service<CounterRng>, owner: u64| {
        let r = svc.dispatch(
            &request(
                1,
                EnclaveMethod::IssueSealingNonce,
                IssueSealingNonceRequest { owner }.encode_to_vec(),
            ),
            0,
        );
        assert_eq!(r.code, CODE_OK, "{}", r.message);
        let n = IssueSealingNonceReply::decode(r.payload.as_slice()).unwrap().nonce;
        <[u8; 16]>::try_from(n.as_slice()).unwrap()
    };
    let logon = |svc: &mut Service<CounterRng>, owner: u64, sealed: SealedSecret| {
        let req = LogonRequest {
            default_realm: String::new(),
            user: "alice".into(),
            domain: "D".into(),
            realm: String::new(),
            secret: Some(Secret::Sealed(sealed)),
            operations_per_second: 0,
            owner,
            allow_rc4: true,
            machine_account: false,
        };
        svc.dispatch(&request(2, EnclaveMethod::Logon, req.encode_to_vec()), 0)
    };
    let n = nonce(&mut svc, 1000);
    let pk = svc.sealing_public_key();
    let sealed = seal(
        pk,
        [3; 32],
        Inner::Password("pw".into()),
        SealPurpose::Logon,
        Owner::uid(1000),
        n,
        &names("alice", "D", ""),
    );
    // Another uid cannot use it; it is not used up by the attempt.
    assert_eq!(logon(&mut svc, 1001, sealed.clone()).code, CODE_FAILED_PRECONDITION);
    let ok = logon(&mut svc, 1000, sealed.clone());
    assert_eq!(ok.code, CODE_OK, "{}", ok.message);
    // Replayed: refused.
    let r = logon(&mut svc, 1000, sealed);
    assert_eq!(r.code, CODE_FAILED_PRECONDITION);
    assert!(r.message.contains("nonce"), "{}", r.message);
    // Sealed for a vault save: does not open as a logon.
    let n = nonce(&mut svc, 1000);
    let vault = seal(
        pk,
        [4; 32],
        Inner::Password("pw".into()),
        SealPurpose::VaultSave,
        Owner::uid(1000),
        n,
        &names("alice", "D", ""),
    );
    assert_eq!(logon(&mut svc, 1000, vault).code, CODE_INVALID_ARGUMENT);
    // A flood of nonces for another uid does not expire alice's.
    let n = nonce(&mut svc, 1000);
    for _ in 0..100 {
        nonce(&mut svc, 666);
    }
    let fresh = seal(
        pk,
        [5; 32],
        Inner::Password("pw".into()),
        SealPurpose::Logon,
        Owner::uid(1000),
        n,
        &names("alice", "D", ""),
    );
    assert_eq!(logon(&mut svc, 1000, fresh).code, CODE_OK);
}

#[test]
fn logon_refusals_have_codes() {
    use credguard_proto::enclave::{Key, logon_request::Secret};
    let mut svc = service();
    let r = svc.dispatch(&request(1, EnclaveMethod::Logon, logon_payload("", "pw")), 0);
    assert_eq!(r.code, CODE_INVALID_ARGUMENT);
    let des = LogonRequest {
        default_realm: String::new(),
        user: "u".to_string(),
        domain: String::new(),
        realm: "R".to_string(),
        secret: Some(Secret::Key(Key {
            enctype: 1,
            value: vec![0; 8],
        })),
        operations_per_second: 0,
        owner: 1000,
        allow_rc4: false,
        machine_account: false,
    };
    let r = svc.dispatch(&request(2, EnclaveMethod::Logon, des.encode_to_vec()), 0);
    assert_eq!(r.code, CODE_FAILED_PRECONDITION);
    assert!(r.message.contains("DES"));
    let r = svc.dispatch(&request(3, EnclaveMethod::Logon, vec![0xff]), 0);
    assert_eq!(r.code, CODE_INVALID_ARGUMENT);
    assert_eq!(svc.sessions(), 0);
}

#[test]
fn only_root_registers_a_machine_account_and_only_with_a_key() {
    use credguard_proto::enclave::{Key, logon_request::Secret};
    let mut svc = service();
    let machine = |owner: u64, secret: Secret| LogonRequest {
        user: "host/client.test".to_string(),
        realm: "R.TEST".to_string(),
        secret: Some(secret),
        owner,
        machine_account: true,
        ..Default::default()
    };
    let key = || {
        Secret::Key(Key {
            enctype: 18,
            value: vec![7; 32],
        })
    };
    let r = svc.dispatch(
        &request(1, EnclaveMethod::Logon, machine(1000, key()).encode_to_vec()),
        0,
    );
    assert_eq!(r.code, credguard_proto::rpc::code::PERMISSION_DENIED, "{}", r.message);
    let password = Secret::Password("pw".to_string());
    let r = svc.dispatch(
        &request(2, EnclaveMethod::Logon, machine(0, password).encode_to_vec()),
        0,
    );
    assert_eq!(r.code, CODE_INVALID_ARGUMENT, "{}", r.message);
    assert_eq!(svc.sessions(), 0);
    let r = svc.dispatch(&request(3, EnclaveMethod::Logon, machine(0, key()).encode_to_vec()), 0);
    assert_eq!(r.code, CODE_OK, "{}", r.message);
    assert_eq!(svc.sessions(), 1);
}

fn framed(frames: &[Frame]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for f in frames {
        encode_frame(f, &mut bytes);
    }
    bytes
}

fn request(call_id: u64, method: EnclaveMethod, payload: Vec<u8>) -> Frame {
    Frame {
        call_id,
        method_id: method.id(),
        payload,
        ..Default::default()
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
    let mut conn = RequestStream::new();
    let req = framed(&[request(42, EnclaveMethod::Status, StatusRequest {}.encode_to_vec())]);
    let mut out = Vec::new();
    assert_eq!(
        svc.on_bytes(&mut conn, &req, 5_000 + 7 * 1_000_000 + 1, &mut out),
        Ok(1)
    );
    let got = replies(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].call_id, 42);
    assert_eq!(got[0].code, CODE_OK);
    assert_eq!(got[0].method_id, 0);
    let status = StatusReply::decode(got[0].payload.as_slice()).unwrap();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.measurement, vec![0xab; 48]);
    assert_eq!(status.uptime_ms, 7);
    assert_eq!(status.requests_served, 1);
}

#[test]
fn byte_by_byte_and_pipelined() {
    let mut svc = service();
    let mut conn = RequestStream::new();
    let req = framed(&[
        request(1, EnclaveMethod::Status, vec![]),
        unknown(2, 999),
        request(3, EnclaveMethod::Status, vec![]),
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
    for id in [0, EnclaveMethod::ALL.len() as u32 + 1, u32::MAX] {
        let reply = svc.dispatch(&unknown(9, id), 0);
        assert_eq!(reply.code, CODE_UNIMPLEMENTED);
        assert_eq!(reply.call_id, 9);
        assert!(reply.message.contains(&id.to_string()), "{}", reply.message);
        assert!(reply.payload.is_empty());
    }
}

/// A request naming method id `id`, which may name no method.
fn unknown(call_id: u64, id: u32) -> Frame {
    Frame {
        call_id,
        method_id: id,
        ..Default::default()
    }
}

#[test]
fn bad_payload_is_invalid_argument() {
    let mut svc = service();
    // Field 1 with wire type 7 (invalid).
    let reply = svc.dispatch(&request(5, EnclaveMethod::Status, vec![0x0f, 0xff]), 0);
    assert_eq!(reply.code, CODE_INVALID_ARGUMENT);
    assert_eq!(reply.call_id, 5);
    // A truncated length-delimited field.
    let reply = svc.dispatch(&request(6, EnclaveMethod::Status, vec![0x0a, 0x05, 1]), 0);
    assert_eq!(reply.code, CODE_INVALID_ARGUMENT);
    // Unknown fields are fine (forward compatibility).
    let reply = svc.dispatch(&request(7, EnclaveMethod::Status, vec![0x08, 0x01]), 0);
    assert_eq!(reply.code, CODE_OK);
}

#[test]
fn garbage_is_a_stream_error() {
    let mut svc = service();
    let mut out = Vec::new();
    let mut conn = RequestStream::new();
    assert_eq!(
        svc.on_bytes(&mut conn, &[0, 0, 0, 0, 2, 0xff, 0xff], 0, &mut out),
        Err(FrameError::Decode)
    );
    let mut conn = RequestStream::new();
    assert_eq!(
        svc.on_bytes(&mut conn, &[1, 0, 0, 0, 0], 0, &mut out),
        Err(FrameError::Compressed)
    );
    let mut conn = RequestStream::new();
    assert!(matches!(
        svc.on_bytes(&mut conn, &[0, 0xff, 0xff, 0xff, 0xff], 0, &mut out),
        Err(FrameError::TooLong(_))
    ));
    assert!(out.is_empty());

    // A good frame followed by garbage: the good reply stays in `out`.
    let mut conn = RequestStream::new();
    let mut bytes = framed(&[request(1, EnclaveMethod::Status, vec![])]);
    bytes.extend_from_slice(&[7, 7, 7, 7, 7, 7]);
    assert_eq!(
        svc.on_bytes(&mut conn, &bytes, 0, &mut out),
        Err(FrameError::Compressed)
    );
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
        let mut conn = RequestStream::new();
        let mut out = Vec::new();
        let _ = svc.on_bytes(&mut conn, &bytes, next(), &mut out);
    }
}

#[test]
fn a_new_password_opens_only_sealed_for_a_password_change_by_the_sessions_owner() {
    use crate::sealing::tests::{names, seal};
    use credguard_proto::enclave::sealed_logon_secret::Secret as Inner;
    use credguard_proto::enclave::{
        IssueSealingNonceReply, KerberosChangePasswordReply, KerberosChangePasswordRequest, logon_request::Secret,
    };
    let mut svc = service();
    let req = LogonRequest {
        default_realm: String::new(),
        user: "alice".into(),
        domain: "D".into(),
        realm: "R.TEST".into(),
        secret: Some(Secret::Password("old".into())),
        operations_per_second: 0,
        owner: 1000,
        allow_rc4: false,
        machine_account: false,
    };
    let reply = svc.dispatch(&request(1, EnclaveMethod::Logon, req.encode_to_vec()), 0);
    let handle = LogonReply::decode(reply.payload.as_slice()).unwrap().session_handle;
    let sealed_as = |svc: &mut Service<CounterRng>, purpose, owner: u64, secret| {
        let r = svc.dispatch(
            &request(
                2,
                EnclaveMethod::IssueSealingNonce,
                IssueSealingNonceRequest { owner }.encode_to_vec(),
            ),
            0,
        );
        let n = IssueSealingNonceReply::decode(r.payload.as_slice()).unwrap().nonce;
        let pk = svc.sealing_public_key();
        seal(
            pk,
            [9; 32],
            secret,
            purpose,
            Owner(owner),
            <[u8; 16]>::try_from(n.as_slice()).unwrap(),
            &names("alice", "D", "R.TEST"),
        )
    };
    let change = |svc: &mut Service<CounterRng>, sealed| {
        let req = KerberosChangePasswordRequest {
            session_handle: handle.clone(),
            now_unix: 1_000,
            new_password: Some(sealed),
            ..Default::default()
        };
        svc.dispatch(
            &request(3, EnclaveMethod::KerberosChangePassword, req.encode_to_vec()),
            0,
        )
    };
    let pw = || Inner::Password("New-Passw0rd".into());
    // Sealed for a logon, or by another uid: does not open.
    let logon_seal = sealed_as(&mut svc, SealPurpose::Logon, 1000, pw());
    assert_eq!(change(&mut svc, logon_seal).code, CODE_INVALID_ARGUMENT);
    let other_uid = sealed_as(&mut svc, SealPurpose::PasswordChange, 1001, pw());
    assert_ne!(change(&mut svc, other_uid).code, CODE_OK);
    // Not a password.
    let hash = sealed_as(&mut svc, SealPurpose::PasswordChange, 1000, Inner::NtHash(vec![1; 16]));
    assert_eq!(change(&mut svc, hash).code, CODE_INVALID_ARGUMENT);
    // The genuine one starts the AS exchange for kadmin/changepw, with one audit record.
    let good = sealed_as(&mut svc, SealPurpose::PasswordChange, 1000, pw());
    let r = change(&mut svc, good);
    assert_eq!(r.code, CODE_OK, "{}", r.message);
    let reply = KerberosChangePasswordReply::decode(r.payload.as_slice()).unwrap();
    assert!(!reply.kdc_request.is_empty() && reply.kpasswd_request.is_empty() && !reply.changed);
    let record = only_record(&r);
    assert_eq!(record.operation, "kerberos_change_password");
    assert_eq!(record.target, "kadmin/changepw@R.TEST");
}
