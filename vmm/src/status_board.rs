//! What this VMM says about the enclave boot it runs ([`VmmStatus`]): the facts only the VMM
//! knows (protection, restarts) from launch, and the boot id and attestation signature once the
//! enclave asked for its attestation. The vsock device serves it on
//! [`vmm_status::VMM_STATUS_PORT`] to host clients (the proxy), so these facts never pass
//! through the guest.

use std::sync::Mutex;

use credguard_proto::attest::SIGNATURE_LEN;
use credguard_proto::vmm_status::{self, VmmStatus};
use prost::Message;

use crate::vm::Protection;

/// The current [`VmmStatus`] of one launch, shared by the vCPU (which records the attestation)
/// and the vsock worker (which serves it).
#[derive(Debug)]
pub struct StatusBoard {
    status: Mutex<VmmStatus>,
}

impl StatusBoard {
    /// The status of a launch with `protection`, after `restarts` restarts for `reasons` (oldest
    /// first; only the most recent few are kept, see [`vmm_status::kept_restart_reasons`]).
    pub fn new(protection: &Protection, restarts: u64, reasons: &[String]) -> Self {
        StatusBoard {
            status: Mutex::new(VmmStatus {
                vmm_version: env!("CARGO_PKG_VERSION").into(),
                restarts,
                restart_reasons: vmm_status::kept_restart_reasons(reasons),
                protection_bits: protection.bits,
                host_mapped_bytes: protection.host_mapped_bytes,
                ram_size: protection.ram_size,
                boot_id: Vec::new(),
                attestation_signature: Vec::new(),
            }),
        }
    }

    /// A copy of the current status.
    pub fn status(&self) -> VmmStatus {
        // A panic while holding the lock leaves a whole VmmStatus behind: still fine to read.
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the boot the enclave attested and the signature over it (`None`: no key).
    pub fn record_attestation(&self, boot_id: &[u8], signature: Option<&[u8; SIGNATURE_LEN]>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.boot_id = boot_id.to_vec();
        status.attestation_signature = signature.map(|s| s.to_vec()).unwrap_or_default();
    }

    /// The encoded status, as the status port answers it.
    pub fn encoded(&self) -> Vec<u8> {
        self.status().encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use credguard_proto::vmm_status::protection;

    #[test]
    fn keeps_the_launch_facts_and_records_the_attestation() {
        let protection = Protection {
            bits: protection::KNOWN | protection::SECCOMP,
            host_mapped_bytes: 1 << 20,
            ram_size: 16 << 20,
        };
        let reasons: Vec<String> = (0..12).map(|i| format!("panic: {i}\nmore")).collect();
        let board = StatusBoard::new(&protection, 12, &reasons);
        let before = VmmStatus::decode(board.encoded().as_slice()).unwrap();
        assert_eq!((before.restarts, before.protection_bits), (12, protection.bits));
        assert_eq!(before.restart_reasons.len(), vmm_status::MAX_RESTART_REASONS);
        assert_eq!(before.restart_reasons.last().map(String::as_str), Some("panic: 11"));
        assert!(before.boot_id.is_empty() && before.attestation_signature.is_empty());

        board.record_attestation(&[7; 16], Some(&[9; SIGNATURE_LEN]));
        let after = board.status();
        assert_eq!((after.boot_id, after.attestation_signature), (vec![7; 16], vec![9; 64]));
        board.record_attestation(&[8; 16], None);
        assert!(board.status().attestation_signature.is_empty());
    }
}
