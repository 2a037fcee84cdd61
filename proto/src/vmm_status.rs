//! What the VMM says about a boot of the enclave, host side only: the facts only the VMM knows
//! (how the enclave's memory and the VMM are protected, how often and why it restarted the
//! enclave), the attestation it signs over them together with the enclave's boot id and sealing
//! key, and how a host process asks for them.
//!
//! The VMM answers [`VmmStatus`] itself on the host side of its hybrid-vsock socket: a client
//! sends `CONNECT` [`VMM_STATUS_PORT`] and reads `OK <port>`, the encoded message and end of
//! stream (`unix_transport::UnixTransport::vmm_status`). Nothing here is linked into the enclave: it neither
//! knows nor relays these facts, so a compromised guest cannot change them, and the client checks
//! the signature over all of them.

use alloc::string::String;
use alloc::vec::Vec;

use crate::abi::{MEASUREMENT_LEN, SIGNER_LEN};
use crate::attest::{BOOT_ID_LEN, PUBLIC_KEY_LEN};

include!(concat!(env!("OUT_DIR"), "/credguard.vmm.v1.rs"));

/// The vsock port the VMM answers itself with a [`VmmStatus`], never forwarded to the guest
/// (the guest cannot listen on it in its place).
pub const VMM_STATUS_PORT: u32 = u32::MAX - 1;

/// Longest encoded [`VmmStatus`] a client reads.
pub const MAX_VMM_STATUS_LEN: usize = 16 * 1024;

/// Most restart reasons the VMM reports (the most recent).
pub const MAX_RESTART_REASONS: usize = 8;
/// Longest restart reason the VMM reports, in bytes (one line, cut at a character boundary).
pub const MAX_RESTART_REASON_LEN: usize = 120;

/// The reasons the VMM reports of `reasons` (oldest first): the last [`MAX_RESTART_REASONS`],
/// each cut to its first line and at most [`MAX_RESTART_REASON_LEN`] bytes.
pub fn kept_restart_reasons(reasons: &[String]) -> Vec<String> {
    let skip = reasons.len().saturating_sub(MAX_RESTART_REASONS);
    reasons[skip..]
        .iter()
        .map(|reason| {
            let line = reason.lines().next().unwrap_or("");
            let mut end = line.len().min(MAX_RESTART_REASON_LEN);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            String::from(&line[..end])
        })
        .collect()
}

/// Bits of [`VmmStatus::protection_bits`]: how the enclave's memory and the VMM are protected.
pub mod protection {
    /// Guest RAM is a `guest_memfd` (otherwise anonymous memory of the VMM).
    pub const GUEST_MEMFD: u64 = 1 << 0;
    /// Guest RAM outside the boot tables, the image and the DMA window is not mapped in the VMM.
    pub const HIDDEN: u64 = 1 << 1;
    /// The guest RAM the VMM maps is `mlock`ed (never swapped).
    pub const MLOCKED: u64 = 1 << 2;
    /// The guest RAM the VMM maps is excluded from core dumps (`MADV_DONTDUMP`).
    pub const DONTDUMP: u64 = 1 << 3;
    /// Every VMM thread runs under a seccomp allow-list.
    pub const SECCOMP: u64 = 1 << 4;
    /// The VMM process is not dumpable (`PR_SET_DUMPABLE` 0: no core, no ptrace by non-root).
    pub const NOT_DUMPABLE: u64 = 1 << 5;
    /// The VMM process cannot gain privileges (`PR_SET_NO_NEW_PRIVS`).
    pub const NO_NEW_PRIVS: u64 = 1 << 6;
    /// The guest RAM the VMM maps is locked page by page as it is first touched
    /// (`mlock2(MLOCK_ONFAULT)`, the anonymous fallback) rather than all up front ([`MLOCKED`]).
    pub const MLOCKED_ON_FAULT: u64 = 1 << 7;
    /// The guest's page tables are W^X: the image's code read-only and executable, everything
    /// else not executable (built from the image's ELF program headers).
    pub const W_XOR_X: u64 = 1 << 8;
    /// CR4.SMEP: ring 0 cannot execute ring-3 pages (set only where KVM offers it).
    pub const SMEP: u64 = 1 << 9;
    /// CR4.SMAP: ring 0 touches ring-3 pages only inside explicit RFLAGS.AC brackets (set only
    /// where KVM offers it).
    pub const SMAP: u64 = 1 << 10;
    /// Set whenever the VMM filled the bits in.
    pub const KNOWN: u64 = 1 << 63;
}

/// A one-line description of `protection` bits, e.g. "guest_memfd, 2.16 of 16 MiB mapped in the
/// VMM, mlocked, no core dump of guest memory, seccomp on, dumpable off, no new privileges, W^X,
/// SMEP off, SMAP off".
pub fn describe_protection(bits: u64, host_mapped_bytes: u64, ram_size: u64) -> String {
    use core::fmt::Write;
    use protection::*;
    let mut s = String::new();
    if bits & KNOWN == 0 {
        s.push_str("unknown (the VMM did not report it)");
        return s;
    }
    s.push_str(if bits & GUEST_MEMFD != 0 {
        "guest_memfd"
    } else {
        "anonymous memory"
    });
    let mib = |b: u64| {
        let hundredths = b * 100 / (1 << 20);
        (hundredths / 100, hundredths % 100)
    };
    let (mi, mf) = mib(host_mapped_bytes);
    let (ri, rf) = mib(ram_size);
    let _ = write!(s, ", {mi}.{mf:02} of {ri}.{rf:02} MiB mapped in the VMM");
    let flag = |s: &mut String, on: bool, yes: &str, no: &str| {
        s.push_str(", ");
        s.push_str(if on { yes } else { no });
    };
    s.push_str(if bits & MLOCKED != 0 {
        ", mlocked"
    } else if bits & MLOCKED_ON_FAULT != 0 {
        ", mlocked on fault"
    } else {
        ", not mlocked"
    });
    flag(
        &mut s,
        bits & DONTDUMP != 0,
        "no core dump of guest memory",
        "guest memory in core dumps",
    );
    flag(&mut s, bits & SECCOMP != 0, "seccomp on", "seccomp off");
    flag(&mut s, bits & NOT_DUMPABLE != 0, "dumpable off", "dumpable on");
    flag(
        &mut s,
        bits & NO_NEW_PRIVS != 0,
        "no new privileges",
        "new privileges allowed",
    );
    flag(&mut s, bits & W_XOR_X != 0, "W^X", "no W^X");
    flag(&mut s, bits & SMEP != 0, "SMEP on", "SMEP off");
    flag(&mut s, bits & SMAP != 0, "SMAP on", "SMAP off");
    s
}

/// Domain separation of the attestation message (never a valid prefix of anything else signed).
///
/// v3: the VMM's restart count and reasons are signed too (issue 14).
pub const ATTESTATION_DOMAIN: &[u8] = b"credguard enclave attestation v3\0";

/// Everything the VMM's attestation signature covers for one boot: the image it measured and
/// whose signer it verified, the boot and public key the enclave made, how the enclave's memory
/// and the VMM are protected, the image's signed policy, what the enclave says of its build, and
/// how often and why the VMM restarted the enclave before this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// SHA-384 of the signed image.
    pub measurement: [u8; MEASUREMENT_LEN],
    /// Fingerprint of the key that signed the image.
    pub signer: [u8; SIGNER_LEN],
    /// This boot's random id.
    pub boot_id: [u8; BOOT_ID_LEN],
    /// This boot's X25519 sealing public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// [`protection`] bits in force.
    pub protection_bits: u64,
    /// Bytes of guest RAM the VMM keeps mapped.
    pub host_mapped_bytes: u64,
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// The image's signed [`crate::abi::policy`] bits.
    pub policy_bits: u64,
    /// [`crate::abi::enclave_flags`] bits the enclave reported.
    pub enclave_flags: u64,
    /// Restarts of the enclave before this boot.
    pub restarts: u64,
    /// Their reasons as the VMM reports them ([`kept_restart_reasons`]).
    pub restart_reasons: Vec<String>,
}

/// The message the VMM's attestation key signs for one boot.
pub fn attestation_message(a: &Attested) -> Vec<u8> {
    let mut m = Vec::with_capacity(ATTESTATION_DOMAIN.len() + MEASUREMENT_LEN + SIGNER_LEN + 48 + 6 * 8);
    m.extend_from_slice(ATTESTATION_DOMAIN);
    m.extend_from_slice(&a.measurement);
    m.extend_from_slice(&a.signer);
    m.extend_from_slice(&a.boot_id);
    m.extend_from_slice(&a.public_key);
    for word in [
        a.protection_bits,
        a.host_mapped_bytes,
        a.ram_size,
        a.policy_bits,
        a.enclave_flags,
        a.restarts,
        a.restart_reasons.len() as u64,
    ] {
        m.extend_from_slice(&word.to_le_bytes());
    }
    // Length-prefixed, so that no two lists of reasons give the same bytes.
    for reason in &a.restart_reasons {
        m.extend_from_slice(&(reason.len() as u64).to_le_bytes());
        m.extend_from_slice(reason.as_bytes());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi;

    fn attested() -> Attested {
        Attested {
            measurement: [1; 48],
            signer: [2; 16],
            boot_id: [3; 16],
            public_key: [4; 32],
            protection_bits: 5,
            host_mapped_bytes: 6,
            ram_size: 7,
            policy_bits: 8,
            enclave_flags: 9,
            restarts: 10,
            restart_reasons: vec!["panic: a".into(), "b".into()],
        }
    }

    #[test]
    fn attestation_message_binds_every_field() {
        let base = attestation_message(&attested());
        assert!(base.starts_with(ATTESTATION_DOMAIN));
        let changes: [fn(&mut Attested); 12] = [
            |a| a.measurement[0] ^= 1,
            |a| a.signer[0] ^= 1,
            |a| a.boot_id[0] ^= 1,
            |a| a.public_key[0] ^= 1,
            |a| a.protection_bits ^= 1,
            |a| a.host_mapped_bytes ^= 1,
            |a| a.ram_size ^= 1,
            |a| a.policy_bits ^= 1,
            |a| a.enclave_flags ^= 1,
            |a| a.restarts ^= 1,
            |a| a.restart_reasons[0].push('!'),
            |a| drop(a.restart_reasons.pop()),
        ];
        for change in changes {
            let mut a = attested();
            change(&mut a);
            assert_ne!(attestation_message(&a), base);
        }
    }

    #[test]
    fn restart_reasons_are_unambiguous_in_the_message() {
        let with = |reasons: &[&str]| {
            let mut a = attested();
            a.restart_reasons = reasons.iter().map(|r| String::from(*r)).collect();
            attestation_message(&a)
        };
        assert_ne!(with(&["ab", "c"]), with(&["a", "bc"]));
        assert_ne!(with(&["ab"]), with(&["ab", ""]));
    }

    #[test]
    fn only_the_most_recent_reasons_are_kept_each_one_short_line() {
        let mut reasons: Vec<String> = (0..20).map(|i| alloc::format!("{i}: {}", "x".repeat(200))).collect();
        reasons.push("last one\nsecond line".into());
        let kept = kept_restart_reasons(&reasons);
        assert_eq!(kept.len(), MAX_RESTART_REASONS);
        assert_eq!(kept.last().map(String::as_str), Some("last one"));
        assert!(kept[0].starts_with("13: ") && kept.iter().all(|r| r.len() <= MAX_RESTART_REASON_LEN));
        let kept = kept_restart_reasons(&["é".repeat(100)]);
        assert!(kept[0].len() <= MAX_RESTART_REASON_LEN && kept[0].chars().all(|c| c == 'é'));
    }

    #[test]
    fn protection_is_described() {
        let all = protection::GUEST_MEMFD
            | protection::HIDDEN
            | protection::MLOCKED
            | protection::DONTDUMP
            | protection::SECCOMP
            | protection::NOT_DUMPABLE
            | protection::NO_NEW_PRIVS
            | protection::W_XOR_X
            | protection::SMEP
            | protection::SMAP
            | protection::KNOWN;
        let d = describe_protection(all, 0x22_8000, abi::DEFAULT_RAM_SIZE);
        assert!(
            d.starts_with("guest_memfd, 2.15 of 16.00 MiB mapped in the VMM, mlocked,"),
            "{d}"
        );
        assert!(d.contains("seccomp on") && d.contains("dumpable off"), "{d}");
        assert!(d.ends_with("W^X, SMEP on, SMAP on"), "{d}");
        let d = describe_protection(protection::KNOWN, abi::DEFAULT_RAM_SIZE, abi::DEFAULT_RAM_SIZE);
        assert!(
            d.starts_with("anonymous memory, 16.00 of 16.00 MiB") && d.contains("seccomp off"),
            "{d}"
        );
        assert!(
            d.contains("not mlocked") && d.ends_with("no W^X, SMEP off, SMAP off"),
            "{d}"
        );
        let d = describe_protection(
            protection::KNOWN | protection::MLOCKED_ON_FAULT | protection::DONTDUMP,
            abi::DEFAULT_RAM_SIZE,
            abi::DEFAULT_RAM_SIZE,
        );
        assert!(
            d.starts_with("anonymous memory, 16.00 of 16.00 MiB mapped in the VMM, mlocked on fault, no core dump"),
            "{d}"
        );
        assert!(describe_protection(0, 0, 0).starts_with("unknown"));
    }
}
