"""`credguard.Client` against a fake API (fakes.py): the sealed flow as credguardctl runs it, the
refusals before anything is sent, and the typed errors."""
import os
import unittest
from unittest import mock

import grpc

import credguard
from credguard import errors
from fakes import Served


class ClientAgainstAFake(unittest.TestCase):
    def setUp(self):
        self.served = Served()
        self.addCleanup(self.served.close)
        self.lsa = self.served.lsa

    def client(self, **kwargs) -> credguard.Client:
        options = dict(attestation_pub=self.served.attestation_pub, signer_pub=self.served.signer_pub)
        options.update(kwargs)
        c = credguard.Client(self.served.socket, timeout=10, **options)
        self.addCleanup(c.close)
        return c

    def test_a_logon_goes_sealed_and_opens_only_in_the_enclave(self):
        c = self.client()
        self.assertEqual(c.logon("alice", password="Alice-Pw-1", domain="CORP", realm="R.TEST"), "s1")
        request = self.lsa.received[-1]
        self.assertEqual(request.WhichOneof("secret"), "sealed")
        self.assertNotIn(b"Alice-Pw-1", request.SerializeToString())
        self.assertEqual(self.lsa.opened[-1].password, "Alice-Pw-1")
        self.assertFalse(self.lsa.opened[-1].refuse_rc4)
        c.logon("alice", nt_hash=b"\x01" * 16)
        self.assertEqual(self.lsa.opened[-1].nt_hash, b"\x01" * 16)
        c.logon("alice", key=(18, b"\x02" * 32), realm="R.TEST", refuse_rc4=True)
        opened = self.lsa.opened[-1]
        self.assertEqual((opened.key.enctype, opened.key.value, opened.refuse_rc4), (18, b"\x02" * 32, True))
        self.assertEqual(self.lsa.nonces, [], "each nonce used once")

    def test_vault_saves_and_password_changes_are_sealed_for_their_purpose(self):
        c = self.client()
        saved = c.save_credential("files.corp.test", "bob", password="Bob-Pw-1", domain="CORP")
        self.assertEqual(saved.target, "files.corp.test")
        self.assertEqual(self.lsa.opened[-1].password, "Bob-Pw-1")
        c.change_password("s1", "New-Pw-2")
        self.assertEqual(self.lsa.opened[-1].password, "New-Pw-2")
        with self.assertRaises(credguard.NotFound):
            c.change_password("no-such-session", "New-Pw-3")

    def test_a_wrong_attestation_key_or_signer_refuses_before_anything_is_sent(self):
        other = self.served.write("other.pub", os.urandom(32))
        refusals = [
            (dict(attestation_pub=other), credguard.BadAttestation),
            (dict(signer_pub=other), credguard.UnexpectedSigner),
            (dict(signer_pub=self.served.dir.name + "/none.pub"), credguard.NoPin),
            (dict(attestation_pub=self.served.dir.name + "/none.pub"), credguard.PublicKeyError),
            (dict(expect_measurement="00" * 48), credguard.UnexpectedMeasurement),
        ]
        for options, error in refusals:
            with self.subTest(error.__name__), self.assertRaises(error) as e:
                self.client(**options).logon("alice", password="Alice-Pw-1")
            self.assertIsInstance(e.exception, credguard.SealError)
            self.assertNotIn("Alice-Pw-1", str(e.exception))
        self.assertEqual(self.lsa.received, [])
        self.assertEqual(self.lsa.nonces, [], "not even a nonce was asked for")
        # The measurement is a pin of its own.
        self.client(signer_pub=self.served.dir.name + "/none.pub", expect_measurement=bytes(range(48)).hex()).logon(
            "alice", password="Alice-Pw-1"
        )
        self.assertEqual(len(self.lsa.opened), 1)

    def test_an_enclave_that_is_down_or_restarts_while_sealing_is_unavailable(self):
        self.lsa.state = "connecting"
        with self.assertRaises(credguard.Unavailable):
            self.client().logon("alice", password="Alice-Pw-1")
        self.lsa.state = "ready"
        self.lsa.nonce_boot_id = os.urandom(16)
        with self.assertRaises(credguard.Unavailable) as e:
            self.client().logon("alice", password="Alice-Pw-1")
        self.assertIn("restarted", str(e.exception))
        self.assertEqual(self.lsa.received, [])

    def test_grpc_errors_are_typed_and_carry_the_servers_message(self):
        c = self.client()
        with self.assertRaises(credguard.NotFound) as e:
            c.logoff("gone")
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(e.exception.message, "no session 'gone' of this user")
        self.assertEqual(str(e.exception), "NOT_FOUND: no session 'gone' of this user")
        with self.assertRaises(credguard.FailedPrecondition):
            c.logon("alice", password="Alice-Pw-1", sealed=False)
        self.assertEqual(self.lsa.received[-1].password, "Alice-Pw-1", "sealed=False sends it as it is")
        for code, cls in [
            (grpc.StatusCode.PERMISSION_DENIED, credguard.PermissionDenied),
            (grpc.StatusCode.UNAUTHENTICATED, credguard.Unauthenticated),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, credguard.ResourceExhausted),
            (grpc.StatusCode.INVALID_ARGUMENT, credguard.InvalidArgument),
            (grpc.StatusCode.UNAVAILABLE, credguard.Unavailable),
        ]:
            self.lsa.abort_with = (code, f"said the server: {code.name}")
            with self.subTest(code.name), self.assertRaises(cls) as e:
                c.sessions()
            self.assertEqual(e.exception.message, f"said the server: {code.name}")
            self.assertIsInstance(e.exception, credguard.ApiError)
            self.assertIsInstance(e.exception, credguard.CredguardError)

    def test_a_missing_socket_is_unavailable(self):
        c = credguard.Client(self.served.dir.name + "/none.sock", timeout=5)
        self.addCleanup(c.close)
        with self.assertRaises(credguard.Unavailable):
            c.status()

    def test_exactly_one_secret(self):
        c = self.client()
        for secrets in ({}, dict(password="a", nt_hash=b"b")):
            with self.assertRaises(ValueError):
                c.logon("alice", **secrets)
        with self.assertRaises(ValueError):
            c.logon("alice", password="a", refuse_rc4=True, sealed=False)


class ErrorMapping(unittest.TestCase):
    def test_every_grpc_code_has_its_class(self):
        class Failed(grpc.RpcError):
            def __init__(self, code):
                self._code = code

            def code(self):
                return self._code

            def details(self):
                return "why"

        for code in grpc.StatusCode:
            if code == grpc.StatusCode.OK:
                continue
            e = errors.from_rpc_error(Failed(code))
            with self.subTest(code.name):
                self.assertIs(type(e).CODE, code)
                self.assertEqual((e.code, e.message), (code, "why"))
        self.assertEqual(type(errors.from_rpc_error(grpc.RpcError())), errors.Unknown)

    def test_the_socket_comes_from_the_environment(self):
        with mock.patch.dict(os.environ, CREDGUARD_SOCKET="/tmp/x.sock"):
            self.assertEqual(credguard.socket_path(), "/tmp/x.sock")
            self.assertEqual(credguard.socket_path("/y.sock"), "/y.sock")
            del os.environ["CREDGUARD_SOCKET"]
            self.assertEqual(credguard.socket_path(), "/run/credguard/lsa.sock")

if __name__ == "__main__":
    unittest.main()
