//! A hostile KDC on loopback (UDP and TCP on one port), for the attacks a genuine MIT KDC never
//! makes: a forged ETYPE-INFO2, a TGT handed out under a service's name, an oversized reply.
//!
//! It is a mock where the real part cannot play the attacker. It builds its messages with the
//! enclave crate's test-only `kerberos::fake_kdc` (feature `fake-kdc`) and checks the client's
//! PA-ENC-TIMESTAMP under the user's key as a real KDC does; it trusts every TGS-REQ (it never
//! checks the authenticator).

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use credguard_enclave::kerberos::crypto::{self, Key};
use credguard_enclave::kerberos::fake_kdc::{self, Issue, RequestView};

/// The fake realm.
pub const REALM: &str = "FAKE.TEST";
/// Its one user.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "Fake-Kdc-Passw0rd";
/// Her salt (the default one: realm then name).
pub const SALT: &str = "FAKE.TESTalice";

/// How the KDC misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As a real KDC: PREAUTH_REQUIRED with the right salt and the RFC default iterations, then
    /// a TGT, then service tickets for the names asked for.
    Genuine,
    /// ETYPE-INFO2 asks for this many PBKDF2 iterations (a cheap key for an offline attack).
    WeakS2k(u32),
    /// The first ETYPE-INFO2 names a salt of the attacker's; genuine afterwards.
    ForgedSaltOnce,
    /// Every TGS-REP, whatever service was asked for, is a TGT for another realm.
    TgtForAnyService,
    /// AS-REQs get KRB_ERR_RESPONSE_TOO_BIG over UDP, then a reply of this many bytes over TCP.
    Oversized(usize),
    /// Every AS-REQ gets KDC_ERR_WRONG_REALM naming this realm: a client referral, as an Active
    /// Directory DC gives for an account of another forest (which no MIT KDC can play).
    ReferClientsTo(&'static str),
}

struct State {
    behaviour: Behaviour,
    forged_once: bool,
    requests: Vec<RequestView>,
}

/// A running fake KDC; stopped when dropped.
pub struct FakeKdc {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn user_key() -> Key {
    crypto::string_to_key(crypto::AES256_SHA1, PASSWORD.as_bytes(), SALT.as_bytes(), None).expect("string-to-key")
}

fn tgt_key() -> Key {
    Key::new(crypto::AES256_SHA1, &[0x71; 32]).expect("a key")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl FakeKdc {
    /// Starts a KDC that behaves as `behaviour` on a free loopback port.
    pub fn start(behaviour: Behaviour) -> FakeKdc {
        let (udp, tcp) = bind_pair();
        let addr = format!("127.0.0.1:{}", udp.local_addr().expect("address").port());
        let state = Arc::new(Mutex::new(State {
            behaviour,
            forged_once: false,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let threads = vec![
            spawn_udp(udp, state.clone(), stop.clone()),
            spawn_tcp(tcp, state.clone(), stop.clone()),
        ];
        FakeKdc {
            addr,
            state,
            stop,
            threads,
        }
    }

    /// Behaves as `behaviour` from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        if let Ok(mut s) = self.state.lock() {
            s.behaviour = behaviour;
        }
    }

    /// Every request received so far, decoded.
    pub fn requests(&self) -> Vec<RequestView> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }
}

impl Drop for FakeKdc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same free loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("binding UDP");
        let port = udp.local_addr().expect("address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

fn spawn_udp(udp: UdpSocket, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = answer(&state, &buf[..n], false) {
                let _ = udp.send_to(&reply, peer);
            }
        }
    })
}

fn spawn_tcp(tcp: TcpListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
            if s.read_exact(&mut req).is_err() {
                continue;
            }
            if let Some(reply) = answer(&state, &req, true) {
                let mut framed = (reply.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                let _ = s.write_all(&framed);
            }
        }
    })
}

/// The reply to one request.
fn answer(state: &Mutex<State>, request: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let view = fake_kdc::parse_request(request)?;
    let mut st = state.lock().ok()?;
    st.requests.push(view.clone());
    let behaviour = st.behaviour;
    if let Behaviour::Oversized(len) = behaviour
        && !view.tgs
    {
        return Some(if tcp {
            // Announces (and sends) a reply far over any real one.
            let mut big = vec![0x6b, 0x83];
            big.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            big.resize(len, 0);
            big
        } else {
            fake_kdc::krb_error(REALM, 52, now(), None)
        });
    }
    if let Behaviour::ReferClientsTo(realm) = behaviour
        && !view.tgs
    {
        return Some(fake_kdc::wrong_realm(REALM, realm, now()));
    }
    Some(if view.tgs {
        tgs_reply(&view, behaviour)
    } else {
        as_reply(&mut st, &view, behaviour)
    })
}

fn as_reply(st: &mut State, view: &RequestView, behaviour: Behaviour) -> Vec<u8> {
    if view.enc_timestamp_etype.is_none() {
        let (salt, iterations) = match behaviour {
            Behaviour::WeakS2k(i) => (SALT, Some(i)),
            Behaviour::ForgedSaltOnce if !st.forged_once => {
                st.forged_once = true;
                ("attacker-chosen-salt", None)
            }
            _ => (SALT, None),
        };
        return fake_kdc::preauth_required(REALM, now(), &[(crypto::AES256_SHA1, salt, iterations)]);
    }
    if !fake_kdc::timestamp_opens(view, &user_key()) {
        return fake_kdc::krb_error(REALM, 24, now(), None);
    }
    let cname: Vec<&str> = view.cname.iter().map(String::as_str).collect();
    let session_key = tgt_key();
    let issue = Issue {
        realm: REALM,
        cname: &cname,
        sname: &["krbtgt", REALM],
        nonce: view.nonce,
        session_key: &session_key,
        now: now(),
        ticket_cipher_len: 300,
    };
    fake_kdc::as_rep(&issue, &user_key())
}

fn tgs_reply(view: &RequestView, behaviour: Behaviour) -> Vec<u8> {
    let asked: Vec<&str> = view.sname.iter().map(String::as_str).collect();
    let sname: Vec<&str> = match behaviour {
        Behaviour::TgtForAnyService => vec!["krbtgt", "OTHER.TEST"],
        _ => asked,
    };
    let session_key = Key::new(crypto::AES256_SHA1, &[0x5e; 32]).expect("a key");
    let issue = Issue {
        realm: REALM,
        cname: &[USER],
        sname: &sname,
        nonce: view.nonce,
        session_key: &session_key,
        now: now(),
        ticket_cipher_len: 300,
    };
    fake_kdc::tgs_rep(&issue, &tgt_key())
}
