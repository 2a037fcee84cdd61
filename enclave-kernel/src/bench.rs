//! `BootMode::DoorbellBench`: time doorbell round trips (ring-3 MMIO write to the ioeventfd, the
//! VMM answers with an interrupt on `abi::DOORBELL_VECTOR`) and report them in the Report page.

use alloc::vec::Vec;
use core::mem::offset_of;
use core::ptr;

use credguard_enclave::stats::{Summary, summarize};
use credguard_proto::abi::{self, BootInfo, ExitCode, Report};

use crate::sys::{self, kprintln};

/// Upper bound on iterations (keeps the sample buffer under 1 MiB).
pub const MAX_ITERATIONS: u64 = 100_000;

pub fn run(boot: &BootInfo) -> ! {
    let n = boot.mode_arg.min(MAX_ITERATIONS) as usize;
    let mut samples = Vec::with_capacity(n);
    let doorbell = abi::DOORBELL_MMIO_GPA as *mut u32;
    for _ in 0..n {
        let t0 = sys::rdtsc();
        // SAFETY: the doorbell page is mapped user-accessible, uncached MMIO.
        unsafe { ptr::write_volatile(doorbell, 1) };
        sys::wait();
        let t1 = sys::rdtsc();
        samples.push(t1.wrapping_sub(t0));
    }
    let s = summarize(&mut samples);
    write_report(&s);
    kprintln!(
        "bench: {} round trips, median {} p99 {} min {} cycles",
        s.iterations,
        s.median,
        s.p99,
        s.min
    );
    sys::exit(ExitCode::BenchDone)
}

fn write_report(s: &Summary) {
    let field = |off: usize| (abi::REPORT_GPA as usize + off) as *mut u64;
    // SAFETY: the Report page is mapped user-writable at REPORT_GPA; the offsets are Report's.
    unsafe {
        ptr::write_volatile(field(offset_of!(Report, bench_iterations)), s.iterations);
        ptr::write_volatile(field(offset_of!(Report, bench_median_cycles)), s.median);
        ptr::write_volatile(field(offset_of!(Report, bench_p99_cycles)), s.p99);
        ptr::write_volatile(field(offset_of!(Report, bench_min_cycles)), s.min);
    }
}
