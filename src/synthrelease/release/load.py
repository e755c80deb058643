"""The consumer side: a verified package as a list of MONAI-ready items.

``load(pkg)`` gives ``[{"image": path or [one path per channel], "label": path, "case_id": ...}, ...]``, the shape
MONAI's ``LoadImaged(keys=["image", "label"])`` reads: a list of files is stacked as channels. It verifies the
package first (hashes, audit, headers; the signature too when a public key is given), so training never starts
on a tampered or uncleared set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthrelease.data.nnunet import scan_nnunet
from synthrelease.errors import InputError
from synthrelease.release.archive import is_tarball, safe_extract
from synthrelease.release.errors import InvalidPackage
from synthrelease.release.verify import verify_package
from synthrelease.runtime.fs import atomic_directory

__all__ = ["load"]


def _extract(archive: Path, extract_to: Path | None) -> Path:
    if extract_to is None:
        raise InputError("a .tar.gz package must be extracted somewhere to be loaded", where=archive,
                         fix="pass extract_to=FOLDER (a new folder), or extract it and load the folder")
    with atomic_directory(Path(extract_to)) as tmp:
        top = safe_extract(archive, tmp).name
    return Path(extract_to) / top


def load(package: Path | str, *, verify: bool = True, key: Path | str | None = None,
         extract_to: Path | str | None = None) -> list[dict[str, Any]]:
    """The cases of a release package, one dict each, in case-id order.

    ``verify`` (default): raise ``InvalidPackage`` listing every problem unless the package verifies; ``key``: the
    publisher's public key, to check the signature as well. A ``.tar.gz`` is extracted safely into the new folder
    ``extract_to`` first.
    """
    package = Path(package)
    if package.is_file() and is_tarball(package):
        if verify:  # verify the archive itself before writing anything of it
            result = verify_package(package, key=None if key is None else Path(key))
            if not result.valid:
                raise InvalidPackage(result.lines(), where=package)
        package = _extract(package, None if extract_to is None else Path(extract_to))
    elif not package.is_dir():
        raise InputError("is neither a package folder nor a .tar.gz file", where=package,
                         fix="give the folder written by 'synthrelease export'")
    elif verify:
        result = verify_package(package, key=None if key is None else Path(key))
        if not result.valid:
            raise InvalidPackage(result.lines(), where=package)
    index = scan_nnunet(package)
    items = []
    for case in index.cases:
        images = [str(p.resolve()) for p in case.images]
        items.append({"image": images[0] if len(images) == 1 else images, "label": str(case.label.resolve()),
                      "case_id": case.case_id})
    return items
