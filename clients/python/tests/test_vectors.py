"""The known answers (vectors.txt) that the Rust side checks too: this package must keep computing
exactly them, and each must open with the enclave's half of the construction."""
import configparser
import pathlib
import unittest

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import make_vectors
from credguard import sealing
from credguard.enclave.v1 import enclave_pb2
from credguard.v1 import lsa_pb2
from fakes import open_sealed

VECTORS = pathlib.Path(__file__).with_name("vectors.txt")


def load() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(VECTORS.read_text(encoding="utf-8"))
    return parser


def enclave_opens(private: bytes, v) -> bytes:
    """What the enclave does with the vector's sealed secret (enclave-kernel/src/sealing.rs)."""
    sealed = lsa_pb2.SealedSecret(
        ephemeral_public_key=bytes.fromhex(v["ephemeral_public"]),
        nonce=bytes.fromhex(v["aes_nonce"]),
        ciphertext=bytes.fromhex(v["ciphertext"]),
    )
    return open_sealed(X25519PrivateKey.from_private_bytes(private), sealed, bytes.fromhex(v["aad"]))


class KnownAnswers(unittest.TestCase):
    def test_the_package_still_computes_the_vectors(self):
        self.assertEqual(make_vectors.render(), VECTORS.read_text(encoding="utf-8"))

    def test_each_sealed_secret_opens_to_its_secret(self):
        vectors = load()
        private = bytes.fromhex(vectors["enclave"]["private"])
        seals = [s for s in vectors.sections() if s.startswith("seal.")]
        self.assertEqual(len(seals), 4)
        for name in seals:
            v = vectors[name]
            with self.subTest(name):
                inner = enclave_pb2.SealedLogonSecret.FromString(enclave_opens(private, v))
                self.assertEqual(inner.refuse_rc4, v["refuse_rc4"] == "true")
                kind = v["secret_kind"]
                self.assertEqual(inner.WhichOneof("secret"), kind)
                if kind == "password":
                    self.assertEqual(inner.password, v["secret"])
                elif kind == "nt_hash":
                    self.assertEqual(inner.nt_hash.hex(), v["secret"])
                else:
                    self.assertEqual((inner.key.enctype, inner.key.value.hex()), (int(v["key_enctype"]), v["secret"]))
                # The secret is nowhere in what the proxy relays.
                self.assertNotIn(bytes.fromhex(v["plaintext"])[2:], bytes.fromhex(v["ciphertext"]))

    def test_another_purpose_owner_or_name_does_not_open(self):
        vectors = load()
        private = bytes.fromhex(vectors["enclave"]["private"])
        v = dict(vectors["seal.logon-password"])
        nonce = bytes.fromhex(v["sealing_nonce"])
        names = sealing.SealedNames(v["user"], v["domain"], v["realm"], v["target"])
        others = [
            sealing.sealed_secret_aad(sealing.SealPurpose.VAULT_SAVE, 1000, nonce, names),
            sealing.sealed_secret_aad(sealing.SealPurpose.LOGON, 1001, nonce, names),
            sealing.sealed_secret_aad(sealing.SealPurpose.LOGON, sealing.owner_vsock(1000), nonce, names),
            sealing.sealed_secret_aad(sealing.SealPurpose.LOGON, 1000, bytes(16), names),
            sealing.sealed_secret_aad(
                sealing.SealPurpose.LOGON, 1000, nonce, sealing.SealedNames("alic", "eCORP", "CORP.TEST")
            ),
        ]
        for aad in others:
            v["aad"] = aad.hex()
            with self.assertRaises(InvalidTag):
                enclave_opens(private, v)

    def test_the_attestation_verifies_and_pins_the_signer(self):
        a = load()["attestation"]
        status = lsa_pb2.StatusReply(
            measurement=a["measurement"],
            signer=a["signer"],
            boot_id=bytes.fromhex(a["boot_id"]),
            enclave_public_key=bytes.fromhex(a["public_key"]),
            attestation_signature=bytes.fromhex(a["signature"]),
            protection_bits=int(a["protection_bits"]),
            host_mapped_bytes=int(a["host_mapped_bytes"]),
            ram_size=int(a["ram_size"]),
            policy_bits=int(a["policy_bits"]),
            enclave_flags=int(a["enclave_flags"]),
            enclave_restarts=int(a["restarts"]),
            enclave_restart_reasons=[bytes.fromhex(r).decode() for r in a["restart_reasons"].split(",")],
        )
        self.assertEqual(sealing.attestation_message(sealing.facts_of(status)).hex(), a["message"])
        signer = sealing.signer_fingerprint(bytes.fromhex(a["signer_public"]))
        self.assertEqual(signer, a["signer"])
        expect = sealing.Expectations(
            attestation_pub=bytes.fromhex(a["attestation_public"]),
            attestation_pub_path="vectors.txt",
            signer=signer,
            signer_path="signer",
            require_hidden_memory=True,
        )
        attested = sealing.verify(status, expect)
        self.assertEqual(attested.public_key.hex(), a["public_key"])
        self.assertEqual(attested.boot_id, a["boot_id"])


if __name__ == "__main__":
    unittest.main()
