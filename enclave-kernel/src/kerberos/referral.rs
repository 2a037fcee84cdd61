//! TGS referrals (RFC 6806) and cross-realm TGTs (RFC 4120 1.2), followed inside the enclave.
//!
//! A KDC asked (with canonicalize) for a service of another realm answers with a TGT for that
//! realm's ticket-granting service, `krbtgt/OTHER@CUR`; an SPN naming another realm first asks
//! the home KDC for `krbtgt/OTHER`. Either TGT is as good as a password for the other realm: it
//! stays here, kept per session and keyed by the realm whose KDC takes it, charged to the owner's
//! ticket budget and wiped with the session. The proxy only learns which realm's KDC gets the
//! next request (`kdc_realm`). A chain of referrals is bounded ([`MAX_REFERRAL_HOPS`]) and never
//! visits a realm twice, so a hostile KDC cannot keep the enclave or the proxy busy.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::attest::Owner;
use credguard_proto::checks;

use super::crypto::{self, Key};
use super::messages::{self, RepParts, TicketInfo};
use super::{KerberosError, MAX_TICKET_BYTES_PER_OWNER, PendingTgs, Tgt, fresh, release_from};

/// Most referrals one TGS exchange follows: beyond it the exchange ends (FAILED_PRECONDITION).
pub use credguard_proto::checks::MAX_REFERRAL_HOPS;
/// Most cross-realm TGTs one session keeps; a new one beyond it evicts the one ending first.
pub const MAX_CROSS_TGTS: usize = 8;

/// A TGT for another realm's ticket-granting service, as a TGS-REP gave it.
pub(super) struct CrossTgt {
    /// The realm whose KDC takes it (`OTHER` of `krbtgt/OTHER@CUR`).
    pub realm: String,
    /// The client's realm as the KDC named it (the authenticator's crealm).
    pub crealm: String,
    /// The ticket (wiped when dropped) and its session key.
    pub tgt: Tgt,
}

/// One session's cross-realm TGTs.
#[derive(Default)]
pub(super) struct CrossTgts {
    entries: Vec<CrossTgt>,
}

impl CrossTgts {
    /// Bytes charged to the owner for them.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.tgt.ticket.len()).sum()
    }

    /// How many are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The one for `realm`, whatever its age (an exchange under way uses the one it started with).
    pub fn get(&self, realm: &str) -> Option<&CrossTgt> {
        self.entries.iter().find(|e| e.realm.eq_ignore_ascii_case(realm))
    }

    /// The one for `realm`, if it is still good for use at `now` (see [`fresh`]).
    pub fn find(&self, realm: &str, now: i64) -> Option<&CrossTgt> {
        self.get(realm).filter(|e| fresh(&e.tgt.info, now))
    }

    /// Drops those no longer good for use at `now`; returns the bytes freed.
    pub fn drop_stale(&mut self, now: i64) -> usize {
        let before = self.bytes();
        self.entries.retain(|e| fresh(&e.tgt.info, now));
        before.saturating_sub(self.bytes())
    }

    /// Removes the one `realm`'s new TGT replaces and, when full, the one ending first; returns
    /// the bytes freed.
    fn make_room(&mut self, realm: &str) -> usize {
        let mut freed = 0usize;
        if let Some(i) = self.entries.iter().position(|e| e.realm.eq_ignore_ascii_case(realm)) {
            freed = freed.saturating_add(self.entries.remove(i).tgt.ticket.len());
        }
        if self.entries.len() >= MAX_CROSS_TGTS
            && let Some(i) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].tgt.info.end_time)
        {
            freed = freed.saturating_add(self.entries.remove(i).tgt.ticket.len());
        }
        freed
    }

    /// Drops every one; returns the bytes freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.bytes();
        self.entries.clear();
        freed
    }
}

/// Keeps `got` for the session, charged to `owner`; RESOURCE_EXHAUSTED (and it is dropped) when
/// the owner's budget has no room.
pub(super) fn keep(
    held: &mut BTreeMap<Owner, usize>,
    owner: Owner,
    kept: &mut CrossTgts,
    got: CrossTgt,
) -> Result<(), KerberosError> {
    release_from(held, owner, kept.make_room(&got.realm));
    let total = held
        .get(&owner)
        .copied()
        .unwrap_or(0)
        .saturating_add(got.tgt.ticket.len());
    if total > MAX_TICKET_BYTES_PER_OWNER {
        return Err(KerberosError::ResourceExhausted(format!(
            "this user's sessions hold {MAX_TICKET_BYTES_PER_OWNER} bytes of tickets, as many as the enclave \
             allows one user: no room for the cross-realm TGT of {:?}",
            got.realm
        )));
    }
    held.insert(owner, total);
    kept.entries.push(got);
    Ok(())
}

/// What a TGS-REP gave, once opened and checked against its exchange.
pub(super) enum Opened {
    /// The service's ticket: its session key and facts.
    Service(Key, TicketInfo),
    /// A TGT for another realm (a referral, or the cross-realm TGT asked for).
    Referral(CrossTgt),
}

/// The TGT an exchange's request went out with: the session's (`home`) or a cross-realm one;
/// with the client realm for the authenticator (`None`: the TGT's own).
pub(super) fn tgt_for<'a>(
    home: &'a Tgt,
    cross: &'a CrossTgts,
    pending: &PendingTgs,
) -> Result<(&'a Tgt, Option<&'a str>), KerberosError> {
    let Some(realm) = &pending.realm else {
        return Ok((home, None));
    };
    let c = cross.get(realm).ok_or_else(|| {
        KerberosError::FailedPrecondition(format!(
            "the cross-realm TGT for {realm:?} this exchange used is gone (expired or replaced): ask again"
        ))
    })?;
    Ok((&c.tgt, Some(c.crealm.as_str())))
}

/// Opens a TGS-REP with the key of the TGT its request went out with (`using`) and checks it
/// answers `pending`: its nonce, the realm the request went to, and a name that is either the
/// one asked for or a TGT for another realm (then in the ticket and in the encrypted part alike,
/// and for the session's client).
pub(super) fn open(
    home: &Tgt,
    using: &Tgt,
    pending: &PendingTgs,
    rep: &RepParts,
    allow_rc4: bool,
) -> Result<Opened, KerberosError> {
    if !rep.tgs {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered a TGS-REQ with an AS-REP".into(),
        ));
    }
    // Key usage 8: TGS-REP encrypted part, under the TGT session key (no subkey sent).
    let plain = crypto::decrypt(&using.key, 8, &rep.enc_cipher)?;
    let (key, info) = messages::enc_kdc_rep_part(&plain, pending.nonce)?;
    let realm = pending.kdc_realm(home);
    if !info.server_realm.eq_ignore_ascii_case(realm) || !rep.ticket_realm.eq_ignore_ascii_case(realm) {
        return Err(KerberosError::InvalidArgument(format!(
            "the KDC's reply is a ticket of realm {:?}, but the request went to the KDC of {realm:?}",
            info.server_realm
        )));
    }
    if messages::is_tgs_principal(&rep.ticket_sname) || messages::is_tgs_principal(&info.server_pn) {
        return referral(home, rep, key, info, allow_rc4).map(Opened::Referral);
    }
    let asked = pending.asking(home)?;
    if !messages::same_principal(&info.server_pn, &asked) || !messages::same_principal(&rep.ticket_sname, &asked) {
        return Err(KerberosError::InvalidArgument(format!(
            "the KDC's reply names {:?}, not what was asked for ({:?})",
            messages::principal_text(&info.server_pn),
            messages::principal_text(&asked)
        )));
    }
    Ok(Opened::Service(key, info))
}

/// The cross-realm TGT of a reply naming `krbtgt/OTHER`: the same name in the ticket and in the
/// encrypted part, a realm name that passes [`checks::realm`], the session's client, and an
/// enctype the session may use.
fn referral(
    home: &Tgt,
    rep: &RepParts,
    key: Key,
    info: TicketInfo,
    allow_rc4: bool,
) -> Result<CrossTgt, KerberosError> {
    let realm = messages::tgs_realm(&rep.ticket_sname)
        .filter(|_| messages::same_principal(&rep.ticket_sname, &info.server_pn))
        .ok_or_else(|| {
            KerberosError::InvalidArgument(format!(
                "the KDC's reply names {:?} in its ticket and {:?} in its encrypted part: not one ticket-granting \
                 service",
                messages::principal_text(&rep.ticket_sname),
                messages::principal_text(&info.server_pn)
            ))
        })?;
    checks::realm("referral realm", &realm)
        .map_err(|e| KerberosError::InvalidArgument(format!("the KDC's referral: {e}")))?;
    if !messages::same_principal(&rep.cname_pn, &home.info.client) {
        return Err(KerberosError::InvalidArgument(
            "the KDC's referral is a TGT for another client".into(),
        ));
    }
    crypto::check_enctype(key.enctype, allow_rc4)?;
    checks::realm("client realm", &rep.crealm)
        .map_err(|e| KerberosError::InvalidArgument(format!("the KDC's referral: {e}")))?;
    Ok(CrossTgt {
        realm,
        crealm: rep.crealm.clone(),
        tgt: Tgt {
            ticket: zeroize::Zeroizing::new(rep.ticket.clone()),
            key,
            info: TicketInfo {
                client: rep.cname_pn.clone(),
                ..info
            },
        },
    })
}

/// Refuses to follow a referral to `realm` after `visited` (the realms asked so far, the
/// session's first): a loop, or more than [`MAX_REFERRAL_HOPS`] referrals.
pub(super) fn may_follow(visited: &[String], realm: &str) -> Result<(), KerberosError> {
    if visited.iter().any(|v| v.eq_ignore_ascii_case(realm)) {
        return Err(KerberosError::FailedPrecondition(format!(
            "referral loop: the KDCs referred this request back to {realm:?} (after {}); no ticket",
            visited.join(" -> ")
        )));
    }
    if visited.len() > MAX_REFERRAL_HOPS {
        return Err(KerberosError::FailedPrecondition(format!(
            "too many referrals: more than {MAX_REFERRAL_HOPS} (through {}); no ticket",
            visited.join(" -> ")
        )));
    }
    Ok(())
}
