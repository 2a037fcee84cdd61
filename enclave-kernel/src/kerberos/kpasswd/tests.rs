//! The change request's layout as a kpasswd server reads it, and replies a server (or a forger)
//! sends. The server's side is written here from RFC 3244 / RFC 4120: a mock, since MIT's
//! kadmind cannot be asked to forge replies (the end-to-end test talks to the real one).

use super::*;
use rasn::types::GeneralString;

fn gs(s: &str) -> GeneralString {
    GeneralString::from_bytes(s.as_bytes()).unwrap()
}

fn kt(unix: i64) -> KerberosTime {
    KerberosTime(chrono::DateTime::from_timestamp(unix, 0).unwrap().fixed_offset())
}

fn ticket_der() -> Vec<u8> {
    let t = Ticket {
        tkt_vno: Integer::from(5),
        realm: gs("R.TEST"),
        sname: PrincipalName {
            r#type: 2,
            string: alloc::vec![gs("kadmin"), gs("changepw")],
        },
        enc_part: EncryptedData {
            etype: 18,
            kvno: Some(1),
            cipher: OctetString::from(alloc::vec![0x42; 64]),
        },
    };
    rasn::der::encode(&t).unwrap()
}

struct Keys {
    session: Key,
    subkey: Key,
}

fn keys() -> Keys {
    Keys {
        session: Key::new(18, &[0x11; 32]).unwrap(),
        subkey: Key::new(18, &[0x22; 32]).unwrap(),
    }
}

fn cname() -> PrincipalName {
    PrincipalName {
        r#type: 1,
        string: alloc::vec![gs("alice")],
    }
}

fn request(k: &Keys, password: &[u8]) -> Result<Vec<u8>, KerberosError> {
    let ticket = ticket_der();
    let name = cname();
    let sender = SenderAddress::new(&[127, 0, 0, 1]).unwrap();
    change_request(
        &ChangeRequest {
            crealm: "R.TEST",
            cname: &name,
            ticket: &ticket,
            session_key: &k.session,
            subkey: &k.subkey,
            seq: 4242,
            now: 1_000,
            new_password: password,
            sender: &sender,
        },
        [1; 16],
        [2; 16],
    )
}

/// What a kpasswd server reads from a request.
pub(crate) struct Seen {
    pub(crate) version: u16,
    pub(crate) ticket: Ticket,
    pub(crate) subkey: Key,
    pub(crate) auth_seq: Option<u32>,
    pub(crate) priv_seq: Option<u32>,
    pub(crate) password: Vec<u8>,
    pub(crate) sender: HostAddress,
}

/// Reads a change request as a kpasswd server does, with the ticket's session key.
pub(crate) fn serve(bytes: &[u8], session: &Key) -> Seen {
    let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    assert_eq!(len, bytes.len());
    let version = u16::from_be_bytes([bytes[2], bytes[3]]);
    let ap_len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
    let ap: ApReq = rasn::der::decode(&bytes[6..6 + ap_len]).unwrap();
    let auth: Authenticator =
        rasn::der::decode(&crypto::decrypt(session, USAGE_AP_REQ_AUTH, &ap.authenticator.cipher).unwrap()).unwrap();
    let sk = auth.subkey.unwrap();
    let subkey = Key::new(sk.r#type, &sk.value).unwrap();
    let p: KrbPriv = rasn::der::decode(&bytes[6 + ap_len..]).unwrap();
    let part: EncKrbPrivPart =
        rasn::der::decode(&crypto::decrypt(&subkey, USAGE_KRB_PRIV, &p.enc_part.cipher).unwrap()).unwrap();
    Seen {
        version,
        ticket: ap.ticket,
        subkey,
        auth_seq: auth.seq_number,
        priv_seq: part.seq_number,
        password: part.user_data.to_vec(),
        sender: part.sender_address,
    }
}

/// A server's reply: AP-REP under `session`, KRB-PRIV under `priv_key` with `user_data`.
pub(crate) fn reply(session: &Key, priv_key: &Key, server_subkey: Option<&Key>, user_data: &[u8], seq: u32) -> Vec<u8> {
    let rep_part = EncApRepPart {
        ctime: kt(1_000),
        cusec: Integer::from(0),
        subkey: server_subkey.map(|k| EncryptionKey {
            r#type: k.enctype,
            value: OctetString::from(k.value.to_vec()),
        }),
        seq_number: Some(seq),
    };
    let rep = ApRep {
        pvno: Integer::from(5),
        msg_type: Integer::from(15),
        enc_part: EncryptedData {
            etype: session.enctype,
            kvno: None,
            cipher: OctetString::from(
                crypto::encrypt(session, USAGE_AP_REP, &rasn::der::encode(&rep_part).unwrap(), &[3; 16]).unwrap(),
            ),
        },
    };
    let part = EncKrbPrivPart {
        user_data: OctetString::from(user_data.to_vec()),
        timestamp: None,
        usec: None,
        seq_number: Some(seq),
        sender_address: HostAddress {
            addr_type: 2,
            address: OctetString::from(alloc::vec![127, 0, 0, 1]),
        },
        recipient_address: None,
    };
    let p = KrbPriv {
        pvno: Integer::from(5),
        msg_type: Integer::from(21),
        enc_part: EncryptedData {
            etype: priv_key.enctype,
            kvno: None,
            cipher: OctetString::from(
                crypto::encrypt(priv_key, USAGE_KRB_PRIV, &rasn::der::encode(&part).unwrap(), &[4; 16]).unwrap(),
            ),
        },
    };
    frame(&rasn::der::encode(&rep).unwrap(), &rasn::der::encode(&p).unwrap())
}

fn frame(ap: &[u8], rest: &[u8]) -> Vec<u8> {
    let total = 6 + ap.len() + rest.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&VERSION_CHANGE.to_be_bytes());
    out.extend_from_slice(&(ap.len() as u16).to_be_bytes());
    out.extend_from_slice(ap);
    out.extend_from_slice(rest);
    out
}

/// A result's user-data: the code and the string.
pub(crate) fn result(code: u16, text: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

#[test]
fn the_request_carries_the_password_only_under_the_subkey() {
    let k = keys();
    let bytes = request(&k, b"New-Passw0rd").unwrap();
    assert!(
        !bytes.windows(12).any(|w| w == b"New-Passw0rd"),
        "the new password is never in clear"
    );
    let seen = serve(&bytes, &k.session);
    assert_eq!(seen.ticket, rasn::der::decode::<Ticket>(&ticket_der()).unwrap());
    assert_eq!(seen.version, 0x0001);
    assert_eq!(seen.subkey.value, k.subkey.value);
    assert_eq!(seen.auth_seq, Some(4242));
    assert_eq!(
        seen.priv_seq,
        Some(4242),
        "the KRB-PRIV's sequence number is the authenticator's"
    );
    assert_eq!(seen.password, b"New-Passw0rd");
    assert_eq!(seen.sender.addr_type, 2);
    assert_eq!(seen.sender.address.as_ref(), &[127, 0, 0, 1]);
    // Not under the session key: a server without the subkey cannot read it.
    let p_start = 6 + usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
    let p: KrbPriv = rasn::der::decode(&bytes[p_start..]).unwrap();
    assert!(crypto::decrypt(&k.session, USAGE_KRB_PRIV, &p.enc_part.cipher).is_err());
}

#[test]
fn empty_or_oversized_passwords_and_bad_addresses_are_refused() {
    let k = keys();
    assert!(request(&k, b"").is_err());
    assert!(request(&k, &[b'a'; MAX_PASSWORD_LEN + 1]).is_err());
    assert!(request(&k, &[b'a'; MAX_PASSWORD_LEN]).is_ok());
    assert!(SenderAddress::new(&[1, 2, 3]).is_err());
    assert_eq!(SenderAddress::new(&[0; 16]).unwrap().addr_type, 24);
}

#[test]
fn replies_give_the_result_with_the_clients_or_the_servers_subkey() {
    let k = keys();
    let ok = reply(&k.session, &k.subkey, None, &result(0, "Password changed."), 7);
    assert_eq!(change_reply(&ok, &k.session, &k.subkey).unwrap().code, RESULT_SUCCESS);
    let own = Key::new(18, &[0x33; 32]).unwrap();
    let with_own = reply(&k.session, &own, Some(&own), &result(0, ""), 7);
    assert_eq!(
        change_reply(&with_own, &k.session, &k.subkey).unwrap().code,
        RESULT_SUCCESS
    );
    let soft = reply(&k.session, &k.subkey, None, &result(4, "Password too short\u{7}\n"), 7);
    let r = change_reply(&soft, &k.session, &k.subkey).unwrap();
    assert_eq!(r.code, 4);
    assert_eq!(r.text, "Password too short", "control characters are dropped");
    let e = result_error(&r);
    assert_eq!(e.code(), crate::kerberos::CODE_FAILED_PRECONDITION);
    assert!(e.message().contains("password policy"));
}

#[test]
fn forged_or_broken_replies_are_errors() {
    let k = keys();
    // A forger without the session key.
    let wrong = Key::new(18, &[0x44; 32]).unwrap();
    let forged = reply(&wrong, &k.subkey, None, &result(0, ""), 7);
    assert!(change_reply(&forged, &k.session, &k.subkey).is_err());
    // The right AP-REP with a KRB-PRIV under another key.
    let swapped = reply(&k.session, &wrong, None, &result(0, ""), 7);
    assert!(change_reply(&swapped, &k.session, &k.subkey).is_err());
    // Truncated, lengths that lie, garbage: errors, never panics.
    let ok = reply(&k.session, &k.subkey, None, &result(0, ""), 7);
    for cut in 0..ok.len() {
        assert!(change_reply(&ok[..cut], &k.session, &k.subkey).is_err());
    }
    let mut lying = ok.clone();
    lying[4] = 0xff;
    assert!(change_reply(&lying, &k.session, &k.subkey).is_err());
    let short = reply(&k.session, &k.subkey, None, &[0], 7);
    assert!(change_reply(&short, &k.session, &k.subkey).is_err());
}

#[test]
fn a_krb_error_reply_says_the_servers_result_or_its_kerberos_error() {
    let k = keys();
    let err = |e_data: Option<Vec<u8>>| {
        let e = KrbError {
            pvno: Integer::from(5),
            msg_type: Integer::from(30),
            ctime: None,
            cusec: None,
            stime: kt(1_000),
            susec: Integer::from(0),
            error_code: 60,
            crealm: None,
            cname: None,
            realm: gs("R.TEST"),
            sname: PrincipalName {
                r#type: 2,
                string: alloc::vec![gs("kadmin"), gs("changepw")],
            },
            e_text: None,
            e_data: e_data.map(OctetString::from),
        };
        frame(&[], &rasn::der::encode(&e).unwrap())
    };
    let r = change_reply(&err(Some(result(3, "Authentication error"))), &k.session, &k.subkey).unwrap();
    assert_eq!(r.code, 3);
    assert_eq!(result_error(&r).code(), crate::kerberos::CODE_UNAUTHENTICATED);
    // A KRB-ERROR cannot say the password was changed.
    assert!(change_reply(&err(Some(result(0, ""))), &k.session, &k.subkey).is_err());
    let e = change_reply(&err(None), &k.session, &k.subkey).unwrap_err();
    assert!(e.message().contains("KRB_ERR_GENERIC"));
}
