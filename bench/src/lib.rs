//! credguard's benchmarks (`benches/`, run with `cargo bench -p credguard-bench`) and its load
//! tool ([`load`], the `credguard-load` binary).
//!
//! Nothing here ships in the proxy, the VMM or the enclave: the benchmarks drive the shipped
//! binaries and the libraries from outside, as a client or an operator would.
#![deny(missing_docs)]

pub mod load;
