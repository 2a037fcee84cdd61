//! `credguard-vmm`: the KVM VMM that runs credguard's enclave.
//!
//! It boots a verified, measured enclave image as a one-vCPU VM with two devices: a serial
//! console (logged) and a virtio-mmio vsock device whose host end is a Unix socket. The boot
//! contract with the enclave is [`credguard_proto::abi`].
//!
//! Launch and stop an enclave with [`Enclave::launch`] and [`RunningEnclave`]; talk to it with the
//! enclave service's generated client over `credguard_proto::unix_transport::UnixTransport`.
#![deny(missing_docs)]

pub mod attestation;
pub mod boot;
pub mod cli;
pub mod config;
pub mod devices;
pub mod doorbell;
pub mod interrupts;
pub mod keyfile;
#[cfg(test)]
mod kvm_tests;
pub mod memory;
pub mod outcome;
pub mod placement;
pub mod sandbox;
pub mod signals;
pub mod status_board;
pub mod supervisor;
pub mod vault_key;
pub mod vcpu;
pub mod vm;
pub mod watchdog;

pub use credguard_proto::abi::BootMode;
pub use outcome::{BenchResult, ExitOutcome, FaultInfo};
pub use vm::{Enclave, EnclaveConfig, EnclaveImage, Protection, RunningEnclave, StopHandle, VmError};
