"""The errors of the credguard package: one class per gRPC status code the API answers with, and
one per reason the client refuses to seal a secret. Every one is a `CredguardError`; none ever
holds a secret (the server's messages never do; the client's own name only paths and attested
facts).
"""
from __future__ import annotations

from typing import Dict, Optional, Type

import grpc


class CredguardError(Exception):
    """Base class of every error this package raises."""


class ApiError(CredguardError):
    """The API answered with a gRPC error status: `code` and the server's `message`.

    Each code has its own subclass (`NotFound`, `PermissionDenied`, ...); catch `ApiError` for
    any of them.
    """

    #: The status code of this class (the subclasses set it).
    CODE: Optional[grpc.StatusCode] = None

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None):
        super().__init__(message)
        #: The gRPC status code.
        self.code = code if code is not None else self.CODE
        #: The server's message (a person can act on it; it never holds a secret).
        self.message = message

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else "UNKNOWN"
        return f"{name}: {self.message}"


# The codes credguard's API documents (README, "Using it") first, then the rest of gRPC's.


class InvalidArgument(ApiError):
    """A malformed request."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ApiError):
    """No such session, context or saved credential (or the enclave restarted since), or no such
    principal or service at the KDC."""

    CODE = grpc.StatusCode.NOT_FOUND


class PermissionDenied(ApiError):
    """Another uid's session, or a call this caller may not make."""

    CODE = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ApiError):
    """The KDC refused the credential (e.g. a wrong password)."""

    CODE = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(ApiError):
    """Refused by a rule: a secret in the clear where only sealed ones are accepted, DES,
    delegation, an expired password, a legacy protocol, ..."""

    CODE = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ApiError):
    """A limit: sessions per uid, request size, the enclave's queue or memory, the rate of
    operations."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ApiError):
    """The enclave (or the proxy) is down or restarting: retry."""

    CODE = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ApiError):
    """The call timed out."""

    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ApiError):
    """An internal error of the service."""

    CODE = grpc.StatusCode.INTERNAL


class Cancelled(ApiError):
    """The call was cancelled."""

    CODE = grpc.StatusCode.CANCELLED


class Unknown(ApiError):
    """An error without a known code."""

    CODE = grpc.StatusCode.UNKNOWN


class AlreadyExists(ApiError):
    """It exists already."""

    CODE = grpc.StatusCode.ALREADY_EXISTS


class Aborted(ApiError):
    """The call was aborted."""

    CODE = grpc.StatusCode.ABORTED


class OutOfRange(ApiError):
    """A value out of range."""

    CODE = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ApiError):
    """The server does not offer this call."""

    CODE = grpc.StatusCode.UNIMPLEMENTED


class DataLoss(ApiError):
    """Unrecoverable data loss."""

    CODE = grpc.StatusCode.DATA_LOSS


_BY_CODE: Dict[grpc.StatusCode, Type[ApiError]] = {
    cls.CODE: cls  # type: ignore[misc]
    for cls in (
        InvalidArgument,
        NotFound,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
        Cancelled,
        Unknown,
        AlreadyExists,
        Aborted,
        OutOfRange,
        Unimplemented,
        DataLoss,
    )
}


def from_rpc_error(error: grpc.RpcError) -> ApiError:
    """The typed error for a failed gRPC call (a `grpc.RpcError`), with the server's message."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, ApiError)(details or str(error), code)


class SealError(CredguardError):
    """The client refused to seal a secret to the enclave, or could not: nothing was sent."""


class PublicKeyError(SealError):
    """A public key file (the attestation key, the image signer's key) is missing or malformed."""

    def __init__(self, path: str, why: str):
        super().__init__(f"public key {path}: {why}")
        self.path = path


class NotOffered(SealError):
    """`Status` carries no sealing key (the enclave is down) or no attestation signature (the VMM
    runs without an attestation key)."""

    def __init__(self, why: str):
        super().__init__(f"the enclave offers no attested sealing key: {why}")


class BadAttestation(SealError):
    """The attestation signature does not verify: the key may not be the enclave's."""

    def __init__(self, attestation_pub_path: str):
        super().__init__(
            f"the attestation of the enclave's sealing key does not verify against {attestation_pub_path}: "
            "refusing to send the secret (is the proxy genuine?)"
        )
        self.path = attestation_pub_path


class NoPin(SealError):
    """Nothing to pin the enclave to: no signer key installed and no expected measurement."""

    def __init__(self, signer_path: str):
        super().__init__(
            f"no signer key to check the enclave against ({signer_path} is missing) and no expected measurement: "
            "install the image signer's public key there (or give signer_pub= / $CREDGUARD_SIGNER_PUB, or "
            "expect_measurement=)"
        )
        self.path = signer_path


class UnexpectedSigner(SealError):
    """The enclave image was signed by another key than the pinned one."""

    def __init__(self, got: str, expected: str):
        super().__init__(
            f"the enclave image was signed by key {got}, not by the pinned signer {expected}: "
            "refusing to send the secret"
        )
        self.got = got
        self.expected = expected


class UnexpectedMeasurement(SealError):
    """The enclave's measurement is not the one the caller expects."""

    def __init__(self, got: str, expected: str):
        super().__init__(f"the enclave's measurement {got} is not the expected {expected}")
        self.got = got
        self.expected = expected


class MemoryNotHidden(SealError):
    """The attestation says the enclave's memory is mapped in the VMM, and the client requires it
    hidden (`require_hidden_memory=True`)."""

    def __init__(self, protection: str):
        super().__init__(
            f"the enclave's memory is mapped in the VMM (no guest_memfd on that host: {protection}); "
            "refusing to send the secret (require_hidden_memory)"
        )


class TestImage(SealError):
    """The attestation says the enclave is a test build (fault injection compiled in)."""

    # Not a test case, whatever a test runner's name heuristics think.
    __test__ = False

    def __init__(self) -> None:
        super().__init__(
            "the enclave is a TEST build (fault injection compiled in): refusing to send a secret to it "
            "(allow it only for tests: allow_test_image=True or CREDGUARD_ALLOW_TEST_IMAGE=1)"
        )


class MalformedStatus(SealError):
    """A field of `Status` that the attestation covers is malformed."""

    def __init__(self, why: str):
        super().__init__(f"malformed Status: {why}")


class SealingFailed(SealError):
    """The cryptography failed (an invalid enclave key, no randomness)."""

    def __init__(self, why: str):
        super().__init__(f"sealing failed: {why}")
