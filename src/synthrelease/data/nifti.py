"""NIfTI volumes through SimpleITK: read with clear errors, write with fresh minimal headers.

Writers never copy a source header: each output image is built from the voxel array and the geometry alone, so
``descrip``, ``aux_file``, ``intent_name``, ``db_name`` and every other free-text field start empty.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from synthrelease.data.case import Geometry
from synthrelease.errors import DataError, GeometryError

__all__ = [
    "NIFTI_SUFFIXES",
    "check_nifti_file",
    "is_nifti",
    "read_nifti",
    "read_nifti_geometry",
    "strip_nifti_suffix",
    "write_nifti",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


_FLOAT_CODES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64


def _layout(header: bytes) -> tuple[str, int, int, int, int] | None:
    """(endian, version, datatype, voxel offset, voxel bytes) of a NIfTI-1/2 header, or None."""
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            dtype, bitpix = struct.unpack(endian + "2h", header[70:74])
            offset = max(int(struct.unpack(endian + "f", header[108:112])[0]), 352)
            version = 1
            break
        if size == 540 and len(header) >= 540:
            dtype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = max(struct.unpack(endian + "q", header[168:176])[0], 544)
            version = 2
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    return endian, version, dtype, offset, int(np.prod(dims[1 : dims[0] + 1])) * bitpix // 8


def check_nifti_file(path: Path) -> None:
    """Raise ``DataError`` unless the file decompresses completely, holds every voxel its header promises, and
    every float voxel is finite.

    ITK reads a truncated ``.nii.gz`` without complaint (missing voxels become zeros) and turns NaN voxels into
    zeros, so both are checked here, on the raw bytes, before ITK reads the file.
    """
    bad = DataError("is not a readable NIfTI volume (corrupt or truncated)", where=path,
                    fix="re-export or re-download the file, or remove the case")
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")) as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error):
        raise bad from None
    layout = _layout(raw[:540])
    if layout is None:
        raise bad
    endian, version, dtype, offset, nbytes = layout
    if len(raw) < offset + nbytes:
        raise bad
    if version == 2:
        raise DataError("is a NIfTI-2 file, which the reader (ITK) does not support", where=path,
                        fix="convert it to NIfTI-1, e.g. nibabel.save(nibabel.Nifti1Image(...))")
    if dtype in _FLOAT_CODES:
        kind = np.dtype(endian + _FLOAT_CODES[dtype])
        voxels = np.frombuffer(raw, dtype=kind, count=nbytes // kind.itemsize, offset=offset)
        n_bad = int(voxels.size - np.count_nonzero(np.isfinite(voxels)))
        if n_bad:
            raise DataError(f"holds {n_bad} NaN or infinite voxels", where=path,
                            fix="repair the volume (or exclude the case) before ingest")


def _itk_failure(path: Path, exc: RuntimeError) -> DataError:
    if "orthonormal" in str(exc).lower():
        return GeometryError("header holds non-orthonormal direction cosines", where=path,
                             fix="repair the qform/sform of the file")
    return DataError("is not a readable NIfTI volume (corrupt or truncated)", where=path,
                     fix="re-export or re-download the file, or remove the case")


def _read_image(path: Path) -> sitk.Image:
    if not path.is_file():
        raise DataError("file not found", where=path, fix="check the path")
    check_nifti_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _itk_failure(path, exc) from None


def _read_header(path: Path) -> sitk.ImageFileReader:
    if not path.is_file():
        raise DataError("file not found", where=path, fix="check the path")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _itk_failure(path, exc) from None
    return reader


def _geometry_of(img: sitk.Image | sitk.ImageFileReader, path: Path) -> Geometry:
    dim = img.GetDimension()
    if dim != 3:
        raise GeometryError(f"holds a {dim}-D image; expected one 3-D volume per file", where=path,
                            fix="split multi-channel or 4-D files into one 3-D file per channel")
    geom = Geometry(spacing=img.GetSpacing(), origin=img.GetOrigin(), direction=img.GetDirection())
    geom.validate(str(path))
    return geom


def read_nifti_geometry(path: Path) -> tuple[tuple[int, int, int], Geometry]:
    """Shape ``(Z, Y, X)`` and geometry, from the header only."""
    reader = _read_header(path)
    geom = _geometry_of(reader, path)
    x, y, z = reader.GetSize()
    return (z, y, x), geom


def read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    """The voxel array ``(Z, Y, X)`` and geometry of a 3-D NIfTI file."""
    img = _read_image(path)
    geom = _geometry_of(img, path)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError("holds vector-valued voxels", where=path, fix="store one scalar channel per file")
    return sitk.GetArrayFromImage(img), geom


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """Write ``array`` (Z, Y, X) with ``geometry`` to ``path`` (``.nii.gz``), with a fresh header."""
    if array.ndim != 3:
        raise GeometryError(f"cannot write an array of shape {array.shape} as one 3-D volume", where=path)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path
