//! FAST unit tests: the KDC's side is played here with the same RFC 6113 types (the armor key is
//! derived again from the armor AP-REQ, as a KDC does), so a wrong key, usage or layout fails.

use super::*;
use crate::kerberos::fake_kdc;
use crate::kerberos::messages::{Client, KdcReply};
use rasn_kerberos::{EncryptionKey, KerberosTime, PrincipalName};

const NOW: i64 = 1_700_000_000;
const NONCE: u32 = 0x1234_5678;

fn key(et: i32, byte: u8) -> Key {
    Key::new(et, &alloc::vec![byte; crypto::key_len(et).unwrap()]).unwrap()
}

fn machine_name() -> PrincipalName {
    PrincipalName {
        r#type: 1,
        string: alloc::vec![kstring("host").unwrap(), kstring("client.test").unwrap()],
    }
}

/// A machine TGT (opaque ticket), its session key, and the armor made of it.
fn armor() -> (Armor, Key) {
    let tgt_key = key(crypto::AES256_SHA1, 0x11);
    let issue = fake_kdc::Issue {
        realm: "TEST",
        cname: &["host", "client.test"],
        sname: &["krbtgt", "TEST"],
        nonce: 1,
        session_key: &tgt_key,
        now: NOW,
        ticket_cipher_len: 64,
    };
    let KdcReply::Rep(rep) = messages::parse_kdc_reply(&fake_kdc::as_rep(&issue, &key(18, 0x77))).unwrap() else {
        panic!("not an AS-REP");
    };
    let name = machine_name();
    let t = ArmorTicket {
        ticket: &rep.ticket,
        session_key: &tgt_key,
        crealm: "TEST",
        cname: &name,
    };
    (
        Armor::new(&t, key(crypto::AES256_SHA1, 0x22), NOW, [7; 16]).unwrap(),
        tgt_key,
    )
}

fn user_key() -> Key {
    key(crypto::AES256_SHA1, 0x55)
}

fn armored_request(armor: &Armor) -> Vec<u8> {
    let client = Client {
        user: "alice",
        realm: "TEST",
        enterprise: false,
    };
    let plain = messages::as_req(&client, &["krbtgt", "TEST"], None, NOW, NONCE, false).unwrap();
    armor_as_req(&plain, armor, Some((&user_key(), NOW)), [[1; 16], [2; 16]]).unwrap()
}

/// The KDC's armor key: from the armor AP-REQ's subkey and the TGT session key it knows.
fn kdc_armor_key(armored: &asn::KrbFastArmoredReq, tgt_key: &Key) -> Key {
    let fx = armored.armor.as_ref().unwrap();
    assert_eq!(fx.armor_type, 1);
    let ap: ApReq = rasn::der::decode(&fx.armor_value).unwrap();
    let auth = crypto::decrypt(tgt_key, 11, &ap.authenticator.cipher).unwrap();
    let auth: Authenticator = rasn::der::decode(&auth).unwrap();
    assert_eq!(auth.cname, machine_name());
    let sub = auth.subkey.unwrap();
    let sub = Key::new(sub.r#type, &sub.value).unwrap();
    crypto::cf2(&sub, tgt_key, b"subkeyarmor", b"ticketarmor").unwrap()
}

#[test]
fn an_armored_as_req_is_what_a_kdc_opens() {
    let (armor, tgt_key) = armor();
    let AsReq(req) = rasn::der::decode(&armored_request(&armor)).unwrap();
    let padata = req.padata.unwrap();
    // Only PA-FX-FAST outside: the proof (and any PA-ENC-TIMESTAMP) is inside the tunnel.
    assert_eq!(padata.iter().map(|p| p.r#type).collect::<Vec<_>>(), [PA_FX_FAST]);
    let PaFxFastRequest::ArmoredData(armored) = rasn::der::decode(&padata[0].value).unwrap();
    let akey = kdc_armor_key(&armored, &tgt_key);
    assert_eq!(akey.value, armor.key.value);
    let body = rasn::der::encode(&req.req_body).unwrap();
    assert_eq!(armored.req_checksum.r#type, 16);
    assert_eq!(
        &armored.req_checksum.checksum[..],
        crypto::checksum(&akey, 50, &body).unwrap()
    );
    let inner = crypto::decrypt(&akey, 51, &armored.enc_fast_req.cipher).unwrap();
    let inner: asn::KrbFastReq = rasn::der::decode(&inner).unwrap();
    assert_eq!(inner.req_body, req.req_body);
    assert_eq!(inner.req_body.etype, [crypto::AES256_SHA1]);
    assert_eq!(inner.padata.len(), 1);
    assert_eq!(inner.padata[0].r#type, PA_ENCRYPTED_CHALLENGE);
    let enc: EncryptedData = rasn::der::decode(&inner.padata[0].value).unwrap();
    let ck = crypto::cf2(&akey, &user_key(), b"clientchallengearmor", b"challengelongterm").unwrap();
    let ts: PaEncTsEnc = rasn::der::decode(&crypto::decrypt(&ck, 54, &enc.cipher).unwrap()).unwrap();
    assert_eq!(ts.patimestamp, time(NOW).unwrap());
}

/// The KDC's PA-FX-FAST reply value for `resp` under `akey`.
fn fast_reply(akey: &Key, resp: &KrbFastResponse) -> Vec<u8> {
    let plain = rasn::der::encode(resp).unwrap();
    let enc = EncryptedData {
        etype: akey.enctype,
        kvno: None,
        cipher: OctetString::from(crypto::encrypt(akey, 52, &plain, &[9; 16]).unwrap()),
    };
    rasn::der::encode(&PaFxFastReply::ArmoredData(asn::KrbFastArmoredRep {
        enc_fast_rep: enc,
    }))
    .unwrap()
}

/// An AS-REP for alice (not yet armored) and the FAST response a KDC sends with it.
fn rep_and_response(akey: &Key, strengthen: &Key) -> (RepParts, KrbFastResponse) {
    let session = key(crypto::AES256_SHA1, 0x66);
    let issue = fake_kdc::Issue {
        realm: "TEST",
        cname: &["alice"],
        sname: &["krbtgt", "TEST"],
        nonce: NONCE,
        session_key: &session,
        now: NOW,
        ticket_cipher_len: 80,
    };
    let reply_key = reply_key(Some(strengthen), user_key()).unwrap();
    let KdcReply::Rep(rep) = messages::parse_kdc_reply(&fake_kdc::as_rep(&issue, &reply_key)).unwrap() else {
        panic!("not an AS-REP");
    };
    let finished = KrbFastFinished {
        timestamp: KerberosTime(time(NOW).unwrap().0),
        usec: Integer::from(0),
        crealm: kstring("TEST").unwrap(),
        cname: rep.cname_pn.clone(),
        ticket_checksum: Checksum {
            r#type: 16,
            checksum: OctetString::from(crypto::checksum(akey, 53, &rep.ticket).unwrap()),
        },
    };
    let resp = KrbFastResponse {
        padata: Vec::new(),
        strengthen_key: Some(EncryptionKey {
            r#type: strengthen.enctype,
            value: OctetString::from(strengthen.value.to_vec()),
        }),
        finished: Some(finished),
        nonce: NONCE,
    };
    (rep, resp)
}

#[test]
fn an_armored_as_rep_opens_with_the_strengthened_reply_key() {
    let (armor, _) = armor();
    let strengthen = key(crypto::AES256_SHA1, 0x44);
    let (mut rep, resp) = rep_and_response(&armor.key, &strengthen);
    rep.fast = Some(fast_reply(&armor.key, &resp));
    let got = check_rep(&armor, &rep, NONCE).unwrap().unwrap();
    let k = reply_key(Some(&got), user_key()).unwrap();
    let plain = crypto::decrypt(&k, 3, &rep.enc_cipher).unwrap();
    messages::enc_kdc_rep_part(&plain, NONCE).unwrap();
    // Not under the long-term key itself.
    assert!(crypto::decrypt(&user_key(), 3, &rep.enc_cipher).is_err());
}

#[test]
fn an_as_rep_without_fast_is_refused() {
    let (armor, _) = armor();
    let (rep, _) = rep_and_response(&armor.key, &key(crypto::AES256_SHA1, 0x44));
    let e = check_rep(&armor, &rep, NONCE).err().unwrap();
    assert!(matches!(e, KerberosError::Unauthenticated(_)), "{e:?}");
    assert!(e.message().contains("not armored"));
}

#[test]
fn a_bad_finished_checksum_is_refused() {
    let (armor, _) = armor();
    let (mut rep, mut resp) = rep_and_response(&armor.key, &key(crypto::AES256_SHA1, 0x44));
    if let Some(f) = resp.finished.as_mut() {
        let mut c = f.ticket_checksum.checksum.to_vec();
        c[0] ^= 1;
        f.ticket_checksum.checksum = OctetString::from(c);
    }
    rep.fast = Some(fast_reply(&armor.key, &resp));
    let e = check_rep(&armor, &rep, NONCE).err().unwrap();
    assert!(e.message().contains("ticket checksum"));
    // Nor one without KrbFastFinished at all.
    resp.finished = None;
    rep.fast = Some(fast_reply(&armor.key, &resp));
    assert!(
        check_rep(&armor, &rep, NONCE)
            .err()
            .unwrap()
            .message()
            .contains("KrbFastFinished")
    );
}

#[test]
fn a_wrong_nonce_or_key_is_refused() {
    let (armor, _) = armor();
    let (mut rep, mut resp) = rep_and_response(&armor.key, &key(crypto::AES256_SHA1, 0x44));
    resp.nonce = NONCE ^ 1;
    rep.fast = Some(fast_reply(&armor.key, &resp));
    assert!(
        check_rep(&armor, &rep, NONCE)
            .err()
            .unwrap()
            .message()
            .contains("nonce")
    );
    resp.nonce = NONCE;
    rep.fast = Some(fast_reply(&key(crypto::AES256_SHA1, 0x99), &resp));
    assert!(
        check_rep(&armor, &rep, NONCE)
            .err()
            .unwrap()
            .message()
            .contains("armor key")
    );
    rep.fast = Some(alloc::vec![0x30, 0x03, 0x02, 0x01]);
    assert!(check_rep(&armor, &rep, NONCE).is_err());
}

fn method_data(padata: Vec<PaData>) -> Vec<u8> {
    rasn::der::encode(&padata).unwrap()
}

#[test]
fn fast_errors_open_to_the_real_error_and_its_method_data() {
    let (armor, _) = armor();
    let real = fake_kdc::preauth_required("TEST", NOW, &[(18, "TESTalice", None)]);
    let KdcReply::Error(real_parsed) = messages::parse_kdc_reply(&real).unwrap() else {
        panic!("not an error");
    };
    let mut padata: Vec<PaData> = rasn::der::decode(real_parsed.e_data.as_deref().unwrap()).unwrap();
    padata.push(PaData {
        r#type: PA_FX_ERROR,
        value: OctetString::from(fake_kdc::krb_error("TEST", 25, NOW, None)),
    });
    let resp = KrbFastResponse {
        padata,
        strengthen_key: None,
        finished: None,
        nonce: NONCE,
    };
    let fx = PaData {
        r#type: PA_FX_FAST,
        value: OctetString::from(fast_reply(&armor.key, &resp)),
    };
    let outer = fake_kdc::krb_error("TEST", 25, NOW, Some(method_data(alloc::vec![fx])));
    let KdcReply::Error(outer) = messages::parse_kdc_reply(&outer).unwrap() else {
        panic!("not an error");
    };
    let got = open_error(&armor, &outer, NONCE).unwrap();
    assert_eq!(got.code, 25);
    assert_eq!(messages::etype_info2(&got).unwrap()[0].etype, 18);
    // A wrong nonce, and an error without armor.
    assert!(open_error(&armor, &outer, NONCE + 1).is_err());
    let e = open_error(&armor, &real_parsed, NONCE).err().unwrap();
    assert!(e.clone().message().contains("not armored"), "{e:?}");
}

#[test]
fn fast_offer_is_read_from_method_data() {
    let offer = PaData {
        r#type: PA_FX_FAST,
        value: OctetString::from(Vec::new()),
    };
    let e = fake_kdc::krb_error("TEST", 25, NOW, Some(method_data(alloc::vec![offer])));
    let KdcReply::Error(e) = messages::parse_kdc_reply(&e).unwrap() else {
        panic!("not an error");
    };
    assert!(offered(&e));
    let plain = fake_kdc::preauth_required("TEST", NOW, &[(18, "s", None)]);
    let KdcReply::Error(plain) = messages::parse_kdc_reply(&plain).unwrap() else {
        panic!("not an error");
    };
    assert!(!offered(&plain));
    assert_eq!(FastMode::from_wire(2).unwrap(), FastMode::Require);
    assert!(FastMode::from_wire(7).is_err());
}

/// Whole AS exchanges through [`crate::kerberos::as_step`] with a machine account registered.
mod exchanges {
    use super::*;
    use crate::credentials::{CredentialStore, KerberosKey, LogonCredential, SESSION_HANDLE_LEN};
    use crate::kerberos::counter_rng::Counter;
    use crate::kerberos::{KerberosSessions, as_step};
    use credguard_proto::attest::Owner;
    use credguard_proto::enclave::{KerberosAsReply, KerberosAsRequest};
    use rasn_kerberos::AsRep;

    const MACHINE: [u8; SESSION_HANDLE_LEN] = [1; SESSION_HANDLE_LEN];
    const USER: [u8; SESSION_HANDLE_LEN] = [2; SESSION_HANDLE_LEN];
    const REQUIRE: i32 = 2;
    const IF_OFFERED: i32 = 0;

    fn machine_key() -> Key {
        key(crypto::AES256_SHA1, 0x77)
    }

    fn cred(owner: u32, user: &str, k: &Key) -> LogonCredential {
        LogonCredential {
            enterprise: false,
            owner: Owner::uid(owner),
            allow_rc4: false,
            id: [0; 16],
            user: user.into(),
            domain: alloc::string::String::new(),
            realm: "TEST".into(),
            kind: "key",
            nt_hash: None,
            password: None,
            keys: alloc::vec![KerberosKey {
                enctype: k.enctype,
                value: k.value.clone(),
            }],
        }
    }

    fn setup(machine: bool) -> (CredentialStore, KerberosSessions, Counter) {
        let mut creds = CredentialStore::new();
        creds.insert(USER, cred(1000, "alice", &user_key())).unwrap();
        creds
            .insert(MACHINE, cred(0, "host/client.test", &machine_key()))
            .unwrap();
        let mut st = KerberosSessions::new();
        if machine {
            st.set_machine_account("test", MACHINE);
        }
        (creds, st, Counter::new(3))
    }

    fn step(
        (creds, st, rng): &mut (CredentialStore, KerberosSessions, Counter),
        fast: i32,
        reply: Vec<u8>,
    ) -> Result<KerberosAsReply, KerberosError> {
        let req = KerberosAsRequest {
            session_handle: USER.to_vec(),
            now_unix: NOW,
            kdc_reply: reply,
            fast,
        };
        as_step(creds, st, rng, req)
    }

    /// The KDC's AS-REP to the machine account's AS-REQ, with `tgt_key` as the TGT session key.
    fn machine_rep(request: &[u8], tgt_key: &Key) -> Vec<u8> {
        let view = fake_kdc::parse_request(request).unwrap();
        assert_eq!(view.cname, ["host", "client.test"]);
        assert!(fake_kdc::timestamp_opens(&view, &machine_key()));
        let issue = fake_kdc::Issue {
            realm: "TEST",
            cname: &["host", "client.test"],
            sname: &["krbtgt", "TEST"],
            nonce: view.nonce,
            session_key: tgt_key,
            now: NOW,
            ticket_cipher_len: 64,
        };
        fake_kdc::as_rep(&issue, &machine_key())
    }

    /// The armor key of an armored AS-REQ, as the KDC finds it, and the request's nonce.
    fn open_armored(request: &[u8], tgt_key: &Key) -> (Key, u32) {
        let AsReq(req) = rasn::der::decode(request).unwrap();
        let padata = req.padata.unwrap();
        assert_eq!(padata[0].r#type, PA_FX_FAST);
        let PaFxFastRequest::ArmoredData(armored) = rasn::der::decode(&padata[0].value).unwrap();
        (kdc_armor_key(&armored, tgt_key), req.req_body.nonce)
    }

    /// alice's AS-REP for `nonce`, armored under `akey` (or not).
    fn user_rep(akey: Option<&Key>, nonce: u32) -> Vec<u8> {
        let strengthen = key(crypto::AES256_SHA1, 0x44);
        let (_, mut resp) = rep_and_response(akey.unwrap_or(&strengthen), &strengthen);
        resp.nonce = nonce;
        let session = key(crypto::AES256_SHA1, 0x66);
        let issue = fake_kdc::Issue {
            realm: "TEST",
            cname: &["alice"],
            sname: &["krbtgt", "TEST"],
            nonce,
            session_key: &session,
            now: NOW,
            ticket_cipher_len: 80,
        };
        let reply_key = reply_key(Some(&strengthen), user_key()).unwrap();
        let AsRep(mut rep) = rasn::der::decode(&fake_kdc::as_rep(&issue, &reply_key)).unwrap();
        if let Some(akey) = akey {
            rep.padata = Some(alloc::vec![PaData {
                r#type: PA_FX_FAST,
                value: OctetString::from(fast_reply(akey, &resp)),
            }]);
        }
        rasn::der::encode(&AsRep(rep)).unwrap()
    }

    #[test]
    fn require_gets_the_machine_tgt_then_armors_and_the_armored_reply_gives_the_tgt() {
        let mut s = setup(true);
        let tgt_key = key(crypto::AES256_SHA1, 0x11);
        let first = step(&mut s, REQUIRE, Vec::new()).unwrap();
        let armored = step(&mut s, REQUIRE, machine_rep(&first.kdc_request, &tgt_key)).unwrap();
        let (akey, nonce) = open_armored(&armored.kdc_request, &tgt_key);
        let done = step(&mut s, REQUIRE, user_rep(Some(&akey), nonce)).unwrap();
        assert!(done.kdc_request.is_empty());
        assert_eq!(done.client_principal, "alice@TEST");
        // The machine TGT stays, in the machine account's session: the next exchange is armored
        // at once.
        assert!(s.1.sessions.get(&MACHINE).unwrap().tgt.is_some());
        let again = step(&mut s, REQUIRE, Vec::new()).unwrap();
        open_armored(&again.kdc_request, &tgt_key);
    }

    #[test]
    fn require_without_a_machine_account_is_refused() {
        let mut s = setup(false);
        let e = step(&mut s, REQUIRE, Vec::new()).err().unwrap();
        assert!(matches!(e, KerberosError::FailedPrecondition(_)));
        assert!(e.message().contains("no machine account"));
    }

    #[test]
    fn logging_the_machine_account_off_unregisters_it() {
        let mut s = setup(true);
        s.1.forget_session(&MACHINE, Owner::uid(0));
        let e = step(&mut s, REQUIRE, Vec::new()).err().unwrap();
        assert!(e.message().contains("no machine account"));
    }

    #[test]
    fn a_forged_machine_as_rep_gives_no_armor() {
        let mut s = setup(true);
        let first = step(&mut s, REQUIRE, Vec::new()).unwrap();
        let view = fake_kdc::parse_request(&first.kdc_request).unwrap();
        // Under another key than the machine account's (a KDC that does not know it).
        let issue = fake_kdc::Issue {
            realm: "TEST",
            cname: &["host", "client.test"],
            sname: &["krbtgt", "TEST"],
            nonce: view.nonce,
            session_key: &key(crypto::AES256_SHA1, 0x11),
            now: NOW,
            ticket_cipher_len: 64,
        };
        let forged = fake_kdc::as_rep(&issue, &key(crypto::AES256_SHA1, 0x78));
        let e = step(&mut s, REQUIRE, forged).err().unwrap();
        assert!(matches!(e, KerberosError::Unauthenticated(_)), "{e:?}");
        assert!(s.1.sessions.get(&MACHINE).is_none_or(|m| m.tgt.is_none()));
        // A ticket for another service than krbtgt.
        let first = step(&mut s, REQUIRE, Vec::new()).unwrap();
        let view = fake_kdc::parse_request(&first.kdc_request).unwrap();
        let issue = fake_kdc::Issue {
            sname: &["host", "other.test"],
            nonce: view.nonce,
            ..issue
        };
        let e = step(&mut s, REQUIRE, fake_kdc::as_rep(&issue, &machine_key()))
            .err()
            .unwrap();
        assert!(e.message().contains("another kind"));
    }

    #[test]
    fn an_unarmored_answer_to_an_armored_request_is_refused() {
        let mut s = setup(true);
        let tgt_key = key(crypto::AES256_SHA1, 0x11);
        let first = step(&mut s, REQUIRE, Vec::new()).unwrap();
        let armored = step(&mut s, REQUIRE, machine_rep(&first.kdc_request, &tgt_key)).unwrap();
        let (_, nonce) = open_armored(&armored.kdc_request, &tgt_key);
        let e = step(&mut s, REQUIRE, user_rep(None, nonce)).err().unwrap();
        assert!(e.clone().message().contains("not armored"), "{e:?}");
        assert!(s.1.sessions.get(&USER).unwrap().tgt.is_none());
        // Nor a bare KRB-ERROR (a KDC, or proxy, stripping FAST to get a password guess in clear).
        let armored = step(&mut s, REQUIRE, Vec::new()).unwrap();
        assert!(!armored.kdc_request.is_empty());
        let e = step(
            &mut s,
            REQUIRE,
            fake_kdc::preauth_required("TEST", NOW, &[(18, "TESTalice", None)]),
        )
        .err()
        .unwrap();
        assert!(e.message().contains("not armored"));
    }

    #[test]
    fn if_offered_armors_only_when_the_kdc_offers_fast_and_there_is_a_machine_account() {
        let offer = |e_data: Vec<PaData>| fake_kdc::krb_error("TEST", 25, NOW, Some(method_data(e_data)));
        let etype_info = || {
            let e = fake_kdc::preauth_required("TEST", NOW, &[(18, "TESTalice", None)]);
            let KdcReply::Error(e) = messages::parse_kdc_reply(&e).unwrap() else {
                panic!("not an error");
            };
            rasn::der::decode::<Vec<PaData>>(e.e_data.as_deref().unwrap()).unwrap()
        };
        let fx = PaData {
            r#type: PA_FX_FAST,
            value: OctetString::from(Vec::new()),
        };
        // The session holds a key: its first request is pre-authenticated; drop that to see a
        // PREAUTH_REQUIRED, as a KDC wanting another enctype would answer.
        for (machine, offered, armored) in [(true, true, true), (true, false, false), (false, true, false)] {
            let mut s = setup(machine);
            s.0.get_mut(&USER).unwrap().keys.clear();
            s.0.get_mut(&USER).unwrap().password = Some(zeroize::Zeroizing::new("pw".into()));
            let first = step(&mut s, IF_OFFERED, Vec::new()).unwrap();
            assert!(fake_kdc::parse_request(&first.kdc_request).is_some_and(|v| v.cname == ["alice"]));
            let mut e_data = etype_info();
            if offered {
                e_data.push(fx.clone());
            }
            let next = step(&mut s, IF_OFFERED, offer(e_data)).unwrap();
            let view = fake_kdc::parse_request(&next.kdc_request).unwrap();
            // Armoring starts with the machine account's own AS-REQ (no machine TGT yet).
            assert_eq!(view.cname == ["host", "client.test"], armored, "{machine} {offered}");
        }
    }
}
