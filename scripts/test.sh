#!/usr/bin/env bash
# The test command of the README: builds and dev-signs the enclave, runs the enclave's own unit
# tests on the host, then the whole workspace's tests (which boot the real enclave under KVM when
# /dev/kvm exists; set CREDGUARD_REQUIRE_KVM=1 to make its absence a failure).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -e /dev/kvm ]; then
  echo "!!! /dev/kvm is missing: the tests that boot the enclave will be SKIPPED (CREDGUARD_REQUIRE_KVM=${CREDGUARD_REQUIRE_KVM:-0})" >&2
fi

echo "== enclave image (build + dev signature)"
cargo run -q -p credguard-image -- build

echo "== enclave-kernel unit tests (host)"
CARGO_TARGET_DIR="$root/target/enclave-test" cargo test -q --manifest-path enclave-kernel/Cargo.toml

echo "== workspace tests"
cargo test --workspace "$@"
