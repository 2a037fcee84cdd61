#!/usr/bin/env bash
# The habits, enforced: formatting and clippy (warnings are errors) for every workspace, and lock
# files that agree on shared crates. Run by .ci/run before the tests; run it yourself before a
# commit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "== cargo fmt --check (root, enclave-kernel, fuzz)"
cargo fmt --all --check
(cd enclave-kernel && cargo fmt --check)
(cd fuzz && cargo fmt --check)

echo "== cargo clippy -D warnings (root workspace, every target)"
cargo clippy -q --workspace --all-targets -- -D warnings

echo "== cargo clippy -D warnings (enclave-kernel: library and tests with every feature, both images' binary)"
# The bare-metal binary is linted on the host target, as `cargo check` builds it: no tests there
# (they would bring std's panic handler next to the enclave's own).
(
    cd enclave-kernel
    export CARGO_TARGET_DIR="$root/target/enclave-clippy"
    cargo clippy -q --lib --tests --features test-modes,fake-kdc,fuzz -- -D warnings
    cargo clippy -q --bin credguard-enclave -- -D warnings
    cargo clippy -q --bin credguard-enclave --features test-modes -- -D warnings
)
# fuzz/ is only formatted here: linting it builds AFL++'s runtime (cargo afl), which CI does not
# install; scripts/fuzz.sh builds it.

echo "== lock files agree"
python3 scripts/check-locks.py
