"""Ed25519 keys and signatures over ``MANIFEST.sha256``.

The manifest lists every file's sha256, so one signature over its bytes covers the whole package. Keys are PEM:
the private key PKCS#8 (unencrypted, file mode 0600), the public key SubjectPublicKeyInfo, so ``openssl`` reads
both. ``MANIFEST.sig`` holds the 64-byte signature in base64 on one line: text survives e-mail and copy-paste, and
``base64 -d MANIFEST.sig > sig.bin && openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in MANIFEST.sha256
-sigfile sig.bin`` checks it without synthrelease. Ed25519 signatures are deterministic: the same manifest and key
give the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from synthrelease.errors import InputError

__all__ = ["generate_keypair", "load_private_key", "load_public_key", "sign", "signature_valid"]


def generate_keypair(out: Path) -> tuple[Path, Path]:
    """Write a new private key at ``out`` (mode 0600) and its public key at ``out.pub``; never overwrite."""
    out = Path(out)
    pub = out.with_name(out.name + ".pub")
    for path in (out, pub):
        if path.exists():
            raise InputError("already exists", where=path, fix="choose another key path (keys are never overwritten)")
    if not out.parent.is_dir():
        raise InputError("folder does not exist", where=out.parent, fix="create it first")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable, not even for a moment
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    try:
        with pub.open("xb") as fh:
            fh.write(public)
    except BaseException:
        out.unlink()
        raise
    return out, pub


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} ({exc.strerror})", where=path,
                         fix="check the path; create keys with 'synthrelease keygen KEY'") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"is not an unencrypted PEM private key ({exc})", where=path,
                         fix="give the private key written by 'synthrelease keygen' (not the .pub file)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError("is not an Ed25519 key", where=path, fix="create one with 'synthrelease keygen KEY'")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InputError(f"is not a PEM public key ({exc})", where=path,
                         fix="give the .pub file written by 'synthrelease keygen'") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError("is not an Ed25519 public key", where=path, fix="give the .pub file of 'synthrelease keygen'")
    return key


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``MANIFEST.sig`` bytes for ``data``: base64 of the raw signature and a newline."""
    return base64.b64encode(key.sign(data)) + b"\n"


def signature_valid(data: bytes, sig_file: bytes, key: Ed25519PublicKey) -> bool:
    """Whether ``sig_file`` (the contents of ``MANIFEST.sig``) is ``key``'s signature of ``data``."""
    try:
        raw = base64.b64decode(sig_file.strip(), validate=True)
        key.verify(raw, data)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
