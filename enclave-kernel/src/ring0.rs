//! Everything that runs in ring 0, in assembly.
//!
//! Guest ring-0 code is executed by KVM's instruction emulator on the target machines (thousands of
//! times slower than native), so ring 0 does only what ring 3 cannot: drop to ring 3 at entry,
//! take interrupts, faults and system calls, halt, and port I/O. No Rust runs here, so neither the
//! red zone nor SSE state matters: the handlers touch only the registers they save or that the
//! system-call convention clobbers.
//!
//! System-call convention (`int 0x80`, gate DPL 3): RAX = number, RDI and RSI = arguments; RAX
//! returns 0 (or `u64::MAX` for an unknown number). RCX, RDX, RSI and RDI may be clobbered; all
//! other registers and RFLAGS are preserved (IRETQ restores RFLAGS).
//!
//! Measured on the target machines (nested PVM KVM, guest without a PVM vCPU struct): a ring-3
//! `int 0x80` does not go through the gate but arrives as #UD with RIP at the `cd 80`, so the #UD
//! stub recognises it and continues as the system call (on hardware that honours the gate, vector
//! 0x80 is taken directly; both paths end in the same handler). External interrupts and CPU
//! exceptions are delivered through the IDT as usual. The legacy PICs must be masked by the VMM:
//! an unprogrammed PIC delivers GSI n as vector n through the local APIC's ExtINT LINT0 (GSI 6,
//! the doorbell, then shows up as a bogus #UD).

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::AtomicU8;

use credguard_proto::abi::{self, BootInfo, ExitCode, Report};

/// Set by the interrupt handler, cleared by `SYS_WAIT`: an interrupt arrived since the last wait.
/// Closes the race between ring 3 finding nothing to do and halting.
#[unsafe(no_mangle)]
pub static IRQ_PENDING: AtomicU8 = AtomicU8::new(0);

// Two tables of 256 vector stubs of exactly VECTOR_STUB_SIZE bytes each, placed first in the
// image by the linker script (which asserts their address and total size): the first for a guest
// without SMAP, the second (at SMAP_VECTOR_STUBS_GPA) for one with CR4.SMAP on, whose handlers
// bracket every access to a ring-3 page with RFLAGS.AC. The VMM points the IDT at one of them.
//
// No handler saves a general-purpose register on the ring-0 stack, which the VMM keeps mapped:
// what lands there is only the CPU's own interrupt frame (RIP, CS, RFLAGS, RSP, SS), the stubs'
// constants (vector, zero error code), and, with SMAP, RFLAGS copies around the AC brackets.
global_asm!(
    r#"
    // RFLAGS.AC on/off around a ring-0 access to a ring-3 page, in the SMAP handlers only.
    // popfq rather than stac/clac: KVM's instruction emulator, which runs all guest ring-0 code
    // on the target machines, cannot emulate stac/clac (an emulation failure ends the guest).
    // The arithmetic flags of the instruction before survive (popfq restores them).
    .macro cg_ac_on smap
    .if \smap
        pushfq
        orl ${ac}, (%rsp)
        popfq
    .endif
    .endm
    .macro cg_ac_off smap
    .if \smap
        pushfq
        andl ${not_ac}, (%rsp)
        popfq
    .endif
    .endm

    .macro cg_vector_stubs sfx
    .set cg_vec, 0
    .rept 256
        .balign {stub_size}
        .if (cg_vec == {vsock_vector}) || (cg_vec == {doorbell_vector})
            jmp cg_irq_entry_\sfx
        .elseif cg_vec == {syscall_vector}
            jmp cg_syscall_entry_\sfx
        .elseif cg_vec == 6
            jmp cg_ud_entry_\sfx
        .elseif cg_vec == 0xff
            iretq
        .else
            .if !((cg_vec == 8) || ((cg_vec >= 10) && (cg_vec <= 14)) || (cg_vec == 17) || (cg_vec == 21) || (cg_vec == 29) || (cg_vec == 30))
                pushq $0
            .endif
            pushq $cg_vec
            jmp cg_fault_entry_\sfx
        .endif
        .set cg_vec, cg_vec + 1
    .endr
    .balign {stub_size}
    .endm

    .section .vectors, "ax", @progbits
    .balign {stub_size}
    cg_vector_stubs plain
    cg_vector_stubs smap
    "#,
    stub_size = const abi::VECTOR_STUB_SIZE,
    vsock_vector = const abi::VSOCK_VECTOR,
    doorbell_vector = const abi::DOORBELL_VECTOR,
    syscall_vector = const abi::SYSCALL_VECTOR,
    ac = const abi::RFLAGS_AC,
    not_ac = const !(abi::RFLAGS_AC as u32),
    options(att_syntax),
);

global_asm!(
    r#"
    .section .text.ring0, "ax", @progbits

    // Entry from the VMM: ring 0, RDI = &BootInfo, RSP = KERNEL_STACK_TOP, interrupts off, AC on
    // (the boot info is a ring-3 page). Drop to ring 3 at user_main(RDI) on the user stack, with
    // interrupts on and AC off.
    .globl _start
_start:
    movq {stack_top_off}(%rdi), %rax
    subq $8, %rax
    pushq ${user_ds}
    pushq %rax
    pushq $0x202
    pushq ${user_cs}
    leaq {user_main}(%rip), %rax
    pushq %rax
    iretq

    // The handlers, once without and once with the SMAP brackets (see the stub tables).
    .macro cg_handlers sfx, smap

    // vsock and doorbell interrupts: note it, EOI through the LAPIC alias below 2 GiB (an
    // absolute address, so no register is needed, hence none saved), return.
cg_irq_entry_\sfx:
    cg_ac_on \smap
    movb $1, {irq_pending}(%rip)
    movl $0, {eoi}
    iretq

cg_syscall_entry_\sfx:
    cmpq ${sys_write}, %rax
    je 1f
    cmpq ${sys_wait}, %rax
    je 2f
    cmpq ${sys_exit}, %rax
    je 3f
    cmpq ${sys_attest}, %rax
    je 8f
    movq $-1, %rax
    iretq
8:  // SYS_ATTEST: the VMM answers in the exchange page before the `out` completes
    movw ${attest_port}, %dx
    outl %eax, %dx
    xorl %eax, %eax
    iretq
1:  // SYS_WRITE(RDI = ptr, RSI = len): reads the ring-3 buffer
    movq %rsi, %rcx
    movq %rdi, %rsi
    movw ${serial}, %dx
    cg_ac_on \smap
    rep outsb
    xorl %eax, %eax
    iretq
2:  // SYS_WAIT: sleep unless an interrupt came since the last wait
    cg_ac_on \smap
    cmpb $0, {irq_pending}(%rip)
    cg_ac_off \smap
    jne 4f
    sti
    hlt
    // Back from the interrupt handler with IF = 1, left so to save an emulated CLI: an interrupt
    // landing before the clear below has its work found by the poll ring 3 makes right after.
4:  cg_ac_on \smap
    movb $0, {irq_pending}(%rip)
    xorl %eax, %eax
    iretq
3:  // SYS_EXIT(RDI = ExitCode)
    movl %edi, %eax
    movw ${exit_port}, %dx
    outl %eax, %dx
5:  hlt
    jmp 5b

    // #UD. Under the nested PVM KVM of the target machines, `int 0x80` from ring 3 arrives as #UD
    // at the INT instruction instead of through the DPL-3 gate: treat #UD at `cd 80` as the system
    // call and resume after it. Any other #UD is a fault. The faulting RIP is read into RCX, which
    // a system call may clobber anyway (and a real #UD ends the guest): nothing of ring 3 is
    // saved on the stack.
cg_ud_entry_\sfx:
    movq (%rsp), %rcx
    cg_ac_on \smap
    cmpw $0x80cd, (%rcx)
    cg_ac_off \smap
    jne 7f
    addq $2, (%rsp)
    jmp cg_syscall_entry_\sfx
7:  pushq $0
    pushq $6
    jmp cg_fault_entry_\sfx

    // CPU exceptions and unexpected vectors. Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS.
    // The fault record goes to the report page (ring 3's); the guest then stops for good.
cg_fault_entry_\sfx:
    cg_ac_on \smap
    movl ${report}, %eax
    popq {off_vector}(%rax)
    popq {off_error}(%rax)
    popq {off_rip}(%rax)
    popq {off_cs}(%rax)
    popq {off_rflags}(%rax)
    popq {off_rsp}(%rax)
    movq %cr2, %rdx
    movq %rdx, {off_cr2}(%rax)
    movl ${fault}, %eax
    movw ${exit_port}, %dx
    outl %eax, %dx
6:  hlt
    jmp 6b
    .endm

    cg_handlers plain, 0
    cg_handlers smap, 1
    "#,
    stack_top_off = const offset_of!(BootInfo, user_stack_top),
    user_ds = const abi::USER_DS,
    user_cs = const abi::USER_CS,
    user_main = sym crate::user_main,
    irq_pending = sym IRQ_PENDING,
    eoi = const abi::LAPIC_ALIAS_VA + abi::LAPIC_EOI_OFFSET,
    sys_write = const abi::SYS_WRITE,
    sys_wait = const abi::SYS_WAIT,
    sys_exit = const abi::SYS_EXIT,
    sys_attest = const abi::SYS_ATTEST,
    attest_port = const abi::ATTEST_PORT,
    serial = const abi::SERIAL_PORT,
    exit_port = const abi::EXIT_PORT,
    report = const abi::REPORT_GPA,
    off_vector = const offset_of!(Report, fault_vector),
    off_error = const offset_of!(Report, fault_error_code),
    off_rip = const offset_of!(Report, fault_rip),
    off_cs = const offset_of!(Report, fault_cs),
    off_rflags = const offset_of!(Report, fault_rflags),
    off_rsp = const offset_of!(Report, fault_rsp),
    off_cr2 = const offset_of!(Report, fault_cr2),
    fault = const ExitCode::Fault as u32,
    options(att_syntax),
);

// The assembly relies on these; fail the build if the ABI moves them.
const _: () = {
    assert!(
        abi::LAPIC_ALIAS_VA + abi::LAPIC_EOI_OFFSET < 0x8000_0000,
        "the EOI address must fit a sign-extended disp32"
    );
    assert!(abi::RFLAGS_AC <= u32::MAX as u64, "AC must fit orl");
    assert!(abi::REPORT_GPA <= u32::MAX as u64, "report address must fit movl");
    assert!(abi::VECTOR_STUB_SIZE == 32);
    assert!(abi::IDT_ENTRIES == 256);
};
