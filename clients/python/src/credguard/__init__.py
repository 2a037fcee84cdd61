"""credguard's Python client: the API of the isolated LSA (`credguard.v1.Lsa`) over its Unix
socket, with secrets sealed to the attested enclave.

    import credguard

    with credguard.Client() as c:
        session = c.logon("alice", password=pw, domain="CORP", realm="CORP.TEST")
        token = c.kerberos_get_service_ticket(session, "HTTP/web.corp.test").gss_token

See README.md. The generated stubs are `credguard.v1.lsa_pb2` and `credguard.v1.lsa_pb2_grpc`.
"""
from .client import DEFAULT_SOCKET, Client, channel, socket_path
from .errors import (
    Aborted,
    AlreadyExists,
    ApiError,
    BadAttestation,
    Cancelled,
    CredguardError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    MalformedStatus,
    MemoryNotHidden,
    NoPin,
    NotFound,
    NotOffered,
    OutOfRange,
    PermissionDenied,
    PublicKeyError,
    ResourceExhausted,
    SealError,
    SealingFailed,
    TestImage,
    Unauthenticated,
    Unavailable,
    UnexpectedMeasurement,
    UnexpectedSigner,
    Unimplemented,
    Unknown,
)
from .sealing import (
    DEFAULT_ATTESTATION_PUB,
    DEFAULT_SIGNER_PUB,
    AttestedEnclave,
    Expectations,
    Key,
    NtHash,
    Password,
    SealedNames,
    SealFor,
    SealPurpose,
)

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ApiError",
    "AttestedEnclave",
    "BadAttestation",
    "Cancelled",
    "Client",
    "CredguardError",
    "DEFAULT_ATTESTATION_PUB",
    "DEFAULT_SIGNER_PUB",
    "DEFAULT_SOCKET",
    "DataLoss",
    "DeadlineExceeded",
    "Expectations",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Key",
    "MalformedStatus",
    "MemoryNotHidden",
    "NoPin",
    "NotFound",
    "NotOffered",
    "NtHash",
    "OutOfRange",
    "Password",
    "PermissionDenied",
    "PublicKeyError",
    "ResourceExhausted",
    "SealError",
    "SealFor",
    "SealPurpose",
    "SealedNames",
    "SealingFailed",
    "TestImage",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedMeasurement",
    "UnexpectedSigner",
    "Unimplemented",
    "Unknown",
    "channel",
    "socket_path",
]
