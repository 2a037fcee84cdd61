//! Fuzz target `enclave_request`: see [`credguard_enclave::fuzz::service_bytes`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        credguard_enclave::fuzz::service_bytes(data);
    });
}
