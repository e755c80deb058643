"""Export of a cleared set and verification of the package: the round trip, every tampering verify must name, the
refusals of export (nothing written), atomicity, determinism, and that no patient identifier leaves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synthrelease.release import ExportRefused, export_package, generate_keypair, verify_package
from synthrelease.release.manifest import MANIFEST, SIGNATURE, sha256_file

DATE = "2026-01-31"


@pytest.fixture(scope="module")
def package(release_ws, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("pkg") / "synth-ct"
    outcome = export_package(release_ws.root, "good", out, key=release_ws.key, tar=True, date=DATE)
    assert outcome.path == out and outcome.signed and outcome.n_cases == 3
    assert outcome.tarball == out.with_name("synth-ct.tar.gz") and outcome.tarball.is_file()
    return out


@pytest.fixture
def copy(package: Path, tmp_path: Path) -> Path:
    """A scratch copy of the package to tamper with."""
    return Path(shutil.copytree(package, tmp_path / package.name))


def test_exported_package_has_the_layout_and_verifies(package: Path, release_ws) -> None:  # type: ignore[no-untyped-def]
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert {"dataset.json", "README.md", "croissant.json", "provenance.json", "audit/report.json",
            "audit/report.html", "audit/policy.toml", MANIFEST, SIGNATURE} <= set(files)
    assert sorted(p for p in files if p.startswith("imagesTr/")) == [f"imagesTr/syn{i:04d}_0000.nii.gz"
                                                                     for i in range(3)]
    manifest = (package / MANIFEST).read_text().splitlines()
    assert [ln.split("  ", 1)[1] for ln in manifest] == [f for f in files if f not in (MANIFEST, SIGNATURE)]
    assert all(sha256_file(package / rel) == h for h, rel in (ln.split("  ", 1) for ln in manifest))
    result = verify_package(package, key=release_ws.public_key)
    assert result.valid, result.lines()
    assert result.signed and result.signature_checked
    tar_result = verify_package(package.with_name("synth-ct.tar.gz"), key=release_ws.public_key)
    assert tar_result.valid, tar_result.lines()


def test_package_audit_is_public_and_provenance_has_no_identifier(package: Path, release_ws) -> None:  # type: ignore[no-untyped-def]
    report = json.loads((package / "audit" / "report.json").read_text())
    assert report["verdict"] == "pass" and report["policy"]["release"] is True
    assert all(c["evidence"] == {"withheld": "derived from protected data; kept in the workspace"}
               for c in report["checks"].values())
    assert sha256_file(package / "audit" / "policy.toml") == report["policy"]["sha256"]
    prov = json.loads((package / "provenance.json").read_text())
    assert prov["generator"]["generator"] == "ldm" and prov["generator"]["seed"] == 7
    assert "run" not in prov["generator"]  # the steward's run name stays in the workspace
    assert prov["audit"]["policy"]["sha256"] == report["policy"]["sha256"] and prov["audit"]["verdict"] == "pass"
    assert prov["synthetic_set"]["sha256"] == report["synthetic_set"]["sha256"]


def test_no_real_identifier_workspace_path_or_real_figure_anywhere_in_the_package(package: Path, release_ws) -> None:  # type: ignore[no-untyped-def]
    import base64
    import gzip

    audit_figures = list((release_ws.root / "audits" / "good" / "figures").glob("*.png"))
    assert audit_figures  # the memorization check drew real patients next to synthetic cases
    needles = [s.encode() for s in release_ws.real_ids] + [str(release_ws.root).encode(), b"run-of-the-steward"]
    needles += [base64.b64encode(f.read_bytes())[:200] for f in audit_figures]
    for path in [*package.rglob("*"), package.with_name("synth-ct.tar.gz")]:
        if not path.is_file():
            continue
        data = path.read_bytes()
        blobs = [data, path.name.encode()] + ([gzip.decompress(data)] if data[:2] == b"\x1f\x8b" else [])
        for blob in blobs:
            for needle in needles:
                assert needle not in blob, f"{path} holds {needle[:30]!r}"
    assert not list(package.rglob("*.png"))


def test_croissant_validates_with_mlcroissant_and_lists_every_file(package: Path) -> None:
    import mlcroissant as mlc

    doc = json.loads((package / "croissant.json").read_text())
    assert doc["conformsTo"] == ["http://mlcommons.org/croissant/1.1", "http://mlcommons.org/croissant/RAI/1.0"]
    for field in ("rai:dataCollection", "rai:dataLimitations", "rai:personalSensitiveInformation",
                  "rai:dataUseCases", "rai:dataBiases"):
        assert doc[field]
    objects = {d["contentUrl"]: d["sha256"] for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    for rel, digest in objects.items():
        assert sha256_file(package / rel) == digest
    assert "imagesTr/syn0002_0000.nii.gz" in objects and "audit/report.json" in objects
    dataset = mlc.Dataset(jsonld=package / "croissant.json")
    assert dataset.metadata.ctx.is_v1_1()
    assert not dataset.metadata.ctx.issues.errors
    records = list(dataset.records("cases"))
    assert len(records) == 3
    first = {k: v.decode() if isinstance(v, bytes) else v for k, v in records[0].items()}
    assert first["cases/label"] == "labelsTr/syn0000.nii.gz"


def test_dataset_card_names_verdict_generator_and_training_commands(package: Path) -> None:
    card = (package / "README.md").read_text()
    for text in ("PASS", "test-release", "ldm", "nnUNetv2_plan_and_preprocess -d 501 --verify_dataset_integrity",
                 "nnUNetv2_train 501 3d_fullres 0", "synthrelease verify", "from synthrelease.release import load",
                 "Not for"):
        assert text in card


def _tamper_flip_byte(pkg: Path) -> None:
    path = pkg / "imagesTr" / "syn0001_0000.nii.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _tamper_verdict(pkg: Path) -> None:
    path = pkg / "audit" / "report.json"
    report = json.loads(path.read_text())
    report["verdict"] = "fail"
    path.write_text(json.dumps(report, indent=2) + "\n")


def _tamper_policy(pkg: Path) -> None:
    path = pkg / "audit" / "policy.toml"
    path.write_text(path.read_text().replace("threshold = 0.0", "threshold = 100.0"))


def _tamper_manifest(pkg: Path) -> None:
    path = pkg / MANIFEST
    lines = path.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.endswith("imagesTr/syn0001_0000.nii.gz"))
    digest, rel = lines[i].split("  ", 1)
    lines[i] = ("0" if digest[0] != "0" else "1") + digest[1:] + "  " + rel
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("tamper, where, reason", [
    (_tamper_flip_byte, "imagesTr/syn0001_0000.nii.gz", "sha256 differs"),
    (lambda p: (p / "labelsTr" / "syn0002.nii.gz").unlink(), "labelsTr/syn0002.nii.gz", "missing"),
    (lambda p: (p / "notes.txt").write_text("hello"), "notes.txt", "extra file"),
    (lambda p: (p / "labelsTr" / "syn0002.nii.gz").rename(p / "labelsTr" / "syn9002.nii.gz"),
     "labelsTr/syn9002.nii.gz", "extra file"),
    (_tamper_manifest, "imagesTr/syn0001_0000.nii.gz", "sha256 differs"),
    (_tamper_verdict, "audit/report.json", "not 'pass'"),
    (_tamper_policy, "audit/policy.toml", "not the policy the set was judged by"),
    (lambda p: (p / SIGNATURE).unlink(), SIGNATURE, "unsigned"),
])
def test_each_tampering_is_named(copy: Path, release_ws, tamper, where: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    tamper(copy)
    result = verify_package(copy, key=release_ws.public_key)
    assert not result.valid
    assert any(p.path == where and reason in p.reason for p in result.problems), result.lines()


def test_wrong_public_key_fails_and_no_key_skips_the_signature(package: Path, tmp_path: Path) -> None:
    _, other = generate_keypair(tmp_path / "other.key")
    result = verify_package(package, key=other)
    assert [p.path for p in result.problems] == [SIGNATURE] and "wrong key" in result.problems[0].reason
    unchecked = verify_package(package)
    assert unchecked.valid and unchecked.signed and not unchecked.signature_checked


def test_consistent_forgery_is_caught_by_the_signature(copy: Path, release_ws) -> None:  # type: ignore[no-untyped-def]
    """Re-hashing a tampered file into the manifest keeps the hashes consistent; only the signature catches it."""
    from synthrelease.release.manifest import build_manifest

    path = copy / "croissant.json"  # the one file no other file hashes (it cannot list itself)
    doc = json.loads(path.read_text())
    doc["description"] = "all good, trust me"
    path.write_text(json.dumps(doc))
    (copy / MANIFEST).write_bytes(build_manifest(copy))
    assert verify_package(copy).valid  # without the key nothing can tell
    result = verify_package(copy, key=release_ws.public_key)
    assert [p.path for p in result.problems] == [SIGNATURE]


def test_header_text_is_found_even_with_consistent_hashes(copy: Path) -> None:
    import nibabel as nib

    from synthrelease.release.manifest import build_manifest

    path = copy / "labelsTr" / "syn0000.nii.gz"
    img = nib.load(path)
    img.header["descrip"] = b"Doe^John 1970-01-01"
    nib.save(nib.Nifti1Image(img.get_fdata().astype("uint8"), img.affine, img.header), path)
    (copy / MANIFEST).write_bytes(build_manifest(copy))
    result = verify_package(copy)
    assert any(p.path == "labelsTr/syn0000.nii.gz" and "descrip" in p.reason for p in result.problems)


def test_identifiers_list_is_searched(copy: Path) -> None:
    assert verify_package(copy, identifiers=["syn0001", "nothing-like-this"]).problems[0].reason.startswith(
        "contains identifier #1")


def test_same_inputs_give_the_same_package_bytes(package: Path, release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    again = export_package(release_ws.root, "good", tmp_path / "synth-ct", key=release_ws.key, tar=True, date=DATE)
    assert (again.path / MANIFEST).read_bytes() == (package / MANIFEST).read_bytes()
    assert (again.path / SIGNATURE).read_bytes() == (package / SIGNATURE).read_bytes()  # Ed25519 is deterministic
    assert again.tarball is not None
    assert again.tarball.read_bytes() == package.with_name("synth-ct.tar.gz").read_bytes()


@pytest.mark.parametrize("set_name, message", [
    ("unaudited", "never been audited"),
    ("stale", "changed since its latest audit"),
    ("failing", "did not pass its audit"),
    ("study", "not a release policy"),
    ("copies", "negative control"),
])
def test_export_refuses_an_uncleared_set_and_writes_nothing(release_ws, tmp_path: Path, set_name: str,  # type: ignore[no-untyped-def]
                                                            message: str) -> None:
    with pytest.raises(ExportRefused, match=message):
        export_package(release_ws.root, set_name, tmp_path / "pkg", tar=True)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_nothing(release_ws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import synthrelease.release.export as export_module

    def boom(data: bytes, key: object) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "sign", boom)
    with pytest.raises(KeyboardInterrupt):
        export_package(release_ws.root, "good", tmp_path / "pkg", key=release_ws.key, tar=True)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_when_an_identifier_would_leave(release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    leaked = r"real-cohort identifier in 2 file\(s\): croissant.json, imagesTr/syn0001_0000"
    with pytest.raises(ExportRefused, match=leaked):
        export_package(release_ws.root, "good", tmp_path / "pkg", identifiers=["syn0001_0000"])
    assert list(tmp_path.iterdir()) == []
