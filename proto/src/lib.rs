//! What both sides of credguard's boundaries must agree on, kept in one place so they cannot drift:
//!
//! - [`abi`]: the guest memory layout, the boot state the VMM prepares and the enclave relies on,
//!   the system calls of the enclave's ring-0 part, and its exit codes.
//! - [`enclave`]: the protobuf messages of the enclave's own service (`credguard.enclave.v1`).
//! - [`framing`]: how those messages are framed on the vsock stream.
//! - [`checks`], [`enctype`], [`secret`]: the checks of a request both sides make (the enclave
//!   enforces them; the proxy runs the same ones first for early, clear errors), the Kerberos
//!   enctypes credguard uses, and the secrets the messages carry.
//! - [`principal`]: the names users type for a logon (`alice`, `CORP\alice`, `alice@corp.test`)
//!   as Kerberos and NTLM names.
//! - `convert` (feature `grpc`): the public API's messages as the enclave's.
//! - `boot_tables` (host only): the page tables, GDT, TSS and IDT the VMM builds from `abi`.
//! - `vmm_status` (host only): what the VMM itself says about a boot of the enclave (its
//!   protection and restarts, and the attestation it signs), served on its own vsock port.
//!
//! The crate is `no_std` (with `alloc`) so that the enclave links it; host code enables `std`.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod abi;
pub mod attest;
#[cfg(feature = "std")]
pub mod boot_tables;
pub mod checks;
#[cfg(feature = "grpc")]
pub mod convert;
pub mod enctype;
pub mod framing;
pub mod principal;
pub mod rpc;
pub mod secret;
#[cfg(feature = "std")]
pub mod unix_transport;
#[cfg(feature = "std")]
pub mod vmm_status;

/// The public gRPC API, `credguard.v1.Lsa`, with tonic client and server.
#[cfg(feature = "grpc")]
#[allow(missing_docs)]
pub mod lsa {
    tonic::include_proto!("credguard.v1");

    /// Encoded `FileDescriptorSet` of the API, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lsa_descriptor.bin"));

    impl core::fmt::Debug for LogonRequest {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let secret = match &self.secret {
                Some(logon_request::Secret::Password(_)) => "password",
                Some(logon_request::Secret::NtHash(_)) => "nt_hash",
                Some(logon_request::Secret::Key(_)) => "key",
                Some(logon_request::Secret::Sealed(_)) => "sealed",
                None => "none",
            };
            f.debug_struct("LogonRequest")
                .field("user", &self.user)
                .field("domain", &self.domain)
                .field("realm", &self.realm)
                .field("kdc", &self.kdc)
                .field("secret", &format_args!("<{secret} redacted>"))
                .field("keep_default", &self.keep_default)
                .finish()
        }
    }

    impl core::fmt::Debug for Key {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Key")
                .field("enctype", &self.enctype)
                .field("value", &"<redacted>")
                .finish()
        }
    }

    impl core::fmt::Debug for SaveCredentialRequest {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("SaveCredentialRequest")
                .field("target", &self.target)
                .field("user", &self.user)
                .field("domain", &self.domain)
                .field("realm", &self.realm)
                .field("kdc", &self.kdc)
                .field("secret", &"<redacted>")
                .finish()
        }
    }
}

/// Messages of the enclave service, generated from `credguard/enclave/v1/enclave.proto`.
#[allow(missing_docs)]
pub mod enclave {
    include!(concat!(env!("OUT_DIR"), "/credguard.enclave.v1.rs"));

    impl core::fmt::Debug for LogonRequest {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("LogonRequest")
                .field("user", &self.user)
                .field("domain", &self.domain)
                .field("realm", &self.realm)
                .field("owner", &self.owner)
                .field("secret", &"<redacted>")
                .finish()
        }
    }

    impl core::fmt::Debug for Key {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Key")
                .field("enctype", &self.enctype)
                .field("value", &"<redacted>")
                .finish()
        }
    }

    impl core::fmt::Debug for SealedLogonSecret {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("SealedLogonSecret")
                .field("secret", &"<redacted>")
                .field("refuse_rc4", &self.refuse_rc4)
                .finish()
        }
    }

    impl core::fmt::Debug for VaultSealRequest {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("VaultSealRequest")
                .field("uid", &self.uid)
                .field("target", &self.target)
                .field("user", &self.user)
                .field("domain", &self.domain)
                .field("realm", &self.realm)
                .field("secret", &"<redacted>")
                .finish()
        }
    }
}
