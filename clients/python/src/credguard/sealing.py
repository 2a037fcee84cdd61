"""Sealing a secret to the attested enclave, byte for byte as credguard's Rust client does it.

The construction is credguard's (`proto/src/attest.rs`, `proto/src/vmm_status.rs`,
`client/src/sealed.rs`), here with the `cryptography` package:

- `verify`: the VMM's Ed25519 attestation signature over everything `Status` states about this
  boot of the enclave (measurement, signer, boot id, sealing key, protections, policy, build
  flags, restarts) must verify with the installed attestation public key; then the enclave must
  be the one the client pins (the image signer's key, or an exact measurement), not a test build
  (unless allowed), and hidden from the VMM if required.
- `seal`: X25519 with a fresh ephemeral key and the enclave's key, HKDF-SHA256 (salt
  `SEALED_SECRET_SALT`, info = both public keys), AES-256-GCM under a random 96-bit nonce over an
  encoded `SealedLogonSecret`, with the purpose, the owner (the caller's uid), the enclave's
  single-use nonce and the names as associated data.

tests/vectors.txt pins the bytes; the Rust side checks the same vectors (tests/python_client.rs:
the enclave's own `SealingKey::open` opens them, the Rust client verifies the attestation).
"""
from __future__ import annotations

import enum
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import errors
from .enclave.v1 import enclave_pb2
from .v1 import lsa_pb2

#: Where clients find the VMM's attestation public key unless told otherwise.
DEFAULT_ATTESTATION_PUB = "/etc/credguard/attestation.pub"
#: Where clients find the public key that signs the enclave image, which they pin.
DEFAULT_SIGNER_PUB = "/etc/credguard/signing.pub"

BOOT_ID_LEN = 16
PUBLIC_KEY_LEN = 32
NONCE_LEN = 12
SEALING_NONCE_LEN = 16
MEASUREMENT_LEN = 48
SIGNER_LEN = 16

#: HKDF salt of a sealed secret.
SEALED_SECRET_SALT = b"credguard sealed secret v2"
#: Domain separation of the VMM's attestation message (v3: restarts signed too).
ATTESTATION_DOMAIN = b"credguard enclave attestation v3\0"


class Protection(enum.IntFlag):
    """Bits of `StatusReply.protection_bits` (`credguard_proto::vmm_status::protection`)."""

    GUEST_MEMFD = 1 << 0
    HIDDEN = 1 << 1
    MLOCKED = 1 << 2
    DONTDUMP = 1 << 3
    SECCOMP = 1 << 4
    NOT_DUMPABLE = 1 << 5
    NO_NEW_PRIVS = 1 << 6
    MLOCKED_ON_FAULT = 1 << 7
    W_XOR_X = 1 << 8
    SMEP = 1 << 9
    SMAP = 1 << 10
    KNOWN = 1 << 63


#: `StatusReply.enclave_flags` bit of a test build (`credguard_proto::abi::enclave_flags`).
ENCLAVE_FLAG_TEST_BUILD = 1 << 0


class SealPurpose(enum.Enum):
    """What a sealed secret may be used for; the enclave opens it only in that call."""

    LOGON = b"logon"
    VAULT_SAVE = b"vault-save"
    PASSWORD_CHANGE = b"password-change"


def owner_uid(uid: int) -> int:
    """The owner of a local caller, by uid (what the proxy reads with SO_PEERCRED)."""
    return uid & 0xFFFF_FFFF


def owner_vsock(cid: int) -> int:
    """The owner of a caller in another VM, by its vsock CID."""
    return (1 << 32) | (cid & 0xFFFF_FFFF)


@dataclass(frozen=True)
class SealedNames:
    """The names a sealed secret is bound to (`target`: a vault save's; empty otherwise)."""

    user: str = ""
    domain: str = ""
    realm: str = ""
    target: str = ""


@dataclass(frozen=True)
class SealFor:
    """What a sealed secret is for and whose it is (all of it bound into the associated data)."""

    purpose: SealPurpose
    owner: int
    sealing_nonce: bytes
    names: SealedNames


class Password:
    """A password to seal. Its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "Password(<hidden>)"


class NtHash:
    """A 16-byte NT hash to seal. Its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: bytes):
        self.value = bytes(value)

    def __repr__(self) -> str:
        return "NtHash(<hidden>)"


class Key:
    """A Kerberos long-term key (`enctype`, e.g. 18 for aes256-cts-hmac-sha1-96) to seal. Its
    repr never shows the key."""

    __slots__ = ("enctype", "value")

    def __init__(self, enctype: int, value: bytes):
        self.enctype = enctype
        self.value = bytes(value)

    def __repr__(self) -> str:
        return f"Key(enctype={self.enctype}, <hidden>)"


Secret = Union[Password, NtHash, Key]


def sealed_logon_info(ephemeral_public: bytes, enclave_public: bytes) -> bytes:
    """HKDF info of a sealed secret: both public keys, so the key is bound to this exchange."""
    return bytes(ephemeral_public) + bytes(enclave_public)


def sealed_secret_aad(purpose: SealPurpose, owner: int, sealing_nonce: bytes, names: SealedNames) -> bytes:
    """AES-GCM associated data: purpose, owner (u64 LE), the enclave's nonce, then user, domain,
    realm and target, each prefixed with its length (u32 LE)."""
    parts = [purpose.value, struct.pack("<Q", owner), bytes(sealing_nonce)]
    parts += [name.encode("utf-8") for name in (names.user, names.domain, names.realm, names.target)]
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


@dataclass(frozen=True)
class Attested:
    """Everything the VMM's attestation signature covers for one boot of the enclave."""

    measurement: bytes
    signer: bytes
    boot_id: bytes
    public_key: bytes
    protection_bits: int
    host_mapped_bytes: int
    ram_size: int
    policy_bits: int
    enclave_flags: int
    restarts: int
    restart_reasons: Tuple[str, ...]


def attestation_message(a: Attested) -> bytes:
    """The message the VMM's attestation key signs for one boot."""
    words = (
        a.protection_bits,
        a.host_mapped_bytes,
        a.ram_size,
        a.policy_bits,
        a.enclave_flags,
        a.restarts,
        len(a.restart_reasons),
    )
    m = ATTESTATION_DOMAIN + a.measurement + a.signer + a.boot_id + a.public_key
    m += b"".join(struct.pack("<Q", w) for w in words)
    for reason in a.restart_reasons:
        encoded = reason.encode("utf-8")
        m += struct.pack("<Q", len(encoded)) + encoded
    return m


def read_public_key(path: Union[str, os.PathLike]) -> bytes:
    """A hex Ed25519 public key file (as the VMM writes `<attestation key>.pub` and
    `credguard-image keygen` writes `<key>.pub`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise errors.PublicKeyError(os.fspath(path), str(e)) from None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise errors.PublicKeyError(os.fspath(path), "not hex") from None
    if len(key) != 32:
        raise errors.PublicKeyError(os.fspath(path), "not a 32-byte Ed25519 public key")
    return key


def signer_fingerprint(public_key: bytes) -> str:
    """An image signer's fingerprint as images and the VMM name it: the first 16 bytes of the
    SHA-256 of its public key, hex."""
    return hashlib.sha256(public_key).digest()[:SIGNER_LEN].hex()


@dataclass(frozen=True)
class Expectations:
    """What a client requires of the enclave before it seals a secret to it."""

    #: The VMM's attestation public key (32 bytes), and where it was read (for messages).
    attestation_pub: bytes
    attestation_pub_path: str
    #: The fingerprint of the pinned image signer, if its key is installed.
    signer: Optional[str]
    #: Where the signer key was looked for (for messages).
    signer_path: str
    #: An exact measurement (hex) the enclave must have.
    measurement: Optional[str] = None
    #: Refuse an enclave whose memory is mapped in the VMM.
    require_hidden_memory: bool = False
    #: Accept a test build of the enclave (tests only).
    allow_test_image: bool = False

    @classmethod
    def load(
        cls,
        attestation_pub: Union[str, os.PathLike, None] = None,
        signer_pub: Union[str, os.PathLike, None] = None,
        *,
        measurement: Optional[str] = None,
        require_hidden_memory: bool = False,
        allow_test_image: Optional[bool] = None,
    ) -> "Expectations":
        """Reads the keys as credguardctl does: the given paths, else `$CREDGUARD_ATTESTATION_PUB`
        and `$CREDGUARD_SIGNER_PUB`, else the installed ones. A missing signer key is no pin (then
        `measurement` must be given); `allow_test_image` None means `$CREDGUARD_ALLOW_TEST_IMAGE=1`."""
        pub_path = _path_of(attestation_pub, "CREDGUARD_ATTESTATION_PUB", DEFAULT_ATTESTATION_PUB)
        signer_path = _path_of(signer_pub, "CREDGUARD_SIGNER_PUB", DEFAULT_SIGNER_PUB)
        signer = signer_fingerprint(read_public_key(signer_path)) if os.path.exists(signer_path) else None
        if allow_test_image is None:
            allow_test_image = os.environ.get("CREDGUARD_ALLOW_TEST_IMAGE") == "1"
        return cls(
            attestation_pub=read_public_key(pub_path),
            attestation_pub_path=pub_path,
            signer=signer,
            signer_path=signer_path,
            measurement=measurement,
            require_hidden_memory=require_hidden_memory,
            allow_test_image=allow_test_image,
        )


def _path_of(given: Union[str, os.PathLike, None], var: str, default: str) -> str:
    if given is not None:
        return os.fspath(given)
    return os.environ.get(var) or default


@dataclass(frozen=True)
class AttestedEnclave:
    """What a verified `Status` says about the enclave."""

    #: The sealing public key, verified to be this boot's.
    public_key: bytes
    #: Hex measurement of the image.
    measurement: str
    #: Hex boot id.
    boot_id: str
    #: Everything the signature covers.
    facts: Attested


def _fixed(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise errors.MalformedStatus(what)
    return bytes(value)


def _unhex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise errors.MalformedStatus(what) from None


def facts_of(status: lsa_pb2.StatusReply) -> Attested:
    """The attested facts `status` states (not yet verified)."""
    return Attested(
        measurement=_fixed(
            _unhex(status.measurement, "measurement is not hex"), MEASUREMENT_LEN, "measurement is not 48 bytes"
        ),
        signer=_fixed(_unhex(status.signer, "signer is not hex"), SIGNER_LEN, "signer is not 16 bytes"),
        boot_id=_fixed(status.boot_id, BOOT_ID_LEN, "boot_id is not 16 bytes"),
        public_key=_fixed(status.enclave_public_key, PUBLIC_KEY_LEN, "enclave_public_key is not 32 bytes"),
        protection_bits=status.protection_bits,
        host_mapped_bytes=status.host_mapped_bytes,
        ram_size=status.ram_size,
        policy_bits=status.policy_bits,
        enclave_flags=status.enclave_flags,
        restarts=status.enclave_restarts,
        restart_reasons=tuple(status.enclave_restart_reasons),
    )


def verify(status: lsa_pb2.StatusReply, expect: Expectations) -> AttestedEnclave:
    """Checks that `status` carries a sealing key signed by the attestation key for everything it
    states, then that the enclave is what `expect` requires. Raises a `SealError` otherwise."""
    if not status.enclave_public_key:
        raise errors.NotOffered("the enclave is not reachable")
    if not status.attestation_signature:
        raise errors.NotOffered("the VMM runs without an attestation key")
    facts = facts_of(status)
    try:
        Ed25519PublicKey.from_public_bytes(expect.attestation_pub).verify(
            status.attestation_signature, attestation_message(facts)
        )
    except (InvalidSignature, ValueError):
        raise errors.BadAttestation(expect.attestation_pub_path) from None
    _check_expectations(status, facts, expect)
    return AttestedEnclave(
        public_key=facts.public_key,
        measurement=status.measurement,
        boot_id=facts.boot_id.hex(),
        facts=facts,
    )


def _check_expectations(status: lsa_pb2.StatusReply, facts: Attested, expect: Expectations) -> None:
    if expect.signer is None and expect.measurement is None:
        raise errors.NoPin(expect.signer_path)
    if expect.signer is not None and expect.signer.lower() != status.signer.lower():
        raise errors.UnexpectedSigner(status.signer, expect.signer)
    if expect.measurement is not None and expect.measurement.strip().lower() != status.measurement.lower():
        raise errors.UnexpectedMeasurement(status.measurement, expect.measurement.strip())
    if expect.require_hidden_memory and not facts.protection_bits & Protection.HIDDEN:
        raise errors.MemoryNotHidden(status.protection)
    if not expect.allow_test_image and facts.enclave_flags & ENCLAVE_FLAG_TEST_BUILD:
        raise errors.TestImage()


def plaintext(secret: Secret, refuse_rc4: bool = False) -> bytes:
    """The encoded `credguard.enclave.v1.SealedLogonSecret` that `seal` encrypts."""
    inner = enclave_pb2.SealedLogonSecret(refuse_rc4=refuse_rc4)
    if isinstance(secret, Password):
        inner.password = secret.value
    elif isinstance(secret, NtHash):
        inner.nt_hash = secret.value
    elif isinstance(secret, Key):
        inner.key.enctype = secret.enctype
        inner.key.value = secret.value
    else:
        raise TypeError(f"not a secret to seal: {type(secret).__name__} (Password, NtHash or Key)")
    return inner.SerializeToString()


def seal(enclave_public: bytes, secret: Secret, seal_for: SealFor, refuse_rc4: bool = False) -> lsa_pb2.SealedSecret:
    """Seals `secret` to the attested enclave key `enclave_public` (`AttestedEnclave.public_key`:
    verify first) for `seal_for`, with a fresh ephemeral key and AES-GCM nonce."""
    return _seal_with(X25519PrivateKey.generate(), os.urandom(NONCE_LEN), enclave_public, secret, seal_for, refuse_rc4)


def _seal_with(
    ephemeral: X25519PrivateKey,
    aes_nonce: bytes,
    enclave_public: bytes,
    secret: Secret,
    seal_for: SealFor,
    refuse_rc4: bool,
) -> lsa_pb2.SealedSecret:
    # The randomness comes in as arguments only so that the known-answer tests can fix it.
    if len(seal_for.sealing_nonce) != SEALING_NONCE_LEN:
        raise errors.SealingFailed("the sealing nonce is not 16 bytes")
    if len(enclave_public) != PUBLIC_KEY_LEN or len(aes_nonce) != NONCE_LEN:
        raise errors.SealingFailed("the enclave key is not 32 bytes, or the nonce not 12")
    epk = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(bytes(enclave_public)))
    except ValueError:
        # OpenSSL refuses a low-order enclave key (an all-zero shared secret), as ring does.
        raise errors.SealingFailed("key agreement failed") from None
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=SEALED_SECRET_SALT,
        info=sealed_logon_info(epk, enclave_public),
    ).derive(shared)
    aad = sealed_secret_aad(seal_for.purpose, seal_for.owner, seal_for.sealing_nonce, seal_for.names)
    # Unlike the Rust client, nothing here can wipe the plaintext: Python's str and bytes are
    # immutable. No reference to it outlives this call, and the proxy only relays ciphertext.
    ciphertext = AESGCM(key).encrypt(bytes(aes_nonce), plaintext(secret, refuse_rc4), aad)
    return lsa_pb2.SealedSecret(
        ephemeral_public_key=epk,
        nonce=bytes(aes_nonce),
        ciphertext=ciphertext,
        enclave_public_key=bytes(enclave_public),
        sealing_nonce=bytes(seal_for.sealing_nonce),
    )

