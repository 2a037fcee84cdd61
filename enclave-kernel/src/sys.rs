//! Ring-3 runtime: system calls, the console macro, the heap, the panic handler, the TSC, and the
//! memory functions the compiler expects from a C library.

use core::arch::asm;
use core::fmt::{self, Write};

use credguard_enclave::fmtbuf::FixedBuf;
use credguard_proto::abi::{self, ExitCode};
use spinning_top::RawSpinlock;
use talc::TalcLock;
use talc::source::Manual;

/// `int 0x80` with `nr`, `a0`, `a1`; see the convention in `ring0`.
#[inline(always)]
fn syscall(nr: u64, a0: u64, a1: u64) -> u64 {
    let ret: u64;
    // SAFETY: the ring-0 handler only reads the arguments (SYS_WRITE reads a0..a0+a1, which the
    // callers pass from a live slice) and clobbers exactly the registers declared here.
    unsafe {
        asm!(
            "int 0x80",
            inlateout("rax") nr => ret,
            inlateout("rdi") a0 => _,
            inlateout("rsi") a1 => _,
            lateout("rcx") _,
            lateout("rdx") _,
            options(nostack),
        );
    }
    ret
}

/// Console bytes on their way to ring 0, in the image's `.bss`. Ring 0 is emulated by KVM on the
/// target machines, and the emulator reads guest memory through the VMM's mapping of it; the VMM
/// maps the image but not the ring-3 heap and stack (where the caller's buffer usually is), so the
/// bytes are copied here first. Console output is never secret.
static CONSOLE_BOUNCE: spinning_top::Spinlock<[u8; 256]> = spinning_top::Spinlock::new([0; 256]);

/// Writes `bytes` to the serial console (25 µs per byte: keep it short).
pub fn write(bytes: &[u8]) {
    let mut bounce = CONSOLE_BOUNCE.lock();
    for chunk in bytes.chunks(bounce.len()) {
        bounce[..chunk.len()].copy_from_slice(chunk);
        syscall(abi::SYS_WRITE, bounce.as_ptr() as u64, chunk.len() as u64);
    }
}

/// Sleeps until an interrupt arrives, or returns at once if one arrived since the last call.
pub fn wait() {
    syscall(abi::SYS_WAIT, 0, 0);
}

/// Asks the VMM to sign the attestation in the exchange page; returns once it has answered.
pub fn attest() {
    syscall(abi::SYS_ATTEST, 0, 0);
}

/// Stops the guest with `code`.
pub fn exit(code: ExitCode) -> ! {
    syscall(abi::SYS_EXIT, code as u32 as u64, 0);
    // SYS_EXIT never returns; should it, spin rather than run on.
    loop {
        core::hint::spin_loop();
    }
}

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[allow(unused_unsafe)]
    // SAFETY: RDTSC is always available in ring 3 (CR4.TSD is clear).
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// Formats one line (at most 200 bytes) to the console.
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut line = FixedBuf::<200>::new();
    let _ = line.write_fmt(args);
    line.finish_with(b"\n");
    write(line.as_bytes());
}

/// `println!` for the enclave console: one short line.
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::sys::print_line(format_args!($($arg)*)) };
}
pub(crate) use kprintln;

#[global_allocator]
static HEAP: TalcLock<RawSpinlock, Manual> = TalcLock::new(Manual);

/// Bytes the allocator could still hand out (fragmentation aside): what the service checks
/// before work that can grow its state.
pub fn free_heap() -> usize {
    HEAP.lock().counters().available_bytes
}

/// Gives the heap `[start, start + size)` to the allocator.
///
/// # Safety
/// The range must be mapped, writable, and used for nothing else for the rest of the run.
pub unsafe fn init_heap(start: u64, size: u64) {
    // SAFETY: per the caller.
    let claimed = unsafe { HEAP.lock().claim(start as *mut u8, size as usize) };
    if claimed.is_none() {
        panic!("heap {start:#x}+{size:#x} is too small for the allocator");
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut msg = FixedBuf::<512>::new();
    let _ = msg.write_str("\nPANIC");
    if let Some(loc) = info.location() {
        let _ = write!(msg, " at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    let _ = write!(msg, ": {}", info.message());
    msg.finish_with(b"\n");
    write(msg.as_bytes());
    exit(ExitCode::Panic)
}

// The memory functions LLVM emits calls to. String instructions run natively in ring 3 and keep
// LLVM from recognising these loops as calls to themselves.

/// # Safety
/// C `memcpy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes valid, non-overlapping ranges of n bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// C `memmove`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src, or the ranges do not overlap: copy forwards.
        // SAFETY: as memcpy; a forward copy is correct for this overlap.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // dst overlaps the tail of src: copy backwards, then restore DF = 0 as the ABI requires.
        // SAFETY: n >= 1 here (else the branch above is taken); both ranges are valid.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
                 options(nostack));
        }
    }
    dst
}

/// # Safety
/// C `memset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller passes a valid range of n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// C `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let left: usize;
    let pa: *const u8;
    let pb: *const u8;
    // SAFETY: both ranges are valid for n bytes; REPE CMPSB stops at the first difference.
    unsafe {
        asm!("repe cmpsb",
             inout("rcx") n => left, inout("rsi") a => pa, inout("rdi") b => pb,
             options(nostack, readonly));
    }
    // After the loop RSI/RDI point one past the last compared bytes.
    // SAFETY: at least one byte was compared, so pa - 1 and pb - 1 are in range.
    let (x, y) = unsafe { (*pa.sub(1), *pb.sub(1)) };
    let _ = left;
    x as i32 - y as i32
}

/// # Safety
/// C `bcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

// The prebuilt `core`/`alloc` are compiled with unwinding tables and may reference these even
// though this binary aborts on panic; they are never called.

/// Never called: panics abort.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Never called: panics abort.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    sys_abort()
}

fn sys_abort() -> ! {
    exit(ExitCode::Panic)
}
