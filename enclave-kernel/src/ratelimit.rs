//! The per-session rate limit of secret-using operations ("no oracle", issue 7).
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

use alloc::format;
use alloc::string::String;

/// Hard ceiling of the rate any caller may ask for, operations per second per session (the burst
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
            "refused by the enclave's rate limit of {} operations per second per session (secret-using \
             operations: NTLM authenticate, Kerberos AS and TGS exchanges, legacy attempts); retry later",
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
        // A bucket idle for long is full, not fuller: booking starts from now at the earliest.
        let booked = self.full_at.max(now);
        if booked - now > self.tolerance {
            return Err(RateLimited { rate: self.rate });
        }
        self.full_at = booked.saturating_add(self.interval);
        Ok(())
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
                .contains("rate limit of 5 operations per second per session")
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
}
