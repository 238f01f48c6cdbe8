"""Issuer key pairs (Ed25519): generate, save, load, and the text form of public keys.

A public key travels as text, ``ed25519:<base64url of the 32 raw bytes>``, so it fits in an
environment variable or a ConfigMap; its *fingerprint* (the first 8 bytes of its SHA-256, as hex)
is written into every key it signs. Private keys are PKCS#8 PEM files, written with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from license_proxy.dev_issuer import DEVELOPMENT_PRIVATE_KEY_PEM

PUBLIC_KEY_PREFIX = "ed25519:"


class IssuerKeyError(ValueError):
    """A public or private key that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class IssuerPublicKey:
    """A public key that may verify license signatures."""

    key: Ed25519PublicKey
    raw: bytes

    @classmethod
    def from_raw(cls, raw: bytes) -> IssuerPublicKey:
        return cls(Ed25519PublicKey.from_public_bytes(raw), raw)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    @property
    def text(self) -> str:
        return PUBLIC_KEY_PREFIX + b64url_encode(self.raw)

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class IssuerKeyPair:
    """A private signing key and its public half."""

    private: Ed25519PrivateKey
    public: IssuerPublicKey

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> IssuerKeyPair:
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private, IssuerPublicKey.from_raw(raw))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict, canonical base64url without padding: re-encoding must give back the same text, so
    two different strings never decode to the same bytes (no malleable key text)."""
    if len(text) % 4 == 1:
        raise ValueError("impossible base64url length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def generate_key_pair() -> IssuerKeyPair:
    return IssuerKeyPair.from_private(Ed25519PrivateKey.generate())


def parse_public_key(text: str) -> IssuerPublicKey:
    """``ed25519:<base64url>`` -> key; the error says what the accepted form is."""
    value = text.strip()
    if not value.startswith(PUBLIC_KEY_PREFIX):
        raise IssuerKeyError(
            f"issuer public key must look like '{PUBLIC_KEY_PREFIX}<base64url>' "
            "(as printed by 'oyez license keygen')"
        )
    try:
        raw = b64url_decode(value[len(PUBLIC_KEY_PREFIX) :])
    except ValueError as exc:
        raise IssuerKeyError(f"issuer public key is not valid base64url ({exc})") from None
    if len(raw) != 32:
        raise IssuerKeyError(f"issuer public key must be 32 bytes, got {len(raw)}")
    return IssuerPublicKey.from_raw(raw)


def load_private_key_pem(data: bytes, source: str = "private key") -> IssuerKeyPair:
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IssuerKeyError(f"{source} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise IssuerKeyError(f"{source} is not an Ed25519 key (generate one with 'oyez license keygen')")
    return IssuerKeyPair.from_private(private)


def load_private_key_file(path: Path) -> IssuerKeyPair:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IssuerKeyError(f"cannot read issuer private key {path}: {exc.strerror}") from None
    return load_private_key_pem(data, source=str(path))


def save_key_pair(pair: IssuerKeyPair, directory: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``issuer.key`` (0600) and ``issuer.pub`` into ``directory``; never silently replace."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / "issuer.key", directory / "issuer.pub"
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise IssuerKeyError(f"{path} exists; pass --force to replace it (licenses it signed die)")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pair.private_pem())
    os.chmod(private_path, 0o600)
    public_path.write_text(pair.public.text + "\n", encoding="ascii")
    return private_path, public_path


@cache
def development_key_pair() -> IssuerKeyPair:
    """The committed development pair (see :mod:`license_proxy.dev_issuer`)."""
    return load_private_key_pem(DEVELOPMENT_PRIVATE_KEY_PEM, source="development key")


def development_public_key() -> IssuerPublicKey:
    return development_key_pair().public
