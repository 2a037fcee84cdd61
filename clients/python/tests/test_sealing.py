"""The attestation check, the client's pins and sealing, as client/src/sealed.rs tests them."""
import os
import tempfile
import unittest
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credguard import errors, sealing
from credguard.sealing import Protection
from credguard.v1 import lsa_pb2


def facts(**changes) -> sealing.Attested:
    base = dict(
        measurement=bytes([1] * 48),
        signer=bytes([2] * 16),
        boot_id=bytes([3] * 16),
        public_key=bytes([4] * 32),
        protection_bits=int(Protection.KNOWN | Protection.SECCOMP),
        host_mapped_bytes=16 << 20,
        ram_size=16 << 20,
        policy_bits=0,
        enclave_flags=0,
        restarts=1,
        restart_reasons=("watchdog: no answer in 5 s",),
    )
    base.update(changes)
    return sealing.Attested(**base)


def signed_status(key: Ed25519PrivateKey, f: sealing.Attested) -> lsa_pb2.StatusReply:
    return lsa_pb2.StatusReply(
        state="ready",
        measurement=f.measurement.hex(),
        signer=f.signer.hex(),
        boot_id=f.boot_id,
        enclave_public_key=f.public_key,
        attestation_signature=key.sign(sealing.attestation_message(f)),
        protection_bits=f.protection_bits,
        host_mapped_bytes=f.host_mapped_bytes,
        ram_size=f.ram_size,
        policy_bits=f.policy_bits,
        enclave_flags=f.enclave_flags,
        enclave_restarts=f.restarts,
        enclave_restart_reasons=list(f.restart_reasons),
        protection="anonymous memory",
    )


def expect(key: Ed25519PrivateKey, **changes) -> sealing.Expectations:
    base = dict(
        attestation_pub=key.public_key().public_bytes_raw(),
        attestation_pub_path="test.pub",
        signer=bytes([2] * 16).hex(),
        signer_path="signing.pub",
    )
    base.update(changes)
    return sealing.Expectations(**base)


class Attestation(unittest.TestCase):
    def setUp(self):
        self.key = Ed25519PrivateKey.generate()
        self.status = signed_status(self.key, facts())

    def test_verifies_only_a_genuine_attestation(self):
        self.assertEqual(sealing.verify(self.status, expect(self.key)).public_key, bytes([4] * 32))
        self.assertTrue(sealing.verify(self.status, expect(self.key, measurement=(bytes([1] * 48)).hex().upper())))
        with self.assertRaises(errors.UnexpectedMeasurement):
            sealing.verify(self.status, expect(self.key, measurement="00"))
        # A proxy that swaps in its own key, or claims other protections, policy, build or
        # restarts, cannot make the signature fit.
        tamper = dict(
            enclave_public_key=bytes([5] * 32),
            boot_id=bytes([9] * 16),
            protection_bits=self.status.protection_bits | Protection.HIDDEN,
            policy_bits=1,
            host_mapped_bytes=1,
            ram_size=1,
            enclave_flags=1,
            enclave_restarts=0,
            measurement="00" * 48,
            signer="07" * 16,
        )
        for field, value in tamper.items():
            s = lsa_pb2.StatusReply()
            s.CopyFrom(self.status)
            setattr(s, field, value)
            with self.subTest(field), self.assertRaises(errors.BadAttestation):
                sealing.verify(s, expect(self.key, signer=s.signer))
        s = lsa_pb2.StatusReply()
        s.CopyFrom(self.status)
        del s.enclave_restart_reasons[:]
        with self.assertRaises(errors.BadAttestation):
            sealing.verify(s, expect(self.key))
        # Another attestation key (a proxy that signs itself).
        with self.assertRaises(errors.BadAttestation):
            sealing.verify(self.status, expect(Ed25519PrivateKey.generate()))

    def test_an_enclave_without_an_attested_key_is_refused(self):
        for field in ("attestation_signature", "enclave_public_key"):
            s = lsa_pb2.StatusReply()
            s.CopyFrom(self.status)
            s.ClearField(field)
            with self.subTest(field), self.assertRaises(errors.NotOffered):
                sealing.verify(s, expect(self.key))

    def test_malformed_fields_are_named(self):
        for field, value in dict(measurement="zz", signer="0102", boot_id=b"\x01", enclave_public_key=b"\x01" * 31).items():
            s = lsa_pb2.StatusReply()
            s.CopyFrom(self.status)
            setattr(s, field, value)
            with self.subTest(field), self.assertRaises(errors.MalformedStatus):
                sealing.verify(s, expect(self.key))

    def test_the_client_pins_the_signer_and_its_requirements(self):
        with self.assertRaises(errors.UnexpectedSigner):
            sealing.verify(self.status, expect(self.key, signer=bytes([7] * 16).hex()))
        with self.assertRaises(errors.NoPin):
            sealing.verify(self.status, expect(self.key, signer=None))
        self.assertTrue(sealing.verify(self.status, expect(self.key, signer=None, measurement=bytes([1] * 48).hex())))
        with self.assertRaises(errors.MemoryNotHidden):
            sealing.verify(self.status, expect(self.key, require_hidden_memory=True))
        hidden = signed_status(
            self.key, facts(protection_bits=int(Protection.KNOWN | Protection.HIDDEN | Protection.GUEST_MEMFD))
        )
        self.assertTrue(sealing.verify(hidden, expect(self.key, require_hidden_memory=True)))
        test_build = signed_status(self.key, facts(enclave_flags=sealing.ENCLAVE_FLAG_TEST_BUILD))
        with self.assertRaises(errors.TestImage):
            sealing.verify(test_build, expect(self.key))
        self.assertTrue(sealing.verify(test_build, expect(self.key, allow_test_image=True)))


class KeyFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_public_key_files(self):
        self.assertEqual(sealing.read_public_key(self.write("ok.pub", "ab" * 32 + "\n")), bytes([0xAB] * 32))
        for name, text in (("short.pub", "ab" * 31), ("nothex.pub", "zz" * 32)):
            with self.subTest(name), self.assertRaises(errors.PublicKeyError) as e:
                sealing.read_public_key(self.write(name, text))
            self.assertIn(name, str(e.exception))
        with self.assertRaises(errors.PublicKeyError):
            sealing.read_public_key(os.path.join(self.dir.name, "missing.pub"))

    def test_expectations_read_the_files_and_the_environment(self):
        attestation = self.write("attestation.pub", "11" * 32)
        signer = self.write("signing.pub", "22" * 32)
        e = sealing.Expectations.load(attestation, signer, allow_test_image=False)
        self.assertEqual(e.attestation_pub, bytes([0x11] * 32))
        self.assertEqual(e.signer, sealing.signer_fingerprint(bytes([0x22] * 32)))
        # No signer key installed: no pin (verify then refuses unless a measurement is given).
        e = sealing.Expectations.load(attestation, os.path.join(self.dir.name, "none.pub"))
        self.assertIsNone(e.signer)
        env = dict(CREDGUARD_ATTESTATION_PUB=attestation, CREDGUARD_SIGNER_PUB=signer, CREDGUARD_ALLOW_TEST_IMAGE="1")
        with mock.patch.dict(os.environ, env):
            e = sealing.Expectations.load()
            self.assertEqual((e.attestation_pub_path, e.signer_path, e.allow_test_image), (attestation, signer, True))
            os.environ["CREDGUARD_ALLOW_TEST_IMAGE"] = "0"
            self.assertFalse(sealing.Expectations.load().allow_test_image)


class Seal(unittest.TestCase):
    def seal_for(self, nonce: bytes = bytes([1] * 16)) -> sealing.SealFor:
        return sealing.SealFor(sealing.SealPurpose.LOGON, 1000, nonce, sealing.SealedNames("u"))

    def test_seals_with_fresh_keys_each_time(self):
        enclave = bytes([9] * 32)
        a = sealing.seal(enclave, sealing.Password("pw"), self.seal_for())
        b = sealing.seal(enclave, sealing.Password("pw"), self.seal_for())
        self.assertNotEqual(a.ephemeral_public_key, b.ephemeral_public_key)
        self.assertNotEqual(a.nonce, b.nonce)
        self.assertNotEqual(a.ciphertext, b.ciphertext)
        self.assertNotIn(b"pw", a.ciphertext)
        self.assertEqual((a.sealing_nonce, a.enclave_public_key), (bytes([1] * 16), enclave))
        self.assertEqual((len(a.ephemeral_public_key), len(a.nonce)), (32, 12))

    def test_refuses_bad_inputs(self):
        with self.assertRaises(errors.SealingFailed):
            sealing.seal(bytes([9] * 32), sealing.Password("pw"), self.seal_for(bytes(3)))
        with self.assertRaises(errors.SealingFailed):
            sealing.seal(bytes([9] * 31), sealing.Password("pw"), self.seal_for())
        # A low-order enclave key gives an all-zero shared secret: refused, as ring refuses it.
        with self.assertRaises(errors.SealingFailed):
            sealing.seal(bytes(32), sealing.Password("pw"), self.seal_for())
        with self.assertRaises(TypeError):
            sealing.seal(bytes([9] * 32), "pw", self.seal_for())

    def test_secrets_never_show_in_a_repr(self):
        for secret in (sealing.Password("Pw-1"), sealing.NtHash(b"\xaa" * 16), sealing.Key(18, b"\xbb" * 32)):
            self.assertNotIn("Pw-1", repr(secret))
            self.assertNotIn("aa", repr(secret).lower())
            self.assertNotIn("bb", repr(secret).lower())


if __name__ == "__main__":
    unittest.main()
