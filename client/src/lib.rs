//! credguard's client side: what a local program needs to use the LSA proxy's API.
//!
//! `credguardctl` is built on it, and so will be the KCM daemon, the PAM module and the NTLM
//! helper. None of it runs in the proxy, the VMM or the enclave, and it holds nothing of theirs:
//! it speaks the public gRPC API (`credguard.v1.Lsa`) of `credguard-proto`.
//!
//! - connecting to the API's Unix socket: [`socket_path`], [`connect`], [`channel`];
//! - [`sealed`]: checking the enclave's attestation and sealing a secret to it, so that the proxy
//!   only relays ciphertext;
//! - [`ccache_file`]: writing the credential cache file the proxy returns the bytes of;
//! - [`keytab`]: a key from an MIT keytab (the host's, for `credguardctl machine-account`);
//! - [`ctl`]: the command line of `credguardctl`.
#![deny(missing_docs)]

pub mod ccache_file;
mod connect;
pub mod ctl;
pub mod keytab;
pub mod sealed;

pub use connect::{DEFAULT_API_SOCKET, channel, connect, socket_path};
