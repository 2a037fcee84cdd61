//! The rate limits of secret-using operations ("no oracle"), per user and per credential.
//!
//! Credential Guard was abused as an oracle: whoever could talk to the isolated LSA made it answer
//! chosen challenges as fast as it could. The enclave therefore limits, per logon session, how
//! often a secret is put to work, and it does so itself: the proxy only *asks* for a limit at
//! logon, the enclave clamps it to [`MAX_OPERATIONS_PER_SECOND`] (compiled in, covered by the
//! image signature), and time is the enclave's own TSC, not a clock the host hands over.
//!
//! The bucket is kept in the form of the generic cell rate algorithm: instead of a token count
//! refilled on every call it stores the TSC at which the bucket would be full again (the
//! "theoretical arrival time"). That is the same token bucket (rate `r`, burst `b`) in integer
//! arithmetic with no division on the hot path and no drift.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;

use credguard_proto::attest::Owner;

/// Hard ceiling of the rate any caller may ask for, operations per second per bucket (the burst
/// equals the rate). A compromised proxy can ask for more; it gets this.
pub const MAX_OPERATIONS_PER_SECOND: u32 = 1000;
/// The rate used when the caller asks for none (0).
pub const DEFAULT_OPERATIONS_PER_SECOND: u32 = 200;
/// Lowest TSC frequency the limiter believes, in kHz. The frequency comes from the VMM's boot
/// info; a VMM claiming a tiny one would otherwise shrink the cost of an operation to nothing. At
/// this floor the limit is loosened at most by the ratio of the real frequency to 100 MHz.
pub const MIN_TSC_KHZ: u64 = 100_000;

/// An operation refused by the rate limit (RESOURCE_EXHAUSTED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit in force, operations per second.
    pub rate: u32,
}

impl RateLimited {
    /// The error message: names the rule, nothing else.
    pub fn message(&self) -> String {
        format!(
            "refused by the enclave's rate limit of {} operations per second per user and per credential \
             (secret-using operations: NTLM authenticate, Kerberos AS and TGS exchanges, legacy attempts); \
             retry later",
            self.rate
        )
    }
}

/// The rate actually enforced when `asked` is asked for: the default for 0, at most the ceiling.
pub fn effective_rate(asked: u32) -> u32 {
    match asked {
        0 => DEFAULT_OPERATIONS_PER_SECOND,
        n => n.min(MAX_OPERATIONS_PER_SECOND),
    }
}

/// A token bucket of one session: `rate` operations per second, burst `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimiter {
    rate: u32,
    /// TSC cycles one operation costs (one token).
    interval: u64,
    /// How far ahead of now the bucket may be booked: (burst - 1) intervals.
    tolerance: u64,
    /// TSC at which the bucket is full again.
    full_at: u64,
}

impl RateLimiter {
    /// A full bucket for a session that asked for `asked` operations per second (see
    /// [`effective_rate`]), on a TSC of `tsc_khz` kHz, at TSC `now`.
    pub fn new(asked: u32, tsc_khz: u64, now: u64) -> Self {
        let rate = effective_rate(asked);
        let cycles_per_second = tsc_khz.max(MIN_TSC_KHZ).saturating_mul(1000);
        // rate >= 1 (effective_rate never yields 0), so the division is defined.
        let interval = (cycles_per_second / u64::from(rate)).max(1);
        Self {
            rate,
            interval,
            tolerance: interval.saturating_mul(u64::from(rate) - 1),
            full_at: now,
        }
    }

    /// The rate enforced, operations per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes one token at TSC `now`, or refuses if the bucket is empty (then nothing is taken).
    pub fn try_acquire(&mut self, now: u64) -> Result<(), RateLimited> {
        self.check(now)?;
        self.full_at = self.full_at.max(now).saturating_add(self.interval);
        Ok(())
    }

    /// Whether a token could be taken at TSC `now`, without taking it.
    pub fn check(&self, now: u64) -> Result<(), RateLimited> {
        // A bucket idle for long is full, not fuller: booking starts from now at the earliest.
        let booked = self.full_at.max(now);
        if booked - now > self.tolerance {
            return Err(RateLimited { rate: self.rate });
        }
        Ok(())
    }

    /// Whether the bucket is full at TSC `now`: then forgetting it and starting a new one later
    /// changes nothing.
    pub fn is_rested(&self, now: u64) -> bool {
        self.full_at <= now
    }
}

/// Fingerprint of a credential: a keyed hash of its names and secret (see
/// `service::Service`), so that every session of the same credential shares one budget and
/// nobody without the secret can spend it.
pub type CredentialId = [u8; 16];

/// Buckets kept at most per kind; only full ("rested") buckets are ever forgotten to make room.
pub const MAX_BUCKETS: usize = 8192;

/// Every budget is full of recent use: no room for a new one (RESOURCE_EXHAUSTED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketsFull;

/// The rate limits of secret use, per owner (uid) and per credential. A session draws on both
/// buckets of its owner and its credential; logging on again, or from the vault, opens a session
/// on the same buckets, so neither resets a budget. A bucket outlives the sessions that made it
/// and is forgotten only once it is full again (when forgetting it loses nothing).
#[derive(Default)]
pub struct RateLimits {
    per_owner: BTreeMap<Owner, RateLimiter>,
    per_credential: BTreeMap<CredentialId, RateLimiter>,
}

impl RateLimits {
    /// No buckets.
    pub const fn new() -> Self {
        Self {
            per_owner: BTreeMap::new(),
            per_credential: BTreeMap::new(),
        }
    }

    /// Makes sure `owner` and `credential` have buckets (new ones full, at the `asked` rate);
    /// existing buckets are kept as they are, neither refilled nor re-rated.
    pub fn open(
        &mut self,
        owner: Owner,
        credential: CredentialId,
        asked: u32,
        tsc_khz: u64,
        now: u64,
    ) -> Result<(), BucketsFull> {
        let fresh = || RateLimiter::new(asked, tsc_khz, now);
        make_room(&mut self.per_owner, &owner, now)?;
        make_room(&mut self.per_credential, &credential, now)?;
        self.per_owner.entry(owner).or_insert_with(fresh);
        self.per_credential.entry(credential).or_insert_with(fresh);
        Ok(())
    }

    /// Takes one token from both buckets, or from neither if either is empty.
    pub fn try_acquire(&mut self, owner: Owner, credential: &CredentialId, now: u64) -> Result<(), RateLimited> {
        if let Some(b) = self.per_owner.get(&owner) {
            b.check(now)?;
        }
        if let Some(b) = self.per_credential.get(credential) {
            b.check(now)?;
        }
        for b in [self.per_owner.get_mut(&owner), self.per_credential.get_mut(credential)]
            .into_iter()
            .flatten()
        {
            b.try_acquire(now)?;
        }
        Ok(())
    }

    /// Buckets held (owners, credentials).
    pub fn len(&self) -> (usize, usize) {
        (self.per_owner.len(), self.per_credential.len())
    }
}

/// Frees a slot for `key` in `map` if it needs one, by forgetting rested buckets.
fn make_room<K: Ord>(map: &mut BTreeMap<K, RateLimiter>, key: &K, now: u64) -> Result<(), BucketsFull> {
    if map.contains_key(key) || map.len() < MAX_BUCKETS {
        return Ok(());
    }
    map.retain(|_, b| !b.is_rested(now));
    if map.len() < MAX_BUCKETS {
        Ok(())
    } else {
        Err(BucketsFull)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KHZ: u64 = 1_000_000; // 1 GHz: one second is 1e9 cycles.
    const SECOND: u64 = 1_000_000_000;

    fn taken(l: &mut RateLimiter, now: u64, n: u32) -> u32 {
        (0..n).filter(|_| l.try_acquire(now).is_ok()).count() as u32
    }

    #[test]
    fn burst_then_refused_then_refilled() {
        let mut l = RateLimiter::new(5, KHZ, 7 * SECOND);
        assert_eq!(l.rate(), 5);
        // A full bucket gives its burst at once, then refuses.
        assert_eq!(taken(&mut l, 7 * SECOND, 10), 5);
        let e = l.try_acquire(7 * SECOND).unwrap_err();
        assert!(
            e.message()
                .contains("rate limit of 5 operations per second per user and per credential")
        );
        // One interval (200 ms) later exactly one token is back.
        let t = 7 * SECOND + SECOND / 5;
        assert_eq!(taken(&mut l, t - 1, 1), 0);
        assert_eq!(taken(&mut l, t, 3), 1);
        // After a second idle the whole burst is back, and no more than it.
        let t = t + 10 * SECOND;
        assert_eq!(taken(&mut l, t, 10), 5);
    }

    #[test]
    fn steady_rate_is_sustained() {
        let mut l = RateLimiter::new(100, KHZ, 0);
        assert_eq!(taken(&mut l, 0, 100), 100);
        // At exactly the rate, every call passes for a long time.
        for i in 1..=10_000u64 {
            assert!(l.try_acquire(i * SECOND / 100).is_ok(), "call {i}");
        }
        // Twice the rate: about half pass.
        let start = 10_000 * SECOND / 100;
        let passed = (1..=1_000u64)
            .filter(|i| l.try_acquire(start + i * SECOND / 200).is_ok())
            .count();
        assert!((495..=505).contains(&passed), "{passed}");
    }

    #[test]
    fn asked_rate_is_clamped() {
        assert_eq!(effective_rate(0), DEFAULT_OPERATIONS_PER_SECOND);
        assert_eq!(effective_rate(1), 1);
        assert_eq!(effective_rate(u32::MAX), MAX_OPERATIONS_PER_SECOND);
        let mut l = RateLimiter::new(u32::MAX, KHZ, 0);
        assert_eq!(l.rate(), MAX_OPERATIONS_PER_SECOND);
        assert_eq!(taken(&mut l, 0, 5_000), MAX_OPERATIONS_PER_SECOND);
    }

    #[test]
    fn a_lying_tsc_frequency_cannot_lift_the_limit_to_nothing() {
        // A VMM claiming a 1 kHz (or unknown) TSC: the floor still charges each operation.
        for khz in [0, 1] {
            let mut l = RateLimiter::new(10, khz, 0);
            assert_eq!(taken(&mut l, 0, 100), 10);
            // At the floor (100 MHz) one interval is 10 ms of such cycles.
            assert_eq!(taken(&mut l, MIN_TSC_KHZ * 1000 / 10, 100), 1);
        }
    }

    #[test]
    fn a_tsc_going_backwards_does_not_refill() {
        let mut l = RateLimiter::new(2, KHZ, SECOND);
        assert_eq!(taken(&mut l, SECOND, 5), 2);
        assert_eq!(taken(&mut l, 0, 5), 0);
    }

    #[test]
    fn logging_on_again_does_not_reset_the_budget() {
        let mut limits = RateLimits::new();
        let alice = Owner::uid(1000);
        let cred = [1u8; 16];
        limits.open(alice, cred, 3, KHZ, 0).unwrap();
        for _ in 0..3 {
            limits.try_acquire(alice, &cred, 0).unwrap();
        }
        assert!(limits.try_acquire(alice, &cred, 0).is_err());
        // A new session (logon, vault logon) of the same owner and credential, even asking for
        // more: same buckets, still empty.
        limits.open(alice, cred, 1000, KHZ, 0).unwrap();
        assert!(limits.try_acquire(alice, &cred, 0).is_err());
        // Another credential of alice's: her owner bucket is empty too.
        limits.open(alice, [2; 16], 3, KHZ, 0).unwrap();
        assert!(limits.try_acquire(alice, &[2; 16], 0).is_err());
        // The same credential under another uid (e.g. a compromised proxy naming any uid): the
        // credential's bucket is empty.
        let bob = Owner::uid(1001);
        limits.open(bob, cred, 3, KHZ, 0).unwrap();
        assert!(limits.try_acquire(bob, &cred, 0).is_err());
        // Bob's own credential is untouched by alice's use.
        limits.open(bob, [3; 16], 3, KHZ, 0).unwrap();
        assert!(limits.try_acquire(bob, &[3; 16], 0).is_ok());
    }

    #[test]
    fn a_refused_call_takes_from_neither_bucket() {
        let mut limits = RateLimits::new();
        let (a, b) = (Owner::uid(1), Owner::uid(2));
        limits.open(a, [1; 16], 2, KHZ, 0).unwrap();
        limits.open(b, [1; 16], 2, KHZ, 0).unwrap();
        limits.open(b, [9; 16], 2, KHZ, 0).unwrap();
        // a drains the shared credential.
        assert!(limits.try_acquire(a, &[1; 16], 0).is_ok());
        assert!(limits.try_acquire(a, &[1; 16], 0).is_ok());
        // b's attempt on it is refused and costs b's own bucket nothing.
        assert!(limits.try_acquire(b, &[1; 16], 0).is_err());
        assert!(limits.try_acquire(b, &[9; 16], 0).is_ok());
        assert!(limits.try_acquire(b, &[9; 16], 0).is_ok());
    }

    #[test]
    fn only_rested_buckets_are_forgotten() {
        let mut limits = RateLimits::new();
        for uid in 0..MAX_BUCKETS as u32 {
            limits.open(Owner::uid(uid), [0; 16], 10, KHZ, 0).unwrap();
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&uid.to_le_bytes());
            limits.open(Owner::uid(uid), id, 10, KHZ, 0).unwrap();
        }
        // Every owner bucket is full: one more owner makes room by forgetting rested ones.
        assert!(limits.open(Owner::uid(u32::MAX), [0; 16], 10, KHZ, 0).is_ok());
        // Spend from every owner bucket now: none is rested, so a newcomer is refused.
        let mut limits = RateLimits::new();
        for uid in 0..MAX_BUCKETS as u32 {
            limits.open(Owner::uid(uid), [0; 16], 10, KHZ, 0).unwrap();
        }
        for uid in 0..MAX_BUCKETS as u32 {
            let _ = limits.try_acquire(Owner::uid(uid), &[7; 16], 0);
        }
        assert_eq!(limits.open(Owner::uid(u32::MAX), [0; 16], 10, KHZ, 0), Err(BucketsFull));
        // A second later they have refilled.
        assert!(limits.open(Owner::uid(u32::MAX), [0; 16], 10, KHZ, SECOND).is_ok());
    }
}
