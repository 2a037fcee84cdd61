//! Interrupt controllers: KVM's in-kernel PIC, IOAPIC and local APIC, set up so the enclave needs
//! no ring-0 code (emulated, hence slow) to program them.
//!
//! The legacy PICs are masked; the IOAPIC routes [`abi::VSOCK_GSI`] and [`abi::DOORBELL_GSI`] to
//! their vectors on APIC 0; the local APIC is software-enabled. The enclave only has to write EOI.

use credguard_proto::abi;
use kvm_bindings::{KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip};
use kvm_ioctls::{VcpuFd, VmFd};

/// Offset of the spurious-interrupt vector register in the local APIC page.
const LAPIC_SVR_OFFSET: usize = 0xf0;
/// SVR value: APIC software-enabled, spurious vector 0xff.
const LAPIC_SVR_ENABLED: u32 = 0x1ff;

/// Errors while setting up the interrupt controllers.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A GSI has no IOAPIC pin.
    #[error("GSI {0} has no IOAPIC pin")]
    NoSuchPin(u32),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> InterruptError {
    move |source| InterruptError::Kvm { what, source }
}

/// An IOAPIC redirection-table entry: fixed delivery of `vector` to the local APIC with physical
/// ID `dest_apic`, edge-triggered, active high, unmasked.
pub fn ioapic_redirection_entry(vector: u8, dest_apic: u8) -> u64 {
    // Bits 8-10 delivery mode (0 = fixed), 11 destination mode (0 = physical), 13 polarity
    // (0 = high), 15 trigger (0 = edge), 16 mask (0 = unmasked), 56-63 destination.
    u64::from(vector) | (u64::from(dest_apic) << 56)
}

/// Creates the in-kernel irqchip (before any vCPU exists), masks the PICs and routes the
/// enclave's two GSIs.
pub fn setup_irqchip(vm: &VmFd) -> Result<(), InterruptError> {
    vm.create_irq_chip().map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;

    for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip).map_err(kvm_err("KVM_GET_IRQCHIP (PIC)"))?;
        // SAFETY: KVM_GET_IRQCHIP with a PIC chip id filled the `pic` member of the union.
        let mut pic = unsafe { chip.chip.pic };
        pic.imr = 0xff;
        chip.chip.pic = pic;
        vm.set_irqchip(&chip).map_err(kvm_err("KVM_SET_IRQCHIP (PIC)"))?;
    }

    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(kvm_err("KVM_GET_IRQCHIP (IOAPIC)"))?;
    // SAFETY: KVM_GET_IRQCHIP with the IOAPIC chip id filled the `ioapic` member of the union.
    let mut ioapic = unsafe { chip.chip.ioapic };
    for (gsi, vector) in [
        (abi::VSOCK_GSI, abi::VSOCK_VECTOR),
        (abi::DOORBELL_GSI, abi::DOORBELL_VECTOR),
    ] {
        let pin = ioapic
            .redirtbl
            .get_mut(gsi as usize)
            .ok_or(InterruptError::NoSuchPin(gsi))?;
        pin.bits = ioapic_redirection_entry(vector, 0);
    }
    chip.chip.ioapic = ioapic;
    vm.set_irqchip(&chip).map_err(kvm_err("KVM_SET_IRQCHIP (IOAPIC)"))
}

/// Software-enables the vCPU's local APIC, so the IOAPIC's interrupts are delivered.
pub fn enable_lapic(vcpu: &VcpuFd) -> Result<(), InterruptError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    let svr = LAPIC_SVR_ENABLED.to_le_bytes();
    for (i, b) in svr.iter().enumerate() {
        // `regs` is `c_char`, signed on x86: the cast keeps the bit pattern.
        lapic.regs[LAPIC_SVR_OFFSET + i] = *b as std::os::raw::c_char;
    }
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirection_entry_is_fixed_physical_edge_unmasked() {
        let e = ioapic_redirection_entry(abi::VSOCK_VECTOR, 0);
        assert_eq!(e & 0xff, u64::from(abi::VSOCK_VECTOR));
        assert_eq!((e >> 8) & 0b111, 0, "fixed delivery");
        assert_eq!((e >> 11) & 1, 0, "physical destination");
        assert_eq!((e >> 13) & 1, 0, "active high");
        assert_eq!((e >> 15) & 1, 0, "edge");
        assert_eq!((e >> 16) & 1, 0, "unmasked");
        assert_eq!(e >> 56, 0, "APIC 0");
        assert_eq!(ioapic_redirection_entry(0x31, 2), 0x0200_0000_0000_0031);
    }
}
