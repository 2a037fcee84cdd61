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
//! - [`client`]: connecting to the API, for `credguardctl` and tests;
//! - [`cli`] and [`ctl`]: the command lines of `credguard-lsa-proxy` and `credguardctl`;
//! - [`sandbox`]: what the proxy process gives up (dumps, swap, privileges, system calls).
#![deny(missing_docs)]

pub mod bad_request;
pub mod ccache_file;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod core;
pub mod ctl;
pub mod enclave_link;
pub mod error;
pub mod grpc;
pub mod kerberos;
pub mod load;
pub mod ntlm;
pub mod sandbox;
pub mod sealed;
pub mod server;
pub mod sessions;
pub mod vault;
pub mod wiping_alloc;
