//! The service tickets a session got, kept so that another request for the same service within
//! the ticket's lifetime is answered without a KDC exchange (as Windows' LSA does).
//!
//! Each hit gets a fresh AP-REQ (new authenticator, sequence number and confounder) from the kept
//! ticket and key: only the ticket is reused, never an authenticator. The cache is per session,
//! bounded in entries ([`MAX_CACHED_TICKETS`]) and charged, like the TGT, to its owner's ticket
//! budget. It never holds a ticket for a ticket-granting service: those are refused before a
//! TGS-REQ is sent and dropped when a KDC answers with one.

use alloc::string::String;
use alloc::vec::Vec;

use super::crypto::Key;
use super::messages::{self, RepParts, TicketInfo};
use super::{KerberosError, fresh};

/// Most service tickets one session keeps; a new one beyond it evicts the one ending first.
pub const MAX_CACHED_TICKETS: usize = 64;

/// A kept ticket whose start is this far ahead of the session's clock still serves: the KDC's
/// clock may run a little ahead without a skew error (Kerberos' usual tolerance is 5 minutes).
const START_TOLERANCE_SECS: i64 = 300;

/// A service ticket as a finished TGS exchange gave it: the service as asked (`sname`) and as
/// the KDC named it (`info.server`).
pub(super) struct CachedTicket {
    /// The service it was asked for: later requests match it by [`messages::same_principal`]
    /// (the normalised SPN: components, ASCII case folded; the `service@host` or `service/host`
    /// spelling does not matter) and, for an SPN with a realm suffix, by the ticket's realm
    /// (`info.server_realm`, the realm a referral led to).
    pub sname: rasn_kerberos::PrincipalName,
    /// The TGS-REP's client realm and name.
    pub crealm: String,
    pub cname: String,
    /// The ticket, DER.
    pub ticket: Vec<u8>,
    /// The ticket's session key.
    pub key: Key,
    /// Its times, flags and the server name the KDC returned.
    pub info: TicketInfo,
}

impl CachedTicket {
    /// The parts [`super::tgs_finish`] builds a reply from, as the TGS-REP gave them.
    pub fn reply_parts(&self) -> Result<((Key, TicketInfo), RepParts), KerberosError> {
        let key = Key::new(self.key.enctype, &self.key.value)?;
        let rep = RepParts {
            tgs: true,
            crealm: self.crealm.clone(),
            cname: self.cname.clone(),
            cname_pn: self.info.client.clone(),
            ticket: self.ticket.clone(),
            ticket_sname: self.info.server_pn.clone(),
            ticket_realm: self.info.server_realm.clone(),
            enc_etype: key.enctype,
            // Already opened: nothing is decrypted again.
            enc_cipher: Vec::new(),
            etype_info: Vec::new(),
            fast: None,
        };
        Ok(((key, self.info.clone()), rep))
    }

    /// Bytes charged to the owner for it.
    pub fn bytes(&self) -> usize {
        self.ticket.len()
    }
}

/// One session's service tickets.
#[derive(Default)]
pub(super) struct TicketCache {
    entries: Vec<CachedTicket>,
}

impl TicketCache {
    /// Bytes charged to the owner for these tickets.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(CachedTicket::bytes).sum()
    }

    /// How many tickets are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The ticket for `sname` (in `realm`, if the SPN names one; else in whichever realm the
    /// exchange, referrals and all, found it), if one is kept that stays good at `now` for the
    /// same margin as a TGT (see [`fresh`]): one near its end is left for a new exchange to
    /// replace.
    pub fn find(&self, sname: &rasn_kerberos::PrincipalName, realm: Option<&str>, now: i64) -> Option<&CachedTicket> {
        self.entries.iter().find(|e| {
            messages::same_principal(&e.sname, sname)
                && realm.is_none_or(|r| e.info.server_realm.eq_ignore_ascii_case(r))
                && fresh(&e.info, now)
                && e.info.start_time <= now.saturating_add(START_TOLERANCE_SECS)
        })
    }

    /// Removes what a new ticket for `sname` of `realm` replaces (one for the same service) and, if the
    /// cache is full, the ticket ending first (of those ending together, the oldest: entries stay
    /// in the order they came, and a KDC often ends every ticket with the TGT); returns the bytes
    /// freed.
    pub fn make_room(&mut self, sname: &rasn_kerberos::PrincipalName, realm: &str) -> usize {
        let mut freed = 0usize;
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| messages::same_principal(&e.sname, sname) && e.info.server_realm.eq_ignore_ascii_case(realm))
        {
            freed = freed.saturating_add(self.entries.remove(i).bytes());
        }
        if self.entries.len() >= MAX_CACHED_TICKETS
            && let Some(i) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].info.end_time)
        {
            freed = freed.saturating_add(self.entries.remove(i).bytes());
        }
        freed
    }

    /// Keeps `entry` (the caller made room and charged its bytes).
    pub fn push(&mut self, entry: CachedTicket) {
        self.entries.push(entry);
    }

    /// Drops every ticket; returns the bytes freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.bytes();
        self.entries.clear();
        freed
    }
}
