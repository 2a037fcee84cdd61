//! Kerberos end to end: a throwaway MIT KDC (scripts/test-kdc.sh), the real enclave under KVM, the
//! VMM and the proxy as processes, `credguardctl` as the client, and MIT's GSS-API (python-gssapi)
//! with the service's keytab as the independent acceptor of the tokens credguard makes.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use credguard_proto::lsa;

use support::kdc::{TestKdc, tools_missing};
use support::kdc_relay::KdcRelay;
use support::{Stack, json, kvm_or_skip};

fn have_python_gssapi() -> bool {
    matches!(
        Command::new("python3").args(["-c", "import gssapi"]).status(),
        Ok(s) if s.success()
    )
}

fn logon(stack: &Stack, kdc: &TestKdc, user: &str, password: &str, kdc_addr: Option<&str>) -> String {
    let kdc_addr = kdc_addr.unwrap_or(kdc.get("KDC"));
    let (code, out, err) = stack.ctl(
        None,
        &["logon", user, "--realm", kdc.get("REALM"), "--kdc", kdc_addr],
        &format!("{password}\n"),
    );
    assert_eq!(code, 0, "logon {user}: {err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

/// Hands the GSS token to MIT's acceptor with the service keytab; returns its JSON verdict.
fn accept(kdc: &TestKdc, gss_token_hex: &str) -> serde_json::Value {
    use std::io::Write;
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new("python3")
        .arg(format!("{root}/tests/python/gss_accept.py"))
        .arg(kdc.get("KEYTAB"))
        .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running gss_accept.py");
    child.stdin.take().unwrap().write_all(gss_token_hex.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the acceptor refused the token: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

fn config(kdc: &TestKdc, allow_rc4: bool) -> String {
    format!(
        "[kerberos]\ndefault_kdc = \"{}\"\nallow_rc4 = {allow_rc4}\n",
        kdc.get("KDC")
    )
}

/// The KVM check, the acceptor check when `needs_acceptor`, a fresh KDC and a stack using it;
/// `None` (after a loud skip) when something needed is missing.
fn kerberos_stack(test: &str, allow_rc4: bool, needs_acceptor: bool) -> Option<(TestKdc, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    if needs_acceptor && !have_python_gssapi() {
        tools_missing(
            test,
            "python3 gssapi is missing (pip install gssapi; needs libkrb5-dev)",
        );
        return None;
    }
    let kdc = TestKdc::start(test)?;
    let stack = Stack::start(&test.replace('_', "-"), &config(&kdc, allow_rc4));
    stack.wait_ready();
    Some((kdc, stack))
}

#[test]
fn tgt_service_ticket_and_mit_acceptor_for_every_enctype_and_the_refusals() {
    let Some((kdc, stack)) = kerberos_stack("kerberos_end_to_end", false, true) else {
        return;
    };
    let password = kdc.get("PASSWORD").to_string();
    let spn = kdc.get("SPN").to_string();
    let realm = kdc.get("REALM").to_string();

    // alice: TGT, then a service ticket whose GSS token MIT's acceptor takes.
    let id = logon(&stack, &kdc, "alice", &password, None);
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    let tgt = json(&out);
    assert_eq!(tgt["client_principal"], format!("alice@{realm}"));
    assert!(tgt["end_time"].as_i64().unwrap() > tgt["start_time"].as_i64().unwrap());
    assert!(!out.contains(&password));
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, &spn, "--mutual"], "");
    assert_eq!(code, 0, "{err}");
    let t = json(&out);
    let verdict = accept(&kdc, t["gss_token"].as_str().unwrap());
    assert_eq!(verdict["initiator"], format!("alice@{realm}"));
    assert_eq!(verdict["complete"], true);
    assert_eq!(
        verdict["mutual_reply"], true,
        "mutual asked: the acceptor answers with an AP-REP"
    );
    assert_eq!(verdict["delegate_flag"], false);
    assert_eq!(verdict["delegated_creds"], false);

    // Every enctype, each with a principal that has only that key: a service ticket with no
    // explicit TGT call (the proxy runs the AS exchange itself).
    for et in [17, 18, 19, 20] {
        let id = logon(&stack, &kdc, &format!("alice{et}"), &password, None);
        let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, &spn], "");
        assert_eq!(code, 0, "enctype {et}: {err}");
        let verdict = accept(&kdc, json(&out)["gss_token"].as_str().unwrap());
        assert_eq!(verdict["initiator"], format!("alice{et}@{realm}"), "enctype {et}");
        assert_eq!(verdict["mutual_reply"], false);
        let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["client_principal"], format!("alice{et}@{realm}"));
    }

    // rc4-hmac without kerberos.allow_rc4 (and without the image's policy): refused by the
    // enclave's rule.
    let id = logon(&stack, &kdc, "alice23", &password, None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(err.contains("FailedPrecondition") && err.contains("rc4"), "{err}");

    // A delegate request: refused, naming the rule.
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &id, &spn, "--delegate"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("FailedPrecondition") && err.contains("unconstrained delegation is never allowed"),
        "{err}"
    );

    // Wrong password: UNAUTHENTICATED, and the message holds no password.
    let id = logon(&stack, &kdc, "alice", "Wrong-Passw0rd", None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(!err.contains("Wrong-Passw0rd"));

    // Unknown principal: NOT_FOUND. Unknown service: NOT_FOUND.
    let id = logon(&stack, &kdc, "nobody", &password, None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(err.contains("NotFound"), "{err}");
    let id = logon(&stack, &kdc, "alice", &password, None);
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &id, "host/nowhere.credguard.test"], "");
    assert_eq!(code, 1);
    assert!(err.contains("NotFound"), "{err}");

    // A KDC given by host name: resolved by glibc on tokio's blocking pool, under the proxy's
    // seccomp filter (a thread and getaddrinfo's calls).
    let port = kdc.get("KDC").rsplit_once(':').unwrap().1;
    let by_name = format!("localhost:{port}");
    let resolves_to_kdc = std::net::ToSocketAddrs::to_socket_addrs(&by_name)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| a.ip().is_loopback() && a.is_ipv4());
    if resolves_to_kdc {
        let id = logon(&stack, &kdc, "alice", &password, Some(&by_name));
        let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
        assert_eq!(code, 0, "KDC {by_name}: {out} {err}");
    } else {
        eprintln!("!!! not checked here: localhost does not resolve to 127.0.0.1 first");
    }

    // A KDC nobody listens on: UNAVAILABLE.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let id = logon(&stack, &kdc, "alice", &password, Some(&dead_addr));
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(err.contains("Unavailable"), "{err}");

    // No realm at logon: no Kerberos.
    let (code, out, _) = stack.ctl(None, &["logon", "alice"], &format!("{password}\n"));
    assert_eq!(code, 0);
    let id = json(&out)["session_id"].as_str().unwrap().to_string();
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(err.contains("FailedPrecondition"), "{err}");
}

/// `klist -c CCACHE` and `kvno -c CCACHE SPN` against `kdc`'s realm: both must succeed; returns
/// klist's listing.
fn mit_tools_read(kdc: &TestKdc, ccache: &std::path::Path, as_uid: Option<u32>) -> String {
    let run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = match as_uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ]);
                c.args(args);
                c
            }
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        let out = cmd
            .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
            .output()
            .expect("running an MIT tool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let text = run(&["klist".as_ref(), "-c".as_ref(), ccache.as_os_str()]);
    assert!(text.contains("host/svc.credguard.test@CREDGUARD.TEST"), "{text}");
    assert!(text.contains("Default principal: alice@CREDGUARD.TEST"), "{text}");
    assert!(!text.contains("krbtgt"), "never a TGT in the ccache: {text}");
    // kvno finds the ticket in the cache (no TGT there, so it cannot have asked the KDC).
    run(&[
        "kvno".as_ref(),
        "-c".as_ref(),
        ccache.as_os_str(),
        kdc.get("SPN").as_ref(),
    ]);
    text
}

#[test]
fn ccache_holds_the_service_ticket_only_and_mit_tools_read_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some((kdc, stack)) = kerberos_stack("kerberos_ccache", false, false) else {
        return;
    };
    let id = logon(&stack, &kdc, "alice", kdc.get("PASSWORD"), None);
    let ccache = stack.dir.join("svc.ccache");
    let ticket = |uid: Option<u32>, id: &str, path: &std::path::Path| {
        let (code, _, err) = stack.ctl(
            uid,
            &[
                "kerberos-ticket",
                id,
                kdc.get("SPN"),
                "--ccache",
                path.to_str().unwrap(),
            ],
            "",
        );
        assert_eq!(code, 0, "{err}");
    };
    ticket(None, &id, &ccache);
    mit_tools_read(&kdc, &ccache, None);
    let mode = std::fs::metadata(&ccache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // credguardctl writes the file itself, as its user: another uid gets a file it owns in a
    // directory of its own, and its own MIT tools read it.
    let uid = 64131;
    let own = stack.dir.join("uid-64131");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out, err) = stack.ctl(
        Some(uid),
        &["logon", "alice", "--realm", kdc.get("REALM"), "--kdc", kdc.get("KDC")],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "{err}");
    let uid_session = json(&out)["session_id"].as_str().unwrap().to_string();
    let theirs = own.join("krb5cc");
    ticket(Some(uid), &uid_session, &theirs);
    let meta = std::fs::metadata(&theirs).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    mit_tools_read(&kdc, &theirs, Some(uid));
    // Where that uid may not write, nothing is written, whatever the proxy could do.
    let (code, _, err) = stack.ctl(
        Some(uid),
        &[
            "kerberos-ticket",
            &uid_session,
            kdc.get("SPN"),
            "--ccache",
            "/root/credguard-stolen.ccache",
        ],
        "",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot write the ccache") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(!std::path::Path::new("/root/credguard-stolen.ccache").exists());

    // A link planted at the target is replaced, not followed.
    let victim = stack.dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let linked = stack.dir.join("linked.ccache");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    ticket(None, &id, &linked);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(std::fs::symlink_metadata(&linked).unwrap().file_type().is_file());
    mit_tools_read(&kdc, &linked, None);

    // The proxy itself opens no path a caller names: the old request field is refused, naming
    // the new one, and nothing appears there.
    let asked = stack.dir.join("written-by-the-proxy.ccache");
    support::runtime().block_on(async {
        let mut c = credguard_client::connect(&stack.api).await.unwrap();
        let e = c
            .kerberos_get_service_ticket(credguard_proto::lsa::KerberosGetServiceTicketRequest {
                session_id: id.clone(),
                spn: kdc.get("SPN").into(),
                ccache_path: asked.to_str().unwrap().into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("`ccache`"), "{e:?}");
        // Without it: the bytes come back in the reply, an MIT ccache v4 (0x0504).
        let r = c
            .kerberos_get_service_ticket(credguard_proto::lsa::KerberosGetServiceTicketRequest {
                session_id: id.clone(),
                spn: kdc.get("SPN").into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&r.ccache[..2], &[5, 4]);
    });
    assert!(!asked.exists());
}

#[test]
fn rc4_hmac_needs_the_images_signed_policy_and_the_logon() {
    // The proxy's configuration asks for rc4-hmac, but the image's signed policy refuses it: the
    // enclave refuses, whatever the proxy says.
    let Some((kdc, stack)) = kerberos_stack("kerberos_rc4_refused", true, false) else {
        return;
    };
    let id = logon(&stack, &kdc, "alice23", kdc.get("PASSWORD"), None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("FailedPrecondition") && err.contains("signed policy"),
        "{err}"
    );
    let (_, out, _) = stack.ctl(None, &["status"], "");
    assert_eq!(json(&out)["rc4_allowed"], false);
    drop(stack);

    // The same image, signed with a policy that allows rc4-hmac: a logon that asks for it works.
    let manifest = support::manifest_with_policy("rc4", credguard_image::Policy { allow_rc4: true });
    let stack = Stack::start_with_manifest("kerberos-rc4", &config(&kdc, true), manifest);
    stack.wait_ready();
    let (_, out, _) = stack.ctl(None, &["status"], "");
    assert_eq!(json(&out)["rc4_allowed"], true, "{out}");
    assert!(
        json(&out)["attestation"].as_str().unwrap().starts_with("verified"),
        "{out}"
    );
    let id = logon(&stack, &kdc, "alice23", kdc.get("PASSWORD"), None);
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["enctype"], 23);
    if have_python_gssapi() {
        let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("SPN")], "");
        assert_eq!(code, 0, "{err}");
        let verdict = accept(&kdc, json(&out)["gss_token"].as_str().unwrap());
        assert_eq!(verdict["initiator"], "alice23@CREDGUARD.TEST");
    }
    // A client that seals `--refuse-rc4` with its secret: refused for that logon, whatever the
    // proxy's configuration says.
    let (code, out, err) = stack.ctl(
        None,
        &["logon", "alice23", "--realm", kdc.get("REALM"), "--refuse-rc4"],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "{err}");
    let id = json(&out)["session_id"].as_str().unwrap().to_string();
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 1);
    assert!(err.contains("FailedPrecondition"), "{err}");
}

#[test]
fn keytab_key_logon_and_tgt_renewal_before_expiry() {
    let Some((kdc, stack)) = kerberos_stack("kerberos_keytab_and_renewal", false, false) else {
        return;
    };
    let realm = kdc.get("REALM");

    // Logon with the key from alice18's keytab (`klist -kK` prints it): no password anywhere.
    let out = Command::new("klist")
        .args(["-k", "-K", "-e"])
        .arg(kdc.dir.join("alice18.keytab"))
        .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"))
        .output()
        .expect("klist -kK");
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text
        .split("(0x")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no key in {text}"))
        .to_string();
    let (code, out, err) = stack.ctl(
        None,
        &[
            "logon",
            "alice18",
            "--realm",
            realm,
            "--kdc",
            kdc.get("KDC"),
            "--key-enctype",
            "18",
        ],
        &format!("{key}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let id = json(&out)["session_id"].as_str().unwrap().to_string();
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("SPN")], "");
    assert_eq!(code, 0, "{err}");
    assert!(!json(&out)["gss_token"].as_str().unwrap().is_empty());

    // aliceshort's tickets last 20 s: past half of that, the TGT is replaced before use.
    let id = logon(&stack, &kdc, "aliceshort", kdc.get("PASSWORD"), None);
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    let first_end = json(&out)["end_time"].as_i64().unwrap();
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("SPN")], "");
    assert_eq!(code, 0, "{err}");
    assert!(json(&out)["end_time"].as_i64().unwrap() <= first_end);
    std::thread::sleep(Duration::from_secs(11));
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("SPN")], "");
    assert_eq!(code, 0, "{err}");
    let renewed_end = json(&out)["end_time"].as_i64().unwrap();
    assert!(
        renewed_end > first_end,
        "the service ticket comes from a new TGT: {renewed_end} > {first_end}"
    );
}

#[test]
fn a_kdc_clock_an_hour_off_is_handled_by_one_retry_with_the_kdcs_time() {
    let test = "a_kdc_clock_an_hour_off_is_handled_by_one_retry_with_the_kdcs_time";
    if !kvm_or_skip(test) {
        return;
    }
    // The real MIT KDC with its clock an hour ahead (libfaketime): far beyond its 5-minute
    // tolerance, so the first AS-REQ's PA-ENC-TIMESTAMP and the first TGS-REQ's authenticator are
    // refused with KRB_AP_ERR_SKEW, and the enclave must retry once with the KDC's time.
    let Some(kdc) = TestKdc::start_with_clock("skew", Some("+1h")) else {
        return;
    };
    let stack = Stack::start("krb-skew", &config(&kdc, false));
    stack.wait_ready();
    let id = logon(&stack, &kdc, "alice", kdc.get("PASSWORD"), None);
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "the skew retry failed: {err}");
    let tgt = json(&out);
    // The TGT's times are the KDC's: an hour ahead of ours, so the skew was real.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ahead = tgt["start_time"].as_i64().unwrap() - now;
    assert!((3300..=3900).contains(&ahead), "KDC time {ahead} s ahead: {out}");
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("SPN")], "");
    assert_eq!(code, 0, "service ticket with a skewed KDC: {err}");
    assert!(!json(&out)["ap_req"].as_str().unwrap_or_default().is_empty(), "{out}");
}

#[test]
fn a_second_ticket_for_a_service_comes_from_the_enclave_without_the_kdc() {
    let test = "kerberos_ticket_cache";
    if !kvm_or_skip(test) {
        return;
    }
    if !have_python_gssapi() {
        tools_missing(
            test,
            "python3 gssapi is missing (pip install gssapi; needs libkrb5-dev)",
        );
        return;
    }
    let Some(kdc) = TestKdc::start(test) else {
        return;
    };
    // Every KDC exchange of the stack goes through the relay, which counts them.
    let relay = KdcRelay::start(kdc.get("KDC"));
    let stack = Stack::start(
        "kerberos-ticket-cache",
        &format!("[kerberos]\ndefault_kdc = \"{}\"\n", relay.addr),
    );
    stack.wait_ready();
    let realm = kdc.get("REALM");
    let spn = kdc.get("SPN");
    let id = logon(
        &stack,
        &kdc,
        "alice",
        kdc.get("PASSWORD"),
        Some(&relay.addr.to_string()),
    );

    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, spn, "--mutual"], "");
    assert_eq!(code, 0, "{err}");
    let first = json(&out);
    assert_eq!(first["from_cache"], false);
    assert_eq!(
        relay.service_tgs_reps("alice"),
        1,
        "the first ticket takes a TGS exchange"
    );
    assert_eq!(accept(&kdc, first["gss_token"].as_str().unwrap())["complete"], true);

    // The same service again, with and without mutual authentication: no TGS-REQ at the KDC,
    // the same ticket, a new AP-REQ that MIT's acceptor takes.
    for mutual in [false, true] {
        let args: &[&str] = if mutual {
            &["kerberos-ticket", &id, spn, "--mutual"]
        } else {
            &["kerberos-ticket", &id, spn]
        };
        let (code, out, err) = stack.ctl(None, args, "");
        assert_eq!(code, 0, "{err}");
        let again = json(&out);
        assert_eq!(again["from_cache"], true, "mutual {mutual}");
        assert_eq!(again["ticket"], first["ticket"]);
        assert_eq!(again["session_key"], first["session_key"]);
        assert_ne!(again["ap_req"], first["ap_req"], "a fresh authenticator");
        let verdict = accept(&kdc, again["gss_token"].as_str().unwrap());
        assert_eq!(verdict["initiator"], format!("alice@{realm}"));
        assert_eq!(verdict["complete"], true);
        assert_eq!(verdict["mutual_reply"], mutual);
    }
    assert_eq!(
        relay.service_tgs_reps("alice"),
        1,
        "no TGS exchange for the cached ticket"
    );

    // Another service still goes to the KDC; a new logon session has its own cache.
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("HTTP_SPN")], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["from_cache"], false);
    assert_eq!(relay.service_tgs_reps("alice"), 2);
    let other = logon(
        &stack,
        &kdc,
        "alice",
        kdc.get("PASSWORD"),
        Some(&relay.addr.to_string()),
    );
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &other, spn], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["from_cache"], false);
    assert_eq!(relay.service_tgs_reps("alice"), 3);

    // With the KDC gone, the kept ticket is still served.
    let root = env!("CARGO_MANIFEST_DIR");
    let stopped = Command::new(format!("{root}/scripts/test-kdc.sh"))
        .arg("stop")
        .arg(&kdc.dir)
        .status()
        .unwrap();
    assert!(stopped.success());
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, spn], "");
    assert_eq!(code, 0, "{err}");
    let kept = json(&out);
    assert_eq!(kept["from_cache"], true);
    assert_eq!(accept(&kdc, kept["gss_token"].as_str().unwrap())["complete"], true);
}

#[test]
fn one_session_fetches_tickets_for_many_services_at_once() {
    let Some((kdc, stack)) = kerberos_stack("kerberos_many_services_at_once", false, false) else {
        return;
    };
    let password = kdc.get("PASSWORD").to_string();
    let session = logon(&stack, &kdc, "alice", &password, None);
    // No TGT yet: the calls take turns for the one AS exchange, then their TGS exchanges are
    // pending in the enclave at the same time.
    let spns: Vec<String> = (1..=20).map(|i| format!("HTTP/web{i:02}.credguard.test")).collect();
    let results = support::runtime().block_on(async {
        let c = credguard_client::connect(&stack.api).await.unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for spn in spns.clone() {
            let (mut c, session_id) = (c.clone(), session.clone());
            calls.spawn(async move {
                let req = lsa::KerberosGetServiceTicketRequest {
                    session_id,
                    spn: spn.clone(),
                    ..Default::default()
                };
                (spn, c.kerberos_get_service_ticket(req).await.map(|r| r.into_inner()))
            });
        }
        calls.join_all().await
    });
    assert_eq!(results.len(), spns.len());
    for (spn, result) in results {
        let reply = result.unwrap_or_else(|e| panic!("{spn}: {e}"));
        assert!(!reply.ticket.is_empty() && !reply.ccache.is_empty(), "{spn}");
    }
}

#[test]
fn an_expired_password_is_its_own_error() {
    let Some((kdc, stack)) = kerberos_stack("kerberos_password_expired", false, false) else {
        return;
    };
    let password = kdc.get("PASSWORD").to_string();
    let id = logon(&stack, &kdc, "aliceexpired", &password, None);
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_ne!(code, 0, "an expired password got a TGT: {out}");
    assert!(err.contains("password expired"), "{err}");
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(!err.contains(&password));
    // MIT says KEY_EXPIRED before it checks the preauthentication (any password gets it); a wrong
    // password for a principal that has not expired is refused as such, not as expired.
    let wrong = logon(&stack, &kdc, "alice", "Wrong-Passw0rd", None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &wrong], "");
    assert_ne!(code, 0);
    assert!(!err.contains("password expired"), "{err}");
}

#[test]
fn an_expired_password_is_changed_through_the_enclave_over_kpasswd() {
    let test = "kerberos_change_password";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(kdc) = TestKdc::start(test) else {
        return;
    };
    // kadmind's kpasswd service, named in the realm table (it is not on port 464 here).
    let config = format!(
        "{}[kerberos.realms.\"{}\"]\nkpasswd = [\"{}\"]\n",
        config(&kdc, false),
        kdc.get("REALM"),
        kdc.get("KPASSWD")
    );
    let stack = Stack::start("kerberos-change-password", &config);
    stack.wait_ready();
    let old = kdc.get("PASSWORD").to_string();
    let new = "Changed-Passw0rd-2026";

    let id = logon(&stack, &kdc, "aliceexpired", &old, None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_ne!(code, 0);
    assert!(err.contains("password expired"), "{err}");
    // The change, through the enclave; the session then logs on with the new password.
    let (code, out, err) = stack.ctl(None, &["change-password", &id], &format!("{new}\n"));
    assert_eq!(code, 0, "change-password: {err}");
    assert_eq!(json(&out)["changed"], true);
    assert!(!out.contains(new) && !err.contains(new));
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "the session's TGT with the new password: {err}");
    assert_eq!(
        json(&out)["client_principal"],
        format!("aliceexpired@{}", kdc.get("REALM"))
    );
    // A fresh logon: the new password works, the old one does not.
    let fresh = logon(&stack, &kdc, "aliceexpired", new, None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &fresh], "");
    assert_eq!(code, 0, "{err}");
    let stale = logon(&stack, &kdc, "aliceexpired", &old, None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &stale], "");
    assert_ne!(code, 0);
    assert!(err.contains("Unauthenticated"), "the old password is refused: {err}");
    // A session whose password is not expired, already used for a TGT, holds no password to change.
    let (code, _, err) = stack.ctl(None, &["change-password", &fresh], "Another-Passw0rd\n");
    assert_ne!(code, 0);
    assert!(err.contains("FailedPrecondition"), "{err}");
}
