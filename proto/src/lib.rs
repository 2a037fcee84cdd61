//! What both sides of credguard's boundaries must agree on, kept in one place so they cannot drift:
//!
//! - [`abi`]: the guest memory layout, the boot state the VMM prepares and the enclave relies on,
//!   the system calls of the enclave's ring-0 part, and its exit codes.
//! - [`enclave`]: the protobuf messages of the enclave's own service (`credguard.enclave.v1`).
//! - [`wire`]: how those messages are framed on the vsock stream.
//!
//! The crate is `no_std` (with `alloc`) so that the enclave links it; host code enables `std`.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod abi;
pub mod wire;

/// Messages of the enclave service, generated from `credguard/enclave/v1/enclave.proto`.
#[allow(missing_docs)]
pub mod enclave {
    include!(concat!(env!("OUT_DIR"), "/credguard.enclave.v1.rs"));

    /// Full gRPC path of `Enclave.Status`.
    pub const METHOD_STATUS: &str = "/credguard.enclave.v1.Enclave/Status";
}
