"""DICOM PS3.15 Annex E *Basic Application Level Confidentiality Profile*, as a table.

``BASIC_PROFILE`` transcribes Table E.1-1 (DICOM 2023 edition, Basic Profile column): one ``ProfileRule`` per
attribute with the standard's action and the action applied here. Compound actions depend on the IOD's attribute
type in the standard; we resolve them to one action that keeps a dataset readable while removing the content:
``Z/D``, ``X/Z``, ``X/Z/D`` -> ``Z`` (zero length); ``X/D`` -> ``X`` (remove); ``X/Z/U*`` -> ``U`` (keep the
sequence, replace every UID inside). ``D`` on a sequence empties it.

Beyond the table (the profile asks for these too, or they are safety nets): every private element and private
creator is removed; curve (50xx) and overlay (60xx) groups are removed; sequences are processed recursively;
any remaining UID that is not a well-known DICOM UID is replaced; any remaining person name, date, date-time or
time is blanked. The result is marked ``PatientIdentityRemoved = YES`` with code 113100 (DCM).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary
from pydicom.valuerep import PersonName

__all__ = ["BASIC_PROFILE", "Deidentifier", "ProfileRule", "derived_uid", "header_summary"]

Action = Literal["D", "Z", "X", "K", "U"]


def derived_uid(*parts: str) -> str:
    """A deterministic ``2.25.`` UID (name-based UUID, PS3.5 B.2) from ``parts``; equal parts, equal UID.

    (``pydicom.uid.generate_uid(prefix=None)`` ignores ``entropy_srcs`` and is random, hence this helper.)
    """
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, "\x1f".join(parts)).int)


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1: tag, keyword, the action applied here and the standard's (maybe compound) action."""

    tag: int
    keyword: str
    action: Action
    standard: str


# Table E.1-1, Basic Profile column, grouped by the standard's action (tags as GGGG,EEEE).
_TABLE: dict[str, str] = {
    "D": """
0018,11BB 006A,0005 006A,0003 0044,0104 0400,0562 300C,0127 0400,0115 0012,0081 0012,0020 0012,0010 0012,0040
0012,0042 0040,0512 0040,A730 0008,0107 0008,0106 0040,A121 0040,A120 0018,9701 2100,0140 3010,002D 0400,0105
0068,6226 0042,0011 3010,0035 3010,0038 0018,9804 0034,0002 0034,0001 0018,9074 0034,0007 0018,9151 0018,9623
0070,0001 0072,000A 003A,0314 0068,6270 300A,0741 300A,0742 300A,0783 0400,0563 300A,0760 0040,1101 0040,A123
300A,0002 3010,0054 300A,062A 300A,0619 300A,0623 300A,067C 0400,0565 300A,073A 0040,A13A 3008,0162 3008,0164
3008,0166 3008,0168 0072,005E 0072,005F 0072,0061 0072,0063 0072,0066 0072,0068 0072,0065 0072,006A 0072,006C
0072,006E 0072,006B 0072,006D 0072,0071 0072,0070 0018,936A 0034,0005 0018,9369 300A,022C 300A,022E 0040,0551
3006,0002 0040,A122 3008,0024 3008,0025 300A,0608 300A,0736 300A,0734 3010,0033 3010,0034 0040,A030 0040,A075
0040,A073 0040,A027 0018,9371 0018,9367""",
    "Z": """
0008,0050 0018,1203 0012,0060 0012,0021 0012,0030 0012,0031 0012,0050 3010,000F 3010,0017 0008,009C 3010,001B
0040,2017 3010,007F 0040,0513 0040,0562 3010,0043 0040,A082 0010,0020 0010,0030 0010,0010 0010,0040 0040,2016
3010,007B 3010,0081 3006,00A6 3006,0026 300A,0615 300A,0611 3010,005A 300A,067D 3010,005C 0008,0090 300E,0004
300E,0005 0400,0564 0040,0610 3006,0008 3006,0009 0008,0020 0020,0010 0008,0030 3010,007A 0040,A088""",
    "X": """
0018,4000 0018,9424 0040,4035 0010,21B0 0040,A353 0038,0010 0038,0020 0008,1084 0008,1080 0038,0021 0000,1000
0010,2110 006A,0006 0044,0004 4000,0010 0044,0105 0040,A078 300A,00C3 300A,00DD 0010,1081 0014,407E 0014,407C
0016,004D 0018,1007 0400,0310 0012,0082 0012,0072 0012,0071 0012,0051 0040,0310 0040,0280 300A,02EB 0040,3001
0008,009D 0050,001B 0040,051A 0070,0086 0018,1042 0018,1043 0018,A002 0018,A003 0010,2150 2100,0040 2100,0050
0040,A307 0038,0300 0008,0025 0008,0035 0040,A07C FFFC,FFFC 0040,A110 0018,1205 0018,1200 0018,1204 0018,1012
0018,1202 0018,937F 0008,2111 0050,0020 0016,004B FFFA,FFFA 0038,0030 0038,0040 0038,0032 300A,079A 4008,011A
4008,0119 300A,0016 3010,0037 3010,0036 300A,0676 0012,0087 0012,0086 0010,2160 0040,4011 003A,032B 0040,A023
0040,A024 300A,0196 300A,0072 0020,9158 0016,0076 0016,0075 0016,008C 0016,007B 0016,008D 0016,0088 0016,008A
0016,0089 0016,0086 0016,0085 0016,0087 0016,0084 0016,0083 0016,008E 0016,0081 0016,0080 0016,0072 0016,0071
0016,0074 0016,0073 0016,0082 0016,007A 0016,008B 0016,0078 0016,007D 0016,007C 0016,0079 0016,0077 0016,007F
0016,007E 0016,0070 0018,1008 0018,1005 0040,E004 0040,4037 0040,4036 0088,0200 0008,4000 0020,4000 0028,4000
0040,2400 4008,0300 0008,0015 0400,0600 0008,0081 0008,1040 0008,1041 0010,1050 3010,0085 0040,1011 4008,0112
4008,0113 4008,0111 4008,010C 4008,0115 4008,0200 4008,0202 4008,0100 4008,0101 4008,0102 4008,010B 4008,010A
4008,0108 4008,0109 0018,0035 0018,0027 0040,2004 0040,2005 0038,0011 0038,0014 0010,0021 0038,0061 0038,0064
0010,21D0 0016,004F 0016,0050 0016,0051 0016,004E 0050,0021 0400,0404 0016,002B 0010,2000 0010,1090 0010,1080
0400,0550 0020,3403 0020,3406 0020,3405 0020,3401 0018,937B 0008,1060 0040,1010 0008,1000 0400,0552 0400,0551
0040,A192 0040,A033 0040,A193 0010,2180 0040,2010 0040,2011 0040,2008 0040,2009 0400,0561 2100,0070 0010,1000
0010,1002 0010,1001 0008,0024 0008,0034 0040,A07A 0010,4000 300A,0794 0038,0500 0040,1004 300A,0792 300A,078E
0010,1040 0010,1010 0010,1005 0010,0032 0038,0400 0010,0050 0010,1060 0010,0101 0010,0102 0010,21F0 0010,1020
0010,2155 0010,2154 0010,1030 0040,0243 0040,0254 0040,0250 0040,4051 0040,0251 0040,0253 0040,0244 0040,4050
0040,0245 0040,0241 0040,4030 0040,0242 0040,4028 0008,1052 0008,1050 0040,1102 0040,1104 0040,1103 4008,0114
0008,1062 0008,1048 0008,1049 0018,1004 3002,0123 3002,0121 0040,0012 0010,21C0 300A,000E 0070,0082 0070,0083
3010,0061 0040,4052 0044,000B 0008,1088 0020,0027 3006,0028 3006,0038 3006,0088 3006,0085 300A,0004 300A,0003
0018,1078 0018,1072 0018,1079 0018,1073 300C,0113 0040,100A 0032,1030 0032,1066 0032,1067 0040,2001 0040,1002
0074,1234 0400,0402 0038,0004 0010,1100 0008,1120 0400,0403 0008,0096 0008,0092 0008,0094 0010,2152 0040,0275
0032,1070 0040,1400 0040,1001 0040,1005 0018,9937 0074,1236 0032,1032 0032,1033 0018,9185 0010,2299 0010,2297
4008,4000 4008,0118 4008,0040 4008,0042 0008,0054 0100,0420 0038,001A 0038,001B 0038,001C 0038,001D 0040,4034
0038,001E 0040,000B 0040,0006 0040,0007 0040,0004 0040,0005 0040,4008 0040,0009 0040,0011 0040,4010 0040,0002
0040,4005 0040,0003 0040,0001 0040,4027 0040,0010 0040,4025 0032,1020 0032,1021 0032,1000 0032,1001 0032,1010
0032,1011 0008,103E 0038,0062 0038,0060 300A,01B2 300A,01A6 0040,06FA 0010,21A0 300A,0216 0038,0050 0040,050A
0040,0602 0040,0600 0008,0055 3006,0006 3006,0004 0032,1040 0032,1041 0032,4000 0032,1050 0032,1051 0008,1030
0032,0012 0032,0034 0032,0035 0032,0032 0032,0033 0044,0010 0040,A354 0040,DB07 0040,DB06 4000,4000 2030,0020
0040,A112 0018,1201 0018,1014 0008,0201 0088,0910 0088,0912 0088,0906 0088,0904 0018,5011 300A,000B 0018,100A
0018,1009 0040,A352 0040,A358 0038,4000 0018,9373 003A,0329""",
    "U": """
0008,0017 0020,9161 3010,0006 3010,0013 0018,1002 0400,0100 0020,9164 300A,0013 3010,006E 0008,0058 0070,031A
0020,0052 0008,0014 0008,3010 0028,1214 0018,100B 0002,0003 003A,0310 0040,A402 0040,A171 0028,1199 300A,0650
0070,1101 0070,1102 0008,0019 3010,003B 3010,000B 300A,0083 3010,006F 3010,0031 3006,0024 0040,4023 0040,A172
0008,1155 0004,1511 300A,0785 3006,00C2 0000,1001 0008,0018 0020,000E 3010,0015 0064,0003 0040,0554 0088,0140
0020,000D 0020,0200 0018,2042 0040,DB0D 0040,DB0C 0062,0021 0008,1195 300A,0609 300A,0700 0040,A124""",
    "Z/D": "0070,0084 0008,0023 0008,0033 0018,0010 0018,9919",
    "X/Z": """
0040,0555 0008,0022 0008,0032 2200,0005 2200,0002 0010,2203 0008,1110 0032,1060 300E,0008 3008,0105 300A,00B2""",
    "X/D": """
0018,1400 0018,700C 0018,700A 0018,9517 3008,0054 0008,0012 3010,004D 3010,004C 3008,0056 0040,A032 0008,1072
0018,1030 300A,0006 300A,0007 3010,0056 0008,0021 0008,0031 0018,9516 0018,700E 3008,0250 3010,0077 3008,0251""",
    "X/Z/D": "0008,002A 0018,1000 0008,0013 0008,0082 0008,0080 0008,1070 0008,1111 0008,1010",
    "X/Z/U*": "0008,1140 0008,2112",
}
_RESOLVE: dict[str, Action] = {"D": "D", "Z": "Z", "X": "X", "U": "U", "Z/D": "Z", "X/Z": "Z", "X/D": "X",
                               "X/Z/D": "Z", "X/Z/U*": "U"}


def _build_profile() -> tuple[ProfileRule, ...]:
    rules: dict[int, ProfileRule] = {}
    for standard, block in _TABLE.items():
        for token in block.split():
            group, elem = token.split(",")
            tag = (int(group, 16) << 16) | int(elem, 16)
            rules[tag] = ProfileRule(tag, keyword_for_tag(tag) or "", _RESOLVE[standard], standard)
    return tuple(sorted(rules.values(), key=lambda r: r.tag))


BASIC_PROFILE: tuple[ProfileRule, ...] = _build_profile()
"""Table E.1-1 (Basic Profile), one rule per attribute, sorted by tag."""

_RULES: dict[int, ProfileRule] = {r.tag: r for r in BASIC_PROFILE}
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DS": "0", "DT": "19000101000000",
    "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED", "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED",
    "TM": "000000", "UC": "ANONYMIZED", "UT": "ANONYMIZED", "UR": "", "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0,
    "SV": 0, "UL": 0, "US": 0, "UV": 0, "AT": 0,
}
_BLANK_VRS = frozenset({"PN", "DA", "DT", "TM"})  # safety net: no name, date or time survives
_METHOD = "PS3.15 Annex E Basic Profile (synthrelease)"  # LO: at most 64 characters


class Deidentifier:
    """Applies ``BASIC_PROFILE``; UIDs map to new ``2.25`` UIDs derived from ``uid_salt`` (same input, same UID)."""

    def __init__(self, uid_salt: bytes) -> None:
        if not uid_salt:
            raise ValueError("uid_salt must be non-empty (a secret kept in the workspace)")
        self._salt = bytes(uid_salt).hex()
        self._uids: dict[str, str] = {}

    def new_uid(self, uid: str) -> str:
        """The replacement of ``uid``; well-known DICOM UIDs (SOP classes, transfer syntaxes) are kept."""
        uid = str(uid).strip().rstrip("\x00")
        if not uid or uid in UID_dictionary:
            return uid
        if uid not in self._uids:
            self._uids[uid] = derived_uid(self._salt, uid)
        return self._uids[uid]

    def deidentify(self, ds: Dataset) -> Dataset:
        """A de-identified deep copy of ``ds`` (``ds`` itself is not changed)."""
        out = copy.deepcopy(ds)
        self._process(out)
        meta = getattr(out, "file_meta", None)
        if meta is not None:
            for tag in [e.tag for e in meta if e.tag.element >= 0x0016]:  # AE titles, private information
                del meta[tag]
            if "SOPInstanceUID" in out:
                meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = _METHOD
        code = Dataset()
        code.CodeValue = "113100"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        out.DeidentificationMethodCodeSequence = Sequence([code])
        out.LongitudinalTemporalInformationModified = "REMOVED"
        return out

    # -- internals ------------------------------------------------------------------------------------------------
    def _process(self, ds: Dataset) -> None:
        for tag in list(ds.keys()):
            elem = ds[tag]
            if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000):
                del ds[tag]
                continue
            rule = _RULES.get(int(tag))
            if rule is not None and rule.action == "X":
                del ds[tag]
                continue
            if rule is not None and rule.action != "K":
                self._apply(elem, rule.action)
            elif elem.VR == "UI":  # safety nets for attributes the table does not name
                self._apply(elem, "U")
            elif elem.VR in _BLANK_VRS and not elem.is_empty:
                elem.value = None
            if elem.VR == "SQ":
                for item in elem.value or []:
                    self._process(item)

    def _apply(self, elem: DataElement, action: Action) -> None:
        if elem.VR == "SQ":
            if action in ("Z", "D"):
                elem.value = Sequence([])
            return  # "U" on a sequence: the recursion replaces every UID inside
        if action == "Z":
            elem.value = None
        elif action == "U" or elem.VR == "UI":
            if elem.is_empty:
                return
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            mapped = [self.new_uid(v) for v in values]
            elem.value = mapped if len(mapped) > 1 else mapped[0]
        elif action == "D":
            elem.value = _DUMMY.get(elem.VR, b"")


# Technical acquisition attributes that the profile keeps and that describe how (not whom) an image was made.
_SUMMARY_KEYWORDS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "BodyPartExamined",
    "KVP", "XRayTubeCurrent", "Exposure", "ExposureTime", "SliceThickness", "SpacingBetweenSlices",
    "ConvolutionKernel", "ReconstructionDiameter", "FilterType", "RescaleType", "MagneticFieldStrength",
    "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "EchoTrainLength", "ScanningSequence",
    "SequenceVariant", "MRAcquisitionType", "ImagedNucleus", "ImagingFrequency", "PixelSpacing", "Rows", "Columns",
    "BitsStored", "PhotometricInterpretation", "PatientIdentityRemoved", "DeidentificationMethod",
)


def _json_value(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        items = [_json_value(v) for v in value]
        return None if any(v is None for v in items) else items
    if isinstance(value, PersonName | bytes | Dataset | Sequence):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value).strip()


def header_summary(ds: Dataset) -> dict[str, Any]:
    """JSON-safe technical attributes of a **de-identified** dataset (a whitelist; no identifier, name or date).

    Raises ``ValueError`` when ``ds`` is not marked de-identified, so raw headers cannot slip in by mistake.
    """
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        raise ValueError("header_summary needs a de-identified dataset (run Deidentifier.deidentify first)")
    out: dict[str, Any] = {}
    for keyword in _SUMMARY_KEYWORDS:
        if keyword not in ds:
            continue
        elem = ds[keyword]
        if elem.is_empty or elem.VR in _BLANK_VRS or elem.VR == "SQ":
            continue
        value = _json_value(elem.value)
        if value not in (None, "", []):
            out[keyword] = value
    return out
