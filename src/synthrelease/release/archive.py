"""``.tar.gz`` packages: written deterministically, extracted defensively.

Writing: entries sorted, every mtime fixed, owner 0/0 without names, modes 0644/0755, gzip header without file name
or time: the same folder always gives the same bytes, so a tarball's sha256 can be published and compared.

Extraction never trusts the archive (Python 3.11's ``tarfile`` has no safe default): every member is checked before
anything is written (no absolute path, no ``..``, no link, no device or fifo, no duplicate, one top-level folder),
then regular files are written by hand with fresh modes, so nothing can land outside the target folder.
"""

from __future__ import annotations

import gzip
import os
import secrets
import tarfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from synthrelease.release.errors import InvalidPackage
from synthrelease.release.manifest import list_package

__all__ = ["TAR_SUFFIXES", "is_tarball", "safe_extract", "write_tarball"]

TAR_SUFFIXES = (".tar.gz", ".tgz")
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: any fixed time; 0 trips some extractors' "ancient file" warnings


def is_tarball(path: Path) -> bool:
    return Path(path).name.endswith(TAR_SUFFIXES)


def _info(name: str, *, size: int = 0, folder: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    info.size = size
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tarball(folder: Path, target: Path, *, top: str | None = None) -> Path:
    """Write ``folder`` as ``target``, a .tar.gz whose one top-level folder is ``top`` (default: ``folder``'s name),
    atomically (a hidden temporary file renamed at the end)."""
    folder, target = Path(folder), Path(target)
    top = top or folder.name
    listing = list_package(folder)
    folders = sorted({p for rel in listing.files for p in PurePosixPath(rel).parents if str(p) != "."},
                     key=lambda p: p.parts)
    entries = sorted([(p.parts, str(p), True) for p in folders] + [(PurePosixPath(r).parts, r, False)
                                                                   for r in listing.files])
    tmp = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    try:
        with tmp.open("xb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info(top, folder=True))
            for _, rel, is_folder in entries:
                if is_folder:
                    tar.addfile(_info(f"{top}/{rel}", folder=True))
                    continue
                path = folder / rel
                with path.open("rb") as fh:
                    tar.addfile(_info(f"{top}/{rel}", size=path.stat().st_size), fh)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in the path (would escape the target folder)"
    if member.issym() or member.islnk():
        return f"link to {member.linkname!r} (packages hold regular files only)"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or fifo (packages hold regular files only)"
    if not (member.isfile() or member.isdir()):
        return "unsupported member type (packages hold regular files only)"
    return None


def _check_members(members: list[tarfile.TarInfo]) -> tuple[str, list[str]]:
    problems = [f"archive member {m.name!r}: {why}" for m in members if (why := _member_problem(m))]
    seen: set[tuple[str, ...]] = set()
    tops = set()
    for m in members:
        parts = PurePosixPath(m.name).parts
        if parts:
            tops.add(parts[0])
        if parts in seen and not m.isdir():
            problems.append(f"archive member {m.name!r}: listed twice (a later copy would replace the first)")
        seen.add(parts)
    if len(tops) != 1:
        problems.append(f"archive holds {len(tops)} top-level entries; a package is one folder")
    return (next(iter(tops)) if len(tops) == 1 else ""), problems


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract the package ``archive`` into the existing folder ``dest``; return the package folder inside it.

    Raises ``InvalidPackage`` (nothing written) when any member is unsafe or the archive is unreadable.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            top, problems = _check_members(members)
            if problems:
                raise InvalidPackage(problems, where=archive)
            root = dest.resolve()
            for m in members:
                path = (root / m.name).resolve()
                if not path.is_relative_to(root):  # defence in depth: _member_problem already refused it
                    raise InvalidPackage([f"archive member {m.name!r}: path outside the target folder"], where=archive)
                if m.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(m)
                assert source is not None  # a regular file always has a stream
                with source, path.open("xb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                path.chmod(0o644)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidPackage([f"not a readable .tar.gz ({exc})"], where=archive) from None
    except FileExistsError as exc:
        raise InvalidPackage([f"archive member {exc.filename!r}: written twice"], where=archive) from None
    return dest / top
