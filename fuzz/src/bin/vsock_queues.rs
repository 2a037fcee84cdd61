//! Fuzz target `vsock_queues`: see [`credguard_vmm::devices::virtio::vsock::fuzz::guest_rings`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        credguard_vmm::devices::virtio::vsock::fuzz::guest_rings(data);
    });
}
