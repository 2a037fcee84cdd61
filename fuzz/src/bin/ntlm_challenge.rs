//! Fuzz target `ntlm_challenge`: see [`credguard_enclave::fuzz::ntlm_challenge`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        credguard_enclave::fuzz::ntlm_challenge(data);
    });
}
