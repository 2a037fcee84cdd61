#!/usr/bin/env python3
"""Regenerates the gRPC stubs committed in src/credguard/ from the repository's .proto files.

Usage: python3 clients/python/generate_stubs.py   (needs grpcio-tools)

- proto/credguard/v1/lsa.proto (the public API): messages, the `Lsa` client stub, type hints;
- proto/credguard/enclave/v1/enclave.proto: its messages only, for `SealedLogonSecret`, the
  plaintext of a sealed secret (the enclave decodes it; no client ever calls that service).

The stubs are committed rather than generated at install time, so that `pip install
./clients/python` needs neither grpcio-tools nor network nor anything outside this directory
(see README.md). tests/test_stubs.py fails when they no longer describe the .proto files.
"""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parents[1] / "proto"
OUT = HERE / "src"

# (file, also the gRPC service stub)
FILES = [("credguard/v1/lsa.proto", True), ("credguard/enclave/v1/enclave.proto", False)]


def main() -> int:
    from grpc_tools import protoc

    for proto, with_service in FILES:
        args = ["protoc", f"-I{PROTO}", f"--python_out={OUT}", f"--pyi_out={OUT}"]
        if with_service:
            args.append(f"--grpc_python_out={OUT}")
        if protoc.main(args + [proto]) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
        print(f"generated from {proto}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
