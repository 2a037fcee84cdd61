//! Tests that boot real (tiny, hand-assembled) guests under KVM.
//!
//! Each guest is an ELF built here, laid out as the ABI requires: a ring-0 segment (read and
//! execute, supervisor-only) at the image base with both tables of 256 interrupt stubs, each
//! recording its vector in the report page and jumping to a common handler that records the
//! fault frame and exits with `ExitCode::Fault` (the SMAP table's stubs set RFLAGS.AC first), then
//! a test-specific ring-0 program at [`CODE`]; a ring-3 code page at [`USER_CODE_GPA`] and a
//! ring-3 data page at [`USER_DATA_GPA`].
//! Without /dev/kvm they print "SKIPPED: no /dev/kvm", unless CREDGUARD_REQUIRE_KVM=1, which makes
//! them fail instead.

use std::mem::offset_of;
use std::path::Path;
use std::time::Duration;

use credguard_proto::abi::{self, BootMode, Report};

use crate::boot::test_elf;
use crate::{Enclave, EnclaveConfig, EnclaveImage, ExitOutcome};

const STUB_LEN: usize = abi::VECTOR_STUB_SIZE as usize;
const STUBS_LEN: usize = abi::VECTOR_STUBS_SIZE as usize;
const COMMON: usize = STUBS_LEN;
const CODE: usize = STUBS_LEN + 0x100;
const DATA: usize = STUBS_LEN + 0x300;
/// Ring-3 code (read and execute), on a page of its own after the ring-0 segment.
const USER_CODE_GPA: u64 = abi::IMAGE_BASE_GPA + 0x8000;
/// Ring-3 data (read and write, not executable), on the next page.
const USER_DATA_GPA: u64 = USER_CODE_GPA + 0x1000;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Guest-physical address of the [`Report`] field at `offset`.
fn report_field(offset: usize) -> u64 {
    abi::REPORT_GPA + offset as u64
}

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

/// The image: stubs, the common fault handler, `program` at [`CODE`] and `data` at [`DATA`] in
/// the ring-0 segment, and no ring-3 code (a page of `hlt`).
fn guest(program: &[u8], data: &[u8]) -> EnclaveImage {
    guest_with_user(program, data, &[0xf4])
}

/// [`guest`] with `user_code` at [`USER_CODE_GPA`].
fn guest_with_user(program: &[u8], data: &[u8], user_code: &[u8]) -> EnclaveImage {
    let mut image = vec![0xf4u8; DATA + data.len()]; // hlt everywhere else
    for v in 0..abi::IDT_ENTRIES {
        let at = v * STUB_LEN;
        let mut stub = vec![0xc7, 0x04, 0x25]; // mov dword [REPORT + FAULT_VECTOR], v
        stub.extend_from_slice(&disp32(report_field(offset_of!(Report, fault_vector))));
        stub.extend_from_slice(&(v as u32).to_le_bytes());
        let rel = COMMON as i64 - (at + stub.len() + 5) as i64;
        stub.push(0xe9); // jmp common
        stub.extend_from_slice(&(rel as i32).to_le_bytes());
        image[at..at + stub.len()].copy_from_slice(&stub);
        // The SMAP table: set AC (the report page is a ring-3 page), then the same stub.
        let at = (abi::SMAP_VECTOR_STUBS_GPA - abi::VECTOR_STUBS_GPA) as usize + v * STUB_LEN;
        let mut stub = set_ac();
        let rel = (v * STUB_LEN) as i64 - (at + stub.len() + 5) as i64;
        stub.push(0xe9); // jmp to the first table's stub
        stub.extend_from_slice(&(rel as i32).to_le_bytes());
        image[at..at + stub.len()].copy_from_slice(&stub);
    }

    // The common handler assumes an error code on the stack, as #PF has.
    let mut common = vec![0x0f, 0x20, 0xd0]; // mov rax, cr2
    store_rax(&mut common, report_field(offset_of!(Report, fault_cr2)));
    common.extend_from_slice(&[0x48, 0x8b, 0x04, 0x24]); // mov rax, [rsp]
    store_rax(&mut common, report_field(offset_of!(Report, fault_error_code)));
    common.extend_from_slice(&[0x48, 0x8b, 0x44, 0x24, 0x08]); // mov rax, [rsp + 8]
    store_rax(&mut common, report_field(offset_of!(Report, fault_rip)));
    common.extend_from_slice(&[0x48, 0x8b, 0x44, 0x24, 0x10]); // mov rax, [rsp + 16]
    store_rax(&mut common, report_field(offset_of!(Report, fault_cs)));
    exit_with(&mut common, abi::ExitCode::Fault as u32);
    image[COMMON..COMMON + common.len()].copy_from_slice(&common);

    assert!(program.len() <= DATA - CODE);
    image[CODE..CODE + program.len()].copy_from_slice(program);
    image[DATA..].copy_from_slice(data);
    assert!(abi::IMAGE_BASE_GPA + image.len() as u64 <= USER_CODE_GPA);
    let user_data = [0u8; 0x1000];
    let elf = test_elf::build_segments(
        &[
            (abi::RING0_CODE_GPA, test_elf::RX, &image),
            (USER_CODE_GPA, test_elf::RX, user_code),
            (USER_DATA_GPA, test_elf::RW, &user_data),
        ],
        abi::IMAGE_BASE_GPA + CODE as u64,
    );
    EnclaveImage::from_verified_parts(elf, [0x5a; abi::MEASUREMENT_LEN])
}

/// `pushfq; or dword [rsp], AC; popfq`: RFLAGS.AC on, as the enclave's ring 0 does under SMAP.
fn set_ac() -> Vec<u8> {
    let mut code = vec![0x9c, 0x81, 0x0c, 0x24];
    code.extend_from_slice(&(abi::RFLAGS_AC as u32).to_le_bytes());
    code.push(0x9d);
    code
}

fn run(image: EnclaveImage, mode: BootMode) -> ExitOutcome {
    run_with(image, mode, false)
}

/// [`run`], with SMEP and SMAP forced on if `force_smep_smap`.
fn run_with(image: EnclaveImage, mode: BootMode, force_smep_smap: bool) -> ExitOutcome {
    let mut config = EnclaveConfig::new(image);
    config.boot_mode = mode;
    config.force_smep_smap = force_smep_smap;
    let mut enclave = Enclave::launch(config).expect("launch");
    enclave.wait_timeout(TIMEOUT).expect("the guest did not exit in time")
}

/// The #PF that `outcome` must be: (error code, CR2, ring).
fn page_fault(outcome: ExitOutcome) -> (u64, u64, u64) {
    match outcome {
        ExitOutcome::Fault(fault) if fault.vector_name() == "#PF" => {
            (fault.report.fault_error_code, fault.report.fault_cr2, fault.ring())
        }
        other => panic!("expected a #PF, got {other}"),
    }
}

/// #PF error code bits.
const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;
const PF_USER: u64 = 4;
const PF_FETCH: u64 = 0x10;

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
    let elf = test_elf::build(abi::GDT_GPA, &[0; 16], abi::GDT_GPA);
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
    let user_rip = USER_CODE_GPA;
    let unmapped = 0x3000_0000; // above RAM, below the MMIO alias
    let mut user = vec![0x48, 0x8b, 0x04, 0x25]; // mov rax, [unmapped]
    user.extend_from_slice(&disp32(unmapped));
    match run(guest_with_user(&enter_ring3(user_rip), &[], &user), BootMode::Service) {
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

#[test]
fn ring3_cannot_write_code_run_data_or_touch_ring0_code() {
    if !kvm_available() {
        return;
    }
    let ring3 = |user: &[u8]| {
        run(
            guest_with_user(&enter_ring3(USER_CODE_GPA), &[], user),
            BootMode::Service,
        )
    };
    // Write to its own code.
    let mut user = vec![0x88, 0x04, 0x25]; // mov [USER_CODE_GPA], al
    user.extend_from_slice(&disp32(USER_CODE_GPA));
    assert_eq!(
        page_fault(ring3(&user)),
        (PF_PRESENT | PF_WRITE | PF_USER, USER_CODE_GPA, 3),
        "code is read-only"
    );
    // Run its data (a writable page).
    let mut user = vec![0x68]; // push USER_DATA_GPA; ret
    user.extend_from_slice(&disp32(USER_DATA_GPA));
    user.push(0xc3);
    assert_eq!(
        page_fault(ring3(&user)),
        (PF_PRESENT | PF_USER | PF_FETCH, USER_DATA_GPA, 3),
        "data is not executable"
    );
    // Read the ring-0 code.
    let mut user = vec![0x8a, 0x04, 0x25]; // mov al, [IMAGE_BASE_GPA]
    user.extend_from_slice(&disp32(abi::RING0_CODE_GPA));
    assert_eq!(
        page_fault(ring3(&user)),
        (PF_PRESENT | PF_USER, abi::RING0_CODE_GPA, 3),
        "ring-0 code is supervisor-only"
    );
}

#[test]
fn ring0_cannot_write_its_own_code() {
    if !kvm_available() {
        return;
    }
    let target = abi::IMAGE_BASE_GPA + DATA as u64;
    let mut p = vec![0x88, 0x04, 0x25]; // mov [target], al (CR0.WP holds ring 0 to read-only too)
    p.extend_from_slice(&disp32(target));
    exit_with(&mut p, abi::ExitCode::Clean as u32);
    assert_eq!(
        page_fault(run(guest(&p, &[0]), BootMode::Service)),
        (PF_PRESENT | PF_WRITE, target, 0)
    );
}

#[test]
fn the_lapic_alias_takes_the_eoi() {
    if !kvm_available() {
        return;
    }
    // Ring 0 reads the LAPIC version register through the alias below 2 GiB and exits cleanly
    // if it looks like one (an xAPIC version 0x1x), else with a panic.
    let mut p = vec![0x8b, 0x04, 0x25]; // mov eax, [LAPIC_ALIAS_VA + 0x30]
    p.extend_from_slice(&disp32(abi::LAPIC_ALIAS_VA + 0x30));
    p.extend_from_slice(&[0x25, 0xf0, 0x00, 0x00, 0x00]); // and eax, 0xf0
    p.extend_from_slice(&[0x83, 0xf8, 0x10]); // cmp eax, 0x10
    p.extend_from_slice(&[0x75, 0x07]); // jne fail
    exit_with(&mut p, abi::ExitCode::Clean as u32); // 7 bytes
    exit_with(&mut p, abi::ExitCode::Panic as u32); // fail:
    assert_eq!(run(guest(&p, &[]), BootMode::Service), ExitOutcome::Clean);
}

#[test]
fn forced_smep_and_smap_hold_ring0_off_ring3_pages() {
    if !kvm_available() {
        return;
    }
    // SMEP: ring 0 jumps to ring-3 code.
    let mut p = vec![0x68]; // push USER_CODE_GPA; ret
    p.extend_from_slice(&disp32(USER_CODE_GPA));
    p.push(0xc3);
    let mut user = Vec::new();
    exit_with(&mut user, abi::ExitCode::Clean as u32);
    let smep = |force| run_with(guest_with_user(&p, &[], &user), BootMode::Service, force);
    assert_eq!(smep(false), ExitOutcome::Clean, "without SMEP ring 0 runs ring-3 code");
    assert_eq!(page_fault(smep(true)), (PF_PRESENT | PF_FETCH, USER_CODE_GPA, 0));
    // SMAP: ring 0 reads ring-3 data with RFLAGS.AC (as at entry) and without.
    let mut read = vec![0x48, 0x8b, 0x04, 0x25]; // mov rax, [USER_DATA_GPA]
    read.extend_from_slice(&disp32(USER_DATA_GPA));
    exit_with(&mut read, abi::ExitCode::Clean as u32);
    let smap = |p: &[u8]| run_with(guest(p, &[]), BootMode::Service, true);
    assert_eq!(smap(&read), ExitOutcome::Clean, "the VMM enters ring 0 with AC set");
    let mut clear_ac = vec![0x9c, 0x81, 0x24, 0x24]; // pushfq; and dword [rsp], !AC; popfq
    clear_ac.extend_from_slice(&(!(abi::RFLAGS_AC as u32)).to_le_bytes());
    clear_ac.push(0x9d);
    let unbracketed = [clear_ac.clone(), read.clone()].concat();
    assert_eq!(page_fault(smap(&unbracketed)), (PF_PRESENT, USER_DATA_GPA, 0));
    let bracketed = [clear_ac, set_ac(), read].concat();
    assert_eq!(smap(&bracketed), ExitOutcome::Clean, "AC set by popfq lets ring 0 in");
}

/// The dev-built, dev-signed test image (its self-test boot modes exist only in a test image).
fn enclave_image() -> EnclaveImage {
    let dev = credguard_image::dev::ensure_test_enclave_built().expect("building the test enclave");
    EnclaveImage::from_signed(&dev.verify().expect("the dev test image verifies"))
}

#[test]
fn enclave_code_is_not_writable() {
    if !kvm_available() {
        return;
    }
    for force in [false, true] {
        let (code, cr2, ring) = page_fault(run_with(enclave_image(), BootMode::WriteCodeSelfTest, force));
        assert_eq!(
            (code, ring),
            (PF_PRESENT | PF_WRITE | PF_USER, 3),
            "SMEP/SMAP forced: {force}"
        );
        let layout = crate::boot::image_layout(enclave_image().bytes()).unwrap();
        assert!(
            layout
                .segments
                .iter()
                .any(|s| s.executable && !s.ring0 && (s.start..s.end).contains(&cr2)),
            "the fault is in the ring-3 code: {cr2:#x}"
        );
    }
}

#[test]
fn the_enclave_serves_and_panics_cleanly_under_smep_and_smap() {
    use credguard_proto::enclave::{StatusReply, StatusRequest};
    if !kvm_available() {
        return;
    }
    // Every ring-0 path of the SMAP handlers: system calls (through #UD here), the console,
    // interrupts, halting, the attestation hypercall.
    let dir = std::env::temp_dir().join(format!("credguard-vmm-smap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("enclave.sock");
    let mut config = EnclaveConfig::new(enclave_image());
    config.vsock_socket = Some(socket.clone());
    config.force_smep_smap = true;
    let enclave = Enclave::launch(config).expect("launch");
    let protection = enclave.protection().describe();
    assert!(protection.ends_with("W^X, SMEP on, SMAP on"), "{protection}");
    let start = std::time::Instant::now();
    let mut client = loop {
        match credguard_proto::unix_transport::UnixTransport::client(&socket, abi::ENCLAVE_VSOCK_PORT, TIMEOUT) {
            Ok(c) => break c,
            Err(e) if start.elapsed() > TIMEOUT => panic!("enclave not reachable: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut status: StatusReply = client.status(&StatusRequest {}).expect("Status");
    for _ in 0..20 {
        status = client.status(&StatusRequest {}).expect("Status");
    }
    drop(client);
    // The VMM answers its own status port, on the same socket, about the boot that answered.
    let vmm = credguard_proto::unix_transport::UnixTransport::vmm_status(&socket, TIMEOUT).expect("VMM status");
    assert_eq!(vmm.boot_id, status.boot_id);
    let described =
        credguard_proto::vmm_status::describe_protection(vmm.protection_bits, vmm.host_mapped_bytes, vmm.ram_size);
    assert!(described.ends_with("W^X, SMEP on, SMAP on"), "{described}");
    assert_eq!(enclave.stop_and_wait(), ExitOutcome::Stopped);
    let _ = std::fs::remove_dir_all(&dir);
    // The panic path: the console and the exit port.
    match run_with(enclave_image(), BootMode::PanicSelfTest, true) {
        ExitOutcome::Panic { last_lines } => {
            assert!(
                last_lines.iter().any(|l| l.contains("panic self-test")),
                "{last_lines:?}"
            )
        }
        other => panic!("expected a panic, got {other}"),
    }
}
