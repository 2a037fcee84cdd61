"""An independent client of credguard's API: Python grpcio with stubs generated from our .proto.

Usage: lsa_client.py SOCKET PROTO_DIR
Generates the stubs into a temporary directory with grpc_tools.protoc, then calls Status, Logon,
ListSessions and Logoff over the Unix socket and checks the answers. Exits 0 on success.
"""
import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def main():
    sock, proto_dir = sys.argv[1], sys.argv[2]
    out = tempfile.mkdtemp(prefix="credguard-py-")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "credguard/v1/lsa.proto"])
    assert rc == 0, f"protoc failed: {rc}"
    sys.path.insert(0, out)
    pb = importlib.import_module("credguard.v1.lsa_pb2")
    rpc = importlib.import_module("credguard.v1.lsa_pb2_grpc")

    # A channel as it comes: grpcio sends the percent-encoded socket path as :authority, which
    # the proxy must accept (its h2 is patched: third_party/h2/CREDGUARD-PATCH.md). The README's
    # old workaround, an explicit authority, keeps working too.
    with grpc.insecure_channel(f"unix://{sock}", options=[("grpc.default_authority", "localhost")]) as ch:
        assert rpc.LsaStub(ch).Status(pb.StatusRequest(), timeout=10).state == "ready"
    # `unix:/path` makes grpcio send `%2Fpath`; `unix:///path` (below) sends `path` without its
    # first slash and the others encoded.
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        assert rpc.LsaStub(ch).Status(pb.StatusRequest(), timeout=10).state == "ready"
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        lsa = rpc.LsaStub(ch)
        st = lsa.Status(pb.StatusRequest(), timeout=10)
        assert st.state == "ready", st
        assert len(st.measurement) == 96, st.measurement

        r = lsa.Logon(pb.LogonRequest(user="pyuser", domain="PYDOM", password="py-Secret-1"), timeout=10)
        assert len(r.session_id) == 32, r
        listed = lsa.ListSessions(pb.ListSessionsRequest(), timeout=10)
        mine = [s for s in listed.sessions if s.session_id == r.session_id]
        assert len(mine) == 1 and mine[0].user == "pyuser" and mine[0].uid == os.getuid(), listed
        assert "py-Secret-1" not in str(listed)

        try:
            lsa.Logon(pb.LogonRequest(user="", password="x"), timeout=10)
            raise AssertionError("an empty user must be refused")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e

        lsa.Logoff(pb.LogoffRequest(session_id=r.session_id), timeout=10)
        try:
            lsa.Logoff(pb.LogoffRequest(session_id=r.session_id), timeout=10)
            raise AssertionError("a second logoff must fail")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("python grpcio client: ok")


if __name__ == "__main__":
    main()
