#!/usr/bin/env python3
"""Writes the known answers of this package's sealing and attestation check (tests/vectors.txt).

The Rust side checks the same file (tests/python_client.rs in the repository): the enclave's own
`SealingKey::open` must open every sealed secret here to the secret stated, `credguard_proto::attest`
must give the same associated data and HKDF info, and `credguard_client::sealed::verify` must accept
the attestation. tests/test_vectors.py checks that this package still computes exactly this file.

The enclave's key and nonces are what `credguard_enclave::rng::CounterRng::starting_at(0)` gives
`SealingKey::generate` and then one `issue_nonce` per sealed secret, in order (bytes 1, 2, 3, ...),
so that the Rust test can make the same enclave. Everything else is fixed here.

Usage: PYTHONPATH=clients/python/src python3 clients/python/tests/make_vectors.py > clients/python/tests/vectors.txt
"""
import hashlib
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from credguard import sealing
from credguard.sealing import Key, NtHash, Password, SealedNames, SealFor, SealPurpose

# (name, purpose, owner, names, secret, refuse_rc4)
SEALS = [
    (
        "logon-password",
        SealPurpose.LOGON,
        sealing.owner_uid(1000),
        SealedNames("alice", "CORP", "CORP.TEST", ""),
        Password("Alice-Passw0rd"),
        False,
    ),
    (
        "vault-save-nt-hash",
        SealPurpose.VAULT_SAVE,
        sealing.owner_uid(0),
        SealedNames("bob", "CORP", "", "fileserver.corp.test"),
        NtHash(bytes.fromhex("a4f49c406510bdcab6824ee7c30fd852")),
        False,
    ),
    (
        "logon-key-vsock-owner",
        SealPurpose.LOGON,
        sealing.owner_vsock(3),
        SealedNames("\u00e9lodie", "", "CORP.TEST", ""),
        Key(18, bytes(range(100, 132))),
        True,
    ),
    (
        "password-change",
        SealPurpose.PASSWORD_CHANGE,
        sealing.owner_uid(1000),
        SealedNames("alice", "CORP", "CORP.TEST", ""),
        Password("N3w-Passw0rd \u00fc"),
        False,
    ),
]

ENCLAVE_PRIVATE = bytes(range(1, 33))


def _fixed(label: str, n: int) -> bytes:
    return hashlib.sha256(label.encode()).digest()[:n]


def _secret_lines(secret: sealing.Secret) -> list:
    if isinstance(secret, Password):
        return [("secret_kind", "password"), ("secret", secret.value)]
    if isinstance(secret, NtHash):
        return [("secret_kind", "nt_hash"), ("secret", secret.value.hex())]
    return [("secret_kind", "key"), ("key_enctype", str(secret.enctype)), ("secret", secret.value.hex())]


def _seal_section(i: int, seal: tuple, enclave_public: bytes) -> list:
    name, purpose, owner, names, secret, refuse_rc4 = seal
    sealing_nonce = bytes(range(33 + 16 * i, 49 + 16 * i))
    ephemeral = X25519PrivateKey.from_private_bytes(_fixed(f"ephemeral {name}", 32))
    aes_nonce = _fixed(f"aes nonce {name}", 12)
    sealed = sealing._seal_with(
        ephemeral, aes_nonce, enclave_public, secret, SealFor(purpose, owner, sealing_nonce, names), refuse_rc4
    )
    lines = [
        ("purpose", purpose.value.decode()),
        ("owner", str(owner)),
        ("user", names.user),
        ("domain", names.domain),
        ("realm", names.realm),
        ("target", names.target),
        *_secret_lines(secret),
        ("refuse_rc4", "true" if refuse_rc4 else "false"),
        ("enclave_public", enclave_public.hex()),
        ("sealing_nonce", sealing_nonce.hex()),
        ("ephemeral_private", ephemeral.private_bytes_raw().hex()),
        ("ephemeral_public", sealed.ephemeral_public_key.hex()),
        ("aes_nonce", sealed.nonce.hex()),
        ("info", sealing.sealed_logon_info(sealed.ephemeral_public_key, enclave_public).hex()),
        ("aad", sealing.sealed_secret_aad(purpose, owner, sealing_nonce, names).hex()),
        ("plaintext", sealing.plaintext(secret, refuse_rc4).hex()),
        ("ciphertext", sealed.ciphertext.hex()),
    ]
    return [f"[seal.{name}]"] + [f"{k} = {v}".rstrip() for k, v in lines]


def _attestation_section(enclave_public: bytes) -> list:
    attestation_key = Ed25519PrivateKey.from_private_bytes(_fixed("attestation key", 32))
    signer_public = Ed25519PrivateKey.from_private_bytes(_fixed("image signer", 32)).public_key().public_bytes_raw()
    facts = sealing.Attested(
        measurement=_fixed("measurement", 32) + _fixed("measurement 2", 16),
        signer=bytes.fromhex(sealing.signer_fingerprint(signer_public)),
        boot_id=_fixed("boot", 16),
        public_key=enclave_public,
        protection_bits=int(sealing.Protection.KNOWN | sealing.Protection.GUEST_MEMFD | sealing.Protection.HIDDEN),
        host_mapped_bytes=0x22_8000,
        ram_size=16 << 20,
        policy_bits=0,
        enclave_flags=0,
        restarts=2,
        restart_reasons=("watchdog: no answer in 5 s", "panic: \u00e9t\u00e9"),
    )
    message = sealing.attestation_message(facts)
    lines = [
        ("attestation_public", attestation_key.public_key().public_bytes_raw().hex()),
        ("signer_public", signer_public.hex()),
        ("measurement", facts.measurement.hex()),
        ("signer", facts.signer.hex()),
        ("boot_id", facts.boot_id.hex()),
        ("public_key", facts.public_key.hex()),
        ("protection_bits", str(facts.protection_bits)),
        ("host_mapped_bytes", str(facts.host_mapped_bytes)),
        ("ram_size", str(facts.ram_size)),
        ("policy_bits", str(facts.policy_bits)),
        ("enclave_flags", str(facts.enclave_flags)),
        ("restarts", str(facts.restarts)),
        ("restart_reasons", ",".join(r.encode().hex() for r in facts.restart_reasons)),
        ("message", message.hex()),
        ("signature", attestation_key.sign(message).hex()),
    ]
    return ["[attestation]"] + [f"{k} = {v}".rstrip() for k, v in lines]


def render() -> str:
    """The whole vector file."""
    enclave_public = X25519PrivateKey.from_private_bytes(ENCLAVE_PRIVATE).public_key().public_bytes_raw()
    out = [
        "# Known answers of the Python client's sealing and attestation check, made by make_vectors.py",
        "# (do not edit). Hex unless said; `secret` of a password is its text; `restart_reasons` is the",
        "# hex of each reason's UTF-8, comma-separated. The enclave key is bytes 1..=32, its nonces the",
        "# next 16 bytes each (CounterRng::starting_at(0)).",
        "[enclave]",
        f"private = {ENCLAVE_PRIVATE.hex()}",
        f"public = {enclave_public.hex()}",
    ]
    for i, seal in enumerate(SEALS):
        out += [""] + _seal_section(i, seal, enclave_public)
    out += [""] + _attestation_section(enclave_public)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
