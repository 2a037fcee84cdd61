use super::*;

const OTHER: &str = "OTHER.TEST";
const OTHER_SALT: &str = "OTHER.TESTalice";

fn referral_to(from: &str, to: &str) -> Vec<u8> {
    fake_kdc::wrong_realm(from, to, 1_000)
}

/// The AS-REP of `realm`'s KDC for the request `r`, encrypted in the key of `salt`.
fn as_rep_of(realm: &str, r: &KerberosAsReply, tgt_key: &Key, salt: &str) -> Vec<u8> {
    let issue = Issue {
        realm,
        cname: &["alice"],
        sname: &["krbtgt", realm],
        nonce: nonce_of(r),
        session_key: tgt_key,
        now: 1_000,
        ticket_cipher_len: 300,
    };
    fake_kdc::as_rep(&issue, &user_key(salt))
}

#[test]
fn a_client_referral_sends_the_request_to_the_named_realm_whose_tgt_the_session_then_uses() {
    let (mut creds, mut st, mut rng) = setup();
    let first = step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
    assert!(first.kdc_realm.is_empty(), "the session's own realm first");
    let referred = step(&mut creds, &mut st, &mut rng, 1_000, referral_to(REALM, OTHER)).unwrap();
    assert_eq!(referred.kdc_realm, OTHER, "the proxy is told where to send it");
    let view = fake_kdc::parse_request(&referred.kdc_request).unwrap();
    assert_eq!(view.sname, ["krbtgt", OTHER], "the referred realm's TGT is asked for");
    assert!(view.enc_timestamp_etype.is_none(), "no preauthentication until that realm says its salt");
    let r = step(
        &mut creds,
        &mut st,
        &mut rng,
        1_000,
        fake_kdc::preauth_required(OTHER, 1_000, &[(18, OTHER_SALT, None)]),
    )
    .unwrap();
    assert_eq!(r.kdc_realm, OTHER);
    let tgt_key = Key::new(18, &[0x66; 32]).unwrap();
    let done = step(&mut creds, &mut st, &mut rng, 1_000, as_rep_of(OTHER, &r, &tgt_key, OTHER_SALT)).unwrap();
    assert!(done.kdc_request.is_empty() && done.kdc_realm.is_empty());
    assert_eq!(done.realm, OTHER);
    assert_eq!(creds.get(&H).unwrap().realm, OTHER, "renewals and TGS exchanges go to the account's realm");
    // The next exchange starts at the account's realm, with no referral.
    let renewal = step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
    assert!(renewal.kdc_realm.is_empty());
    assert_eq!(fake_kdc::parse_request(&renewal.kdc_request).unwrap().sname, ["krbtgt", OTHER]);
}

#[test]
fn referral_loops_unnamed_or_malformed_realms_and_too_many_hops_are_refused() {
    let refused = |replies: &[Vec<u8>]| {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let mut last = Ok(KerberosAsReply::default());
        for reply in replies {
            last = step(&mut creds, &mut st, &mut rng, 1_000, reply.clone());
            if last.is_err() {
                break;
            }
        }
        assert_eq!(creds.get(&H).unwrap().realm, REALM, "the session's realm is unchanged");
        last.unwrap_err()
    };
    let back = refused(&[referral_to(REALM, "B.TEST"), referral_to("B.TEST", REALM)]);
    assert_eq!(back.code(), CODE_FAILED_PRECONDITION);
    assert!(back.message().contains("referral loop"));
    let to_itself = refused(&[referral_to(REALM, "r.test")]);
    assert!(to_itself.message().contains("asked already"));
    let hops = [(REALM, "A.TEST"), ("A.TEST", "B.TEST"), ("B.TEST", "C.TEST"), ("C.TEST", "D.TEST")];
    let long = refused(&hops.map(|(from, to)| referral_to(from, to))).message();
    assert!(long.contains("more than 3 referrals"), "{long}");
    let hostile = refused(&[referral_to(REALM, "evil/../x")]);
    assert!(hostile.message().contains("not a realm name"));
    let unnamed = refused(&[fake_kdc::krb_error(REALM, 68, 1_000, None)]);
    assert!(unnamed.message().contains("names no realm"));
}

#[test]
fn an_as_rep_for_an_account_of_another_realm_than_asked_is_refused() {
    let (mut creds, mut st, mut rng) = setup();
    step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
    let r = step(
        &mut creds,
        &mut st,
        &mut rng,
        1_000,
        fake_kdc::preauth_required(REALM, 1_000, &[(18, SALT, None)]),
    )
    .unwrap();
    let tgt_key = Key::new(18, &[0x66; 32]).unwrap();
    let e = step(&mut creds, &mut st, &mut rng, 1_000, as_rep_of(OTHER, &r, &tgt_key, SALT)).unwrap_err();
    assert_eq!(e.code(), CODE_INVALID_ARGUMENT);
    assert_eq!(creds.get(&H).unwrap().realm, REALM);
}
