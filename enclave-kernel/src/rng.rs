//! Random numbers from the CPU (RDRAND / RDSEED), behind `rand_core`'s traits.
//!
//! Both instructions run natively in ring 3. They may transiently fail (CF = 0); each word is
//! retried a bounded number of times, after which the generator reports an error rather than
//! spinning forever or returning a weak value.

use core::arch::asm;

use rand_core::{TryCryptoRng, TryRng};

/// One attempt at a 64-bit random word.
pub trait RawSource {
    /// Retries per word before giving up.
    const RETRIES: u32;
    /// One attempt: `None` if the hardware had no entropy ready.
    fn step(&mut self) -> Option<u64>;
}

/// The RDRAND instruction (a hardware DRBG, reseeded by the CPU). Intel recommends 10 retries.
#[derive(Debug)]
pub struct RdRand(());

/// The RDSEED instruction (the conditioned entropy source itself; fails more often, for seeding).
#[derive(Debug)]
pub struct RdSeed(());

impl RawSource for RdRand {
    const RETRIES: u32 = 10;
    fn step(&mut self) -> Option<u64> {
        let value: u64;
        let ok: u8;
        // SAFETY: RDRAND only writes the named registers and flags; `RdRand` only exists after
        // CPUID said the instruction is present.
        unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack)) };
        (ok != 0).then_some(value)
    }
}

impl RawSource for RdSeed {
    const RETRIES: u32 = 1000;
    fn step(&mut self) -> Option<u64> {
        let value: u64;
        let ok: u8;
        // SAFETY: as for RDRAND; `RdSeed` only exists after CPUID said RDSEED is present.
        unsafe { asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack)) };
        if ok == 0 {
            core::hint::spin_loop();
        }
        (ok != 0).then_some(value)
    }
}

#[allow(unused_unsafe)]
fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    // SAFETY: CPUID exists on every x86-64 CPU.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, 0) };
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// CPUID leaf 1 ECX bit 30. In ring 3 under PVM, CPUID shows the host's raw values.
pub fn cpu_has_rdrand() -> bool {
    cpuid(1).2 & (1 << 30) != 0
}

/// CPUID leaf 7 EBX bit 18.
pub fn cpu_has_rdseed() -> bool {
    cpuid(0).0 >= 7 && cpuid(7).1 & (1 << 18) != 0
}

impl RdRand {
    /// The source, if the CPU has RDRAND.
    pub fn detect() -> Option<Self> {
        cpu_has_rdrand().then_some(RdRand(()))
    }
}

impl RdSeed {
    /// The source, if the CPU has RDSEED.
    pub fn detect() -> Option<Self> {
        cpu_has_rdseed().then_some(RdSeed(()))
    }
}

/// The hardware failed to deliver a random word within the retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the CPU's random number generator failed repeatedly")]
pub struct RngError;

/// A `rand_core` generator over a [`RawSource`] (RDRAND by default).
#[derive(Debug)]
pub struct HwRng<S: RawSource = RdRand> {
    src: S,
}

impl HwRng<RdRand> {
    /// The RDRAND generator, if the CPU has it.
    pub fn new() -> Option<Self> {
        RdRand::detect().map(Self::with_source)
    }
}

impl<S: RawSource> HwRng<S> {
    /// A generator over `src`.
    pub fn with_source(src: S) -> Self {
        Self { src }
    }

    fn word(&mut self) -> Result<u64, RngError> {
        for _ in 0..S::RETRIES {
            if let Some(w) = self.src.step() {
                return Ok(w);
            }
        }
        Err(RngError)
    }
}

impl<S: RawSource> TryRng for HwRng<S> {
    type Error = RngError;

    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        self.word().map(|w| w as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        self.word()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        for chunk in dst.chunks_mut(8) {
            let w = self.word()?.to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        Ok(())
    }
}

impl<S: RawSource> TryCryptoRng for HwRng<S> {}

/// A deterministic counter posing as a random source: each byte is one more than the last,
/// starting after the given value. **Never for keys**: it exists so that unit tests see
/// predictable handles and a fuzzer's crash replays the same way (the inputs are then the only
/// source of variety). The enclave binary draws from [`HwRng`] only.
#[derive(Debug, Default, Clone)]
pub struct CounterRng(u8);

impl CounterRng {
    /// A counter whose first byte is `start + 1`.
    pub const fn starting_at(start: u8) -> Self {
        CounterRng(start)
    }
}

impl rand_core::TryRng for CounterRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            self.0 = self.0.wrapping_add(1);
            *d = self.0;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for CounterRng {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails `fail` times, then counts up.
    struct Flaky {
        fail: u32,
        next: u64,
    }

    impl RawSource for Flaky {
        const RETRIES: u32 = 3;
        fn step(&mut self) -> Option<u64> {
            if self.fail > 0 {
                self.fail -= 1;
                return None;
            }
            self.next += 1;
            Some(self.next)
        }
    }

    #[test]
    fn retries_then_gives_up() {
        let mut r = HwRng::with_source(Flaky { fail: 2, next: 0 });
        assert_eq!(r.try_next_u64(), Ok(1));
        let mut r = HwRng::with_source(Flaky { fail: 3, next: 0 });
        assert_eq!(r.try_next_u64(), Err(RngError));
        assert_eq!(r.try_next_u32(), Ok(1));
    }

    #[test]
    fn fills_odd_lengths() {
        let mut r = HwRng::with_source(Flaky {
            fail: 0,
            next: 0x0807_0605_0403_0200,
        });
        let mut buf = [0u8; 11];
        r.try_fill_bytes(&mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 2, 2, 3]);
        let mut r = HwRng::with_source(Flaky { fail: 3, next: 0 });
        assert_eq!(r.try_fill_bytes(&mut buf), Err(RngError));
        r.try_fill_bytes(&mut []).unwrap();
    }

    #[test]
    fn real_hardware_if_present() {
        if let Some(mut r) = HwRng::new() {
            let a = r.try_next_u64().unwrap();
            let b = r.try_next_u64().unwrap();
            assert_ne!(a, b);
        }
        if let Some(s) = RdSeed::detect() {
            HwRng::with_source(s).try_next_u64().unwrap();
        }
    }
}
