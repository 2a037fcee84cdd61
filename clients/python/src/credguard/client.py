"""`Client`: credguard's API (`credguard.v1.Lsa`) over its Unix socket, with secrets sealed to the
attested enclave by default, as `credguardctl` does (`client/src/ctl.rs`)."""
from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple, Union

import grpc

from . import errors, sealing
from .sealing import Key, NtHash, Password, SealedNames, SealFor, SealPurpose
from .v1 import lsa_pb2, lsa_pb2_grpc

#: Where the installed proxy serves the API.
DEFAULT_SOCKET = "/run/credguard/lsa.sock"

KeyLike = Union[Key, Tuple[int, bytes]]


def socket_path(explicit: Union[str, os.PathLike, None] = None) -> str:
    """Where the API socket is: `explicit`, else `$CREDGUARD_SOCKET`, else the default path."""
    if explicit is not None:
        return os.fspath(explicit)
    return os.environ.get("CREDGUARD_SOCKET") or DEFAULT_SOCKET


def channel(path: Union[str, os.PathLike, None] = None) -> grpc.Channel:
    """A gRPC channel to the API's Unix socket at `path` (see `socket_path`)."""
    # grpcio sends the socket path as HTTP/2 :authority by default, which the server's h2 library
    # refuses (PROTOCOL_ERROR); any valid host name works.
    return grpc.insecure_channel(
        "unix:" + os.path.abspath(socket_path(path)),
        options=[("grpc.default_authority", "localhost")],
    )


def _secret_of(password: Optional[str], nt_hash: Optional[bytes], key: Optional[KeyLike]) -> sealing.Secret:
    given = [s for s in (password, nt_hash, key) if s is not None]
    if len(given) != 1:
        raise ValueError("give exactly one secret: password=, nt_hash= or key=")
    if password is not None:
        return Password(password)
    if nt_hash is not None:
        return NtHash(nt_hash)
    if isinstance(key, Key):
        return key
    enctype, value = key  # type: ignore[misc]
    return Key(enctype, value)


class Client:
    """A client of credguard's API.

    Secrets (`logon`, `save_credential`, `change_password`) are sealed to the enclave after its
    attestation is checked against the installed attestation key and the pinned image signer;
    the proxy relays only ciphertext. Every failed call raises a `CredguardError`: an `ApiError`
    subclass for each gRPC status (`NotFound`, `PermissionDenied`, ...), a `SealError` subclass
    when the client refuses to seal (`BadAttestation`, `UnexpectedSigner`, ...).

    The defaults are credguardctl's: the socket `$CREDGUARD_SOCKET` else /run/credguard/lsa.sock,
    the attestation key `$CREDGUARD_ATTESTATION_PUB` else /etc/credguard/attestation.pub, the
    signer `$CREDGUARD_SIGNER_PUB` else /etc/credguard/signing.pub.
    """

    def __init__(
        self,
        socket: Union[str, os.PathLike, None] = None,
        *,
        attestation_pub: Union[str, os.PathLike, None] = None,
        signer_pub: Union[str, os.PathLike, None] = None,
        expect_measurement: Optional[str] = None,
        require_hidden_memory: bool = False,
        allow_test_image: Optional[bool] = None,
        timeout: Optional[float] = 60.0,
    ):
        self.socket = socket_path(socket)
        self.timeout = timeout
        self._attestation_pub = attestation_pub
        self._signer_pub = signer_pub
        self._expect_measurement = expect_measurement
        self._require_hidden_memory = require_hidden_memory
        self._allow_test_image = allow_test_image
        self._channel = channel(self.socket)
        self._stub = lsa_pb2_grpc.LsaStub(self._channel)

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from e

    # --- the enclave and its attestation ---

    def status(self) -> lsa_pb2.StatusReply:
        """The state of credguard and of its enclave (what it states is checked by `attest`)."""
        return self._call("Status", lsa_pb2.StatusRequest())

    def expectations(self) -> sealing.Expectations:
        """What this client requires of the enclave (reads the attestation and signer keys)."""
        return sealing.Expectations.load(
            self._attestation_pub,
            self._signer_pub,
            measurement=self._expect_measurement,
            require_hidden_memory=self._require_hidden_memory,
            allow_test_image=self._allow_test_image,
        )

    def attest(self) -> sealing.AttestedEnclave:
        """Reads `Status` and verifies the enclave's attestation; raises a `SealError` if this
        client would not seal a secret to it."""
        expect = self.expectations()
        return sealing.verify(self._ready_status(), expect)

    def _ready_status(self) -> lsa_pb2.StatusReply:
        status = self.status()
        if status.state != "ready":
            # As the proxy would answer the call itself.
            raise errors.Unavailable("the enclave is not reachable (the proxy is reconnecting); retry shortly")
        return status

    def seal(
        self, secret: sealing.Secret, purpose: SealPurpose, names: SealedNames, refuse_rc4: bool = False
    ) -> lsa_pb2.SealedSecret:
        """`secret` sealed to the attested enclave for `purpose`, this process's uid, `names` and a
        fresh single-use nonce from the enclave."""
        expect = self.expectations()
        status = self._ready_status()
        attested = sealing.verify(status, expect)
        nonce = self._call("GetSealingNonce", lsa_pb2.GetSealingNonceRequest())
        if nonce.boot_id != status.boot_id:
            raise errors.Unavailable("the enclave restarted while sealing; retry")
        seal_for = SealFor(purpose, sealing.owner_uid(os.getuid()), nonce.nonce, names)
        return sealing.seal(attested.public_key, secret, seal_for, refuse_rc4)

    # --- logon sessions ---

    def logon(
        self,
        user: str,
        *,
        password: Optional[str] = None,
        nt_hash: Optional[bytes] = None,
        key: Optional[KeyLike] = None,
        domain: str = "",
        realm: str = "",
        kdc: str = "",
        refuse_rc4: bool = False,
        keep_default: bool = False,
        sealed: bool = True,
    ) -> str:
        """Logs on with exactly one secret (a password, a 16-byte NT hash, or a Kerberos key as
        `(enctype, bytes)`); returns the new session's id. The secret is sealed to the attested
        enclave unless `sealed=False` (which an installed proxy refuses: FailedPrecondition)."""
        secret = _secret_of(password, nt_hash, key)
        request = lsa_pb2.LogonRequest(user=user, domain=domain, realm=realm, kdc=kdc, keep_default=keep_default)
        if sealed:
            names = SealedNames(user=user, domain=domain, realm=realm)
            request.sealed.CopyFrom(self.seal(secret, SealPurpose.LOGON, names, refuse_rc4))
        else:
            _put_plain(request, secret, refuse_rc4)
        return self._call("Logon", request).session_id

    def logon_saved(self, target: str) -> str:
        """Logs on with the caller's credential saved under `target`; returns the session's id."""
        return self._call("LogonSaved", lsa_pb2.LogonSavedRequest(target=target)).session_id

    def logoff(self, session_id: str) -> None:
        """Closes a session; the enclave forgets its secrets."""
        self._call("Logoff", lsa_pb2.LogoffRequest(session_id=session_id))

    def sessions(self) -> List[lsa_pb2.SessionInfo]:
        """The caller's sessions, oldest first (root: every uid's). Never a secret."""
        return list(self._call("ListSessions", lsa_pb2.ListSessionsRequest()).sessions)

    def set_default_session(self, session_id: str) -> None:
        """Makes one of the caller's sessions its default (the one KCM and PAM use)."""
        self._call("SetDefaultSession", lsa_pb2.SetDefaultSessionRequest(session_id=session_id))

    # --- NTLM ---

    def ntlm_negotiate(self, session_id: str) -> lsa_pb2.NtlmNegotiateReply:
        """Starts an NTLM client context: `.context_id` and the `.negotiate_message` to send."""
        return self._call("NtlmNegotiate", lsa_pb2.NtlmNegotiateRequest(session_id=session_id))

    def ntlm_authenticate(
        self, context_id: str, challenge_message: bytes, *, channel_bindings: bytes = b"", target_spn: str = ""
    ) -> lsa_pb2.NtlmAuthenticateReply:
        """Answers the server's CHALLENGE: `.authenticate_message` and `.exported_session_key`.
        `channel_bindings` is a gss_channel_bindings_struct; `target_spn` is sent as MsvAvTargetName."""
        request = lsa_pb2.NtlmAuthenticateRequest(
            context_id=context_id,
            challenge_message=challenge_message,
            channel_bindings=channel_bindings,
            target_spn=target_spn,
        )
        return self._call("NtlmAuthenticate", request)

    # --- Kerberos ---

    def kerberos_get_tgt(self, session_id: str) -> lsa_pb2.KerberosGetTgtReply:
        """Gets the session's TGT (it stays in the enclave): its principal, enctype and times."""
        return self._call("KerberosGetTgt", lsa_pb2.KerberosGetTgtRequest(session_id=session_id))

    def kerberos_get_service_ticket(
        self,
        session_id: str,
        spn: str,
        *,
        mutual: bool = False,
        delegate: bool = False,
        channel_bindings: bytes = b"",
    ) -> lsa_pb2.KerberosGetServiceTicketReply:
        """A service ticket for `spn` (e.g. `HTTP/web.example.test`): `.gss_token` (for GSS-API),
        `.spnego_token` (for HTTP `Negotiate`), `.ap_req`, `.ticket`, `.session_key`, `.subkey` and
        `.seq_number` (the GSS context's key and first sequence number), `.ccache` (an MIT ccache
        holding only it). `channel_bindings` is a gss_channel_bindings_struct. With `mutual=True`,
        `.context_id` names the AP-REQ for `kerberos_verify_ap_rep`. `delegate=True` is always
        refused (FailedPrecondition)."""
        request = lsa_pb2.KerberosGetServiceTicketRequest(
            session_id=session_id, spn=spn, mutual=mutual, delegate=delegate, channel_bindings=channel_bindings
        )
        return self._call("KerberosGetServiceTicket", request)

    def kerberos_verify_ap_rep(
        self, session_id: str, context_id: bytes, ap_rep: bytes
    ) -> lsa_pb2.KerberosVerifyApRepReply:
        """Checks the service's AP-REP (DER or its GSS token) for a mutual service ticket's
        `context_id`, once; a wrong one raises Unauthenticated. Returns the acceptor's subkey and
        sequence number, if it asserts them."""
        request = lsa_pb2.KerberosVerifyApRepRequest(session_id=session_id, context_id=context_id, ap_rep=ap_rep)
        return self._call("KerberosVerifyApRep", request)

    def change_password(self, session_id: str, new_password: str) -> None:
        """Changes the session's expired Kerberos password over kpasswd; the new password goes
        sealed for the session's names."""
        request = lsa_pb2.ChangePasswordRequest(session_id=session_id)
        names = self._names_of(session_id)
        request.new_password.CopyFrom(self.seal(Password(new_password), SealPurpose.PASSWORD_CHANGE, names))
        self._call("ChangePassword", request)

    def check_password(self, session_id: str) -> bool:
        """Proves the session's expired password with the KDC, changing nothing."""
        request = lsa_pb2.ChangePasswordRequest(session_id=session_id, check_only=True)
        return self._call("ChangePassword", request).verified

    def _names_of(self, session_id: str) -> SealedNames:
        for s in self.sessions():
            if s.session_id == session_id:
                return SealedNames(user=s.user, domain=s.domain, realm=s.realm)
        raise errors.NotFound(f"no session {session_id!r} of this user")

    # --- saved credentials (the vault) ---

    def save_credential(
        self,
        target: str,
        user: str,
        *,
        password: Optional[str] = None,
        nt_hash: Optional[bytes] = None,
        key: Optional[KeyLike] = None,
        domain: str = "",
        realm: str = "",
        kdc: str = "",
        sealed: bool = True,
    ) -> lsa_pb2.SavedCredentialInfo:
        """Saves a credential in the caller's vault under `target` (sealed to the enclave)."""
        secret = _secret_of(password, nt_hash, key)
        request = lsa_pb2.SaveCredentialRequest(target=target, user=user, domain=domain, realm=realm, kdc=kdc)
        if sealed:
            names = SealedNames(user=user, domain=domain, realm=realm, target=target)
            request.sealed.CopyFrom(self.seal(secret, SealPurpose.VAULT_SAVE, names))
        else:
            _put_plain(request, secret, False)
        return self._call("SaveCredential", request).credential

    def saved_credentials(self) -> List[lsa_pb2.SavedCredentialInfo]:
        """The caller's saved credentials (never a secret)."""
        return list(self._call("ListSavedCredentials", lsa_pb2.ListSavedCredentialsRequest()).credentials)

    def delete_saved_credential(self, target: str) -> None:
        """Deletes one of the caller's saved credentials."""
        self._call("DeleteSavedCredential", lsa_pb2.DeleteSavedCredentialRequest(target=target))


def _put_plain(request: Any, secret: sealing.Secret, refuse_rc4: bool) -> None:
    if refuse_rc4:
        raise ValueError("refuse_rc4 travels only inside a sealed secret")
    if isinstance(secret, Password):
        request.password = secret.value
    elif isinstance(secret, NtHash):
        request.nt_hash = secret.value
    else:
        request.key.enctype = secret.enctype
        request.key.value = secret.value
