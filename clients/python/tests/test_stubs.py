"""The committed stubs still describe the .proto files (generate_stubs.py regenerates them).

Compares descriptors, not generated text, so that another grpcio-tools version (whose output
differs in its version checks) does not fail it while a changed .proto does.
"""
import os
import pathlib
import tempfile
import unittest

import grpc
from google.protobuf import descriptor_pb2

from credguard.enclave.v1 import enclave_pb2
from credguard.v1 import lsa_pb2, lsa_pb2_grpc

PROTO = pathlib.Path(__file__).resolve().parents[3] / "proto"
MODULES = {"credguard/v1/lsa.proto": lsa_pb2, "credguard/enclave/v1/enclave.proto": enclave_pb2}


def _without_json_names(messages) -> None:
    # protoc puts json_name in descriptor sets, not in generated code.
    for m in messages:
        for f in list(m.field) + list(m.extension):
            f.ClearField("json_name")
        _without_json_names(m.nested_type)


def _grpc_tools():
    try:
        from grpc_tools import protoc
    except ImportError:
        return None
    return protoc


class Stubs(unittest.TestCase):
    def test_the_committed_stubs_describe_the_proto_files(self):
        protoc = _grpc_tools()
        if protoc is None:
            if os.environ.get("CREDGUARD_REQUIRE_TOOLS") == "1":
                self.fail("grpcio-tools is missing and CREDGUARD_REQUIRE_TOOLS=1")
            self.skipTest("grpcio-tools is missing (pip install grpcio-tools)")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "set.pb")
            self.assertEqual(protoc.main(["protoc", f"-I{PROTO}", f"--descriptor_set_out={out}", *MODULES]), 0)
            with open(out, "rb") as f:
                compiled = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        for fresh in compiled.file:
            committed = descriptor_pb2.FileDescriptorProto()
            MODULES[fresh.name].DESCRIPTOR.CopyToProto(committed)
            _without_json_names(fresh.message_type)
            _without_json_names(committed.message_type)
            with self.subTest(fresh.name):
                self.assertEqual(
                    fresh, committed, f"{fresh.name} changed: run python3 clients/python/generate_stubs.py"
                )

    def test_the_service_stub_has_every_method(self):
        methods = {m.name for m in lsa_pb2.DESCRIPTOR.services_by_name["Lsa"].methods}
        with grpc.insecure_channel("unix:/nonexistent") as channel:
            stub = lsa_pb2_grpc.LsaStub(channel)
            self.assertEqual(methods, {m for m in methods if callable(getattr(stub, m, None))})
            self.assertIn("GetSealingNonce", methods)


if __name__ == "__main__":
    unittest.main()
