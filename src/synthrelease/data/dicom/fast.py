"""Fast paths for bulk DICOM values: decimal strings (DS) and RTSTRUCT contour items without a pydicom object each.

pydicom turns every value of a multi-valued DS element into a validated ``DSfloat`` when one is set or read, and
writes every element of every sequence item through its generic machinery; for RTSTRUCT contours (hundreds of items,
thousands of numbers per file) that dominated writing and reading. Here:

- ``format_ds`` formats numbers as DS strings (at most 16 characters, PS3.5 6.2) in one pass;
- ``new_item`` makes a sequence item whose raw elements pydicom writes without decoding them;
- ``contour_sequence_element`` encodes a whole ContourSequence (explicit VR little endian) into one raw element,
  byte for byte what pydicom writes for the same items (a test compares the two);
- ``read_contours`` reads a ContourSequence's geometric types and numbers straight from its undecoded bytes;
- ``read_ds_array`` reads a DS element's numbers as a float array straight from its raw bytes (the same numbers
  ``float(DS(text))`` gives), falling back on pydicom for anything unusual.

The readers return the numbers pydicom would; they do not repeat pydicom's warnings about values that break the DS
rules but still parse (a value longer than 16 characters, say).
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import format_number_as_ds

__all__ = ["DS_MAX_LENGTH", "ContourItem", "contour_sequence_element", "format_ds", "new_item", "read_contours",
           "read_ds_array"]

DS_MAX_LENGTH = 16


def format_ds(values: Iterable[float], decimals: int = 4) -> list[str]:
    """``values`` as DS strings with ``decimals`` decimals (``f"{v:.4f}"``); a value that would not fit in 16
    characters is written by pydicom's ``format_number_as_ds`` (fewer decimals or exponent notation) instead.

    Raises ``ValueError`` for NaN or infinite values (DS cannot hold them).
    """
    nums = values.ravel().tolist() if isinstance(values, np.ndarray) else [float(v) for v in values]
    out = [f"{v:.{decimals}f}" for v in nums]
    if any(len(s) > DS_MAX_LENGTH for s in out) or not all(map(math.isfinite, nums)):
        for i, v in enumerate(nums):
            if not math.isfinite(v):
                raise ValueError(f"{v} cannot be written as a DICOM decimal string")
            if len(out[i]) > DS_MAX_LENGTH:
                out[i] = format_number_as_ds(v)
    return out


class ContourItem(NamedTuple):
    """One item of a ContourSequence: a CLOSED_PLANAR (or other) contour and the image slice it lies on."""

    points_mm: np.ndarray  # (N, 3) patient coordinates
    image_class_uid: str | None = None  # ReferencedSOPClassUID of the slice (None: no ContourImageSequence)
    image_instance_uid: str | None = None
    geometric_type: str = "CLOSED_PLANAR"


_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)


def _short(tag: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """An explicit VR little endian element with a 2-byte length (text VRs), padded to even length."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _items(items: Iterable[bytes]) -> bytes:
    """Encoded items, each with its defined length (as pydicom writes the items of a new dataset)."""
    return b"".join(_ITEM + struct.pack("<I", len(item)) + item for item in items)


def _sequence(tag: int, items: Iterable[bytes]) -> bytes:
    """A sequence of defined length (as pydicom writes a sequence of a new dataset)."""
    body = _items(items)
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"SQ", 0, len(body)) + body


def _contour_item(item: ContourItem, decimals: int) -> bytes:
    pts = np.asarray(item.points_mm, dtype=float).reshape(-1, 3)
    out = b""
    if item.image_class_uid is not None and item.image_instance_uid is not None:
        ref = (_short(0x00081150, b"UI", item.image_class_uid.encode("ascii"), b"\x00")
               + _short(0x00081155, b"UI", item.image_instance_uid.encode("ascii"), b"\x00"))
        out += _sequence(0x30060016, [ref])  # ContourImageSequence
    out += _short(0x30060042, b"CS", item.geometric_type.encode("ascii"), b" ")  # ContourGeometricType
    out += _short(0x30060046, b"IS", str(len(pts)).encode("ascii"), b" ")  # NumberOfContourPoints
    data = "\\".join(format_ds(pts.ravel(), decimals)).encode("ascii")
    if len(data) + len(data) % 2 <= 0xFFFF:
        return out + _short(0x30060050, b"DS", data, b" ")  # ContourData
    # over 64 KiB: as pydicom does, store it with VR UN (a 4-byte length) and say so
    warnings.warn(f"ContourData of {len(pts)} points exceeds 64 KiB and is stored with VR UN", stacklevel=3)
    data += b" " * (len(data) % 2)
    return out + struct.pack("<HH2sHI", 0x3006, 0x0050, b"UN", 0, len(data)) + data


def contour_sequence_element(items: Sequence[ContourItem], decimals: int = 4) -> RawDataElement:
    """ContourSequence (3006,0040) holding ``items``, encoded explicit VR little endian, as one raw element.

    Put it into a ``new_item()`` (the ROI contour item) so that pydicom writes it unchanged; the bytes equal those
    pydicom writes for the same items built as datasets (ContourData as ``format_ds`` strings).
    """
    body = _items(_contour_item(item, decimals) for item in items)
    return RawDataElement(Tag(0x30060040), "SQ", len(body), body, 0, False, True)


def new_item() -> Dataset:
    """A sequence item marked as explicit-VR little endian in the default character set, so that pydicom writes
    its raw elements as they are (written into a file of that encoding, which every file here is)."""
    item = Dataset()
    item.set_original_encoding(False, True, default_encoding)
    return item


_STANDARD_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split())
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_GEOMETRIC_TYPE, _CONTOUR_DATA = (0x3006, 0x0042), (0x3006, 0x0050)


def _ds_numbers(raw: bytes) -> np.ndarray | None:
    """The numbers of DS value bytes (``float`` of each backslash-separated value); None when empty."""
    raw = raw.rstrip(b" ")
    return np.fromiter(map(float, raw.split(b"\\")), dtype=float) if raw else None


def read_contours(roi_contour: Dataset) -> list[tuple[str, np.ndarray | None]] | None:
    """``(ContourGeometricType, ContourData numbers)`` of every item of ``roi_contour``'s ContourSequence, parsed
    straight from the undecoded sequence bytes; ``None`` when they are not a plain explicit VR little endian
    sequence of defined length (or hold anything unexpected): then read it through pydicom.

    The geometric type is the text as pydicom gives it (trailing spaces and NULs removed); the numbers are
    ``float`` of each DS value, as ``float(DS(value))``.
    """
    elem = roi_contour.get_item(0x30060040, keep_deferred=True)
    if not (isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and elem.VR == "SQ"
            and not elem.is_implicit_VR and elem.is_little_endian and elem.length != 0xFFFFFFFF):
        return None
    value, pos, n = elem.value, 0, len(elem.value)
    out: list[tuple[str, np.ndarray | None]] = []
    try:
        while pos < n:
            group, element, length = struct.unpack_from("<HHI", value, pos)
            pos += 8
            if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF or pos + length > n:
                return None
            end, gtype, numbers = pos + length, "", None
            while pos < end:
                group, element, vr = *struct.unpack_from("<HH", value, pos), value[pos + 4:pos + 6]
                if vr not in _STANDARD_VRS:
                    return None
                if vr in _LONG_VRS:
                    size, pos = struct.unpack_from("<I", value, pos + 8)[0], pos + 12
                else:
                    size, pos = struct.unpack_from("<H", value, pos + 6)[0], pos + 8
                if size == 0xFFFFFFFF or pos + size > end:
                    return None
                if (group, element) == _GEOMETRIC_TYPE:
                    gtype = value[pos:pos + size].decode("ascii").rstrip(" \x00")
                elif (group, element) == _CONTOUR_DATA:
                    numbers = _ds_numbers(value[pos:pos + size])
                pos += size
            out.append((gtype, numbers))
    except (struct.error, ValueError, UnicodeDecodeError):
        return None
    return out


def read_ds_array(ds: Dataset, tag: int) -> np.ndarray | None:
    """The numbers of DS element ``tag`` of ``ds`` as a float64 array; ``None`` when absent or empty.

    Parses the raw value bytes directly when they are plain ASCII decimal text; otherwise (already decoded,
    deferred, null-padded, ...) reads the value through pydicom as before.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.value is not None:
        try:
            return _ds_numbers(elem.value)
        except ValueError:
            pass
    value = ds[tag].value
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [] if value in (None, "") else [value]
    return np.asarray([float(v) for v in values], dtype=float) if values else None
