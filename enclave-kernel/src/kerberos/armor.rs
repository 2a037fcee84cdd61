//! FAST armoring of the AS exchange with the realm's machine account (see [`super::fast`]).
//!
//! A machine account is a root session logged on with the host keytab's key and
//! `machine_account` set: its TGT is got here, in the middle of another session's AS exchange
//! when it has none fresh (one more round trip through the proxy), and kept in its own session
//! state. It is used only as the armor ticket: the machine key, the TGT, its session key and the
//! armor key never leave the enclave. The TGS exchange stays unarmored (RFC 6113 allows it; the
//! TGT's session key already protects it).

use alloc::format;
use alloc::string::String;

use credguard_proto::attest::Owner;
use rand_core::TryCryptoRng;

use super::crypto::Key;
use super::fast::{self, Armor, FastMode};
use super::messages::{self, KdcReply};
use super::{
    AsService, KerberosAsReply, KerberosError, KerberosSessions, LogonCredential, PendingAs, Tgt, as_request,
    confounder, fresh, kdc_error, random_key, random_u32, usable_key,
};
use crate::credentials::{CredentialStore, SessionHandle};

/// Where an AS exchange stands as to FAST.
#[derive(Default)]
pub(super) enum FastPhase {
    /// The request out is not armored.
    #[default]
    Plain,
    /// The request out is the machine account's AS-REQ (with this nonce) for the armor TGT; the
    /// session's armored request follows its reply.
    MachineTgt(u32),
    /// The request out is armored with this armor.
    Armored(Armor),
}

/// A realm's machine account, as an AS exchange of another session uses it.
pub(super) struct MachineAccount {
    /// Its session.
    pub handle: SessionHandle,
    /// Its owner (root).
    pub owner: Owner,
    /// Its principal name (`host/fqdn` or `NAME$`).
    pub user: String,
    /// Its realm.
    pub realm: String,
    /// Its key (from the host keytab).
    pub key: Key,
    /// Its TGT, if one is held and fresh.
    pub tgt: Option<Tgt>,
}

impl KerberosSessions {
    /// Registers `handle` as the machine account of `realm` (replacing an earlier one).
    pub fn set_machine_account(&mut self, realm: &str, handle: SessionHandle) {
        self.machines.insert(realm.to_ascii_uppercase(), handle);
    }
}

/// The machine account of `realm`, unless there is none or it is `asking` itself (its own AS
/// exchange is never armored).
pub(super) fn machine_account(
    creds: &CredentialStore,
    state: &KerberosSessions,
    realm: &str,
    asking: SessionHandle,
    now: i64,
) -> Option<MachineAccount> {
    let handle = *state.machines.get(&realm.to_ascii_uppercase())?;
    if handle == asking {
        return None;
    }
    let cred = creds.get(&handle)?;
    let key = usable_key(&cred.keys, cred.allow_rc4)?;
    let tgt = state
        .sessions
        .get(&handle)
        .and_then(|s| s.tgt.as_ref())
        .filter(|t| fresh(&t.info, now))
        .map(Tgt::duplicate);
    Some(MachineAccount {
        handle,
        owner: cred.owner,
        user: cred.user.clone(),
        realm: cred.realm.clone(),
        key,
        tgt,
    })
}

/// Whether the next request of `pending` (to `realm`) is armored: under "require" always, under
/// "if-offered" once armored or once the KDC offers FAST (`offer`), never under "off".
pub(super) fn wants_armor(pending: &PendingAs, offer: bool) -> bool {
    match pending.mode {
        FastMode::Off => false,
        FastMode::Require => true,
        FastMode::IfOffered => offer || matches!(pending.fast, FastPhase::Armored(_)),
    }
}

/// The request for `pending` (whose realm is `realm`), armored with `machine`: at once if its TGT
/// is fresh, else after the machine account's own AS exchange (whose request goes out first).
/// No machine account for the realm: an error (never an unarmored request instead).
pub(super) fn send<R: TryCryptoRng>(
    cred: &LogonCredential,
    pending: &mut PendingAs,
    machine: Option<&MachineAccount>,
    key: Option<&Key>,
    rng: &mut R,
    now: i64,
) -> Result<KerberosAsReply, KerberosError> {
    let realm = String::from(pending.realm(cred));
    let Some(m) = machine.filter(|m| m.realm.eq_ignore_ascii_case(&realm)) else {
        return Err(KerberosError::FailedPrecondition(format!(
            "the AS exchange with {realm:?} is to be armored (FAST) and the realm has no machine account: register \
             one with `credguardctl machine-account` (root), or set the realm's `fast` to \"if-offered\" or \"off\""
        )));
    };
    let Some(tgt) = &m.tgt else {
        let nonce = random_u32(rng)?;
        let client = messages::Client {
            user: &m.user,
            realm: &m.realm,
            enterprise: false,
        };
        let bytes = messages::as_req(
            &client,
            &["krbtgt", &m.realm],
            Some((&m.key, confounder(rng)?)),
            now,
            nonce,
            false,
        )?;
        pending.fast = FastPhase::MachineTgt(nonce);
        return Ok(KerberosAsReply {
            kdc_request: bytes,
            kdc_realm: if realm == cred.realm { String::new() } else { realm },
            ..Default::default()
        });
    };
    let armor_tgt = fast::ArmorTicket {
        ticket: &tgt.ticket,
        session_key: &tgt.key,
        crealm: &m.realm,
        cname: &tgt.info.client,
    };
    let armor = Armor::new(&armor_tgt, random_key(tgt.key.enctype, rng)?, now, confounder(rng)?)?;
    let mut plain = as_request(cred, &realm, AsService::Tgt, None, rng, now, pending.nonce)?;
    plain.kdc_request = fast::armor_as_req(
        &plain.kdc_request,
        &armor,
        key.map(|k| (k, now)),
        [confounder(rng)?, confounder(rng)?],
    )?;
    pending.fast = FastPhase::Armored(armor);
    Ok(plain)
}

/// The machine account's TGT from the KDC's reply to its AS-REQ (`nonce`), opened with its key.
pub(super) fn open_machine_rep(m: &MachineAccount, reply: KdcReply, nonce: u32) -> Result<Tgt, KerberosError> {
    let rep = match reply {
        KdcReply::Error(e) => return Err(kdc_error(&e, &format!("machine account ({}@{}) AS", m.user, m.realm))),
        KdcReply::Rep(rep) => rep,
    };
    if rep.tgs || !messages::is_tgs_principal(&rep.ticket_sname) || rep.enc_etype != m.key.enctype {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered the machine account's AS-REQ with another kind of ticket or key".into(),
        ));
    }
    // Key usage 3: AS-REP encrypted part.
    let plain = super::crypto::decrypt(&m.key, 3, &rep.enc_cipher).map_err(|_| {
        KerberosError::Unauthenticated(
            "the machine account's AS-REP does not decrypt with its key: re-register it from the current host keytab"
                .into(),
        )
    })?;
    let (key, mut info) = messages::enc_kdc_rep_part(&plain, nonce)?;
    info.client = rep.cname_pn;
    Ok(Tgt {
        ticket: zeroize::Zeroizing::new(rep.ticket),
        key,
        info,
    })
}
