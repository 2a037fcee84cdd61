from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_NO_TGT: _ClassVar[ErrorReason]
    ERROR_REASON_PASSWORD_EXPIRED: _ClassVar[ErrorReason]

class LegacyProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEGACY_PROTOCOL_UNSPECIFIED: _ClassVar[LegacyProtocol]
    LEGACY_PROTOCOL_NTLMV1: _ClassVar[LegacyProtocol]
    LEGACY_PROTOCOL_MSCHAPV2: _ClassVar[LegacyProtocol]
    LEGACY_PROTOCOL_DIGEST: _ClassVar[LegacyProtocol]
    LEGACY_PROTOCOL_CREDSSP: _ClassVar[LegacyProtocol]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_NO_TGT: ErrorReason
ERROR_REASON_PASSWORD_EXPIRED: ErrorReason
LEGACY_PROTOCOL_UNSPECIFIED: LegacyProtocol
LEGACY_PROTOCOL_NTLMV1: LegacyProtocol
LEGACY_PROTOCOL_MSCHAPV2: LegacyProtocol
LEGACY_PROTOCOL_DIGEST: LegacyProtocol
LEGACY_PROTOCOL_CREDSSP: LegacyProtocol

class Frame(_message.Message):
    __slots__ = ("call_id", "method_id", "reason", "payload", "code", "message", "audit")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    method_id: int
    reason: ErrorReason
    payload: bytes
    code: int
    message: str
    audit: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, call_id: _Optional[int] = ..., method_id: _Optional[int] = ..., reason: _Optional[_Union[ErrorReason, str]] = ..., payload: _Optional[bytes] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., audit: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("operation", "session_handle", "target", "code", "enclave_time_ms")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    operation: str
    session_handle: bytes
    target: str
    code: int
    enclave_time_ms: int
    def __init__(self, operation: _Optional[str] = ..., session_handle: _Optional[bytes] = ..., target: _Optional[str] = ..., code: _Optional[int] = ..., enclave_time_ms: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("version", "measurement", "uptime_ms", "requests_served", "boot_id", "signer", "sessions", "sealing_public_key", "vault_ready", "policy_bits", "enclave_flags")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_SERVED_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SEALING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    VAULT_READY_FIELD_NUMBER: _ClassVar[int]
    POLICY_BITS_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    version: str
    measurement: bytes
    uptime_ms: int
    requests_served: int
    boot_id: bytes
    signer: str
    sessions: int
    sealing_public_key: bytes
    vault_ready: bool
    policy_bits: int
    enclave_flags: int
    def __init__(self, version: _Optional[str] = ..., measurement: _Optional[bytes] = ..., uptime_ms: _Optional[int] = ..., requests_served: _Optional[int] = ..., boot_id: _Optional[bytes] = ..., signer: _Optional[str] = ..., sessions: _Optional[int] = ..., sealing_public_key: _Optional[bytes] = ..., vault_ready: _Optional[bool] = ..., policy_bits: _Optional[int] = ..., enclave_flags: _Optional[int] = ...) -> None: ...

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

class SealedLogonSecret(_message.Message):
    __slots__ = ("password", "nt_hash", "key", "refuse_rc4")
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NT_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REFUSE_RC4_FIELD_NUMBER: _ClassVar[int]
    password: str
    nt_hash: bytes
    key: Key
    refuse_rc4: bool
    def __init__(self, password: _Optional[str] = ..., nt_hash: _Optional[bytes] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., refuse_rc4: _Optional[bool] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("enctype", "value")
    ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    enctype: int
    value: bytes
    def __init__(self, enctype: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class LogonRequest(_message.Message):
    __slots__ = ("user", "domain", "realm", "password", "nt_hash", "key", "sealed", "operations_per_second", "owner", "allow_rc4", "default_realm", "machine_account")
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NT_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ALLOW_RC4_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REALM_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    domain: str
    realm: str
    password: str
    nt_hash: bytes
    key: Key
    sealed: SealedSecret
    operations_per_second: int
    owner: int
    allow_rc4: bool
    default_realm: str
    machine_account: bool
    def __init__(self, user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., password: _Optional[str] = ..., nt_hash: _Optional[bytes] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., sealed: _Optional[_Union[SealedSecret, _Mapping]] = ..., operations_per_second: _Optional[int] = ..., owner: _Optional[int] = ..., allow_rc4: _Optional[bool] = ..., default_realm: _Optional[str] = ..., machine_account: _Optional[bool] = ...) -> None: ...

class LogonReply(_message.Message):
    __slots__ = ("session_handle", "secret_kind")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    SECRET_KIND_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    secret_kind: str
    def __init__(self, session_handle: _Optional[bytes] = ..., secret_kind: _Optional[str] = ...) -> None: ...

class LogoffRequest(_message.Message):
    __slots__ = ("session_handle",)
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    def __init__(self, session_handle: _Optional[bytes] = ...) -> None: ...

class LogoffReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NtlmNegotiateRequest(_message.Message):
    __slots__ = ("session_handle",)
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    def __init__(self, session_handle: _Optional[bytes] = ...) -> None: ...

class NtlmNegotiateReply(_message.Message):
    __slots__ = ("context_id", "negotiate_message")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    context_id: bytes
    negotiate_message: bytes
    def __init__(self, context_id: _Optional[bytes] = ..., negotiate_message: _Optional[bytes] = ...) -> None: ...

class NtlmAuthenticateRequest(_message.Message):
    __slots__ = ("context_id", "challenge_message", "channel_bindings", "target_spn", "now_filetime", "negotiate_message", "workstation")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SPN_FIELD_NUMBER: _ClassVar[int]
    NOW_FILETIME_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WORKSTATION_FIELD_NUMBER: _ClassVar[int]
    context_id: bytes
    challenge_message: bytes
    channel_bindings: bytes
    target_spn: str
    now_filetime: int
    negotiate_message: bytes
    workstation: str
    def __init__(self, context_id: _Optional[bytes] = ..., challenge_message: _Optional[bytes] = ..., channel_bindings: _Optional[bytes] = ..., target_spn: _Optional[str] = ..., now_filetime: _Optional[int] = ..., negotiate_message: _Optional[bytes] = ..., workstation: _Optional[str] = ...) -> None: ...

class NtlmAuthenticateReply(_message.Message):
    __slots__ = ("authenticate_message", "exported_session_key")
    AUTHENTICATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    authenticate_message: bytes
    exported_session_key: bytes
    def __init__(self, authenticate_message: _Optional[bytes] = ..., exported_session_key: _Optional[bytes] = ...) -> None: ...

class LegacyAuthenticateRequest(_message.Message):
    __slots__ = ("session_handle", "protocol", "challenge")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    protocol: LegacyProtocol
    challenge: bytes
    def __init__(self, session_handle: _Optional[bytes] = ..., protocol: _Optional[_Union[LegacyProtocol, str]] = ..., challenge: _Optional[bytes] = ...) -> None: ...

class LegacyAuthenticateReply(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: bytes
    def __init__(self, response: _Optional[bytes] = ...) -> None: ...

class KerberosAsRequest(_message.Message):
    __slots__ = ("session_handle", "now_unix", "kdc_reply", "fast")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_FIELD_NUMBER: _ClassVar[int]
    KDC_REPLY_FIELD_NUMBER: _ClassVar[int]
    FAST_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    now_unix: int
    kdc_reply: bytes
    fast: int
    def __init__(self, session_handle: _Optional[bytes] = ..., now_unix: _Optional[int] = ..., kdc_reply: _Optional[bytes] = ..., fast: _Optional[int] = ...) -> None: ...

class KerberosAsReply(_message.Message):
    __slots__ = ("kdc_request", "client_principal", "realm", "enctype", "auth_time", "start_time", "end_time", "renew_till", "kdc_realm", "user_sid_first")
    KDC_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    AUTH_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RENEW_TILL_FIELD_NUMBER: _ClassVar[int]
    KDC_REALM_FIELD_NUMBER: _ClassVar[int]
    USER_SID_FIRST_FIELD_NUMBER: _ClassVar[int]
    kdc_request: bytes
    client_principal: str
    realm: str
    enctype: int
    auth_time: int
    start_time: int
    end_time: int
    renew_till: int
    kdc_realm: str
    user_sid_first: KerberosUserSidReply
    def __init__(self, kdc_request: _Optional[bytes] = ..., client_principal: _Optional[str] = ..., realm: _Optional[str] = ..., enctype: _Optional[int] = ..., auth_time: _Optional[int] = ..., start_time: _Optional[int] = ..., end_time: _Optional[int] = ..., renew_till: _Optional[int] = ..., kdc_realm: _Optional[str] = ..., user_sid_first: _Optional[_Union[KerberosUserSidReply, _Mapping]] = ...) -> None: ...

class KerberosTgsRequest(_message.Message):
    __slots__ = ("session_handle", "now_unix", "spn", "mutual", "delegate", "kdc_reply", "channel_bindings")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_FIELD_NUMBER: _ClassVar[int]
    SPN_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_FIELD_NUMBER: _ClassVar[int]
    KDC_REPLY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    now_unix: int
    spn: str
    mutual: bool
    delegate: bool
    kdc_reply: bytes
    channel_bindings: bytes
    def __init__(self, session_handle: _Optional[bytes] = ..., now_unix: _Optional[int] = ..., spn: _Optional[str] = ..., mutual: _Optional[bool] = ..., delegate: _Optional[bool] = ..., kdc_reply: _Optional[bytes] = ..., channel_bindings: _Optional[bytes] = ...) -> None: ...

class KerberosTgsReply(_message.Message):
    __slots__ = ("kdc_request", "ap_req", "gss_token", "ticket", "session_key", "enctype", "auth_time", "start_time", "end_time", "renew_till", "flags", "client_principal", "server_principal", "subkey", "seq_number", "context_id", "spnego_token", "kdc_realm")
    KDC_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AP_REQ_FIELD_NUMBER: _ClassVar[int]
    GSS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    ENCTYPE_FIELD_NUMBER: _ClassVar[int]
    AUTH_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RENEW_TILL_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SERVER_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SUBKEY_FIELD_NUMBER: _ClassVar[int]
    SEQ_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SPNEGO_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KDC_REALM_FIELD_NUMBER: _ClassVar[int]
    kdc_request: bytes
    ap_req: bytes
    gss_token: bytes
    ticket: bytes
    session_key: bytes
    enctype: int
    auth_time: int
    start_time: int
    end_time: int
    renew_till: int
    flags: int
    client_principal: str
    server_principal: str
    subkey: bytes
    seq_number: int
    context_id: bytes
    spnego_token: bytes
    kdc_realm: str
    def __init__(self, kdc_request: _Optional[bytes] = ..., ap_req: _Optional[bytes] = ..., gss_token: _Optional[bytes] = ..., ticket: _Optional[bytes] = ..., session_key: _Optional[bytes] = ..., enctype: _Optional[int] = ..., auth_time: _Optional[int] = ..., start_time: _Optional[int] = ..., end_time: _Optional[int] = ..., renew_till: _Optional[int] = ..., flags: _Optional[int] = ..., client_principal: _Optional[str] = ..., server_principal: _Optional[str] = ..., subkey: _Optional[bytes] = ..., seq_number: _Optional[int] = ..., context_id: _Optional[bytes] = ..., spnego_token: _Optional[bytes] = ..., kdc_realm: _Optional[str] = ...) -> None: ...

class VaultSealRequest(_message.Message):
    __slots__ = ("uid", "target", "user", "domain", "realm", "created_unix_ms", "password", "nt_hash", "key", "sealed", "allow_rc4")
    UID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NT_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    ALLOW_RC4_FIELD_NUMBER: _ClassVar[int]
    uid: int
    target: str
    user: str
    domain: str
    realm: str
    created_unix_ms: int
    password: str
    nt_hash: bytes
    key: Key
    sealed: SealedSecret
    allow_rc4: bool
    def __init__(self, uid: _Optional[int] = ..., target: _Optional[str] = ..., user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., password: _Optional[str] = ..., nt_hash: _Optional[bytes] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., sealed: _Optional[_Union[SealedSecret, _Mapping]] = ..., allow_rc4: _Optional[bool] = ...) -> None: ...

class VaultSealReply(_message.Message):
    __slots__ = ("sealed_blob", "secret_kind")
    SEALED_BLOB_FIELD_NUMBER: _ClassVar[int]
    SECRET_KIND_FIELD_NUMBER: _ClassVar[int]
    sealed_blob: bytes
    secret_kind: str
    def __init__(self, sealed_blob: _Optional[bytes] = ..., secret_kind: _Optional[str] = ...) -> None: ...

class VaultLogonRequest(_message.Message):
    __slots__ = ("uid", "target", "user", "domain", "realm", "created_unix_ms", "sealed_blob", "operations_per_second")
    UID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SEALED_BLOB_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    uid: int
    target: str
    user: str
    domain: str
    realm: str
    created_unix_ms: int
    sealed_blob: bytes
    operations_per_second: int
    def __init__(self, uid: _Optional[int] = ..., target: _Optional[str] = ..., user: _Optional[str] = ..., domain: _Optional[str] = ..., realm: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., sealed_blob: _Optional[bytes] = ..., operations_per_second: _Optional[int] = ...) -> None: ...

class VaultLogonReply(_message.Message):
    __slots__ = ("session_handle", "resealed_blob")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    RESEALED_BLOB_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    resealed_blob: bytes
    def __init__(self, session_handle: _Optional[bytes] = ..., resealed_blob: _Optional[bytes] = ...) -> None: ...

class IssueSealingNonceRequest(_message.Message):
    __slots__ = ("owner",)
    OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: int
    def __init__(self, owner: _Optional[int] = ...) -> None: ...

class IssueSealingNonceReply(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class KerberosChangePasswordRequest(_message.Message):
    __slots__ = ("session_handle", "now_unix", "new_password", "kdc_reply", "kpasswd_reply", "sender_address", "check_old_password")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    KDC_REPLY_FIELD_NUMBER: _ClassVar[int]
    KPASSWD_REPLY_FIELD_NUMBER: _ClassVar[int]
    SENDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHECK_OLD_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    now_unix: int
    new_password: SealedSecret
    kdc_reply: bytes
    kpasswd_reply: bytes
    sender_address: bytes
    check_old_password: bool
    def __init__(self, session_handle: _Optional[bytes] = ..., now_unix: _Optional[int] = ..., new_password: _Optional[_Union[SealedSecret, _Mapping]] = ..., kdc_reply: _Optional[bytes] = ..., kpasswd_reply: _Optional[bytes] = ..., sender_address: _Optional[bytes] = ..., check_old_password: _Optional[bool] = ...) -> None: ...

class KerberosChangePasswordReply(_message.Message):
    __slots__ = ("kdc_request", "kpasswd_request", "changed", "old_password_verified")
    KDC_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KPASSWD_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    OLD_PASSWORD_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    kdc_request: bytes
    kpasswd_request: bytes
    changed: bool
    old_password_verified: bool
    def __init__(self, kdc_request: _Optional[bytes] = ..., kpasswd_request: _Optional[bytes] = ..., changed: _Optional[bool] = ..., old_password_verified: _Optional[bool] = ...) -> None: ...

class KerberosVerifyApRepRequest(_message.Message):
    __slots__ = ("session_handle", "now_unix", "context_id", "ap_rep")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    AP_REP_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    now_unix: int
    context_id: bytes
    ap_rep: bytes
    def __init__(self, session_handle: _Optional[bytes] = ..., now_unix: _Optional[int] = ..., context_id: _Optional[bytes] = ..., ap_rep: _Optional[bytes] = ...) -> None: ...

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

class KerberosUserSidRequest(_message.Message):
    __slots__ = ("session_handle", "now_unix", "kdc_reply")
    SESSION_HANDLE_FIELD_NUMBER: _ClassVar[int]
    NOW_UNIX_FIELD_NUMBER: _ClassVar[int]
    KDC_REPLY_FIELD_NUMBER: _ClassVar[int]
    session_handle: bytes
    now_unix: int
    kdc_reply: bytes
    def __init__(self, session_handle: _Optional[bytes] = ..., now_unix: _Optional[int] = ..., kdc_reply: _Optional[bytes] = ...) -> None: ...

class KerberosUserSidReply(_message.Message):
    __slots__ = ("kdc_request", "user_sid", "reason", "remembered")
    KDC_REQUEST_FIELD_NUMBER: _ClassVar[int]
    USER_SID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REMEMBERED_FIELD_NUMBER: _ClassVar[int]
    kdc_request: bytes
    user_sid: str
    reason: str
    remembered: bool
    def __init__(self, kdc_request: _Optional[bytes] = ..., user_sid: _Optional[str] = ..., reason: _Optional[str] = ..., remembered: _Optional[bool] = ...) -> None: ...
