"""One error hierarchy for the whole library.

Every error says *where* (a path or a case), *what* went wrong and *how to fix it*, so that the CLI can print it
as one line. ``InputError`` and its subclasses are the user's to fix (CLI exit code 2); any other
``SynthReleaseError`` is ours (exit code 3).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DataError",
    "DicomError",
    "GeometryError",
    "InputError",
    "LabelError",
    "LayoutError",
    "SegmentationError",
    "SynthReleaseError",
    "WorkspaceError",
]


class SynthReleaseError(Exception):
    """Base class of every error raised on purpose by synthrelease."""

    def __init__(self, problem: str, *, where: str | Path | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.where = str(where) if where is not None else None
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The error as one line: ``where: problem; fix: ...``."""
        text = self.problem.rstrip(".")
        if self.where:
            text = f"{self.where}: {text}"
        if self.fix:
            text = f"{text}; fix: {self.fix.rstrip('.')}"
        return text


class InputError(SynthReleaseError):
    """Bad input or usage: the user can fix it (exit code 2)."""


class DataError(InputError):
    """A volume, label map or header that cannot be used as it is."""


class GeometryError(DataError):
    """Images and label maps that do not share one grid, or an invalid grid."""


class LabelError(DataError):
    """A label map with values outside the label schema, or an unusable schema."""


class DicomError(DataError):
    """A DICOM file or series that cannot be ingested."""


class LayoutError(InputError):
    """A source folder whose layout is not what was asked for (or cannot be detected)."""


class WorkspaceError(InputError):
    """A workspace that is missing, incomplete or would be overwritten."""


class SegmentationError(SynthReleaseError):
    """A segmentation engine that started but failed (a crashed nnU-Net step); its log is named in ``where``."""
