"""Safe extraction: malicious archives are refused before anything is written, and nothing lands outside the
target; the deterministic writer round-trips."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from synthrelease.release.archive import safe_extract, write_tarball
from synthrelease.release.errors import InvalidPackage
from synthrelease.release.verify import verify_package


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"x"


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, None


MALICIOUS: dict[str, tuple[Callable[[], list[tuple[tarfile.TarInfo, bytes | None]]], str]] = {
    "absolute": (lambda: [_file("pkg/a"), _file("/tmp/evil-abs")], "absolute path"),
    "dotdot": (lambda: [_file("pkg/a"), _file("pkg/../../x")], "'..'"),
    "symlink": (lambda: [_file("pkg/a"), _special("pkg/link", tarfile.SYMTYPE, "/etc/passwd")], "link to"),
    "hardlink": (lambda: [_file("pkg/a"), _special("pkg/hard", tarfile.LNKTYPE, "pkg/a")], "link to"),
    "device": (lambda: [_file("pkg/a"), _special("pkg/dev", tarfile.CHRTYPE)], "device or fifo"),
    "fifo": (lambda: [_file("pkg/a"), _special("pkg/fifo", tarfile.FIFOTYPE)], "device or fifo"),
    "two tops": (lambda: [_file("pkg/a"), _file("other/b")], "2 top-level entries"),
    "duplicate": (lambda: [_file("pkg/a"), _file("pkg/a")], "listed twice"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused_before_writing(case: str, tmp_path: Path) -> None:
    build, reason = MALICIOUS[case]
    archive = _tar(tmp_path / "evil.tar.gz", build())
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidPackage, match=reason):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "x").exists() and not Path("/tmp/evil-abs").exists()
    result = verify_package(archive)  # verify says so too, as a problem, and exits cleanly
    assert not result.valid and reason.strip("'") in result.lines()[0]


def test_unreadable_archive_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    result = verify_package(bad)
    assert not result.valid and "not a readable .tar.gz" in result.lines()[0]


def test_written_tarball_is_deterministic_and_extracts_to_the_same_files(tmp_path: Path) -> None:
    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("b")
    (src / "sub" / "a.txt").write_text("a")
    one = write_tarball(src, tmp_path / "one.tar.gz")
    (src / "b.txt").touch()  # a new mtime must not change the bytes
    two = write_tarball(src, tmp_path / "two.tar.gz", top="pkg")
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        names = tar.getnames()
        assert names == ["pkg", "pkg/b.txt", "pkg/sub", "pkg/sub/a.txt"]
        assert {(m.uid, m.gid, m.uname, m.mtime) for m in tar.getmembers()} == {(0, 0, "", 946684800)}
    dest = tmp_path / "dest"
    dest.mkdir()
    root = safe_extract(one, dest)
    assert root == dest / "pkg" and (root / "sub" / "a.txt").read_text() == "a"
