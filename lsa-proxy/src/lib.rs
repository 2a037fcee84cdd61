//! The LSA proxy: credguard's face to local applications.
//!
//! A tonic gRPC service (`credguard.v1.Lsa`) on a Unix socket. Every call is authorized by the
//! caller's uid (SO_PEERCRED); a logon session belongs to the uid that made it. The proxy holds no
//! secret: a logon's secret is forwarded to the enclave and wiped; every computation that needs a
//! secret happens in the enclave, which the proxy reaches over the VMM's hybrid-vsock socket.
//!
//! - [`core`]: the service's logic, testable without the network;
//! - [`grpc`]: the tonic adapter; [`server`]: sockets, health, reflection; [`connection`]: each
//!   client connection, ended after a call that carried a secret in the clear;
//! - [`enclave_link`]: the connection to the enclave; [`sessions`]: who owns what;
//! - [`kerberos`]: carrying Kerberos to the KDCs; [`kdcs`]: which KDCs (the realm table,
//!   [`krb5_conf`], DNS SRV records through [`kdc_dns`]);
//! - [`cli`]: the command line of `credguard-lsa-proxy`;
//! - [`sandbox`]: what the proxy process gives up (dumps, swap, privileges, system calls).
#![deny(missing_docs)]

pub mod bad_request;
pub mod cli;
pub mod config;
pub mod connection;
pub mod core;
pub mod enclave_link;
pub mod error;
pub mod grpc;
pub mod kdc_dns;
pub mod kdcs;
pub mod kerberos;
pub mod krb5_conf;
pub mod ntlm;
pub mod sandbox;
pub mod server;
pub mod sessions;
pub mod user_sid;
pub mod vault;
pub mod wiping_alloc;
