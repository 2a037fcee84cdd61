//! The foundation end to end: the real enclave boots under KVM from a verified image and answers
//! `Status` over virtio-vsock; a panicking guest is reported, not hung.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use credguard_proto::abi;
use credguard_proto::enclave::{EnclaveMethod, StatusRequest};
use credguard_proto::unix_transport::UnixTransport;
use credguard_vmm::{BootMode, Enclave, EnclaveConfig, EnclaveImage, ExitOutcome};
use support::{dev_image, kvm_or_skip, retry, temp_dir};

#[test]
fn enclave_boots_and_answers_status_over_vsock() {
    if !kvm_or_skip("enclave_boots_and_answers_status_over_vsock") {
        return;
    }
    let signed = dev_image().verify().expect("the dev image verifies");
    let sock = temp_dir("status").join("vsock.sock");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(sock.clone());
    let enclave = Enclave::launch(config).expect("launching the enclave");

    let mut client = retry(Duration::from_secs(20), || {
        UnixTransport::client(&sock, abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5))
    });
    let first = client.status(&StatusRequest {}).expect("Status");
    assert_eq!(first.version, "0.1.0");
    // Boot ABI 4: the VMM pre-negotiated the device, so the driver's setup made no register
    // access (each one a 25 µs exit from ring 3); queue notifications are KVM ioeventfds.
    assert_eq!(
        enclave.vsock_register_accesses(),
        Some(0),
        "virtio-mmio register exits from a booted and answering enclave"
    );
    assert_eq!(
        first.measurement,
        signed.measurement().as_bytes().to_vec(),
        "the measurement the VMM verified"
    );
    std::thread::sleep(Duration::from_millis(30));
    let second = client.status(&StatusRequest {}).expect("Status again");
    assert!(
        second.uptime_ms > first.uptime_ms,
        "uptime advances: {} then {}",
        first.uptime_ms,
        second.uptime_ms
    );
    assert_eq!(second.requests_served, first.requests_served + 1);

    // An unknown method is an error reply, and the connection stays usable.
    let unknown = EnclaveMethod::ALL.len() as u32 + 1;
    let reply = client
        .transport_mut()
        .call_frame(unknown, Vec::new())
        .expect("an answer");
    assert_eq!(reply.code, 12, "{}", reply.message);
    client.status(&StatusRequest {}).expect("Status after an error");

    // A second connection at the same time is served too.
    let mut other = UnixTransport::client(&sock, abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5)).expect("connect");
    other.status(&StatusRequest {}).expect("Status on a second connection");

    // Garbage on one connection closes that connection only.
    other
        .transport_mut()
        .send_bytes(&[7, 0, 0, 0, 1, 0])
        .expect("send garbage");
    assert!(
        other.transport_mut().read_frame().is_err(),
        "the enclave closes a stream it cannot decode"
    );
    client.status(&StatusRequest {}).expect("first connection unaffected");

    let outcome = enclave.stop_and_wait();
    assert_eq!(outcome, ExitOutcome::Stopped, "{outcome}");
    assert!(!sock.exists(), "the vsock socket is removed on stop");
}

#[test]
fn a_connection_to_a_port_nobody_listens_on_is_refused() {
    if !kvm_or_skip("a_connection_to_a_port_nobody_listens_on_is_refused") {
        return;
    }
    let signed = dev_image().verify().expect("the dev image verifies");
    let sock = temp_dir("noport").join("vsock.sock");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.vsock_socket = Some(sock.clone());
    let enclave = Enclave::launch(config).expect("launching the enclave");
    // Wait until the service is up, then knock on another port.
    let _ = retry(Duration::from_secs(20), || {
        UnixTransport::client(&sock, abi::ENCLAVE_VSOCK_PORT, Duration::from_secs(5))
    });
    let r = UnixTransport::client(&sock, abi::ENCLAVE_VSOCK_PORT + 1, Duration::from_secs(5));
    assert!(r.is_err(), "no listener on that port");
    let _ = enclave.stop_and_wait();
}

#[test]
fn a_panicking_enclave_is_reported_not_hung() {
    if !kvm_or_skip("a_panicking_enclave_is_reported_not_hung") {
        return;
    }
    let signed = support::test_image().verify().expect("the test image verifies");
    let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
    config.boot_mode = BootMode::PanicSelfTest;
    let mut enclave = Enclave::launch(config).expect("launching the enclave");
    let outcome = enclave
        .wait_timeout(Duration::from_secs(30))
        .expect("a panicking guest must stop, not hang");
    match &outcome {
        ExitOutcome::Panic { last_lines } => {
            assert!(
                last_lines.iter().any(|l| l.contains("panic self-test")),
                "panic message on serial: {last_lines:?}"
            )
        }
        other => panic!("expected a panic, got: {other}"),
    }
    assert!(!outcome.is_success());
}

#[test]
fn the_production_image_has_no_test_modes() {
    if !kvm_or_skip("the_production_image_has_no_test_modes") {
        return;
    }
    let signed = dev_image().verify().expect("the dev image verifies");
    for mode in [
        BootMode::PanicSelfTest,
        BootMode::DoorbellBench,
        BootMode::ServicePanicAfter,
    ] {
        let mut config = EnclaveConfig::new(EnclaveImage::from_signed(&signed));
        config.boot_mode = mode;
        let mut enclave = Enclave::launch(config).expect("launching the enclave");
        let outcome = enclave
            .wait_timeout(Duration::from_secs(30))
            .expect("a refused boot mode must stop the guest, not hang it");
        match &outcome {
            ExitOutcome::Panic { last_lines } => assert!(
                last_lines.iter().any(|l| l.contains("exists only in a test image")),
                "{mode:?}: {last_lines:?}"
            ),
            other => panic!("{mode:?}: expected a refusal, got: {other}"),
        }
    }
}
