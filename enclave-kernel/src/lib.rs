//! The hardware-independent parts of the credguard enclave, kept here so that `cargo test` runs
//! them on the host:
//! - [`boot`]: checks of the boot info the VMM hands over;
//! - [`service`]: the enclave service, framed bytes in, framed bytes out, with its rate limits
//!   ([`ratelimit`]), audit records and memory headroom;
//! - [`credentials`]: the logon sessions and their secrets;
//! - [`ntlm`], [`kerberos`]: the protocols computed with those secrets;
//! - [`sealing`]: secrets clients seal to this boot; [`vault`]: credentials sealed for the host's
//!   disk;
//! - [`dma`]: the DMA-window page allocator; [`prenegotiated`]: the virtio transport of the
//!   vsock device the VMM pre-negotiated; [`rng`]: the hardware RNG wrapper; [`stats`]:
//!   benchmark statistics; [`fmtbuf`]: a fixed-buffer formatter;
//! - `fuzz` (feature `fuzz`): the fuzz targets' entry points, for `fuzz/` only.
//!
//! The bare-metal binary (`src/main.rs`) adds the ring-0 assembly and the ring-3 hardware glue
//! (system calls, heap, virtio-vsock) on top of this library.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod boot;
pub mod credentials;
pub mod dma;
pub mod fmtbuf;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod kerberos;
pub mod ntlm;
pub mod prenegotiated;
pub mod ratelimit;
pub mod rng;
pub mod sealing;
pub mod service;
pub mod stats;
pub mod vault;

/// Version of the enclave kernel, as reported by `Status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds in `cycles` TSC cycles at `tsc_khz` (0 if the frequency is unknown).
pub fn cycles_to_ms(cycles: u64, tsc_khz: u64) -> u64 {
    cycles.checked_div(tsc_khz).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_to_ms_handles_unknown_frequency() {
        assert_eq!(cycles_to_ms(3_000_000, 3_000_000), 1);
        assert_eq!(cycles_to_ms(2_999_999, 3_000_000), 0);
        assert_eq!(cycles_to_ms(123, 0), 0);
    }
}
