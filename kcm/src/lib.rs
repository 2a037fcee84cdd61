//! `credguard-kcm`: the Kerberos credential cache daemon (KCM) that every MIT and Heimdal program
//! on the host can use (`KRB5CCNAME=KCM:`, or `default_ccache_name = KCM:` in `krb5.conf`),
//! serving service tickets the enclave gets, while TGTs never leave the enclave.
//!
//! It runs across a trust boundary from every local program, so it parses hostile bytes and
//! depends only on the public API (`credguard-proto`) and its client (`credguard-client`). It
//! never holds a password, a long-term key, a TGT or a TGT session key: only service tickets and
//! their session keys, which the proxy returns to the uid they belong to.
//!
//! - [`protocol`]: the Heimdal KCM protocol as MIT's client speaks it (framing, opcodes,
//!   requests, replies, error codes);
//! - [`ccache`]: MIT's v4 ccache encoding of principals and credentials, and ccache files;
//! - [`store`]: per-uid cache collections with limits, and the binding of a uid's primary cache
//!   to its default credguard session;
//! - [`backend`]: what the server asks of credguard, and its gRPC implementation over the LSA
//!   proxy's API socket;
//! - [`server`]: the Unix-socket server and the answer to every request.
#![deny(missing_docs)]

pub mod backend;
pub mod ccache;
pub mod protocol;
pub mod server;
pub mod store;
