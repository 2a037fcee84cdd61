//! Tests that boot real (tiny, hand-assembled) guests under KVM.
//!
//! Each guest is an ELF built here: 256 interrupt stubs at the image base (as the ABI requires),
//! each recording its vector in the report page and jumping to a common handler that records the
//! fault frame and exits with `ExitCode::Fault`; then a test-specific program at [`CODE`].
//! Without /dev/kvm they print "SKIPPED: no /dev/kvm", unless CREDGUARD_REQUIRE_KVM=1, which makes
//! them fail instead.

use std::path::Path;
use std::time::Duration;

use credguard_proto::abi::{self, BootMode};

use crate::boot::test_elf;
use crate::{Enclave, EnclaveConfig, EnclaveImage, ExitOutcome};

const STUB_LEN: usize = abi::VECTOR_STUB_SIZE as usize;
const STUBS_LEN: usize = abi::IDT_ENTRIES * STUB_LEN;
const COMMON: usize = STUBS_LEN;
const CODE: usize = STUBS_LEN + 0x100;
const DATA: usize = STUBS_LEN + 0x300;
const TIMEOUT: Duration = Duration::from_secs(30);

fn kvm_available() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    if std::env::var("CREDGUARD_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("CREDGUARD_REQUIRE_KVM=1 but /dev/kvm does not exist");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a skip
    // must be seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"SKIPPED: no /dev/kvm (set CREDGUARD_REQUIRE_KVM=1 to make this a failure)\n",
    );
    false
}

fn disp32(addr: u64) -> [u8; 4] {
    // Absolute addressing sign-extends a 32-bit displacement: only addresses below 2 GiB work.
    assert!(addr < 0x8000_0000);
    (addr as u32).to_le_bytes()
}

/// `mov [addr], rax`
fn store_rax(code: &mut Vec<u8>, addr: u64) {
    code.extend_from_slice(&[0x48, 0x89, 0x04, 0x25]);
    code.extend_from_slice(&disp32(addr));
}

/// `mov eax, code; out EXIT_PORT, eax`
fn exit_with(code: &mut Vec<u8>, exit: u32) {
    code.push(0xb8);
    code.extend_from_slice(&exit.to_le_bytes());
    code.extend_from_slice(&[0xe7, abi::EXIT_PORT as u8]);
}

/// The image: stubs, the common fault handler, `program` at [`CODE`], `data` at [`DATA`].
fn guest(program: &[u8], data: &[u8]) -> EnclaveImage {
    let mut image = vec![0xf4u8; DATA + data.len()]; // hlt everywhere else
    for v in 0..abi::IDT_ENTRIES {
        let at = v * STUB_LEN;
        let mut stub = vec![0xc7, 0x04, 0x25]; // mov dword [REPORT + FAULT_VECTOR], v
        stub.extend_from_slice(&disp32(abi::REPORT_GPA + abi::report_offset::FAULT_VECTOR));
        stub.extend_from_slice(&(v as u32).to_le_bytes());
        let rel = COMMON as i64 - (at + stub.len() + 5) as i64;
        stub.push(0xe9); // jmp common
        stub.extend_from_slice(&(rel as i32).to_le_bytes());
        image[at..at + stub.len()].copy_from_slice(&stub);
    }

    // The common handler assumes an error code on the stack, as #PF has.
    let mut common = vec![0x0f, 0x20, 0xd0]; // mov rax, cr2
    store_rax(&mut common, abi::REPORT_GPA + abi::report_offset::FAULT_CR2);
    common.extend_from_slice(&[0x48, 0x8b, 0x04, 0x24]); // mov rax, [rsp]
    store_rax(&mut common, abi::REPORT_GPA + abi::report_offset::FAULT_ERROR_CODE);
    common.extend_from_slice(&[0x48, 0x8b, 0x44, 0x24, 0x08]); // mov rax, [rsp + 8]
    store_rax(&mut common, abi::REPORT_GPA + abi::report_offset::FAULT_RIP);
    common.extend_from_slice(&[0x48, 0x8b, 0x44, 0x24, 0x10]); // mov rax, [rsp + 16]
    store_rax(&mut common, abi::REPORT_GPA + abi::report_offset::FAULT_CS);
    exit_with(&mut common, abi::ExitCode::Fault as u32);
    image[COMMON..COMMON + common.len()].copy_from_slice(&common);

    assert!(program.len() <= DATA - CODE);
    image[CODE..CODE + program.len()].copy_from_slice(program);
    image[DATA..].copy_from_slice(data);
    let elf = test_elf::build(abi::IMAGE_BASE_GPA, &image, abi::IMAGE_BASE_GPA + CODE as u64);
    EnclaveImage::from_verified_parts(elf, [0x5a; abi::MEASUREMENT_LEN])
}

fn run(image: EnclaveImage, mode: BootMode) -> ExitOutcome {
    let mut config = EnclaveConfig::new(image);
    config.boot_mode = mode;
    let mut enclave = Enclave::launch(config).expect("launch");
    enclave.wait_timeout(TIMEOUT).expect("the guest did not exit in time")
}

#[test]
fn clean_exit_sees_boot_info_in_rdi() {
    if !kvm_available() {
        return;
    }
    let mut p = vec![0x48, 0xb8]; // mov rax, BOOT_MAGIC
    p.extend_from_slice(&abi::BOOT_MAGIC.to_le_bytes());
    p.extend_from_slice(&[0x48, 0x39, 0x07]); // cmp [rdi], rax
    p.extend_from_slice(&[0x75, 0x07]); // jne fail
    exit_with(&mut p, abi::ExitCode::Clean as u32); // 7 bytes
    exit_with(&mut p, abi::ExitCode::Panic as u32); // fail:
    assert_eq!(run(guest(&p, &[]), BootMode::Service), ExitOutcome::Clean);
}

#[test]
fn panic_reports_serial_lines_from_rep_outsb() {
    if !kvm_available() {
        return;
    }
    let msg = b"first line\npanicked at self test\n";
    let mut p = vec![0x48, 0xc7, 0xc6]; // mov rsi, DATA
    p.extend_from_slice(&disp32(abi::IMAGE_BASE_GPA + DATA as u64));
    p.push(0xb9); // mov ecx, len
    p.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    p.extend_from_slice(&[0x66, 0xba]); // mov dx, SERIAL_PORT
    p.extend_from_slice(&abi::SERIAL_PORT.to_le_bytes());
    p.extend_from_slice(&[0xf3, 0x6e]); // rep outsb
    exit_with(&mut p, abi::ExitCode::Panic as u32);
    match run(guest(&p, msg), BootMode::PanicSelfTest) {
        ExitOutcome::Panic { last_lines } => {
            assert_eq!(last_lines, vec!["first line", "panicked at self test"]);
        }
        other => panic!("expected a panic, got {other}"),
    }
}

#[test]
fn page_fault_is_delivered_through_the_idt_and_decoded() {
    if !kvm_available() {
        return;
    }
    let unmapped = 0x4000_0000; // beyond the RAM page directory
    let mut p = vec![0x48, 0x8b, 0x04, 0x25]; // mov rax, [unmapped]
    p.extend_from_slice(&disp32(unmapped));
    match run(guest(&p, &[]), BootMode::Service) {
        ExitOutcome::Fault(fault) => {
            assert_eq!(fault.vector_name(), "#PF");
            assert_eq!(fault.report.fault_cr2, unmapped);
            assert_eq!(fault.report.fault_rip, abi::IMAGE_BASE_GPA + CODE as u64);
            assert_eq!(fault.report.fault_cs, u64::from(abi::KERNEL_CS));
            assert_eq!(fault.ring(), 0);
            assert_eq!(fault.report.fault_error_code, 0, "not-present supervisor read");
        }
        other => panic!("expected a #PF, got {other}"),
    }
}

#[test]
fn doorbell_interrupt_arrives_on_its_vector() {
    if !kvm_available() {
        return;
    }
    let mut p = vec![0x48, 0xb8]; // mov rax, DOORBELL_MMIO_GPA
    p.extend_from_slice(&abi::DOORBELL_MMIO_GPA.to_le_bytes());
    p.extend_from_slice(&[0xc7, 0x00, 0x01, 0x00, 0x00, 0x00]); // mov dword [rax], 1
    p.extend_from_slice(&[0xfb, 0xf4, 0xeb, 0xfd]); // sti; hlt; jmp hlt
    match run(guest(&p, &[]), BootMode::DoorbellBench) {
        ExitOutcome::Fault(fault) => assert_eq!(fault.report.fault_vector, u64::from(abi::DOORBELL_VECTOR)),
        other => panic!("expected the doorbell vector, got {other}"),
    }
}

#[test]
fn halted_guest_stops_on_request() {
    if !kvm_available() {
        return;
    }
    let p = [0xf4, 0xeb, 0xfd]; // hlt; jmp hlt (interrupts off: halts for good)
    let enclave = Enclave::launch(EnclaveConfig::new(guest(&p, &[]))).expect("launch");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(enclave.stop_and_wait(), ExitOutcome::Stopped);
}

#[test]
fn unknown_exit_code_is_unexpected() {
    if !kvm_available() {
        return;
    }
    let mut p = Vec::new();
    exit_with(&mut p, 0x77);
    match run(guest(&p, &[]), BootMode::Service) {
        ExitOutcome::Unexpected(what) => assert!(what.contains("0x77"), "{what}"),
        other => panic!("expected Unexpected, got {other}"),
    }
}

#[test]
fn refused_image_is_not_booted() {
    if !kvm_available() {
        return;
    }
    let elf = test_elf::build(abi::GDT_GPA, &[0; 16], abi::IMAGE_BASE_GPA);
    let err = Enclave::launch(EnclaveConfig::new(EnclaveImage::from_verified_parts(elf, [0; 48]))).unwrap_err();
    assert!(err.to_string().contains("outside the image window"), "{err}");
}

#[test]
fn bench_results_are_read_from_the_report_page() {
    if !kvm_available() {
        return;
    }
    let mut p = Vec::new();
    for (offset, value) in [(56u64, 1000u64), (64, 4_000), (72, 9_000), (80, 3_000)] {
        p.extend_from_slice(&[0x48, 0xb8]); // mov rax, value
        p.extend_from_slice(&value.to_le_bytes());
        store_rax(&mut p, abi::REPORT_GPA + offset);
    }
    exit_with(&mut p, abi::ExitCode::BenchDone as u32);
    match run(guest(&p, &[]), BootMode::DoorbellBench) {
        ExitOutcome::BenchDone(bench) => {
            assert_eq!(bench.report.bench_iterations, 1000);
            assert_eq!(bench.report.bench_median_cycles, 4_000);
            assert_eq!(bench.report.bench_p99_cycles, 9_000);
            assert_eq!(bench.report.bench_min_cycles, 3_000);
            assert!(bench.tsc_khz > 0, "KVM reports the TSC frequency here");
        }
        other => panic!("expected BenchDone, got {other}"),
    }
}

#[test]
fn vsock_socket_exists_while_running_and_is_removed_after() {
    if !kvm_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("credguard-vmm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("enclave.sock");
    let mut config = EnclaveConfig::new(guest(&[0xf4, 0xeb, 0xfd], &[]));
    config.vsock_socket = Some(socket.clone());
    let enclave = Enclave::launch(config).expect("launch");
    assert_eq!(enclave.vsock_socket(), Some(socket.as_path()));
    assert!(
        std::os::unix::net::UnixStream::connect(&socket).is_ok(),
        "the socket accepts connections"
    );
    let stop = enclave.stop_handle();
    std::thread::spawn(move || stop.stop()).join().unwrap();
    assert_eq!(enclave.wait(), ExitOutcome::Stopped);
    assert!(!socket.exists(), "the socket file is removed on stop");
    let _ = std::fs::remove_dir(&dir);
}

/// Ring 0 code that enters ring 3 at `user_rip` (in the image) with interrupts off.
fn enter_ring3(user_rip: u64) -> Vec<u8> {
    let user_rsp = abi::HEAP_GPA + 0x1000 - 8; // 16n - 8, as after a call
    let mut p = vec![0x6a, abi::USER_DS as u8]; // push ss
    p.push(0x68); // push rsp
    p.extend_from_slice(&disp32(user_rsp));
    p.extend_from_slice(&[0x6a, 0x02]); // push rflags
    p.extend_from_slice(&[0x6a, abi::USER_CS as u8]); // push cs
    p.push(0x68); // push rip
    p.extend_from_slice(&disp32(user_rip));
    p.extend_from_slice(&[0x48, 0xcf]); // iretq
    p
}

#[test]
fn ring3_page_fault_arrives_on_the_tss_stack() {
    if !kvm_available() {
        return;
    }
    // Exercises the user selectors, the TSS (RSP0) and user-accessible image pages.
    let user_rip = abi::IMAGE_BASE_GPA + DATA as u64;
    let unmapped = 0x4000_0000;
    let mut user = vec![0x48, 0x8b, 0x04, 0x25]; // mov rax, [unmapped]
    user.extend_from_slice(&disp32(unmapped));
    match run(guest(&enter_ring3(user_rip), &user), BootMode::Service) {
        ExitOutcome::Fault(fault) => {
            assert_eq!(fault.vector_name(), "#PF");
            assert_eq!(fault.ring(), 3);
            assert_eq!(fault.report.fault_cs, u64::from(abi::USER_CS));
            assert_eq!(fault.report.fault_rip, user_rip);
            assert_eq!(fault.report.fault_cr2, unmapped);
            assert_eq!(fault.report.fault_error_code, 4, "not-present user read");
        }
        other => panic!("expected a ring-3 #PF, got {other}"),
    }
}
