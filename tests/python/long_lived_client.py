"""A long-lived client of credguard's API, as a client library keeps one: Python grpcio, one channel.

Usage: long_lived_client.py SOCKET PROTO_DIR USER PASSWORD NT_HASH_HEX
Driven over stdin/stdout, one line each way:

    out: "LOGGED-ON <session id> <session id>"  after a plaintext logon with the password and one
                                               with the NT hash, on the one channel, which stays open
    in:  any line                              (the test has scanned the proxy's memory meanwhile)
    out: "OK <n>"                              after more calls on the same channel object: the
                                               sessions listed (n of them), both logged off

On an error it prints "ERROR <what>" and exits 1.
"""
import importlib
import sys
import tempfile

import grpc
from grpc_tools import protoc


def main() -> int:
    sock, proto_dir, user, password, nt_hash_hex = sys.argv[1:6]
    out = tempfile.mkdtemp(prefix="credguard-py-")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "credguard/v1/lsa.proto"])
    if rc != 0:
        print(f"ERROR protoc failed: {rc}", flush=True)
        return 1
    sys.path.insert(0, out)
    pb = importlib.import_module("credguard.v1.lsa_pb2")
    rpc = importlib.import_module("credguard.v1.lsa_pb2_grpc")

    # The default :authority of a unix: target is the socket path, which h2 (under tonic) refuses.
    channel = grpc.insecure_channel(f"unix://{sock}", options=[("grpc.default_authority", "localhost")])
    lsa = rpc.LsaStub(channel)
    try:
        by_password = lsa.Logon(pb.LogonRequest(user=user, domain="PYDOM", password=password), timeout=20)
        by_hash = lsa.Logon(pb.LogonRequest(user=user + "h", domain="PYDOM",
                                            nt_hash=bytes.fromhex(nt_hash_hex)), timeout=20)
        print(f"LOGGED-ON {by_password.session_id} {by_hash.session_id}", flush=True)
        sys.stdin.readline()
        # The same channel object: grpcio reconnects by itself if the server closed the connection.
        listed = lsa.ListSessions(pb.ListSessionsRequest(), timeout=20)
        ids = {s.session_id for s in listed.sessions}
        for s in (by_password, by_hash):
            if s.session_id not in ids:
                print(f"ERROR session {s.session_id} is not listed", flush=True)
                return 1
            lsa.Logoff(pb.LogoffRequest(session_id=s.session_id), timeout=20)
        print(f"OK {len(ids)}", flush=True)
        return 0
    except grpc.RpcError as e:
        print(f"ERROR {e.code()}: {e.details()}", flush=True)
        return 1
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
