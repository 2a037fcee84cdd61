//! The enclave's promise, attacked end to end: the real enclave under KVM, the real VMM and proxy,
//! the real MIT KDC, and a hostile KDC on loopback (tests/support/fake_kdc.rs) where the attack
//! needs one. Each attack is refused with its clear error, and other users' sessions still work
//! after it. docs/THREAT_MODEL.md names these tests.
//!
//! Three attackers: a hostile caller (any local uid, through the API), a hostile KDC (forged
//! replies), and a hostile proxy (code execution as the proxy: it talks to the VMM's vsock
//! socket directly, with any payload, claiming any uid).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use credguard_client as client;
use credguard_proto::attest::{Owner, SealPurpose, SealedNames};
use credguard_proto::enclave;
use credguard_proto::enclave::EnclaveMethod;
use credguard_proto::lsa;
use credguard_proto::unix_transport::{TransportError, UnixClient, UnixTransport};
use prost::Message;
use support::fake_kdc::{self, Behaviour, FakeKdc};
use support::kdc::TestKdc;
use support::{Stack, json, kvm_or_skip, runtime};
use tonic::Code;

/// A uid other than the test's (root's), for the multi-user attacks.
const OTHER_UID: u32 = 1000;

fn realm_table(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(realm, kdc)| format!("[kerberos.realms.\"{realm}\"]\nkdc = [\"{kdc}\"]\n"))
        .collect()
}

/// `ctl logon USER --realm REALM` (sealed, password on stdin) as `uid`; the session id.
fn logon(stack: &Stack, uid: Option<u32>, user: &str, realm: &str, password: &str) -> String {
    let (code, out, err) = stack.ctl(uid, &["logon", user, "--realm", realm], &format!("{password}\n"));
    assert_eq!(code, 0, "logon {user}@{realm}: {err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

/// The stderr of a `ctl` command that must fail.
fn ctl_fails(stack: &Stack, uid: Option<u32>, args: &[&str]) -> String {
    let (code, out, err) = stack.ctl(uid, args, "");
    assert_ne!(code, 0, "{args:?} succeeded: {out}");
    err
}

fn mit_stack(test: &str, extra_config: &str) -> Option<(TestKdc, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let kdc = TestKdc::start(test)?;
    let config = realm_table(&[(kdc.get("REALM"), kdc.get("KDC"))]) + extra_config;
    let stack = Stack::start(&test.replace('_', "-"), &config);
    stack.wait_ready();
    Some((kdc, stack))
}

fn fake_stack(test: &str, behaviour: Behaviour) -> Option<(FakeKdc, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let kdc = FakeKdc::start(behaviour);
    let stack = Stack::start(&test.replace('_', "-"), &realm_table(&[(fake_kdc::REALM, &kdc.addr)]));
    stack.wait_ready();
    Some((kdc, stack))
}

// ----- 2. No TGT leaves, under any name -----

#[test]
fn no_tgt_leaves_under_any_name() {
    let Some((kdc, stack)) = mit_stack("attack_krbtgt_spn", "") else {
        return;
    };
    let realm = kdc.get("REALM");
    let id = logon(&stack, None, "alice18", realm, kdc.get("PASSWORD"));
    let ccache = stack.dir.join("krbtgt.ccache");
    let lower = realm.to_lowercase();
    for spn in [
        format!("krbtgt/{realm}"),
        format!("krbtgt/{realm}@{realm}"),
        format!("krbtgt@{realm}"),
        format!("KRBTGT/{lower}"),
        "KrbTgt/OTHER.REALM".to_string(),
    ] {
        let err = ctl_fails(
            &stack,
            None,
            &["kerberos-ticket", &id, &spn, "--ccache", ccache.to_str().unwrap()],
        );
        assert!(
            err.contains("FailedPrecondition") && err.contains("krbtgt"),
            "{spn}: {err}"
        );
        assert!(!ccache.exists(), "{spn}: a ccache was written");
    }
    // A genuine service ticket still comes, and its ccache cannot get any other ticket: MIT's
    // kvno, which would use a TGT from it, finds none.
    let (code, _, err) = stack.ctl(
        None,
        &[
            "kerberos-ticket",
            &id,
            kdc.get("SPN"),
            "--ccache",
            ccache.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let out = std::process::Command::new("kvno")
        .args(["-c", ccache.to_str().unwrap(), &format!("alice17@{realm}")])
        .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
        .output()
        .expect("running kvno");
    assert!(!out.status.success(), "kvno got a ticket without the enclave");
}

#[test]
fn a_kdc_reply_naming_a_tgt_is_kept_inside_as_a_referral() {
    let Some((kdc, stack)) = fake_stack("attack_tgt_for_service", Behaviour::TgtForAnyService) else {
        return;
    };
    let id = logon(&stack, None, fake_kdc::USER, fake_kdc::REALM, fake_kdc::PASSWORD);
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, "HTTP/web.fake.test"], "");
    assert_eq!(code, 1, "{out}");
    // The enclave takes the TGT as a referral (RFC 6806) and keeps it: the next request would go
    // to OTHER.TEST, whose KDCs nobody configured.
    assert!(
        err.contains("FailedPrecondition") && err.contains("referred this request to realm \"OTHER.TEST\""),
        "{err}"
    );
    assert!(out.trim().is_empty(), "nothing is returned: {out}");
    // The KDC did see the TGS-REQ: the refusal is the enclave's, on the reply.
    // (Named: the user-to-user request for the user's SID after the TGT is a TGS-REQ too.)
    assert!(
        kdc.requests()
            .iter()
            .any(|r| r.tgs && r.sname == ["HTTP", "web.fake.test"]),
        "no TGS-REQ for the service reached the KDC"
    );
}

// ----- 4. Kerberos policy belongs to the enclave -----

#[test]
fn a_forged_etype_info2_cannot_buy_a_cheap_key() {
    let Some((kdc, stack)) = fake_stack("attack_weak_s2k", Behaviour::WeakS2k(1)) else {
        return;
    };
    let id = logon(&stack, None, fake_kdc::USER, fake_kdc::REALM, fake_kdc::PASSWORD);
    let err = ctl_fails(&stack, None, &["kerberos-tgt", &id]);
    assert!(
        err.contains("FailedPrecondition") && err.contains("iterations"),
        "{err}"
    );
    let requests = kdc.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.enc_timestamp_etype.is_none()),
        "a PA-ENC-TIMESTAMP went out under the cheap key"
    );
}

#[test]
fn a_forged_reply_does_not_burn_the_password() {
    let Some((_kdc, stack)) = fake_stack("attack_forged_salt", Behaviour::ForgedSaltOnce) else {
        return;
    };
    let id = logon(&stack, None, fake_kdc::USER, fake_kdc::REALM, fake_kdc::PASSWORD);
    // The forged salt gives a wrong key: that exchange fails...
    let err = ctl_fails(&stack, None, &["kerberos-tgt", &id]);
    assert!(err.contains("Unauthenticated"), "{err}");
    // ...and the password is still in the enclave for the next, genuine one.
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out)["client_principal"],
        format!("{}@{}", fake_kdc::USER, fake_kdc::REALM)
    );
}

#[test]
fn the_proxy_sends_kerberos_only_to_configured_kdcs() {
    let Some((kdc, stack)) = mit_stack("attack_kdc_choice", "") else {
        return;
    };
    let realm = kdc.get("REALM");
    // A caller other than root cannot point the proxy at a host and port of its choosing.
    let (code, _, err) = stack.ctl(
        Some(OTHER_UID),
        &["logon", "alice18", "--realm", realm, "--kdc", "192.0.2.1:88"],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("PermissionDenied") && err.contains("not a configured KDC"),
        "{err}"
    );
    // Naming only the realm uses the configured table; naming a configured KDC is fine.
    let id = logon(&stack, Some(OTHER_UID), "alice18", realm, kdc.get("PASSWORD"));
    let (code, _, err) = stack.ctl(Some(OTHER_UID), &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = stack.ctl(
        Some(OTHER_UID),
        &["logon", "alice18", "--realm", realm, "--kdc", kdc.get("KDC")],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "{err}");
    // A realm nobody configured: a clear error, no packet sent anywhere.
    let id = logon(&stack, Some(OTHER_UID), "bob", "NOWHERE.TEST", "pw");
    let err = ctl_fails(&stack, Some(OTHER_UID), &["kerberos-tgt", &id]);
    assert!(err.contains("no KDC for realm"), "{err}");
}

// ----- 5. Bounded resources -----

#[test]
fn an_oversized_kdc_reply_is_refused_and_others_carry_on() {
    if !kvm_or_skip("an_oversized_kdc_reply_is_refused_and_others_carry_on") {
        return;
    }
    let Some(mit) = TestKdc::start("attack_oversized") else {
        return;
    };
    let fake = FakeKdc::start(Behaviour::Oversized(200 << 10));
    let config = realm_table(&[(fake_kdc::REALM, &fake.addr), (mit.get("REALM"), mit.get("KDC"))]);
    let stack = Stack::start("attack-oversized", &config);
    stack.wait_ready();
    let victim = logon(&stack, None, "alice18", mit.get("REALM"), mit.get("PASSWORD"));
    let id = logon(&stack, None, fake_kdc::USER, fake_kdc::REALM, fake_kdc::PASSWORD);
    let err = ctl_fails(&stack, None, &["kerberos-tgt", &id]);
    assert!(
        err.contains("ResourceExhausted") && err.contains("over the limit"),
        "{err}"
    );
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &victim, mit.get("SPN")], "");
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = stack.ctl(None, &["status"], "");
    assert_eq!(json(&out)["enclave_restarts"], 0, "{out}");
}

/// A client referral (KDC_ERR_WRONG_REALM, as an Active Directory DC gives for an account of
/// another forest) is followed to the account's realm, whose real KDC then gives the TGT and
/// service tickets; a referral back to the realm already asked is refused, not followed forever.
#[test]
fn client_referrals_are_followed_to_the_accounts_realm_but_never_in_a_loop() {
    if !kvm_or_skip("client_referrals_are_followed_to_the_accounts_realm_but_never_in_a_loop") {
        return;
    }
    let Some(mit) = TestKdc::start("attack_client_referral") else {
        return;
    };
    let fake = FakeKdc::start(Behaviour::ReferClientsTo(fake_kdc::REALM));
    let realm = mit.get("REALM");
    let config = realm_table(&[(fake_kdc::REALM, &fake.addr), (realm, mit.get("KDC"))]);
    let stack = Stack::start("attack-client-referral", &config);
    stack.wait_ready();
    let id = logon(&stack, None, "alice18", fake_kdc::REALM, mit.get("PASSWORD"));
    let err = ctl_fails(&stack, None, &["kerberos-tgt", &id]);
    assert!(
        err.contains("FailedPrecondition") && err.contains("referral loop"),
        "{err}"
    );
    let leaked: &'static str = Box::leak(realm.to_string().into_boxed_str());
    fake.set_behaviour(Behaviour::ReferClientsTo(leaked));
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["client_principal"], format!("alice18@{realm}"), "{out}");
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &id, mit.get("SPN")], "");
    assert_eq!(code, 0, "the TGS goes to the account's realm: {err}");
    let (_, out, _) = stack.ctl(None, &["sessions"], "");
    assert_eq!(
        json(&out)[0]["realm"],
        realm,
        "the session moved to the account's realm: {out}"
    );
    let asked: Vec<bool> = fake.requests().iter().map(|r| r.tgs).collect();
    assert!(
        !asked.is_empty() && !asked.contains(&true),
        "only AS-REQs went to the referring KDC: {asked:?}"
    );
}

#[test]
fn one_user_cannot_evict_another_users_ntlm_contexts() {
    if !kvm_or_skip("one_user_cannot_evict_another_users_ntlm_contexts") {
        return;
    }
    let stack = Stack::start("attack-ntlm-evict", "");
    stack.wait_ready();
    let (code, out, err) = stack.ctl(None, &["logon", "root-user", "--domain", "CORP"], "Root-Pw-1\n");
    assert_eq!(code, 0, "{err}");
    let mine = json(&out)["session_id"].as_str().unwrap().to_string();
    let (code, out, err) = stack.ctl(None, &["ntlm", "negotiate", &mine], "");
    assert_eq!(code, 0, "{err}");
    let context = json(&out)["context_id"].as_str().unwrap().to_string();
    // Another uid opens far more contexts than it may hold (the enclave keeps 64 per user).
    let flood = helper(OTHER_UID, &stack, "ntlm_flood", &["100"]);
    assert!(flood.contains("opened 100"), "{flood}");
    let challenge: String = credguard_enclave::ntlm::sample::windows_challenge()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, _, err) = stack.ctl(
        None,
        &["ntlm", "authenticate", &context, "--challenge-hex", &challenge],
        "",
    );
    assert_eq!(code, 0, "root's context was evicted by another uid: {err}");
}

/// Runs one of this file's helpers ([`attack_helper`]) as `uid`; its stdout.
fn helper(uid: u32, stack: &Stack, name: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ])
        .arg(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            "attack_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ATTACK_HELPER", name)
        .env("ATTACK_SOCKET", &stack.api)
        .env("ATTACK_ARGS", args.join("\u{1f}"))
        .output()
        .expect("running the helper");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helper {name} as uid {uid} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Not a test: what [`helper`] runs as another uid, chosen by `ATTACK_HELPER`.
#[test]
#[ignore = "run by the other tests as another uid"]
fn attack_helper() {
    let Ok(name) = std::env::var("ATTACK_HELPER") else {
        return;
    };
    let socket = std::env::var("ATTACK_SOCKET").expect("ATTACK_SOCKET");
    let args: Vec<String> = std::env::var("ATTACK_ARGS")
        .unwrap_or_default()
        .split('\u{1f}')
        .map(String::from)
        .collect();
    runtime().block_on(async {
        let mut c = client::connect(std::path::Path::new(&socket))
            .await
            .expect("connecting");
        match name.as_str() {
            "ntlm_flood" => {
                let n: usize = args[0].parse().unwrap();
                let session = c
                    .logon(lsa::LogonRequest {
                        user: "mallory".into(),
                        domain: "CORP".into(),
                        secret: Some(lsa::logon_request::Secret::Password("Mallory-Pw".into())),
                        ..Default::default()
                    })
                    .await
                    .expect("logon")
                    .into_inner()
                    .session_id;
                for _ in 0..n {
                    c.ntlm_negotiate(lsa::NtlmNegotiateRequest {
                        session_id: session.clone(),
                    })
                    .await
                    .expect("negotiate");
                }
                println!("opened {n}");
            }
            "submit_sealed" => {
                let sealed = lsa::SealedSecret::decode(unhex(&args[0]).as_slice()).expect("a SealedSecret");
                let r = c
                    .logon(lsa::LogonRequest {
                        user: args[1].clone(),
                        domain: args[2].clone(),
                        secret: Some(lsa::logon_request::Secret::Sealed(sealed)),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => println!("accepted"),
                    Err(e) => println!("refused {:?}: {}", e.code(), e.message()),
                }
            }
            "nonce_flood" => {
                let n: usize = args[0].parse().unwrap();
                for _ in 0..n {
                    sealing_nonce(&mut c).await;
                }
                println!("got {n}");
            }
            "act_for_root" => {
                // What only the KCM daemon's uid may do: name another uid in the metadata.
                let mut req = tonic::Request::new(lsa::ListSessionsRequest {});
                req.metadata_mut()
                    .insert("credguard-on-behalf-of-uid", "0".parse().unwrap());
                match c.list_sessions(req).await {
                    Ok(r) => println!("served {} sessions", r.into_inner().sessions.len()),
                    Err(e) => println!("refused {:?}: {}", e.code(), e.message()),
                }
                let mut req = tonic::Request::new(lsa::KerberosGetServiceTicketRequest {
                    session_id: args[0].clone(),
                    spn: "HTTP/web01.credguard.test".into(),
                    ..Default::default()
                });
                req.metadata_mut()
                    .insert("credguard-on-behalf-of-uid", "0".parse().unwrap());
                match c.kerberos_get_service_ticket(req).await {
                    Ok(_) => println!("got root's ticket"),
                    Err(e) => println!("refused {:?}: {}", e.code(), e.message()),
                }
            }
            other => panic!("unknown helper {other}"),
        }
    });
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ----- 3. Sealed secrets bound to what they are for -----

type Client = lsa::lsa_client::LsaClient<tonic::transport::Channel>;

async fn sealing_nonce(c: &mut Client) -> Vec<u8> {
    c.get_sealing_nonce(lsa::GetSealingNonceRequest {})
        .await
        .expect("a nonce")
        .into_inner()
        .nonce
}

#[test]
fn sealed_secrets_cannot_be_replayed_relabelled_or_moved() {
    use credguard_client::sealed;
    if !kvm_or_skip("sealed_secrets_cannot_be_replayed_relabelled_or_moved") {
        return;
    }
    let work = support::temp_dir("attack-sealed-work");
    let config = format!("[vault]\ndir = \"{}\"\n", work.join("vault").display());
    let mut stack = Stack::start("attack-sealed", &config);
    stack.kill_vmm();
    let sealing = work.join("sealing.secret");
    stack.vmm_args = vec!["--sealing-secret".into(), sealing.display().to_string()];
    stack.start_vmm();
    assert_eq!(stack.wait_ready()["vault_ready"], true);
    let secret = || enclave::sealed_logon_secret::Secret::Password("Sealed-Pw-2".into());
    runtime().block_on(async {
        let mut c = client::connect(&stack.api).await.unwrap();
        let status = c.status(lsa::StatusRequest {}).await.unwrap().into_inner();
        let pk = sealed::verify(&status, &stack.expectations()).unwrap().public_key;
        let logon_req = |s: lsa::SealedSecret| lsa::LogonRequest {
            user: "sam".into(),
            domain: "CORP".into(),
            secret: Some(lsa::logon_request::Secret::Sealed(s)),
            ..Default::default()
        };
        let seal_logon =
            |n: &[u8]| sealed::seal(&pk, secret(), false, &support::seal_for_me(n, "sam", "CORP", "")).unwrap();

        // Sealed by root for a logon, submitted by uid 1000 (a secret that leaked): refused.
        let n = sealing_nonce(&mut c).await;
        let for_root = seal_logon(&n);
        let out = helper(
            OTHER_UID,
            &stack,
            "submit_sealed",
            &[&hex(&for_root.encode_to_vec()), "sam", "CORP"],
        );
        assert!(
            out.contains("refused FailedPrecondition") && out.contains("nonce"),
            "{out}"
        );
        // It was not used up by the attempt: root's own logon with it works, once.
        c.logon(logon_req(for_root.clone())).await.expect("the owner's logon");
        let e = c.logon(logon_req(for_root)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("replayed"), "{e:?}");

        // Sealed for a logon, re-labelled as a vault save: does not open.
        let n = sealing_nonce(&mut c).await;
        let e = c
            .save_credential(lsa::SaveCredentialRequest {
                target: "fs".into(),
                user: "sam".into(),
                domain: "CORP".into(),
                secret: Some(lsa::save_credential_request::Secret::Sealed(seal_logon(&n))),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("does not open"), "{e:?}");
        // Sealed for a vault save, used as a logon: does not open either.
        let n = sealing_nonce(&mut c).await;
        let vault_for = sealed::SealFor {
            purpose: SealPurpose::VaultSave,
            names: SealedNames {
                user: "sam",
                domain: "CORP",
                realm: "",
                target: "fs",
            },
            ..support::seal_for_me(&n, "sam", "CORP", "")
        };
        let vault_seal = sealed::seal(&pk, secret(), false, &vault_for).unwrap();
        let e = c.logon(logon_req(vault_seal)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Another uid's flood of nonces does not flush root's outstanding one.
        let n = sealing_nonce(&mut c).await;
        let fresh = seal_logon(&n);
        let out = helper(OTHER_UID, &stack, "nonce_flood", &["500"]);
        assert!(out.contains("got 500"), "{out}");
        c.logon(logon_req(fresh))
            .await
            .expect("a nonce survives another uid's flood");
    });
}

// ----- the hostile proxy: straight to the enclave, any payload, any uid -----

fn raw_client(stack: &Stack) -> UnixClient {
    support::retry(Duration::from_secs(10), || {
        UnixTransport::client(
            &stack.vsock,
            credguard_proto::abi::ENCLAVE_VSOCK_PORT,
            Duration::from_secs(10),
        )
    })
}

fn raw_logon(
    c: &mut UnixClient,
    owner: u64,
    user: &str,
    secret: enclave::logon_request::Secret,
) -> Result<Vec<u8>, TransportError> {
    let req = enclave::LogonRequest {
        user: user.into(),
        domain: "CORP".into(),
        realm: "CORP.TEST".into(),
        secret: Some(secret),
        operations_per_second: 0,
        owner,
        allow_rc4: true,
        ..Default::default()
    };
    c.logon(&req).map(|r| r.session_handle)
}

fn status_code(e: &TransportError) -> i32 {
    e.code().unwrap_or_else(|| panic!("not the enclave's answer: {e}"))
}

#[test]
fn a_hostile_proxy_cannot_relax_the_enclaves_rules() {
    if !kvm_or_skip("a_hostile_proxy_cannot_relax_the_enclaves_rules") {
        return;
    }
    let stack = Stack::start("attack-hostile-proxy", "");
    stack.wait_ready();
    let mut c = raw_client(&stack);
    // rc4-hmac asked for by the proxy, which the image's signed policy refuses.
    let rc4 = enclave::logon_request::Secret::Key(enclave::Key {
        enctype: 23,
        value: vec![7; 16],
    });
    let e = raw_logon(&mut c, 0, "eve", rc4).unwrap_err();
    assert_eq!(status_code(&e), 9, "{e}");
    assert!(e.to_string().contains("signed policy"), "{e}");
    // The old per-request rc4 switch (field 3 of KerberosTgsRequest) is gone: set by hand, it is
    // an unknown field, and the TGT service is still refused.
    let h = raw_logon(&mut c, 0, "eve", enclave::logon_request::Secret::Password("pw".into())).unwrap();
    let mut payload = enclave::KerberosTgsRequest {
        session_handle: h.clone(),
        now_unix: 1,
        spn: "krbtgt/CORP.TEST".into(),
        ..Default::default()
    }
    .encode_to_vec();
    payload.extend_from_slice(&[0x18, 0x01]);
    let r = c
        .transport_mut()
        .call_frame(EnclaveMethod::KerberosTgs.id(), payload)
        .unwrap();
    assert_eq!(r.code, 9, "{}", r.message);
    assert!(r.message.contains("krbtgt"), "{}", r.message);
    // A rate far above the ceiling is clamped to it: 1000 per second, per owner and credential.
    let greedy = enclave::LogonRequest {
        user: "greedy".into(),
        domain: "CORP".into(),
        secret: Some(enclave::logon_request::Secret::Password("pw".into())),
        operations_per_second: u32::MAX,
        owner: 77,
        ..Default::default()
    };
    let g = c.logon(&greedy).unwrap();
    let legacy = enclave::LegacyAuthenticateRequest {
        session_handle: g.session_handle,
        protocol: enclave::LegacyProtocol::Ntlmv1 as i32,
        challenge: vec![1; 8],
    }
    .encode_to_vec();
    // Pipelined, so that the enclave's clock, not the round trips, sets the pace.
    let mut burst = Vec::new();
    for call_id in 0..3000u64 {
        let frame = enclave::Frame {
            call_id: 1_000_000 + call_id,
            method_id: EnclaveMethod::LegacyAuthenticate.id(),
            payload: legacy.clone(),
            ..Default::default()
        };
        credguard_proto::framing::encode_frame(&frame, &mut burst);
    }
    let start = std::time::Instant::now();
    c.transport_mut().send_bytes(&burst).unwrap();
    let passed = (0..3000)
        .filter(|_| c.transport_mut().read_frame().unwrap().expect("a reply").code != 8)
        .count();
    let ceiling = 1000 + (start.elapsed().as_secs_f64() * 1000.0).ceil() as usize;
    assert!(
        passed <= ceiling,
        "{passed} of 3000 passed: over the ceiling of {ceiling}"
    );
    assert!(passed >= 1000, "{passed} passed: the burst is the ceiling, not less");
    // A secret sealed for one owner does not open for another the proxy names.
    let nonce = c
        .issue_sealing_nonce(&enclave::IssueSealingNonceRequest { owner: 1 })
        .unwrap();
    let status = c.status(&enclave::StatusRequest {}).unwrap();
    let pk: [u8; 32] = status.sealing_public_key.as_slice().try_into().unwrap();
    let seal_for = credguard_client::sealed::SealFor {
        purpose: SealPurpose::Logon,
        owner: Owner::uid(1),
        sealing_nonce: &nonce.nonce,
        names: SealedNames {
            user: "sam",
            domain: "CORP",
            realm: "CORP.TEST",
            target: "",
        },
    };
    let s = credguard_client::sealed::seal(
        &pk,
        enclave::sealed_logon_secret::Secret::Password("pw".into()),
        false,
        &seal_for,
    )
    .unwrap();
    let as_wire = enclave::SealedSecret {
        ephemeral_public_key: s.ephemeral_public_key,
        nonce: s.nonce,
        ciphertext: s.ciphertext,
        enclave_public_key: s.enclave_public_key,
        sealing_nonce: s.sealing_nonce,
    };
    let e = raw_logon(
        &mut c,
        2,
        "sam",
        enclave::logon_request::Secret::Sealed(as_wire.clone()),
    )
    .unwrap_err();
    assert_eq!(status_code(&e), 9, "{e}");
    raw_logon(
        &mut c,
        1,
        "sam",
        enclave::logon_request::Secret::Sealed(as_wire.clone()),
    )
    .expect("the owner's");
    let e = raw_logon(&mut c, 1, "sam", enclave::logon_request::Secret::Sealed(as_wire)).unwrap_err();
    assert_eq!(status_code(&e), 9, "replayed: {e}");
    // The genuine proxy's users are unaffected by all of it.
    let (code, out, err) = stack.ctl(None, &["logon", "bystander", "--domain", "CORP"], "By-Pw-1\n");
    assert_eq!(code, 0, "{err} {out}");
}

#[test]
fn filling_the_enclave_is_refused_not_a_crash() {
    if !kvm_or_skip("filling_the_enclave_is_refused_not_a_crash") {
        return;
    }
    // The smallest guest: its heap fills long before the session count does.
    let stack = Stack::start_with_vmm_args("attack-fill", "", &["--memory-mib", "12"]);
    stack.wait_ready();
    let (code, out, err) = stack.ctl(None, &["logon", "bystander", "--domain", "CORP"], "By-Pw-1\n");
    assert_eq!(code, 0, "{err}");
    let bystander = json(&out)["session_id"].as_str().unwrap().to_string();
    let mut c = raw_client(&stack);
    let long = "x".repeat(256);
    let mut made = Vec::new();
    let refusal = loop {
        let owner = 10_000 + (made.len() / 200) as u64;
        let req = enclave::LogonRequest {
            user: format!("{}{}", &long[..250], made.len()),
            domain: long.clone(),
            realm: long.clone(),
            secret: Some(enclave::logon_request::Secret::Password("p".repeat(1000))),
            owner,
            ..Default::default()
        };
        match c.logon(&req) {
            Ok(r) => made.push(r.session_handle),
            Err(e) => break e,
        }
        assert!(made.len() < 5000, "never refused");
    };
    assert_eq!(status_code(&refusal), 8, "{refusal}");
    assert!(refusal.to_string().contains("memory"), "{refusal}");
    // Still alive, never restarted (the VMM says so, for the same boot); logging off frees room
    // again.
    let st = c.status(&enclave::StatusRequest {}).unwrap();
    let vmm = UnixTransport::vmm_status(&stack.vsock, Duration::from_secs(10)).unwrap();
    assert_eq!((vmm.restarts, &vmm.boot_id), (0, &st.boot_id));
    for h in made.drain(..made.len() / 2) {
        c.logoff(&enclave::LogoffRequest { session_handle: h }).unwrap();
    }
    raw_logon(
        &mut c,
        1,
        "after",
        enclave::logon_request::Secret::Password("pw".into()),
    )
    .expect("room again");
    let (code, _, err) = stack.ctl(None, &["ntlm", "negotiate", &bystander], "");
    assert_eq!(code, 0, "the bystander's session was lost: {err}");
}

// ----- 8. The attestation says what a client needs to decide -----

#[test]
fn clients_refuse_what_the_attestation_does_not_allow() {
    if !kvm_or_skip("clients_refuse_what_the_attestation_does_not_allow") {
        return;
    }
    let stack = Stack::start("attack-attestation", "");
    stack.wait_ready();
    // Pinned to another signer: refused before anything is sent.
    let other = stack.dir.join("other-signer.pub");
    std::fs::write(&other, format!("{}\n", "22".repeat(32))).unwrap();
    let (code, _, err) = stack.ctl(
        None,
        &[
            "--signer-pub",
            other.to_str().unwrap(),
            "logon",
            "eve",
            "--domain",
            "CORP",
        ],
        "pw\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("not by the pinned signer"), "{err}");
    // Memory hidden from the VMM required: only where guest_memfd hides it.
    let (_, out, _) = stack.ctl(None, &["status"], "");
    let hidden = json(&out)["memory_hidden"].as_bool().unwrap();
    let (code, _, err) = stack.ctl(
        None,
        &["--require-hidden-memory", "logon", "eve", "--domain", "CORP"],
        "pw\n",
    );
    if hidden {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_ne!(code, 0);
        assert!(err.contains("mapped in the VMM"), "{err}");
    }
    drop(stack);

    // A test build: refused unless the client is told to accept it.
    let mut stack = Stack::start_test_image("attack-test-image", "", &[]);
    stack.test_image = false;
    stack.wait_ready();
    let (code, _, err) = stack.ctl(None, &["logon", "eve", "--domain", "CORP"], "pw\n");
    assert_ne!(code, 0);
    assert!(err.contains("TEST build"), "{err}");
    let (_, out, _) = stack.ctl(None, &["status"], "");
    assert_eq!(json(&out)["test_image"], true, "{out}");
}

#[test]
fn only_the_kcm_daemons_uid_may_act_for_another_uid() {
    if !kvm_or_skip("only_the_kcm_daemons_uid_may_act_for_another_uid") {
        return;
    }
    let stack = Stack::start("attack-act-for", "");
    stack.wait_ready();
    let (code, out, err) = stack.ctl(None, &["logon", "root-user", "--domain", "CORP"], "Root-Pw-1\n");
    assert_eq!(code, 0, "{err}");
    let roots = json(&out)["session_id"].as_str().unwrap().to_string();
    // Another uid, not trusted, naming root: refused outright, never served as itself either.
    let out = helper(OTHER_UID, &stack, "act_for_root", &[&roots]);
    assert_eq!(out.matches("refused PermissionDenied").count(), 2, "{out}");
    assert!(out.contains("may not act for another uid"), "{out}");
}
