"""A fake of credguard's API for the client's unit tests: an in-process gRPC server on a Unix
socket that plays the proxy, the VMM's attestation and the enclave's half of a sealed secret
(enclave-kernel/src/sealing.rs). The end-to-end test (tests/python_client.rs) uses the real ones."""
import os
import tempfile
from concurrent import futures

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credguard import sealing
from credguard.enclave.v1 import enclave_pb2
from credguard.v1 import lsa_pb2, lsa_pb2_grpc


def open_sealed(enclave: X25519PrivateKey, sealed: lsa_pb2.SealedSecret, aad: bytes) -> bytes:
    """What the enclave does with a sealed secret (raises InvalidTag if it does not open)."""
    epk = sealed.ephemeral_public_key
    shared = enclave.exchange(X25519PublicKey.from_public_bytes(epk))
    info = epk + enclave.public_key().public_bytes_raw()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=sealing.SEALED_SECRET_SALT, info=info).derive(shared)
    return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)


class FakeLsa(lsa_pb2_grpc.LsaServicer):
    """Signs a Status with its own attestation key, issues nonces, opens what it is sent."""

    def __init__(self):
        self.enclave = X25519PrivateKey.generate()
        self.attestation = Ed25519PrivateKey.generate()
        self.signer_public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        self.boot_id = os.urandom(16)
        self.nonce_boot_id = self.boot_id
        self.state = "ready"
        self.nonces = []
        self.received = []
        self.opened = []
        self.abort_with = None

    def facts(self) -> sealing.Attested:
        return sealing.Attested(
            measurement=bytes(range(48)),
            signer=bytes.fromhex(sealing.signer_fingerprint(self.signer_public)),
            boot_id=self.boot_id,
            public_key=self.enclave.public_key().public_bytes_raw(),
            protection_bits=int(sealing.Protection.KNOWN | sealing.Protection.HIDDEN),
            host_mapped_bytes=1 << 20,
            ram_size=16 << 20,
            policy_bits=0,
            enclave_flags=0,
            restarts=0,
            restart_reasons=(),
        )

    def Status(self, request, context):
        f = self.facts()
        return lsa_pb2.StatusReply(
            state=self.state,
            measurement=f.measurement.hex(),
            signer=f.signer.hex(),
            boot_id=f.boot_id,
            enclave_public_key=f.public_key,
            attestation_signature=self.attestation.sign(sealing.attestation_message(f)),
            protection_bits=f.protection_bits,
            host_mapped_bytes=f.host_mapped_bytes,
            ram_size=f.ram_size,
        )

    def GetSealingNonce(self, request, context):
        nonce = os.urandom(16)
        self.nonces.append(nonce)
        return lsa_pb2.GetSealingNonceReply(nonce=nonce, boot_id=self.nonce_boot_id)

    def _open(self, sealed, purpose, names, context):
        if sealed.sealing_nonce not in self.nonces:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stale nonce")
        self.nonces.remove(sealed.sealing_nonce)
        aad = sealing.sealed_secret_aad(purpose, os.getuid(), sealed.sealing_nonce, names)
        inner = enclave_pb2.SealedLogonSecret.FromString(open_sealed(self.enclave, sealed, aad))
        self.opened.append(inner)

    def Logon(self, request, context):
        self.received.append(request)
        if request.WhichOneof("secret") != "sealed":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "secrets in the clear are refused: seal it")
        names = sealing.SealedNames(request.user, request.domain, request.realm)
        self._open(request.sealed, sealing.SealPurpose.LOGON, names, context)
        return lsa_pb2.LogonReply(session_id="s1")

    def SaveCredential(self, request, context):
        self.received.append(request)
        names = sealing.SealedNames(request.user, request.domain, request.realm, request.target)
        self._open(request.sealed, sealing.SealPurpose.VAULT_SAVE, names, context)
        return lsa_pb2.SaveCredentialReply(credential=lsa_pb2.SavedCredentialInfo(target=request.target))

    def ChangePassword(self, request, context):
        self.received.append(request)
        names = sealing.SealedNames("alice", "CORP", "R.TEST")
        self._open(request.new_password, sealing.SealPurpose.PASSWORD_CHANGE, names, context)
        return lsa_pb2.ChangePasswordReply()

    def ListSessions(self, request, context):
        if self.abort_with is not None:
            context.abort(*self.abort_with)
        session = lsa_pb2.SessionInfo(session_id="s1", user="alice", domain="CORP", realm="R.TEST", sealed=True)
        return lsa_pb2.ListSessionsReply(sessions=[session])

    def Logoff(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r} of this user")


class Served:
    """`FakeLsa` served on a Unix socket in a temporary directory, with the key files a client
    reads; stopped by `close`."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "lsa.sock")
        self.lsa = FakeLsa()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        lsa_pb2_grpc.add_LsaServicer_to_server(self.lsa, self.server)
        self.server.add_insecure_port("unix:" + self.socket)
        self.server.start()
        self.attestation_pub = self.write("attestation.pub", self.lsa.attestation.public_key().public_bytes_raw())
        self.signer_pub = self.write("signing.pub", self.lsa.signer_public)

    def write(self, name: str, key: bytes) -> str:
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(key.hex() + "\n")
        return path

    def close(self):
        self.server.stop(None)
        self.dir.cleanup()
