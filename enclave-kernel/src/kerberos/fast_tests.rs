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
