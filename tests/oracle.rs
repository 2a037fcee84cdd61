//! "No oracle" end to end: the real enclave under KVM enforces the rate limit of secret-using
//! operations per user and per credential on its own clock (logging on again does not reset it;
//! another user is not slowed down), and the proxy writes the enclave's audit record of every use
//! of a secret to its log, with the caller's uid and never the secret.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use credguard_client as client;
use credguard_proto::lsa;
use support::{Stack, kvm_or_skip, runtime};
use tonic::Code;

type Client = lsa::lsa_client::LsaClient<tonic::transport::Channel>;

/// The rate configured for this test: low, so that a short burst exceeds it.
const RATE: u32 = 5;
const PASSWORD: &str = "Oracle-Passw0rd";

/// A CHALLENGE as a Windows server sends it (the audit record's target is its DNS computer name).
fn challenge() -> Vec<u8> {
    credguard_enclave::ntlm::sample::windows_challenge()
}

async fn logon(c: &mut Client, user: &str) -> String {
    c.logon(lsa::LogonRequest {
        user: user.into(),
        domain: "CORP".into(),
        realm: String::new(),
        kdc: String::new(),
        secret: Some(lsa::logon_request::Secret::Password(PASSWORD.into())),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .session_id
}

/// NtlmNegotiate + NtlmAuthenticate; the authenticate's outcome.
async fn handshake(c: &mut Client, session: &str) -> Result<(), tonic::Status> {
    let neg = c
        .ntlm_negotiate(lsa::NtlmNegotiateRequest {
            session_id: session.into(),
        })
        .await?
        .into_inner();
    c.ntlm_authenticate(lsa::NtlmAuthenticateRequest {
        context_id: neg.context_id,
        challenge_message: challenge(),
        channel_bindings: Vec::new(),
        target_spn: String::new(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

#[test]
fn the_enclave_rate_limits_and_audits_secret_use() {
    if !kvm_or_skip("the_enclave_rate_limits_and_audits_secret_use") {
        return;
    }
    let stack = Stack::start_logged(
        "oracle",
        &format!("[limits]\noperations_per_second_per_session = {RATE}\n"),
    );
    stack.wait_ready();
    // Our uid: the owner of the directory this process just made.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&stack.dir).unwrap());
    let rt = runtime();
    let (session, other) = rt.block_on(async {
        let mut c = client::connect(&stack.api).await.unwrap();
        let session = logon(&mut c, "alice").await;
        let other = logon(&mut c, "bob").await;

        // A burst beyond the limit: the first RATE pass, then RESOURCE_EXHAUSTED naming the rule.
        let start = Instant::now();
        let mut passed = 0u32;
        let mut refused = None;
        for _ in 0..3 * RATE {
            match handshake(&mut c, &session).await {
                Ok(()) => passed += 1,
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    refused = Some(e.message().to_string());
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let message = refused.expect("a burst of 3x the rate was never refused");
        assert!(
            message.contains(&format!(
                "rate limit of {RATE} operations per second per user and per credential"
            )),
            "{message}"
        );
        // The burst, plus what the bucket refilled while the burst ran.
        let allowed = RATE + (elapsed * f64::from(RATE)).ceil() as u32;
        assert!(passed >= RATE && passed <= allowed, "{passed} passed in {elapsed:.3} s");

        // The budget is the user's and the credential's, not the session's: another session of
        // the same uid, or a new logon of the same credential, does not get a fresh one.
        let e = handshake(&mut c, &other)
            .await
            .expect_err("another session of the same uid");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let again = logon(&mut c, "alice").await;
        let e = handshake(&mut c, &again)
            .await
            .expect_err("a new logon of the same credential");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // Another user is not slowed down by alice's burst: its attempt reaches the enclave's rule.
        let (code, out, err) = stack.ctl(Some(1000), &["logon", "carol", "--domain", "CORP"], "Carol-Pw-1\n");
        assert_eq!(code, 0, "{err}");
        let carol = support::json(&out)["session_id"].as_str().unwrap().to_string();
        let (code, _, err) = stack.ctl(Some(1000), &["legacy-authenticate", &carol, "--protocol", "ntlmv1"], "");
        assert_ne!(code, 0);
        assert!(err.contains("protected-credential rule"), "{err}");

        // After a pause the session works again.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        handshake(&mut c, &session).await.expect("the bucket refills with time");
        (session, other)
    });

    // The proxy wrote an audit line for every authenticate, with the caller and the target, and
    // none carries the password.
    let log = stack.proxy_log_text();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit:")).collect();
    let of = |session: &str, op: &str, code: i32| {
        audit
            .iter()
            .filter(|l| {
                l.contains(&format!("session={session}"))
                    && l.contains(&format!("operation={op}"))
                    && l.contains(&format!(" code={code} "))
            })
            .count()
    };
    let ok_line = audit
        .iter()
        .find(|l| l.contains("operation=ntlm_authenticate") && l.contains(&format!("session={session}")))
        .unwrap_or_else(|| panic!("no audit line for an NTLM authenticate in:\n{log}"));
    assert!(ok_line.contains(&format!("uid={uid}")), "{ok_line}");
    assert!(ok_line.contains("target_name=\"server.corp.test\""), "{ok_line}");
    assert!(ok_line.contains("unix_ms="), "{ok_line}");
    assert!(ok_line.contains("enclave_time_ms="), "{ok_line}");
    assert_eq!(of(&session, "logon", 0), 1, "{log}");
    assert_eq!(of(&other, "logon", 0), 1, "{log}");
    // Every attempt is audited, the refused ones with RESOURCE_EXHAUSTED (8).
    let total = of(&session, "ntlm_authenticate", 0) + of(&session, "ntlm_authenticate", 8);
    assert_eq!(total as u32, 3 * RATE + 1, "{log}");
    assert!(of(&session, "ntlm_authenticate", 8) >= 1, "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the log");
}
