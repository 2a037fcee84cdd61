//! Kerberos messages (RFC 4120) in DER through `rasn-kerberos`, plus the one framing no ASN.1 crate
//! has: the RFC 2743 3.1 / RFC 4121 4.1 GSS-API initial context token around an AP-REQ.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::checks::{self, SpnForm};

use rasn::types::{BitString, GeneralString, Integer, OctetString};
use rasn_kerberos::{
    ApOptions, ApRep, ApReq, AsRep, AsReq, Authenticator, Checksum, EncApRepPart, EncAsRepPart, EncTgsRepPart,
    EncryptedData, EncryptionKey, EtypeInfo2Entry, KdcOptions, KdcRep, KdcReq, KdcReqBody, KerberosTime, KrbError,
    PaData, PaEncTsEnc, PrincipalName, TgsRep, TgsReq, Ticket,
};

use super::KerberosError;
use super::crypto::{self, Key};

/// KDC_ERR_KEY_EXPIRED: the client's password has expired.
pub const KDC_ERR_KEY_EXPIRED: i32 = 23;
/// KDC_ERR_PREAUTH_FAILED.
pub const KDC_ERR_PREAUTH_FAILED: i32 = 24;
/// KDC_ERR_PREAUTH_REQUIRED.
pub const KDC_ERR_PREAUTH_REQUIRED: i32 = 25;
/// KRB_AP_ERR_SKEW.
pub const KRB_AP_ERR_SKEW: i32 = 37;
/// KDC_ERR_WRONG_REALM: a client referral (RFC 6806 4), the account lives in the error's crealm.
pub const KDC_ERR_WRONG_REALM: i32 = 68;

pub(super) const PA_TGS_REQ: i32 = 1;
const PA_ENC_TIMESTAMP: i32 = 2;
const PA_ETYPE_INFO2: i32 = 19;
/// The canonicalize KDC option (RFC 6806 3).
const KDC_OPT_CANONICALIZE: usize = 15;
pub(super) const NT_PRINCIPAL: i32 = 1;
const NT_SRV_INST: i32 = 2;
const NT_SRV_HST: i32 = 3;
/// RFC 6806: a user principal name (`user@suffix`) as one component, for the KDC to map.
const NT_ENTERPRISE: i32 = 10;

/// The client of an AS exchange.
pub struct Client<'a> {
    /// User name (may contain `/` components).
    pub user: &'a str,
    /// Realm.
    pub realm: &'a str,
    /// `user` is an enterprise name (`user@suffix`, one `NT-ENTERPRISE` component).
    pub enterprise: bool,
}

/// One ETYPE-INFO2 entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtypeInfo {
    /// Enctype.
    pub etype: i32,
    /// Salt (None: the default salt).
    pub salt: Option<Vec<u8>>,
    /// String-to-key parameters.
    pub s2kparams: Option<Vec<u8>>,
}

/// The parts of a KRB-ERROR the enclave acts on.
#[derive(Default)]
pub struct KrbErr {
    /// error-code.
    pub code: i32,
    /// The KDC's time, Unix seconds.
    pub stime: i64,
    /// e-data.
    pub e_data: Option<Vec<u8>>,
    /// e-text, what the KDC says in words: kept only as printable ASCII, at most
    /// [`MAX_E_TEXT`] bytes (it goes into an error message).
    pub e_text: Option<String>,
    /// crealm: in a KDC_ERR_WRONG_REALM (a client referral, RFC 6806 4), the realm to ask
    /// instead (as the KDC wrote it, unchecked).
    pub crealm: Option<String>,
}

/// The longest e-text kept from a KRB-ERROR.
pub const MAX_E_TEXT: usize = 120;

/// A KDC's e-text as it may appear in a message: printable ASCII only (anything else, and
/// anything past [`MAX_E_TEXT`], is dropped), `None` when nothing is left.
fn printable_e_text(text: &[u8]) -> Option<String> {
    let kept: String = text
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(MAX_E_TEXT)
        .map(|b| char::from(*b))
        .collect();
    let kept = String::from(kept.trim());
    (!kept.is_empty()).then_some(kept)
}

/// The parts of an AS-REP or TGS-REP.
pub struct RepParts {
    /// TGS-REP (else AS-REP).
    pub tgs: bool,
    /// Client realm.
    pub crealm: String,
    /// Client name, components joined by `/`.
    pub cname: String,
    /// Client name as sent.
    pub cname_pn: PrincipalName,
    /// The ticket, DER.
    pub ticket: Vec<u8>,
    /// The server the ticket itself names (its clear-text `sname`).
    pub ticket_sname: PrincipalName,
    /// The ticket's clear-text realm (the issuing KDC's).
    pub ticket_realm: String,
    /// Enctype of the encrypted part.
    pub enc_etype: i32,
    /// The encrypted part.
    pub enc_cipher: Vec<u8>,
    /// ETYPE-INFO2 of the reply's padata (a KDC that did not require preauthentication still
    /// tells the salt this way).
    pub etype_info: Vec<EtypeInfo>,
    /// The PA-FX-FAST of the reply's padata (an armored reply, RFC 6113), for [`super::fast`].
    pub fast: Option<Vec<u8>>,
}

/// A KDC's reply.
pub enum KdcReply {
    /// KRB-ERROR.
    Error(KrbErr),
    /// AS-REP or TGS-REP.
    Rep(RepParts),
}

/// Facts about a ticket from the decrypted reply part.
#[derive(Clone)]
pub struct TicketInfo {
    /// authtime.
    pub auth_time: i64,
    /// starttime (authtime when absent).
    pub start_time: i64,
    /// endtime.
    pub end_time: i64,
    /// renew-till (0 when absent).
    pub renew_till: i64,
    /// Ticket flags, bit 0 most significant.
    pub flags: u32,
    /// The client (filled from the KDC-REP, not the encrypted part).
    pub client: PrincipalName,
    /// Server name, components joined by `/`.
    pub server: String,
    /// Server name as the KDC put it in the encrypted part.
    pub server_pn: PrincipalName,
    /// Server realm.
    pub server_realm: String,
}

/// Whether `p` names a ticket-granting service (`krbtgt/...`, in any case): a ticket for it is a
/// TGT, which never leaves the enclave.
pub fn is_tgs_principal(p: &PrincipalName) -> bool {
    p.string
        .first()
        .is_some_and(|c| c.as_bytes().eq_ignore_ascii_case(b"krbtgt"))
}

/// Whether `a` and `b` have the same components (ASCII case folded: KDCs may normalise the case
/// of a host name). The name type is not compared: KDCs answer NT-SRV-HST requests as
/// NT-SRV-INST.
pub fn same_principal(a: &PrincipalName, b: &PrincipalName) -> bool {
    a.string.len() == b.string.len()
        && a.string
            .iter()
            .zip(&b.string)
            .all(|(x, y)| x.as_bytes().eq_ignore_ascii_case(y.as_bytes()))
}

/// `p`'s components joined by `/` (for messages).
pub fn principal_text(p: &PrincipalName) -> String {
    join(p)
}

pub(super) fn bad(what: &str) -> KerberosError {
    KerberosError::InvalidArgument(format!("malformed {what} from the KDC"))
}

pub(super) fn encode_err(_: rasn::error::EncodeError) -> KerberosError {
    KerberosError::Internal("DER encoding failed".into())
}

pub(super) fn kstring(s: &str) -> Result<GeneralString, KerberosError> {
    GeneralString::from_bytes(s.as_bytes())
        .map_err(|_| KerberosError::InvalidArgument("a name has characters Kerberos cannot carry".into()))
}

pub(super) fn time(unix: i64) -> Result<KerberosTime, KerberosError> {
    let t = chrono::DateTime::from_timestamp(unix, 0)
        .ok_or_else(|| KerberosError::InvalidArgument("time out of range".into()))?;
    Ok(KerberosTime(t.fixed_offset()))
}

fn unix(t: &KerberosTime) -> i64 {
    t.0.timestamp()
}

pub(super) fn flags32(set: &[usize]) -> BitString {
    let mut b = BitString::repeat(false, 32);
    for &i in set {
        b.set(i, true);
    }
    b
}

fn flags_u32(b: &BitString) -> u32 {
    b.iter()
        .take(32)
        .enumerate()
        .fold(0u32, |acc, (i, bit)| if *bit { acc | (1 << (31 - i)) } else { acc })
}

fn join(p: &PrincipalName) -> String {
    let parts: Vec<String> = p
        .string
        .iter()
        .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned())
        .collect();
    parts.join("/")
}

fn principal(ty: i32, name: &str) -> Result<PrincipalName, KerberosError> {
    let string = name.split('/').map(kstring).collect::<Result<Vec<_>, _>>()?;
    Ok(PrincipalName { r#type: ty, string })
}

/// The default salt: the realm, then the name's components (RFC 4120 4).
pub fn default_salt(c: &Client<'_>) -> Vec<u8> {
    let mut s = Vec::from(c.realm.as_bytes());
    for part in c.user.split('/') {
        s.extend_from_slice(part.as_bytes());
    }
    s
}

/// An SPN, `service/host[@REALM]` or `service@host` (checked as the proxy checks it), as a
/// principal name, and the realm it names, if any. A name without a realm is
/// host-based (NT-SRV-HST), as MIT's clients send it: a KDC maps the host to its realm and answers
/// with a referral when that is another realm (MIT refers only NT-SRV-HST names). With an
/// explicit realm it is NT-SRV-INST: the realm is given, nothing is to be mapped.
pub fn parse_spn_realm(spn: &str) -> Result<(PrincipalName, Option<String>), KerberosError> {
    let spn = checks::spn(spn)?;
    let name = PrincipalName {
        r#type: match (spn.form, spn.realm) {
            (SpnForm::Instance, Some(_)) => NT_SRV_INST,
            (SpnForm::Instance, None) | (SpnForm::Host, _) => NT_SRV_HST,
        },
        string: alloc::vec![kstring(spn.service)?, kstring(spn.host)?],
    };
    Ok((name, spn.realm.map(String::from)))
}

/// `krbtgt/REALM`: the ticket-granting service of `realm`, whose ticket a KDC gives for
/// another realm (a cross-realm TGT).
pub fn tgs_principal(realm: &str) -> Result<PrincipalName, KerberosError> {
    Ok(PrincipalName {
        r#type: NT_SRV_INST,
        string: alloc::vec![kstring("krbtgt")?, kstring(realm)?],
    })
}

/// The realm a `krbtgt/REALM` principal names (its second component), if it is one.
pub fn tgs_realm(p: &PrincipalName) -> Option<String> {
    if !is_tgs_principal(p) || p.string.len() != 2 {
        return None;
    }
    core::str::from_utf8(p.string[1].as_bytes()).ok().map(String::from)
}

/// An AS-REQ for `service` (the krbtgt of the client's realm, or `kadmin/changepw`), with
/// PA-ENC-TIMESTAMP under `preauth`'s key.
pub fn as_req(
    c: &Client<'_>,
    service: &[&str],
    preauth: Option<(&Key, [u8; 16])>,
    now: i64,
    nonce: u32,
    allow_rc4: bool,
) -> Result<Vec<u8>, KerberosError> {
    let mut padata = Vec::new();
    let etype = match preauth {
        Some((key, conf)) => {
            let ts = PaEncTsEnc {
                patimestamp: time(now)?,
                pausec: Some(Integer::from(0)),
            };
            let plain = rasn::der::encode(&ts).map_err(encode_err)?;
            // Key usage 1: PA-ENC-TIMESTAMP.
            let cipher = crypto::encrypt(key, 1, &plain, &conf)?;
            let enc = EncryptedData {
                etype: key.enctype,
                kvno: None,
                cipher: OctetString::from(cipher),
            };
            padata.push(PaData {
                r#type: PA_ENC_TIMESTAMP,
                value: OctetString::from(rasn::der::encode(&enc).map_err(encode_err)?),
            });
            alloc::vec![key.enctype]
        }
        None => crypto::preferred_enctypes(allow_rc4),
    };
    let cname = if c.enterprise {
        PrincipalName {
            r#type: NT_ENTERPRISE,
            string: alloc::vec![kstring(c.user)?],
        }
    } else {
        principal(NT_PRINCIPAL, c.user)?
    };
    let body = KdcReqBody {
        // canonicalize (15, RFC 6806): the KDC answers with the account's canonical name (an
        // enterprise name needs it; for any other it gives the name's canonical case);
        // renewable-ok (27): a renewable TGT if the KDC allows it.
        kdc_options: KdcOptions(flags32(&[15, 27])),
        cname: Some(cname),
        realm: kstring(c.realm)?,
        sname: Some(PrincipalName {
            r#type: NT_SRV_INST,
            string: service.iter().map(|s| kstring(s)).collect::<Result<Vec<_>, _>>()?,
        }),
        from: None,
        till: time(now.saturating_add(24 * 3600))?,
        rtime: None,
        nonce,
        etype,
        addresses: None,
        enc_authorization_data: None,
        additional_tickets: None,
    };
    let req = AsReq(KdcReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(10),
        padata: if padata.is_empty() { None } else { Some(padata) },
        req_body: body,
    });
    rasn::der::encode(&req).map_err(encode_err)
}

/// Decodes a KDC's reply: KRB-ERROR, AS-REP or TGS-REP.
pub fn parse_kdc_reply(bytes: &[u8]) -> Result<KdcReply, KerberosError> {
    match bytes.first() {
        Some(0x7e) => {
            let e: KrbError = rasn::der::decode(bytes).map_err(|_| bad("KRB-ERROR"))?;
            Ok(KdcReply::Error(KrbErr {
                code: e.error_code,
                stime: unix(&e.stime),
                e_data: e.e_data.map(|d| d.to_vec()),
                e_text: e.e_text.and_then(|t| printable_e_text(t.as_bytes())),
                crealm: e.crealm.map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned()),
            }))
        }
        Some(0x6b) => {
            let r: AsRep = rasn::der::decode(bytes).map_err(|_| bad("AS-REP"))?;
            rep_parts(r.0, false)
        }
        Some(0x6d) => {
            let r: TgsRep = rasn::der::decode(bytes).map_err(|_| bad("TGS-REP"))?;
            rep_parts(r.0, true)
        }
        _ => Err(KerberosError::InvalidArgument(
            "the KDC's reply is not a KRB-ERROR, AS-REP or TGS-REP".into(),
        )),
    }
}

fn rep_parts(r: KdcRep, tgs: bool) -> Result<KdcReply, KerberosError> {
    let etype_info = match r
        .padata
        .as_ref()
        .and_then(|p| p.iter().find(|p| p.r#type == PA_ETYPE_INFO2))
    {
        Some(pa) => decode_etype_info2(&pa.value)?,
        None => Vec::new(),
    };
    let fast = r
        .padata
        .as_ref()
        .and_then(|p| p.iter().find(|p| p.r#type == super::fast::PA_FX_FAST))
        .map(|p| p.value.to_vec());
    Ok(KdcReply::Rep(RepParts {
        etype_info,
        fast,
        tgs,
        crealm: String::from_utf8_lossy(r.crealm.as_bytes()).into_owned(),
        cname: join(&r.cname),
        cname_pn: r.cname,
        ticket: rasn::der::encode(&r.ticket).map_err(encode_err)?,
        ticket_realm: String::from_utf8_lossy(r.ticket.realm.as_bytes()).into_owned(),
        ticket_sname: r.ticket.sname,
        enc_etype: r.enc_part.etype,
        enc_cipher: r.enc_part.cipher.to_vec(),
    }))
}

/// PA-PW-SALT: where Active Directory (and Samba) put the NTSTATUS of a refusal (MS-KILE 3.3.5.5).
const PA_PW_SALT: i32 = 3;

/// The NTSTATUS an Active Directory KDC gives with an error (the account disabled, locked out,
/// expired...), when its e-data carries one: a PA-PW-SALT of 12 bytes, the status first, little
/// endian. `None` for any other e-data (MIT's KDC sends none).
pub fn nt_status(e: &KrbErr) -> Option<u32> {
    let method_data: Vec<PaData> = rasn::der::decode(e.e_data.as_deref()?).ok()?;
    let pa = method_data.iter().find(|p| p.r#type == PA_PW_SALT)?;
    let status: [u8; 4] = pa.value.get(..4)?.try_into().ok()?;
    (pa.value.len() == 12).then(|| u32::from_le_bytes(status))
}

/// The ETYPE-INFO2 of a PREAUTH_REQUIRED error.
pub fn etype_info2(e: &KrbErr) -> Result<Vec<EtypeInfo>, KerberosError> {
    let data = e.e_data.as_deref().ok_or_else(|| bad("PREAUTH_REQUIRED (no e-data)"))?;
    let method_data: Vec<PaData> = rasn::der::decode(data).map_err(|_| bad("METHOD-DATA"))?;
    // No ETYPE-INFO2: the principal has no key in any enctype the request offered.
    match method_data.iter().find(|p| p.r#type == PA_ETYPE_INFO2) {
        Some(pa) => decode_etype_info2(&pa.value),
        None => Ok(Vec::new()),
    }
}

fn decode_etype_info2(value: &[u8]) -> Result<Vec<EtypeInfo>, KerberosError> {
    let entries: Vec<EtypeInfo2Entry> = rasn::der::decode(value).map_err(|_| bad("ETYPE-INFO2"))?;
    Ok(entries
        .into_iter()
        .map(|e| EtypeInfo {
            etype: e.etype,
            salt: e.salt.map(|s| s.as_bytes().to_vec()),
            s2kparams: e.s2kparams.map(|p| p.to_vec()),
        })
        .collect())
}

/// Decodes a decrypted EncASRepPart or EncTGSRepPart (MIT sends 26 for both), checks the nonce,
/// and returns the session key and the ticket's facts.
pub fn enc_kdc_rep_part(plain: &[u8], nonce: u32) -> Result<(Key, TicketInfo), KerberosError> {
    let part = match plain.first() {
        Some(0x79) => rasn::der::decode::<EncAsRepPart>(plain).map(|p| p.0),
        Some(0x7a) => rasn::der::decode::<EncTgsRepPart>(plain).map(|p| p.0),
        _ => return Err(bad("encrypted reply part")),
    }
    .map_err(|_| bad("encrypted reply part"))?;
    if part.nonce != nonce {
        return Err(KerberosError::InvalidArgument(
            "the KDC's reply does not answer this request (nonce mismatch)".into(),
        ));
    }
    let key = Key::new(part.key.r#type, &part.key.value)?;
    let auth_time = unix(&part.auth_time);
    let info = TicketInfo {
        auth_time,
        start_time: part.start_time.as_ref().map_or(auth_time, unix),
        end_time: unix(&part.end_time),
        renew_till: part.renew_till.as_ref().map_or(0, unix),
        flags: flags_u32(&part.flags.0),
        client: PrincipalName {
            r#type: NT_PRINCIPAL,
            string: Vec::new(),
        },
        server: join(&part.sname),
        server_pn: part.sname,
        server_realm: String::from_utf8_lossy(part.srealm.as_bytes()).into_owned(),
    };
    Ok((key, info))
}

pub(super) fn authenticator(
    crealm: &str,
    cname: &PrincipalName,
    cksum: Checksum,
    now: i64,
    extra: Option<&ApAuth<'_>>,
) -> Result<Authenticator, KerberosError> {
    Ok(Authenticator {
        authenticator_vno: Integer::from(5),
        crealm: kstring(crealm)?,
        cname: cname.clone(),
        cksum: Some(cksum),
        cusec: Integer::from(extra.map_or(0, |a| a.cusec)),
        ctime: time(now)?,
        subkey: extra.map(|a| EncryptionKey {
            r#type: a.subkey.enctype,
            value: OctetString::from(a.subkey.value.to_vec()),
        }),
        seq_number: extra.map(|a| a.seq),
        authorization_data: None,
    })
}

/// A TGS-REQ for `sname` to the KDC of `realm`, with the TGT `tgt` (DER) and its session key.
/// The authenticator names the client in `crealm` (a cross-realm TGT's ticket names the realm
/// that issued it, not the client's); `None`: the TGT's own realm (the session's TGT).
#[allow(clippy::too_many_arguments)]
pub fn tgs_req(
    realm: &str,
    crealm: Option<&str>,
    cname: &PrincipalName,
    tgt: &[u8],
    tgt_key: &Key,
    sname: &PrincipalName,
    till: i64,
    now: i64,
    nonce: u32,
    allow_rc4: bool,
    conf: [u8; 16],
) -> Result<Vec<u8>, KerberosError> {
    let ticket: Ticket =
        rasn::der::decode(tgt).map_err(|_| KerberosError::Internal("stored TGT does not decode".into()))?;
    let crealm = crealm.map_or_else(
        || String::from_utf8_lossy(ticket.realm.as_bytes()).into_owned(),
        String::from,
    );
    let body = KdcReqBody {
        // No forwardable, no forwarded: delegation is never asked for. Canonicalize (bit 15,
        // RFC 6806): the KDC may answer with a referral to the service's realm.
        kdc_options: KdcOptions(flags32(&[KDC_OPT_CANONICALIZE])),
        cname: None,
        realm: kstring(realm)?,
        sname: Some(sname.clone()),
        from: None,
        till: time(till)?,
        rtime: None,
        nonce,
        etype: crypto::preferred_enctypes(allow_rc4),
        addresses: None,
        enc_authorization_data: None,
        additional_tickets: None,
    };
    // The checksum covers the DER of KDC-REQ-BODY itself, without the [4] tag around it (MIT
    // answers KRB_AP_ERR_BAD_INTEGRITY otherwise). Key usage 6.
    let body_der = rasn::der::encode(&body).map_err(encode_err)?;
    let cksum = Checksum {
        r#type: crypto::checksum_type(tgt_key.enctype)?,
        checksum: OctetString::from(crypto::checksum(tgt_key, 6, &body_der)?),
    };
    let auth = authenticator(&crealm, cname, cksum, now, None)?;
    let auth_der = rasn::der::encode(&auth).map_err(encode_err)?;
    // Key usage 7: TGS-REQ PA-TGS-REQ authenticator.
    let enc = crypto::encrypt(tgt_key, 7, &auth_der, &conf)?;
    let ap = ApReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(14),
        ap_options: ApOptions(flags32(&[])),
        ticket,
        authenticator: EncryptedData {
            etype: tgt_key.enctype,
            kvno: None,
            cipher: OctetString::from(enc),
        },
    };
    let pa = PaData {
        r#type: PA_TGS_REQ,
        value: OctetString::from(rasn::der::encode(&ap).map_err(encode_err)?),
    };
    let req = TgsReq(KdcReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(12),
        padata: Some(alloc::vec![pa]),
        req_body: body,
    });
    rasn::der::encode(&req).map_err(encode_err)
}

/// GSS_C_MUTUAL_FLAG.
const GSS_MUTUAL: u32 = 2;
/// GSS_C_CONF_FLAG | GSS_C_INTEG_FLAG.
const GSS_CONF_INTEG: u32 = 16 | 32;

/// What an AP-REQ's authenticator carries besides its checksum, and what goes into that.
pub struct ApAuth<'a> {
    /// Ask for mutual authentication (GSS_C_MUTUAL_FLAG and the AP option mutual-required).
    pub mutual: bool,
    /// gss_channel_bindings_struct, if the caller gave one.
    pub channel_bindings: Option<&'a [u8]>,
    /// The initiator subkey (fresh, random, of the session key's enctype).
    pub subkey: &'a Key,
    /// The initiator's sequence number.
    pub seq: u32,
    /// Microseconds of ctime (random: with ctime it names this AP-REQ in the AP-REP).
    pub cusec: u32,
}

/// The RFC 4121 4.1.1 authenticator checksum (type 0x8003): Lgth = 16, Bnd = MD5 of the
/// flattened channel bindings (RFC 4121 4.1.1.2; 16 zero bytes without), Flags, little-endian.
/// The delegation flag is never set, so no Dlgth/Deleg follows.
pub fn gss_checksum(mutual: bool, channel_bindings: Option<&[u8]>) -> Vec<u8> {
    use md5::{Digest, Md5};
    let flags = GSS_CONF_INTEG | if mutual { GSS_MUTUAL } else { 0 };
    let bnd: [u8; 16] = match channel_bindings {
        Some(cb) if !cb.is_empty() => Md5::digest(cb).into(),
        _ => [0; 16],
    };
    let mut value = Vec::with_capacity(24);
    value.extend_from_slice(&16u32.to_le_bytes());
    value.extend_from_slice(&bnd);
    value.extend_from_slice(&flags.to_le_bytes());
    value
}

/// An AP-REQ for the service ticket `ticket` (DER), with the RFC 4121 0x8003 checksum, a subkey
/// and a sequence number. The delegation flag is never set, and no KRB-CRED is ever attached.
pub fn ap_req(
    crealm: &str,
    cname: &PrincipalName,
    ticket: &[u8],
    session_key: &Key,
    now: i64,
    auth: &ApAuth<'_>,
    conf: [u8; 16],
) -> Result<Vec<u8>, KerberosError> {
    let ticket: Ticket = rasn::der::decode(ticket).map_err(|_| bad("service ticket"))?;
    let cksum = Checksum {
        r#type: 0x8003,
        checksum: OctetString::from(gss_checksum(auth.mutual, auth.channel_bindings)),
    };
    let auth_der = rasn::der::encode(&authenticator(crealm, cname, cksum, now, Some(auth))?).map_err(encode_err)?;
    // Key usage 11: AP-REQ authenticator.
    let enc = crypto::encrypt(session_key, 11, &auth_der, &conf)?;
    let ap = ApReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(14),
        // mutual-required (bit 2) when mutual authentication is asked.
        ap_options: ApOptions(flags32(if auth.mutual { &[2] } else { &[] })),
        ticket,
        authenticator: EncryptedData {
            etype: session_key.enctype,
            kvno: None,
            cipher: OctetString::from(enc),
        },
    };
    rasn::der::encode(&ap).map_err(encode_err)
}

/// What an AP-REP's encrypted part says.
pub struct ApRepParts {
    /// ctime, Unix seconds.
    pub ctime: i64,
    /// cusec.
    pub cusec: u32,
    /// The acceptor subkey, if any.
    pub subkey: Option<(i32, zeroize::Zeroizing<Vec<u8>>)>,
    /// The acceptor's sequence number, if any.
    pub seq: Option<u32>,
}

/// An AP-REP, raw (DER), in its RFC 4121 token (`[APPLICATION 0]`, the Kerberos OID, TOK_ID
/// 02 00), or either as the responseToken of an SPNEGO negTokenResp: its enc-part's enctype and
/// ciphertext.
pub fn parse_ap_rep(bytes: &[u8]) -> Result<(i32, Vec<u8>), KerberosError> {
    if bytes.first() == Some(&0xa1) {
        let inner = spnego_response_token(bytes)?;
        if inner.first() == Some(&0xa1) {
            return Err(bad("SPNEGO token (nested)"));
        }
        return parse_ap_rep(&inner);
    }
    let der = if bytes.first() == Some(&0x60) {
        unwrap_gss(bytes, [0x02, 0x00])?
    } else {
        bytes
    };
    let rep: ApRep = rasn::der::decode(der).map_err(|_| bad("AP-REP"))?;
    if rep.msg_type != Integer::from(15) || rep.pvno != Integer::from(5) {
        return Err(bad("AP-REP"));
    }
    Ok((rep.enc_part.etype, rep.enc_part.cipher.to_vec()))
}

/// The responseToken of an SPNEGO negTokenResp (what an HTTP server sends back in
/// `WWW-Authenticate: Negotiate`), unless the acceptor rejected the context.
fn spnego_response_token(bytes: &[u8]) -> Result<Vec<u8>, KerberosError> {
    let spnego::AcceptorToken::Resp(resp) = rasn::der::decode(bytes).map_err(|_| bad("SPNEGO negTokenResp"))?;
    let kerberos = |m: &rasn::types::ObjectIdentifier| {
        let arcs: &[u32] = m;
        arcs == [1, 2, 840, 113_554, 1, 2, 2] || arcs == [1, 2, 840, 48_018, 1, 2, 2]
    };
    if resp.supported_mech.as_ref().is_some_and(|m| !kerberos(m)) {
        return Err(bad(
            "SPNEGO negTokenResp (the service chose another mechanism than Kerberos)",
        ));
    }
    if resp.neg_state == Some(spnego::NegState::Reject) {
        return Err(KerberosError::Unauthenticated(
            "the service rejected the context (SPNEGO negState reject)".into(),
        ));
    }
    resp.response_token
        .map(|t| t.to_vec())
        .ok_or_else(|| bad("SPNEGO negTokenResp without a responseToken"))
}

/// The inner token of an RFC 2743 3.1 framed Kerberos token with `tok_id` (hand-written, as
/// [`gss_initial_token`]: the framing is not an ASN.1 type).
fn unwrap_gss(bytes: &[u8], tok_id: [u8; 2]) -> Result<&[u8], KerberosError> {
    let not_krb5 = || bad("GSS-API token (not a Kerberos AP-REP token)");
    let (len, rest) = read_der_len(bytes.get(1..).ok_or_else(not_krb5)?).ok_or_else(not_krb5)?;
    if rest.len() != len {
        return Err(not_krb5());
    }
    let rest = rest.strip_prefix(&KRB5_OID[..]).ok_or_else(not_krb5)?;
    rest.strip_prefix(&tok_id[..]).ok_or_else(not_krb5)
}

/// A DER length and what follows it.
fn read_der_len(b: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = b.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 || rest.len() < n {
        return None;
    }
    let len = rest[..n].iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    Some((len, &rest[n..]))
}

/// The decrypted EncAPRepPart.
pub fn enc_ap_rep_part(plain: &[u8]) -> Result<ApRepParts, KerberosError> {
    let part: EncApRepPart = rasn::der::decode(plain).map_err(|_| bad("EncAPRepPart"))?;
    let cusec = u32::try_from(&part.cusec).map_err(|_| bad("EncAPRepPart cusec"))?;
    Ok(ApRepParts {
        ctime: unix(&part.ctime),
        cusec,
        subkey: part
            .subkey
            .map(|k| (k.r#type, zeroize::Zeroizing::new(k.value.to_vec()))),
        seq: part.seq_number,
    })
}

/// The Kerberos v5 mechanism OID 1.2.840.113554.1.2.2, DER.
const KRB5_OID: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];

/// The GSS-API initial context token: `[APPLICATION 0]` around the mechanism OID, TOK_ID 01 00
/// and the AP-REQ. Hand-written: the inner part is not an ASN.1 type (RFC 2743 3.1).
pub fn gss_initial_token(ap_req: &[u8]) -> Vec<u8> {
    gss_frame(&KRB5_OID, &[&[0x01, 0x00], ap_req])
}

/// `[APPLICATION 0]` around the DER of `oid` and `parts` (RFC 2743 3.1).
fn gss_frame(oid: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let inner_len = oid.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(inner_len + 6);
    out.push(0x60);
    der_len(inner_len, &mut out);
    out.extend_from_slice(oid);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// The SPNEGO mechanism OID 1.3.6.1.5.5.2, DER.
const SPNEGO_OID: [u8; 8] = [0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];

/// The RFC 4178 types, derived with rasn (its derive expects its prelude in scope).
mod spnego {
    use alloc::vec::Vec;
    use rasn::prelude::*;

    /// RFC 4178 4.2.1 NegTokenInit (the fields credguard sends).
    #[derive(AsnType, Encode)]
    pub struct NegTokenInit {
        #[rasn(tag(explicit(0)))]
        pub mech_types: Vec<ObjectIdentifier>,
        #[rasn(tag(explicit(2)))]
        pub mech_token: OctetString,
    }

    /// RFC 4178 4.2.2 NegState.
    #[derive(AsnType, Decode, Clone, Copy, Debug, PartialEq, Eq)]
    #[rasn(enumerated)]
    pub enum NegState {
        /// accept-completed.
        AcceptCompleted = 0,
        /// accept-incomplete.
        AcceptIncomplete = 1,
        /// reject.
        Reject = 2,
        /// request-mic.
        RequestMic = 3,
    }

    /// RFC 4178 4.2.2 NegTokenResp: what an acceptor answers.
    #[derive(AsnType, Decode)]
    pub struct NegTokenResp {
        #[rasn(tag(explicit(0)))]
        pub neg_state: Option<NegState>,
        #[rasn(tag(explicit(1)))]
        pub supported_mech: Option<ObjectIdentifier>,
        #[rasn(tag(explicit(2)))]
        pub response_token: Option<OctetString>,
        /// Decoded so that a token carrying one parses; it is a GSS MIC under the context's key,
        /// the caller's to check (it holds the subkeys).
        #[allow(dead_code)]
        #[rasn(tag(explicit(3)))]
        pub mech_list_mic: Option<OctetString>,
    }

    /// A NegotiationToken as an acceptor sends it (only the negTokenResp choice decodes).
    #[derive(AsnType, Decode)]
    #[rasn(choice)]
    pub enum AcceptorToken {
        /// negTokenResp.
        #[rasn(tag(explicit(1)))]
        Resp(NegTokenResp),
    }

    /// RFC 4178 4.2 NegotiationToken, of which an initiator's first is the negTokenInit.
    #[derive(AsnType, Encode)]
    #[rasn(choice)]
    pub enum NegotiationToken {
        /// negTokenInit.
        #[rasn(tag(explicit(0)))]
        Init(NegTokenInit),
    }
}

/// The SPNEGO initial token for HTTP `Negotiate` (RFC 4559): a NegTokenInit offering Kerberos
/// (RFC 4121's OID, then Microsoft's 1.2.840.48018.1.2.2, which Windows servers also accept)
/// with the Kerberos initial context token `gss_token` as its optimistic mechToken.
pub fn spnego_init_token(gss_token: &[u8]) -> Result<Vec<u8>, KerberosError> {
    let oid = |arcs: &[u32]| {
        rasn::types::ObjectIdentifier::new(arcs.to_vec())
            .ok_or_else(|| KerberosError::Internal("bad object identifier".into()))
    };
    let token = spnego::NegotiationToken::Init(spnego::NegTokenInit {
        mech_types: alloc::vec![
            oid(&[1, 2, 840, 113_554, 1, 2, 2])?,
            oid(&[1, 2, 840, 48_018, 1, 2, 2])?
        ],
        mech_token: OctetString::from(gss_token.to_vec()),
    });
    let der = rasn::der::encode(&token).map_err(encode_err)?;
    Ok(gss_frame(&SPNEGO_OID, &[&der]))
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (8 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// The RFC 4120 name of a KDC error code.
pub fn error_name(code: i32) -> &'static str {
    match code {
        6 => "KDC_ERR_C_PRINCIPAL_UNKNOWN",
        7 => "KDC_ERR_S_PRINCIPAL_UNKNOWN",
        12 => "KDC_ERR_POLICY",
        14 => "KDC_ERR_ETYPE_NOSUPP",
        18 => "KDC_ERR_CLIENT_REVOKED",
        23 => "KDC_ERR_KEY_EXPIRED",
        24 => "KDC_ERR_PREAUTH_FAILED",
        25 => "KDC_ERR_PREAUTH_REQUIRED",
        31 => "KRB_AP_ERR_BAD_INTEGRITY",
        32 => "KRB_AP_ERR_TKT_EXPIRED",
        37 => "KRB_AP_ERR_SKEW",
        41 => "KRB_AP_ERR_MODIFIED",
        52 => "KRB_ERR_RESPONSE_TOO_BIG",
        60 => "KRB_ERR_GENERIC",
        KDC_ERR_WRONG_REALM => "KDC_ERR_WRONG_REALM",
        _ => "unknown",
    }
}
