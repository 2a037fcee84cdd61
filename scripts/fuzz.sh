#!/usr/bin/env bash
# Runs every fuzz target under AFL++ (`cargo afl`, stable toolchain) for a bounded time, then
# copies each crash into fuzz/regressions/<target>/, which `cargo test` replays through the same
# entry points (enclave-kernel/src/fuzz.rs, vmm/src/devices/virtio/vsock/fuzz.rs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
#
# FUZZ_SAVE_CORPUS=1 also adds the inputs the fuzzer found (under 4 KiB) to fuzz/corpus/<target>/.
#
# Needs cargo-afl once: `cargo install cargo-afl && cargo afl config --build`. Not part of CI (CI
# replays the corpora and runs the property tests only). Prints per target: executions, crashes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(enclave_request ntlm_challenge kerberos_reply vsock_queues)

command -v cargo-afl >/dev/null || {
  echo "cargo-afl is missing: cargo install cargo-afl && cargo afl config --build" >&2
  exit 2
}

echo "== building the instrumented targets (target/fuzz)"
cargo afl build --release --bins
bin=../target/fuzz/release
# The seed corpus is committed; rewrite it only where a target has none.
for t in "${targets[@]}"; do
  [ -n "$(ls -A "corpus/$t" 2>/dev/null)" ] || "$bin/seeds"
done

# AFL++ wants these on a machine it does not own; they change nothing for the targets.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1
out=../target/fuzz/afl
status=0
for t in "${targets[@]}"; do
  rm -rf "$out/$t"
  mkdir -p "$out/$t" "regressions/$t"
  echo "== $t for ${seconds} s"
  # -V: stop after that many seconds; -t: a hang is an input that runs over 1 s.
  cargo afl fuzz -V "$seconds" -t 1000 -i "corpus/$t" -o "$out/$t" "$bin/$t" >"$out/$t.log" 2>&1 || {
    echo "afl-fuzz failed for $t; see fuzz/$out/$t.log" >&2
    tail -20 "$out/$t.log" >&2
    status=1
    continue
  }
  stats="$out/$t/default/fuzzer_stats"
  execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
  speed=$(awk -F: '/^execs_per_sec/ {gsub(/ /, "", $2); print $2}' "$stats")
  crashes=0
  for f in "$out/$t"/default/crashes/id:*; do
    [ -e "$f" ] || continue
    crashes=$((crashes + 1))
    # Named by content, so that a crash found again is not stored twice.
    cp "$f" "regressions/$t/crash-$(sha256sum "$f" | cut -c1-16)"
  done
  hangs=$(find "$out/$t/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
  if [ "${FUZZ_SAVE_CORPUS:-0}" = 1 ]; then
    # Keep what the fuzzer found (inputs under 4 KiB that reached new edges: '+cov') in the
    # corpus that `cargo test` replays.
    find "$out/$t/default/queue" -name 'id:*+cov*' -size -4k | while read -r f; do
      cp "$f" "corpus/$t/afl-$(sha256sum "$f" | cut -c1-16)"
    done
  fi
  echo "$t: $execs executions ($speed/s), $crashes crashes, $hangs hangs"
  [ "$crashes" -eq 0 ] || status=1
done
if [ "$status" -ne 0 ]; then
  echo "crashes were copied to fuzz/regressions/: fix them, then cargo test replays them" >&2
fi
exit "$status"
