from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LegacyProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEGACY_PROTOCOL_UNSPECIFIED: _ClassVar[LegacyProtocol]
    NTLMV1: _ClassVar[LegacyProtocol]
    MSCHAPV2: _ClassVar[LegacyProtocol]
    DIGEST: _ClassVar[LegacyProtocol]
    CREDSSP: _ClassVar[LegacyProtocol]
LEGACY_PROTOCOL_UNSPECIFIED: LegacyProtocol
NTLMV1: LegacyProtocol
MSCHAPV2: LegacyProtocol
DIGEST: LegacyProtocol
CREDSSP: LegacyProtocol

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("version", "measurement", "signer", "state", "uptime_ms", "sessions", "enclave_version", "protection", "enclave_public_key", "attestation_signature", "boot_id", "enclave_restarts", "enclave_restart_reasons", "vault_ready", "protection_bits", "host_mapped_bytes", "ram_size", "policy_bits", "enclave_flags", "rc4_allowed", "test_image", "memory_hidden", "proxy_protection")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_RESTART_REASONS_FIELD_NUMBER: _ClassVar[int]
    VAULT_READY_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_BITS_FIELD_NUMBER: _ClassVar[int]
    HOST_MAPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    POLICY_BITS_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    RC4_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    TEST_IMAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    PROXY_PROTECTION_FIELD_NUMBER: _ClassVar[int]
    version: str
    measurement: str
    signer: str
    state: str
    uptime_ms: int
    sessions: int
    enclave_version: str
    protection: str
    enclave_public_key: bytes
    attestation_signature: bytes
    boot_id: bytes
    enclave_restarts: int
    enclave_restart_reasons: _containers.RepeatedScalarFieldContainer[str]
    vault_ready: bool
    protection_bits: int
    host_mapped_bytes: int
    ram_size: int
    policy_bits: int
    enclave_flags: int
    rc4_allowed: bool
    test_image: bool
    memory_hidden: bool
    proxy_protection: str
    def __init__(self, version: _Optional[str] = ..., measurement: _Optional[str] = ..., signer: _Optional[str] = ..., state: _Optional[str] = ..., uptime_ms: _Optional[int] = ..., sessions: _Optional[int] = ..., enclave_version: _Optional[str] = ..., protection: _Optional[str] = ..., enclave_public_key: _Optional[bytes] = ..., attestation_signature: _Optional[bytes] = ..., boot_id: _Optional[bytes] = ..., enclave_restarts: _Optional[int] = ..., enclave_restart_reasons: _Optional[_Iterable[str]] = ..., vault_ready: _Optional[bool] = ..., protection_bits: _Optional[int] = ..., host_mapped_bytes: _Optional[int] = ..., ram_size: _Optional[int] = ..., policy_bits: _Optional[int] = ..., enclave_flags: _Optional[int] = ..., rc4_allowed: _Optional[bool] = ..., test_image: _Optional[bool] = ..., memory_hidden: _Optional[bool] = ..., proxy_protection: _Optional[str] = ...) -> None: ...

class SealedSecret(_message.Message):
    __slots__ = ("ephemeral_public_key", "nonce", "ciphertext", "enclave_public_key", "sealing_nonce")
    EPHEMERAL_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SEALING_NONCE_FIELD_NUMBER: _ClassVar[int]
    ephemeral_public_key: bytes
    nonce: bytes
    ciphertext: bytes
    enclave_public_key: bytes
    sealing_nonce: bytes
    def __init__(self, ephemeral_public_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., enclave_public_key: _Optional[bytes] = ..., sealing_nonce: _Optional[bytes] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("enctype", "value")
    ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    enctype: int
    value: bytes
    def __init__(self, enctype: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class LogonRequest(_message.Message):
    __slots__ = ("user", "domain", "realm", "kdc", "password", "nt_hash", "key", "sealed", "keep_default", "machine_account")
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    KDC_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NT_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    KEEP_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    domain: str
    realm: str
    kdc: str
    password: str
    nt_hash: bytes
    key: Key
    sealed: SealedSecret
    keep_default: bool
    machine_account: bool
    def __init__(self, user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., kdc: _Optional[str] = ..., password: _Optional[str] = ..., nt_hash: _Optional[bytes] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., sealed: _Optional[_Union[SealedSecret, _Mapping]] = ..., keep_default: _Optional[bool] = ..., machine_account: _Optional[bool] = ...) -> None: ...

class LogonReply(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class LogoffRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class LogoffReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsReply(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "user", "domain", "realm", "uid", "created_unix_ms", "secret_kind", "sealed", "is_default", "user_sid")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SECRET_KIND_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    USER_SID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user: str
    domain: str
    realm: str
    uid: int
    created_unix_ms: int
    secret_kind: str
    sealed: bool
    is_default: bool
    user_sid: str
    def __init__(self, session_id: _Optional[str] = ..., user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., uid: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., secret_kind: _Optional[str] = ..., sealed: _Optional[bool] = ..., is_default: _Optional[bool] = ..., user_sid: _Optional[str] = ...) -> None: ...

class SetDefaultSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SetDefaultSessionReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NtlmNegotiateRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class NtlmNegotiateReply(_message.Message):
    __slots__ = ("context_id", "negotiate_message")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    negotiate_message: bytes
    def __init__(self, context_id: _Optional[str] = ..., negotiate_message: _Optional[bytes] = ...) -> None: ...

class NtlmAuthenticateRequest(_message.Message):
    __slots__ = ("context_id", "challenge_message", "channel_bindings", "target_spn", "negotiate_message")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SPN_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    challenge_message: bytes
    channel_bindings: bytes
    target_spn: str
    negotiate_message: bytes
    def __init__(self, context_id: _Optional[str] = ..., challenge_message: _Optional[bytes] = ..., channel_bindings: _Optional[bytes] = ..., target_spn: _Optional[str] = ..., negotiate_message: _Optional[bytes] = ...) -> None: ...

class NtlmAuthenticateReply(_message.Message):
    __slots__ = ("authenticate_message", "exported_session_key")
    AUTHENTICATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    authenticate_message: bytes
    exported_session_key: bytes
    def __init__(self, authenticate_message: _Optional[bytes] = ..., exported_session_key: _Optional[bytes] = ...) -> None: ...

class KerberosGetTgtRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class KerberosGetTgtReply(_message.Message):
    __slots__ = ("client_principal", "realm", "enctype", "start_time", "end_time", "renew_till", "user_sid")
    CLIENT_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RENEW_TILL_FIELD_NUMBER: _ClassVar[int]
    USER_SID_FIELD_NUMBER: _ClassVar[int]
    client_principal: str
    realm: str
    enctype: int
    start_time: int
    end_time: int
    renew_till: int
    user_sid: str
    def __init__(self, client_principal: _Optional[str] = ..., realm: _Optional[str] = ..., enctype: _Optional[int] = ..., start_time: _Optional[int] = ..., end_time: _Optional[int] = ..., renew_till: _Optional[int] = ..., user_sid: _Optional[str] = ...) -> None: ...

class KerberosGetServiceTicketRequest(_message.Message):
    __slots__ = ("session_id", "spn", "delegate", "mutual", "ccache_path", "channel_bindings")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SPN_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_FIELD_NUMBER: _ClassVar[int]
    CCACHE_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    spn: str
    delegate: bool
    mutual: bool
    ccache_path: str
    channel_bindings: bytes
    def __init__(self, session_id: _Optional[str] = ..., spn: _Optional[str] = ..., delegate: _Optional[bool] = ..., mutual: _Optional[bool] = ..., ccache_path: _Optional[str] = ..., channel_bindings: _Optional[bytes] = ...) -> None: ...

class KerberosGetServiceTicketReply(_message.Message):
    __slots__ = ("ap_req", "gss_token", "ticket", "session_key", "enctype", "end_time", "ccache", "subkey", "seq_number", "context_id", "spnego_token", "from_cache")
    AP_REQ_FIELD_NUMBER: _ClassVar[int]
    GSS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CCACHE_FIELD_NUMBER: _ClassVar[int]
    SUBKEY_FIELD_NUMBER: _ClassVar[int]
    SEQ_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SPNEGO_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    ap_req: bytes
    gss_token: bytes
    ticket: bytes
    session_key: bytes
    enctype: int
    end_time: int
    ccache: bytes
    subkey: bytes
    seq_number: int
    context_id: bytes
    spnego_token: bytes
    from_cache: bool
    def __init__(self, ap_req: _Optional[bytes] = ..., gss_token: _Optional[bytes] = ..., ticket: _Optional[bytes] = ..., session_key: _Optional[bytes] = ..., enctype: _Optional[int] = ..., end_time: _Optional[int] = ..., ccache: _Optional[bytes] = ..., subkey: _Optional[bytes] = ..., seq_number: _Optional[int] = ..., context_id: _Optional[bytes] = ..., spnego_token: _Optional[bytes] = ..., from_cache: _Optional[bool] = ...) -> None: ...

class KerberosVerifyApRepRequest(_message.Message):
    __slots__ = ("session_id", "context_id", "ap_rep")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    AP_REP_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    context_id: bytes
    ap_rep: bytes
    def __init__(self, session_id: _Optional[str] = ..., context_id: _Optional[bytes] = ..., ap_rep: _Optional[bytes] = ...) -> None: ...

class KerberosVerifyApRepReply(_message.Message):
    __slots__ = ("acceptor_subkey", "acceptor_subkey_enctype", "has_seq_number", "seq_number")
    ACCEPTOR_SUBKEY_FIELD_NUMBER: _ClassVar[int]
    ACCEPTOR_SUBKEY_ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    HAS_SEQ_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SEQ_NUMBER_FIELD_NUMBER: _ClassVar[int]
    acceptor_subkey: bytes
    acceptor_subkey_enctype: int
    has_seq_number: bool
    seq_number: int
    def __init__(self, acceptor_subkey: _Optional[bytes] = ..., acceptor_subkey_enctype: _Optional[int] = ..., has_seq_number: _Optional[bool] = ..., seq_number: _Optional[int] = ...) -> None: ...

class LegacyAuthenticateRequest(_message.Message):
    __slots__ = ("session_id", "protocol", "challenge")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    protocol: LegacyProtocol
    challenge: bytes
    def __init__(self, session_id: _Optional[str] = ..., protocol: _Optional[_Union[LegacyProtocol, str]] = ..., challenge: _Optional[bytes] = ...) -> None: ...

class LegacyAuthenticateReply(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: bytes
    def __init__(self, response: _Optional[bytes] = ...) -> None: ...

class SaveCredentialRequest(_message.Message):
    __slots__ = ("target", "user", "domain", "realm", "password", "nt_hash", "key", "sealed", "kdc")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NT_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    KDC_FIELD_NUMBER: _ClassVar[int]
    target: str
    user: str
    domain: str
    realm: str
    password: str
    nt_hash: bytes
    key: Key
    sealed: SealedSecret
    kdc: str
    def __init__(self, target: _Optional[str] = ..., user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., password: _Optional[str] = ..., nt_hash: _Optional[bytes] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., sealed: _Optional[_Union[SealedSecret, _Mapping]] = ..., kdc: _Optional[str] = ...) -> None: ...

class SaveCredentialReply(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: SavedCredentialInfo
    def __init__(self, credential: _Optional[_Union[SavedCredentialInfo, _Mapping]] = ...) -> None: ...

class ListSavedCredentialsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSavedCredentialsReply(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[SavedCredentialInfo]
    def __init__(self, credentials: _Optional[_Iterable[_Union[SavedCredentialInfo, _Mapping]]] = ...) -> None: ...

class SavedCredentialInfo(_message.Message):
    __slots__ = ("target", "user", "domain", "realm", "created_unix_ms", "secret_kind", "uid", "kdc")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SECRET_KIND_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    KDC_FIELD_NUMBER: _ClassVar[int]
    target: str
    user: str
    domain: str
    realm: str
    created_unix_ms: int
    secret_kind: str
    uid: int
    kdc: str
    def __init__(self, target: _Optional[str] = ..., user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., secret_kind: _Optional[str] = ..., uid: _Optional[int] = ..., kdc: _Optional[str] = ...) -> None: ...

class DeleteSavedCredentialRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class DeleteSavedCredentialReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogonSavedRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class LogonSavedReply(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSealingNonceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSealingNonceReply(_message.Message):
    __slots__ = ("nonce", "boot_id")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    boot_id: bytes
    def __init__(self, nonce: _Optional[bytes] = ..., boot_id: _Optional[bytes] = ...) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("session_id", "new_password", "check_only")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CHECK_ONLY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    new_password: SealedSecret
    check_only: bool
    def __init__(self, session_id: _Optional[str] = ..., new_password: _Optional[_Union[SealedSecret, _Mapping]] = ..., check_only: _Optional[bool] = ...) -> None: ...

class ChangePasswordReply(_message.Message):
    __slots__ = ("verified",)
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    verified: bool
    def __init__(self, verified: _Optional[bool] = ...) -> None: ...
