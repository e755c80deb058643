"""``verify``: is this package exactly what its publisher released, and was it cleared for release?

Every check runs and reports its problems (one line each: the file, the reason), so a recipient sees everything
wrong at once: manifest hashes, missing and extra files, links or devices, the signature (with a public key), the
audit verdict and the policy it was judged by, ``dataset.json`` against the files, NIfTI headers re-read for text
(``descrip``, ``aux_file``, ``intent_name``, ``db_name``) and header extensions, Croissant metadata against the
files, and optionally strings the recipient knows must not appear. A ``.tar.gz`` is first extracted, defensively,
into a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from synthrelease.data.leakscan import find_strings
from synthrelease.errors import InputError
from synthrelease.release.archive import is_tarball, safe_extract
from synthrelease.release.errors import InvalidPackage
from synthrelease.release.manifest import MANIFEST, SIGNATURE, list_package, parse_manifest, sha256_file
from synthrelease.release.signing import load_public_key, signature_valid
from synthrelease.release.verify_content import check_audit, check_croissant, check_dataset

__all__ = ["REQUIRED_FILES", "Problem", "VerifyResult", "verify_package"]

REQUIRED_FILES = ("dataset.json", "README.md", "croissant.json", "provenance.json", "audit/report.json",
                  "audit/report.html", "audit/policy.toml")


@dataclass(frozen=True)
class Problem:
    path: str  # inside the package ("" for the package as a whole)
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


@dataclass(frozen=True)
class VerifyResult:
    package: str
    problems: tuple[Problem, ...]
    signed: bool  # MANIFEST.sig present
    signature_checked: bool  # verified against a public key (only with --key)
    n_files: int

    @property
    def valid(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.package, "valid": self.valid, "signed": self.signed,
                "signature_checked": self.signature_checked, "n_files": self.n_files,
                "problems": [asdict(p) for p in self.problems]}


def _check_files(root: Path) -> tuple[list[Problem], bytes | None, int]:
    listing = list_package(root)
    problems = [Problem(p, "not a regular file (links, devices and fifos are never part of a package)")
                for p in listing.others]
    if MANIFEST not in listing.files:
        return [*problems, Problem(MANIFEST, "missing: nothing can be verified without it")], None, len(listing.files)
    manifest = (root / MANIFEST).read_bytes()
    entries, malformed = parse_manifest(manifest)
    problems += [Problem(MANIFEST, m.split(": ", 1)[1]) for m in malformed]
    on_disk = set(listing.files) - {MANIFEST, SIGNATURE}
    for rel, digest in entries.items():
        if rel not in on_disk:
            problems.append(Problem(rel, f"missing (listed in {MANIFEST})"))
        elif sha256_file(root / rel) != digest:
            problems.append(Problem(rel, f"sha256 differs from {MANIFEST} (the file was modified)"))
    problems += [Problem(rel, f"extra file, not listed in {MANIFEST}") for rel in sorted(on_disk - set(entries))]
    problems += [Problem(rel, "required file missing") for rel in REQUIRED_FILES
                 if rel not in entries and rel not in on_disk]
    return problems, manifest, len(listing.files)


def _check_signature(root: Path, manifest: bytes | None, key: Ed25519PublicKey | None) -> list[Problem]:
    sig = root / SIGNATURE
    if key is None:
        return []
    if not sig.is_file():
        return [Problem(SIGNATURE, "missing: the package is unsigned, but a public key was given")]
    if manifest is None or not signature_valid(manifest, sig.read_bytes(), key):
        return [Problem(SIGNATURE, f"not a valid signature of {MANIFEST} under the given public key (wrong key, or "
                                   "the manifest was changed)")]
    return []


def _check_identifiers(root: Path, identifiers: Sequence[str]) -> list[Problem]:
    numbered = {s: i for i, s in enumerate(identifiers, start=1) if s}
    return [Problem(f.path.relative_to(root).as_posix(),
                    f"contains identifier #{numbered[f.needle]} of the identifiers list"
                    f"{' (inside the gzip stream)' if f.inside_gzip else ''}")
            for f in find_strings(root, numbered)]


def verify_folder(root: Path, *, key: Ed25519PublicKey | None = None, identifiers: Sequence[str] = (),
                  label: str | None = None) -> VerifyResult:
    """Every check on an extracted package folder (``key``: the loaded public key, or None to skip the signature)."""
    problems, manifest, n_files = _check_files(root)
    problems += _check_signature(root, manifest, key)
    wrap = [("the audit", check_audit), ("dataset.json and the NIfTI headers", check_dataset),
            ("croissant.json", check_croissant)]
    for name, check in wrap:
        problems += [Problem(p, r) for p, r in _guarded(name, check, root)]
    if identifiers:
        problems += _check_identifiers(root, identifiers)
    return VerifyResult(label or str(root), tuple(problems), (root / SIGNATURE).is_file(), key is not None, n_files)


def _guarded(name: str, check: Callable[[Path], list[tuple[str, str]]], root: Path) -> list[tuple[str, str]]:
    """Run a content check; a file too broken to parse is one more problem, never a crash."""
    try:
        return check(root)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [("", f"{name} could not be checked ({type(exc).__name__}: {exc})")]


def verify_package(package: Path, *, key: Path | None = None, identifiers: Sequence[str] = ()) -> VerifyResult:
    """Verify a package folder or ``.tar.gz``. Bad input (no such path, unreadable key) raises ``InputError``;
    everything wrong with the package itself is a ``Problem`` of the result."""
    package = Path(package)
    public = load_public_key(key) if key is not None else None
    if package.is_dir():
        return verify_folder(package, key=public, identifiers=identifiers)
    if package.is_file() and is_tarball(package):
        with tempfile.TemporaryDirectory(prefix="synthrelease-verify-") as tmp:
            try:
                root = safe_extract(package, Path(tmp))
            except InvalidPackage as exc:
                return VerifyResult(str(package), tuple(Problem("", p) for p in exc.problems), False,
                                    public is not None, 0)
            return verify_folder(root, key=public, identifiers=identifiers, label=str(package))
    raise InputError("is neither a package folder nor a .tar.gz file", where=package,
                     fix="give the folder written by 'synthrelease export' or its .tar.gz")

