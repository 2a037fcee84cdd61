#!/usr/bin/env python3
"""Counts the enclave's trusted code: non-blank, non-comment lines of the enclave crate and of the
no_std part of `proto` it links, with the code generated from enclave.proto, tests apart.

Host-only code of proto (items under `#[cfg(feature = "std")]` / `"grpc"`, e.g. the generated
clients and the host-only modules) is not linked into the enclave and is not counted. Test code is `tests.rs` files, `#[cfg(test)]`
modules and test-only features' files (`fake_kdc`, `fuzz`), reported on their own line.

Usage: scripts/tcb-lines.py  (after a build of the enclave, for the generated code)
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_ONLY_FILES = {"tests.rs", "fake_kdc.rs", "fuzz.rs", "bench.rs"}


HOST_ONLY_CFG = re.compile(r'#\[cfg\(feature = "(std|grpc)"\)\]')


def code_lines(text):
    """(code, tests, host-only) lines: drops blank lines and comments, and sets apart the items under
    #[cfg(test)] and under a host-only #[cfg(feature = "std"|"grpc")] (not linked into the enclave)."""
    counts = {"code": 0, "test": 0, "host": 0}
    in_block_comment = False
    region = None  # (kind, brace depth at which it ends)
    pending = None
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if in_block_comment:
            in_block_comment = "*/" not in line
            continue
        if line.startswith("/*"):
            in_block_comment = "*/" not in line
            continue
        if not line or line.startswith("//"):
            continue
        if region is None and pending is None:
            if line.startswith("#[cfg(test)]"):
                pending = "test"
            elif HOST_ONLY_CFG.match(line):
                pending = "host"
        kind = region[0] if region else (pending or "code")
        counts[kind] += 1
        opens, closes = line.count("{"), line.count("}")
        if pending and opens:
            region, pending = (pending, depth), None
        elif pending and line.endswith(";"):
            pending = None  # a one-line item, e.g. `#[cfg(test)] mod tests;` or `pub mod x;`
        depth += opens - closes
        if region and depth <= region[1] and (closes or opens):
            region = None
    return counts["code"], counts["test"], counts["host"]


def count(paths):
    code = tests = 0
    for p in paths:
        with open(p, encoding="utf-8") as f:
            c, t, _host = code_lines(f.read())
        if os.path.basename(p) in TEST_ONLY_FILES or "/tests/" in p:
            tests += c + t
        else:
            code += c
            tests += t
    return code, tests


def generated():
    outs = glob.glob(os.path.join(ROOT, "target/enclave/**/out/credguard.enclave.v1.rs"), recursive=True)
    outs += glob.glob(os.path.join(ROOT, "enclave-kernel/target/**/out/credguard.enclave.v1.rs"), recursive=True)
    outs += glob.glob(os.path.join(ROOT, "target/**/out/credguard.enclave.v1.rs"), recursive=True)
    if not outs:
        return None
    newest = max(outs, key=os.path.getmtime)
    return newest


def host_only_proto_modules():
    """The files of proto's modules declared under a host-only cfg in proto/src/lib.rs."""
    with open(os.path.join(ROOT, "proto/src/lib.rs"), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return {
        m.group(1) + ".rs"
        for prev, line in zip(lines, lines[1:])
        if HOST_ONLY_CFG.match(prev) and (m := re.match(r"pub mod (\w+);", line))
    }


def main():
    enclave = sorted(glob.glob(os.path.join(ROOT, "enclave-kernel/src/**/*.rs"), recursive=True))
    proto = sorted(
        p
        for p in glob.glob(os.path.join(ROOT, "proto/src/**/*.rs"), recursive=True)
        if os.path.basename(p) not in host_only_proto_modules()
    )
    e_code, e_tests = count(enclave)
    p_code, p_tests = count(proto)
    gen = generated()
    g_code = count([gen])[0] if gen else 0
    print(f"enclave-kernel/src           {e_code:6} lines of code  ({e_tests} of tests and test-only features)")
    print(f"proto/src (no_std part)      {p_code:6} lines of code  ({p_tests} of tests)")
    print(f"generated from enclave.proto {g_code:6} lines of code  ({os.path.relpath(gen, ROOT) if gen else 'not built'})")
    print(f"trusted code                 {e_code + p_code + g_code:6} lines (hand-written {e_code + p_code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
