#!/usr/bin/env bash
# Runs every benchmark of issue 19's table in one go, each figure with its baseline and floor
# measured in the same run, and keeps the whole output (and each bench's JSON line) in one file.
#
#   scripts/bench.sh [--quick] [OUT]      (OUT: default target/bench-<date>.txt)
#
# Needs /dev/kvm and the MIT KDC packages (as `.ci/run` installs them). Run it on an idle machine:
# the figures are latencies on 2 shared cores. Says whether this host has guest_memfd, since the
# cold start and the VMM's RSS depend on it.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=()
if [[ "${1:-}" == "--quick" ]]; then
    quick=(-- --quick)
    shift
fi
out="${1:-target/bench-$(date -u +%Y%m%dT%H%M%SZ).txt}"
mkdir -p "$(dirname "$out")"
{
    echo "# credguard benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
    echo "# host: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 - <<'PY'
import fcntl, os
KVM_CHECK_EXTENSION = 0xAE03
try:
    fd = os.open("/dev/kvm", os.O_RDWR)
    gm = fcntl.ioctl(fd, KVM_CHECK_EXTENSION, 234)
    print(f"# guest_memfd (KVM_CHECK_EXTENSION 234): {gm}")
except OSError as e:
    print(f"# /dev/kvm: {e}")
PY
} | tee "$out"
for bench in enclave proxy ntlm kerberos; do
    echo "## cargo bench -p credguard-bench --bench $bench ${quick[*]}" | tee -a "$out"
    if ! cargo bench -q -p credguard-bench --bench "$bench" "${quick[@]}" 2>&1 \
        | grep -v '^\s*\(Compiling\|Finished\|Running\|Blocking\)\|^building the shipped' | tee -a "$out"; then
        echo "!!! $bench failed: its figures above are incomplete" | tee -a "$out"
    fi
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
echo "written: $out"
