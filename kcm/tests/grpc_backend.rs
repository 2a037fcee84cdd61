//! `GrpcBackend` against a stand-in `credguard.v1.Lsa` on a Unix socket: which session it picks,
//! that every call names the uid it is made for, that a TGT's times are asked once, and how the
//! proxy's errors reach MIT.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use credguard_kcm::backend::{Backend, GrpcBackend};
use credguard_kcm::ccache::CcacheFile;
use credguard_kcm::protocol::code;
use support::{FakeLsa, FakeSession, TempDir};

fn session(id: &str, uid: u32, user: &str, realm: &str, is_default: bool) -> FakeSession {
    FakeSession {
        session_id: id.into(),
        uid,
        user: user.into(),
        realm: realm.into(),
        is_default,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn picks_the_uids_default_session_and_names_the_uid() {
    let dir = TempDir::new("grpc-default");
    let lsa = FakeLsa::default();
    lsa.state.lock().unwrap().sessions = vec![
        session("other-uid", 2000, "mallory", "EXAMPLE.TEST", true),
        session("not-default", 1000, "alice", "EXAMPLE.TEST", false),
        session("ntlm-only", 1001, "bob", "", true),
        session("alice-default", 1000, "alice", "EXAMPLE.TEST", true),
    ];
    let api = dir.join("lsa.sock");
    lsa.serve(&api);
    let backend = GrpcBackend::new(api);

    let s = backend.default_session(1000).await.unwrap().unwrap();
    assert_eq!(s.session_id, "alice-default");
    assert_eq!(s.client_principal, "alice@EXAMPLE.TEST");
    assert_eq!(s.realm, "EXAMPLE.TEST");
    let tgt = s.tgt.unwrap();
    assert_eq!(tgt.enctype, 18);
    assert!(tgt.end > tgt.start);
    // Asked again: the TGT's times are remembered (KerberosGetTgt runs an AS exchange).
    assert_eq!(backend.default_session(1000).await.unwrap(), Some(s.clone()));
    assert_eq!(lsa.count("KerberosGetTgt"), 1);
    assert_eq!(lsa.count("ListSessions"), 2);
    // No default session, or only an NTLM one: nothing.
    assert_eq!(backend.default_session(1002).await.unwrap(), None);
    assert_eq!(backend.default_session(1001).await.unwrap(), None);

    let bytes = backend
        .service_ticket(1000, "alice-default", "HTTP/web.example.test")
        .await
        .unwrap();
    let file = CcacheFile::parse(&bytes).unwrap();
    assert_eq!(
        file.credentials[0].server.to_string(),
        "HTTP/web.example.test@EXAMPLE.TEST"
    );

    // Every call named the uid it was made for, in the order asked.
    let uids: Vec<(&str, Option<String>)> = lsa.state.lock().unwrap().calls.clone();
    let expected = [
        ("ListSessions", "1000"),
        ("KerberosGetTgt", "1000"),
        ("ListSessions", "1000"),
        ("ListSessions", "1002"),
        ("ListSessions", "1001"),
        ("KerberosGetServiceTicket", "1000"),
    ];
    let seen: Vec<(&str, Option<&str>)> = uids.iter().map(|(m, u)| (*m, u.as_deref())).collect();
    let want: Vec<(&str, Option<&str>)> = expected.iter().map(|(m, u)| (*m, Some(*u))).collect();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_errors_become_codes_mit_prints() {
    let dir = TempDir::new("grpc-errors");
    let lsa = FakeLsa::default();
    {
        let mut st = lsa.state.lock().unwrap();
        st.sessions = vec![session("s", 1000, "alice", "EXAMPLE.TEST", true)];
        st.unknown_spns = vec!["HTTP/nosuch.example.test".into()];
    }
    let api = dir.join("lsa.sock");
    lsa.serve(&api);
    let backend = GrpcBackend::new(api.clone());
    let e = backend
        .service_ticket(1000, "s", "HTTP/nosuch.example.test")
        .await
        .unwrap_err();
    // MIT: "Server not found in Kerberos database".
    assert_eq!(e.kcm_code(), code::KDC_ERROR_BASE + 7);
    // A session of another uid is not found (the proxy's rule, which the call exercises).
    let e = backend.service_ticket(1001, "s", "HTTP/web").await.unwrap_err();
    assert_eq!(e.kcm_code(), code::KRB5_CC_NOTFOUND);
    // No proxy at all: MIT's "Cannot contact any KDC".
    let gone = GrpcBackend::new(dir.join("nothing.sock"));
    let e = gone.default_session(1000).await.unwrap_err();
    assert_eq!(e.kcm_code(), code::KRB5_KDC_UNREACH);
}
