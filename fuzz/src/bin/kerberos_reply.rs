//! Fuzz target `kerberos_reply`: see [`credguard_enclave::fuzz::kerberos_reply`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        credguard_enclave::fuzz::kerberos_reply(data);
    });
}
