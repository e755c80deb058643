"""DICOM layer: read CT/MR series with RTSTRUCT or SEG into a ``Case``, write phantom DICOM, de-identify.

- ``scan_dicom_source`` finds cases (image series + one RTSTRUCT/SEG each); ``DicomCaseSource.load`` reads one.
- ``Deidentifier`` applies the PS3.15 Annex E Basic Application Level Confidentiality Profile (``BASIC_PROFILE``);
  ``header_summary`` keeps the technical attributes of a de-identified header.
- ``write_dicom_case`` writes a phantom case as DICOM with planted fake PHI (to test de-identification).
"""

from synthrelease.data.dicom.deid import BASIC_PROFILE, Deidentifier, ProfileRule, header_summary
from synthrelease.data.dicom.rtstruct import default_roi_map, parse_roi_map, read_rtstruct, write_rtstruct
from synthrelease.data.dicom.scan import DicomCaseSource, scan_dicom_source
from synthrelease.data.dicom.seg import read_seg, write_seg
from synthrelease.data.dicom.series import read_image_series
from synthrelease.data.dicom.write import roi_names_for, write_dicom_case

__all__ = [
    "BASIC_PROFILE",
    "Deidentifier",
    "DicomCaseSource",
    "ProfileRule",
    "default_roi_map",
    "header_summary",
    "parse_roi_map",
    "read_image_series",
    "read_rtstruct",
    "read_seg",
    "roi_names_for",
    "scan_dicom_source",
    "write_dicom_case",
    "write_rtstruct",
    "write_seg",
]
