//! NTLM end to end: the real enclave under KVM, the VMM and the proxy as separate processes, and
//! an independent acceptor (Python `pyspnego`) that checks credguard's AUTHENTICATE messages: the
//! NTLMv2 proof, the MIC, the channel bindings and the session key. Plus the refusals (NTLMv1-only
//! CHALLENGEs, legacy protocols), malformed CHALLENGEs, and another uid trying a context.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use credguard_client as client;
use credguard_proto::lsa;
use support::pyspnego::{Acceptor, TARGET_INFO, crafted_challenge, hex, pyspnego_or_skip};
use support::{Stack, json, kvm_or_skip, runtime};
use tonic::Code;

type Client = lsa::lsa_client::LsaClient<tonic::transport::Channel>;

/// gss_channel_bindings_struct with no addresses and `app` as application data.
fn channel_bindings(app: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    v.extend_from_slice(&(app.len() as u32).to_le_bytes());
    v.extend_from_slice(app);
    v
}

/// UNICODE | NTLM | SIGN | SEAL | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY | TARGET_INFO | 128 | KEY_EXCH.
const NTLMV2_FLAGS: u32 =
    0x0000_0001 | 0x0200 | 0x10 | 0x20 | 0x8000 | 0x0008_0000 | 0x0080_0000 | 0x2000_0000 | 0x4000_0000;
const ESS: u32 = 0x0008_0000;

async fn logon(c: &mut Client, user: &str, secret: lsa::logon_request::Secret) -> String {
    c.logon(lsa::LogonRequest {
        user: user.into(),
        domain: "CORP".into(),
        realm: String::new(),
        kdc: String::new(),
        secret: Some(secret),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .session_id
}

/// One NTLM handshake against the acceptor; returns its verdict line and our exported key.
async fn handshake(
    c: &mut Client,
    session_id: &str,
    user_file: &std::path::Path,
    cbt_app_data: &[u8],
) -> (String, Vec<u8>) {
    let neg = c
        .ntlm_negotiate(lsa::NtlmNegotiateRequest {
            session_id: session_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut acceptor = Acceptor::start(user_file, cbt_app_data);
    let challenge = hex::decode(acceptor.exchange(&neg.negotiate_message)).expect("the acceptor's CHALLENGE");
    let auth = c
        .ntlm_authenticate(lsa::NtlmAuthenticateRequest {
            context_id: neg.context_id,
            challenge_message: challenge,
            channel_bindings: if cbt_app_data.is_empty() {
                Vec::new()
            } else {
                channel_bindings(cbt_app_data)
            },
            target_spn: "HTTP/web.corp.test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auth.exported_session_key.len(), 16);
    (acceptor.exchange(&auth.authenticate_message), auth.exported_session_key)
}

#[test]
fn ntlmv2_is_accepted_by_an_independent_acceptor() {
    if !kvm_or_skip("ntlmv2_is_accepted_by_an_independent_acceptor")
        || !pyspnego_or_skip("ntlmv2_is_accepted_by_an_independent_acceptor")
    {
        return;
    }
    let stack = Stack::start("ntlm-accept", "");
    stack.wait_ready();
    let users = stack.dir.join("ntlm-users");
    runtime().block_on(async {
        let mut c = client::connect(&stack.api).await.unwrap();
        let alice = logon(
            &mut c,
            "alice",
            lsa::logon_request::Secret::Password("Alice-Passw0rd".into()),
        )
        .await;

        // The right password: accepted, and the acceptor derives the same session key.
        std::fs::write(&users, "CORP:alice:Alice-Passw0rd\n").unwrap();
        for cbt in [&b""[..], b"tls-server-end-point:0123456789abcdef"] {
            let (verdict, key) = handshake(&mut c, &alice, &users, cbt).await;
            assert_eq!(
                verdict,
                format!("ACCEPTED {}", hex::encode(&key)),
                "channel bindings {cbt:?}"
            );
        }

        // Another password in the acceptor's user file: rejected.
        std::fs::write(&users, "CORP:alice:Not-Alice-Passw0rd\n").unwrap();
        let (verdict, _) = handshake(&mut c, &alice, &users, b"").await;
        assert!(verdict.starts_with("REJECTED"), "{verdict}");

        // A logon with an NT hash (MS-NLMP 4.2.1: NTOWFv1("Password")) works the same.
        let hash = hex::decode("a4f49c406510bdcab6824ee7c30fd852").unwrap();
        let bob = logon(&mut c, "bob", lsa::logon_request::Secret::NtHash(hash)).await;
        std::fs::write(&users, "CORP:bob:Password\n").unwrap();
        let (verdict, key) = handshake(&mut c, &bob, &users, b"").await;
        assert_eq!(verdict, format!("ACCEPTED {}", hex::encode(&key)));
    });
}

/// A UTF-16LE string field (len, maxlen, offset at `at`) of an AUTHENTICATE message.
fn auth_field(m: &[u8], at: usize) -> String {
    let len = u16::from_le_bytes([m[at], m[at + 1]]) as usize;
    let off = u32::from_le_bytes(m[at + 4..at + 8].try_into().unwrap()) as usize;
    let units: Vec<u16> = m[off..off + len]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).unwrap()
}

/// SPNEGO and gss-ntlmssp send a NEGOTIATE of their own: handed in with the CHALLENGE, the MIC
/// covers it and pyspnego accepts; not handed in, pyspnego finds the MIC wrong. The AUTHENTICATE
/// names the configured workstation. A NEGOTIATE that does not ask for NTLMv2, or is malformed,
/// is refused.
#[test]
fn the_mic_covers_the_callers_own_negotiate_and_the_workstation_is_named() {
    let test = "the_mic_covers_the_callers_own_negotiate_and_the_workstation_is_named";
    if !kvm_or_skip(test) || !pyspnego_or_skip(test) {
        return;
    }
    let stack = Stack::start("ntlm-own-negotiate", "[ntlm]\nworkstation = \"E2E-WS01\"\n");
    stack.wait_ready();
    let users = stack.dir.join("ntlm-users");
    std::fs::write(&users, "CORP:alice:Alice-Passw0rd\n").unwrap();
    let theirs = credguard_enclave::ntlm::sample::windows_negotiate();
    runtime().block_on(async {
        let mut c = client::connect(&stack.api).await.unwrap();
        let alice = logon(
            &mut c,
            "alice",
            lsa::logon_request::Secret::Password("Alice-Passw0rd".into()),
        )
        .await;
        for hand_in in [true, false] {
            let neg = c
                .ntlm_negotiate(lsa::NtlmNegotiateRequest {
                    session_id: alice.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            let mut acceptor = Acceptor::start(&users, b"");
            let challenge = hex::decode(acceptor.exchange(&theirs)).expect("the acceptor's CHALLENGE");
            let auth = c
                .ntlm_authenticate(lsa::NtlmAuthenticateRequest {
                    context_id: neg.context_id,
                    challenge_message: challenge,
                    negotiate_message: if hand_in { theirs.clone() } else { Vec::new() },
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let m = &auth.authenticate_message;
            assert_eq!(auth_field(m, 44), "E2E-WS01", "the workstation");
            assert_eq!(
                (auth_field(m, 28).as_str(), auth_field(m, 36).as_str()),
                ("CORP", "alice")
            );
            let verdict = acceptor.exchange(m);
            if hand_in {
                assert_eq!(verdict, format!("ACCEPTED {}", hex::encode(&auth.exported_session_key)));
            } else {
                assert!(verdict.starts_with("REJECTED") && verdict.contains("MIC"), "{verdict}");
            }
        }

        // Hostile NEGOTIATEs: one without extended session security is refused by rule, malformed
        // or oversized ones as invalid; the enclave is still serving after them.
        let mut no_ess = theirs.clone();
        no_ess[12..16].copy_from_slice(&(0xe208_8297u32 & !ESS).to_le_bytes());
        let mut wrong_type = theirs.clone();
        wrong_type[8] = 3;
        for (negotiate, code) in [
            (no_ess, Code::FailedPrecondition),
            (theirs[..20].to_vec(), Code::InvalidArgument),
            (wrong_type, Code::InvalidArgument),
            (vec![0x4e; 4097], Code::InvalidArgument),
        ] {
            let neg = c
                .ntlm_negotiate(lsa::NtlmNegotiateRequest {
                    session_id: alice.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            let e = c
                .ntlm_authenticate(lsa::NtlmAuthenticateRequest {
                    context_id: neg.context_id,
                    challenge_message: crafted_challenge(NTLMV2_FLAGS, TARGET_INFO),
                    negotiate_message: negotiate,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), code, "{}", e.message());
        }
        c.status(lsa::StatusRequest {}).await.unwrap();
    });
}

#[test]
fn ntlm_refusals_and_malformed_challenges() {
    if !kvm_or_skip("ntlm_refusals_and_malformed_challenges") {
        return;
    }
    let stack = Stack::start("ntlm-refuse", "");
    stack.wait_ready();
    runtime().block_on(async {
        let mut c = client::connect(&stack.api).await.unwrap();
        let s = logon(
            &mut c,
            "carol",
            lsa::logon_request::Secret::Password("Carol-Passw0rd".into()),
        )
        .await;
        let mut answer = async |challenge: Vec<u8>| {
            let neg = c
                .ntlm_negotiate(lsa::NtlmNegotiateRequest { session_id: s.clone() })
                .await
                .unwrap()
                .into_inner();
            let id = neg.context_id.clone();
            let r = c
                .ntlm_authenticate(lsa::NtlmAuthenticateRequest {
                    context_id: neg.context_id,
                    challenge_message: challenge,
                    channel_bindings: Vec::new(),
                    target_spn: String::new(),
                    ..Default::default()
                })
                .await;
            (id, r)
        };

        // NTLMv1-only CHALLENGEs: no extended session security, or no target info.
        for challenge in [
            crafted_challenge(NTLMV2_FLAGS & !ESS, TARGET_INFO),
            crafted_challenge(NTLMV2_FLAGS, &[]),
            crafted_challenge(NTLMV2_FLAGS, TARGET_INFO)[..32].to_vec(),
        ] {
            let e = answer(challenge).await.1.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
            assert!(e.message().contains("NTLMv2-only rule"), "{}", e.message());
        }

        // Malformed: wrong signature, truncated, offsets out of range, huge target info.
        let good = crafted_challenge(NTLMV2_FLAGS, TARGET_INFO);
        let mut wrong_sig = good.clone();
        wrong_sig[..8].copy_from_slice(b"NTLMSSPX");
        let mut far = good.clone();
        far[44..48].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let mut huge = good.clone();
        huge[40..42].copy_from_slice(&0xffffu16.to_le_bytes());
        for challenge in [wrong_sig, good[..44].to_vec(), good[..20].to_vec(), far, huge] {
            let e = answer(challenge).await.1.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        }
        // Random bytes (deterministic xorshift): an error, never a crash.
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..(x % 300 + 1))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(answer(bytes).await.1.is_err());
        }

        // A valid CHALLENGE works, once: the context is used up.
        let (id, r) = answer(good.clone()).await;
        r.unwrap();
        let e = c
            .ntlm_authenticate(lsa::NtlmAuthenticateRequest {
                context_id: id,
                challenge_message: good,
                channel_bindings: Vec::new(),
                target_spn: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);

        // Legacy protocols: refused for a protected credential, whatever the protocol.
        for p in [
            lsa::LegacyProtocol::Ntlmv1,
            lsa::LegacyProtocol::Mschapv2,
            lsa::LegacyProtocol::Digest,
            lsa::LegacyProtocol::Credssp,
        ] {
            let e = c
                .legacy_authenticate(lsa::LegacyAuthenticateRequest {
                    session_id: s.clone(),
                    protocol: p as i32,
                    challenge: vec![0x11; 8],
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{p:?}: {}", e.message());
            assert!(e.message().contains("secondary credential"), "{}", e.message());
        }
        let e = c
            .legacy_authenticate(lsa::LegacyAuthenticateRequest {
                session_id: s.clone(),
                protocol: 0,
                challenge: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        // The enclave is still serving.
        c.status(lsa::StatusRequest {}).await.unwrap();
    });
}

#[test]
fn another_uid_cannot_use_an_ntlm_context() {
    if !kvm_or_skip("another_uid_cannot_use_an_ntlm_context") {
        return;
    }
    let stack = Stack::start("ntlm-uids", "");
    stack.wait_ready();
    let (alice, bob) = (Some(64111), Some(64112));
    let (code, out, err) = stack.ctl(alice, &["logon", "alice", "--domain", "CORP"], "Alice-Passw0rd\n");
    assert_eq!(code, 0, "{err}");
    let session = json(&out)["session_id"].as_str().unwrap().to_string();

    // Bob can neither start a context on Alice's session nor use Alice's context.
    let (code, _, err) = stack.ctl(bob, &["ntlm", "negotiate", &session], "");
    assert_eq!(code, 1);
    assert!(err.contains("PermissionDenied"), "{err}");
    let (code, out, err) = stack.ctl(alice, &["ntlm", "negotiate", &session], "");
    assert_eq!(code, 0, "{err}");
    let neg = json(&out);
    let context = neg["context_id"].as_str().unwrap().to_string();
    assert!(
        neg["negotiate_message"]
            .as_str()
            .unwrap()
            .starts_with("4e544c4d53535000")
    );
    let challenge = hex::encode(crafted_challenge(NTLMV2_FLAGS, TARGET_INFO));
    let (code, _, err) = stack.ctl(
        bob,
        &["ntlm", "authenticate", &context, "--challenge-hex", &challenge],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("PermissionDenied"), "{err}");
    let (code, _, err) = stack.ctl(bob, &["legacy-authenticate", &session, "--protocol", "ntlmv1"], "");
    assert_eq!(code, 1);
    assert!(err.contains("PermissionDenied"), "{err}");

    // Bob's attempt did not use it up: Alice still can.
    let (code, out, err) = stack.ctl(
        alice,
        &["ntlm", "authenticate", &context, "--challenge-hex", &challenge],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let auth = json(&out);
    assert!(
        auth["authenticate_message"]
            .as_str()
            .unwrap()
            .starts_with("4e544c4d53535000")
    );
    assert_eq!(auth["exported_session_key"].as_str().unwrap().len(), 32);
    let (code, _, err) = stack.ctl(
        alice,
        &[
            "legacy-authenticate",
            &session,
            "--protocol",
            "mschapv2",
            "--challenge-hex",
            "00112233",
        ],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("FailedPrecondition"), "{err}");
}
