//! Load and isolation between uids under load: 64 concurrent clients for 10 s, half of them a
//! second uid hammering the API, while a first uid's session stays intact.

mod support;

use std::time::{Duration, Instant};

use credguard_lsa_proxy::load::{LoadConfig, run};
use support::{Stack, credguard_bin, json, kvm_or_skip};

#[test]
fn sixty_four_clients_for_ten_seconds_and_a_hammering_uid_disturbs_nobody() {
    if !kvm_or_skip("sixty_four_clients_for_ten_seconds_and_a_hammering_uid_disturbs_nobody") {
        return;
    }
    let stack = Stack::start("load", "");
    stack.wait_ready();
    let (alice, hammer) = (64201u32, 64202u32);
    let (code, out, err) = stack.ctl(Some(alice), &["logon", "alice", "--domain", "CORP"], "alice-pw\n");
    assert_eq!(code, 0, "{err}");
    let session = json(&out)["session_id"].as_str().unwrap().to_string();

    // 32 clients as a second uid, in another process...
    let hammering = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={hammer}"),
            format!("--regid={hammer}"),
            "--clear-groups".into(),
        ])
        .arg(credguard_bin())
        .args(["load", "--clients", "32", "--seconds", "10", "--json", "--socket"])
        .arg(&stack.api)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the second uid's load");
    // ...32 as root in this process, and alice checking her session meanwhile.
    let checker = {
        let api = stack.api.clone();
        let session = session.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut checks = 0;
            while start.elapsed() < Duration::from_secs(9) {
                let out = std::process::Command::new("setpriv")
                    .args([
                        format!("--reuid={alice}"),
                        format!("--regid={alice}"),
                        "--clear-groups".into(),
                    ])
                    .arg(credguard_bin())
                    .args(["ctl", "--json", "--socket"])
                    .arg(&api)
                    .arg("sessions")
                    .output()
                    .unwrap();
                let listed = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && listed.contains(&session),
                    "alice's session under load: {listed}"
                );
                checks += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            checks
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(run(LoadConfig {
        socket: stack.api.clone(),
        clients: 32,
        duration: Duration::from_secs(10),
    }));
    let out = hammering.wait_with_output().unwrap();
    assert!(out.status.success());
    let other = json(&String::from_utf8_lossy(&out.stdout));
    let checks = checker.join().expect("alice's checks");
    eprintln!(
        "root clients:\n{}second uid: {other}\nalice checked her session {checks} times",
        report.summary()
    );

    // No error but the documented backpressure, and real work on both sides.
    for (code, n) in &report.errors {
        assert_eq!(code, "ResourceExhausted", "{n} unexpected {code} errors");
    }
    for (code, _) in other["errors"].as_object().unwrap() {
        assert_eq!(code, "ResourceExhausted", "second uid: {other}");
    }
    assert_eq!(report.connect_failures, 0);
    assert!(report.total_ok() > 100, "{}", report.summary());
    assert!(other["calls_ok"].as_u64().unwrap() > 100, "{other}");
    assert!(checks >= 5);

    // Alice's session is hers and intact; nobody else's load touched it.
    let (code, _, err) = stack.ctl(Some(alice), &["logoff", &session], "");
    assert_eq!(code, 0, "{err}");
}
