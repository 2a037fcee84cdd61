//! A predictable random source for the Kerberos unit tests: each byte is the one before plus a
//! step, so a test can tell two "random" values apart and repeat a run exactly.

/// The source; [`Counter::new`] with the step.
pub(crate) struct Counter {
    value: u8,
    step: u8,
}

impl Counter {
    /// Starts at 0, adding `step` for each byte.
    pub(crate) const fn new(step: u8) -> Self {
        Counter { value: 0, step }
    }
}

impl rand_core::TryRng for Counter {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(u32::from(self.value))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::from(self.value))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            self.value = self.value.wrapping_add(self.step);
            *d = self.value;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Counter {}
