#!/usr/bin/env python3
"""Checks that the repository's lock files agree: a crate that two workspaces both lock, in the
same semver-compatible series (e.g. bitflags 2.x), must be locked at the same version in both, so
the enclave, the host and the fuzzers build the shared code (prost, the RustCrypto crates,
credguard-proto's dependencies...) from the same sources. Different series (bitflags 1.x for one
dependency, 2.x for another) are separate crates to cargo and may differ.

Usage: scripts/check-locks.py [LOCK ...] (default: Cargo.lock, enclave-kernel/Cargo.lock,
fuzz/Cargo.lock). Exit 1 with a list of the disagreements.
"""
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def shown(path: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
locks = [Path(p).resolve() for p in sys.argv[1:]] or [root / "Cargo.lock", root / "enclave-kernel/Cargo.lock", root / "fuzz/Cargo.lock"]


def series(version: str) -> str:
    """The semver-compatible series: the major version, or 0.minor (0.0.patch) below 1."""
    major, minor, patch = (version.split("-")[0].split(".") + ["0", "0"])[:3]
    if major != "0":
        return major
    return f"0.{minor}" if minor != "0" else f"0.0.{patch}"


def versions(lock: Path) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for pkg in tomllib.loads(lock.read_text())["package"]:
        if "source" in pkg:  # registry crates only; path crates have no version to agree on
            out.setdefault((pkg["name"], series(pkg["version"])), set()).add(pkg["version"])
    return out


tables = {lock: versions(lock) for lock in locks}
bad = []
for i, a in enumerate(locks):
    for b in locks[i + 1 :]:
        for key in sorted(tables[a].keys() & tables[b].keys()):
            va, vb = tables[a][key], tables[b][key]
            if va != vb:
                bad.append(f"{key[0]}: {shown(a)} {sorted(va)} vs {shown(b)} {sorted(vb)}")
if bad:
    print("lock files disagree (run `cargo update -p NAME --precise VERSION` in the older one):")
    print("\n".join(f"  {line}" for line in bad))
    sys.exit(1)
print(f"lock files agree ({', '.join(shown(lock) for lock in locks)})")
