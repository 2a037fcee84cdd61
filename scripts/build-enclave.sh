#!/usr/bin/env bash
# Builds the bare-metal enclave kernel (enclave-kernel/, its own cargo workspace) and copies the
# ELF to images/out/enclave.elf, whose path is the last line printed.
#
#   --test            build the test image instead (the `test-modes` feature: fault injection and
#                     benchmark boot modes; it says so in its attestation) to
#                     images/out/enclave-test.elf. Never sign a test image for production.
#
#   CARGO_TARGET_DIR  where cargo builds (default: <repo>/target/enclave, apart from the root
#                     workspace's target so the two builds never wait on each other's lock)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
features=()
name=enclave.elf
if [ "${1:-}" = "--test" ]; then
    features=(--features test-modes)
    name=enclave-test.elf
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target/enclave}"
triple=x86_64-unknown-linux-gnu

# A static, non-PIE executable linked at the address the boot ABI fixes (enclave-kernel/linker.ld).
# The explicit --target keeps these flags off build scripts and proc-macros.
(
    cd "$repo/enclave-kernel"
    RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static" \
    CARGO_TARGET_DIR="$target_dir" \
        cargo build --release --target "$triple" --bin credguard-enclave "${features[@]}" >&2
)

out="$repo/images/out/$name"
mkdir -p "$(dirname "$out")"
cp "$target_dir/$triple/release/credguard-enclave" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
