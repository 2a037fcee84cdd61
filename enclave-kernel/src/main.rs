//! The credguard enclave kernel, bare metal.
//!
//! Ring 0 is a few dozen instructions of assembly (`ring0`): it drops to ring 3 at boot and then
//! only takes interrupts, faults and system calls. Everything else, including the virtio-vsock
//! driver and the service, runs here in ring 3 as ordinary Rust, natively fast under the nested
//! KVM of the target machines (where ring 0 is emulated). The boot ABI, memory layout and exit
//! codes are `credguard_proto::abi`.
#![no_std]
#![no_main]

extern crate alloc;

#[cfg(feature = "test-modes")]
mod bench;
mod hal;
mod ring0;
mod serve;
mod sys;

use credguard_enclave::rng::{HwRng, cpu_has_rdseed};
use credguard_proto::abi::{BootInfo, BootMode};
use rand_core::TryRng;

#[cfg(feature = "test-modes")]
use crate::sys::kprintln;

/// Ring-3 entry, reached by `iretq` from `_start` with RDI = the boot info and RSP = 16n-8.
#[unsafe(no_mangle)]
extern "C" fn user_main(boot_info: *const BootInfo) -> ! {
    let start_tsc = sys::rdtsc();
    // SAFETY: the VMM maps the boot info user-readable at BOOT_INFO_GPA and passes its address.
    let boot: BootInfo = unsafe { core::ptr::read_volatile(boot_info) };
    let mode = match credguard_enclave::boot::check(&boot) {
        Ok(mode) => mode,
        Err(e) => panic!("refusing to start: {e}"),
    };
    // SAFETY: `check` confirmed the heap lies in RAM above the DMA window and below the stack.
    unsafe { sys::init_heap(boot.heap_start, boot.heap_size) };
    // No boot line on the console (25 µs a character): the VMM logs "enclave up" from the boot
    // facts the service hands over with its attestation request.

    match mode {
        BootMode::Service => {
            check_rng();
            serve::run(&boot, start_tsc, None)
        }
        test_mode => run_test_mode(test_mode, &boot, start_tsc),
    }
}

/// The boot modes of a test image: a panic self-test, the doorbell benchmark, and fault injection
/// for the VMM's restart and watchdog tests. Compiled only with the `test-modes` feature, and
/// then the enclave reports itself a test build in its attestation.
#[cfg(feature = "test-modes")]
fn run_test_mode(mode: BootMode, boot: &BootInfo, start_tsc: u64) -> ! {
    match mode {
        BootMode::PanicSelfTest => panic!("panic self-test requested by the VMM"),
        BootMode::DoorbellBench => bench::run(boot),
        BootMode::ServicePanicAfter => {
            check_rng();
            serve::run(boot, start_tsc, Some(serve::Fault::PanicAfter(boot.mode_arg)))
        }
        BootMode::ServiceHangAfter => {
            check_rng();
            serve::run(boot, start_tsc, Some(serve::Fault::HangAfter(boot.mode_arg)))
        }
        BootMode::WriteCodeSelfTest => write_code_self_test(),
        BootMode::Service => serve::run(boot, start_tsc, None),
    }
}

/// Writes to this very function's code, which the VMM's W^X page tables map read-only: the write
/// faults (#PF, reported by ring 0's fault record). Reveals nothing and changes nothing the
/// VMM could not: the VMM chooses the boot mode and maps the image anyway.
#[cfg(feature = "test-modes")]
fn write_code_self_test() -> ! {
    let code = write_code_self_test as fn() -> ! as *mut u8;
    kprintln!("W^X self-test: writing to code at {code:p}");
    // SAFETY: on purpose: the write must fault. Should it not, the byte written is the one read
    // (the code stays as it was) and the panic below says the page tables are not W^X.
    unsafe { code.write_volatile(code.read_volatile()) };
    panic!("W^X self-test: writing to code at {code:p} did not fault");
}

/// A production image has none of the test modes.
#[cfg(not(feature = "test-modes"))]
fn run_test_mode(mode: BootMode, _boot: &BootInfo, _start_tsc: u64) -> ! {
    panic!(
        "boot mode {mode:?} exists only in a test image (built with the test-modes feature); this is a production image"
    )
}

/// Refuses to serve without a working hardware RNG (NTLM and Kerberos need one).
fn check_rng() {
    let Some(mut rng) = HwRng::new() else {
        panic!("the CPU has no RDRAND (CPUID.1:ECX[30]); refusing to start without a hardware RNG");
    };
    if !cpu_has_rdseed() {
        panic!("the CPU has no RDSEED (CPUID.7.0:EBX[18]); refusing to start without a hardware RNG");
    }
    match (rng.try_next_u64(), rng.try_next_u64()) {
        (Ok(a), Ok(b)) if a != b => {}
        _ => panic!("RDRAND is present but returns no usable randomness; refusing to start"),
    }
}
