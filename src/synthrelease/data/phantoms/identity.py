"""Fake patient identities planted into phantom files, so that de-identification can be tested.

Everything here is invented; values look like real PHI (names, record numbers, dates, an institution) so that a
byte search of a workspace for them proves that none survived ingest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["FakeIdentity", "make_identity"]

_GIVEN = ["JANE", "JOHN", "MARIA", "AHMED", "WEI", "OLGA", "PEDRO", "FATIMA", "HANS", "YUKI", "AMARA", "LIAM"]
_FAMILY = ["DOE", "ROE", "SILVA", "MUELLER", "NAKAMURA", "OKAFOR", "KOWALSKI", "DUBOIS", "HANSEN", "ROSSI"]
_PHYSICIANS = ["HOUSE^GREGORY", "GREY^MEREDITH", "KILDARE^JAMES", "QUINCY^MICHAEL"]
_INSTITUTIONS = ["SAINT EXAMPLE GENERAL HOSPITAL", "NORTHWIND UNIVERSITY MEDICAL CENTER", "LAKESIDE CANCER INSTITUTE"]


@dataclass(frozen=True)
class FakeIdentity:
    """Invented identifiers for one phantom patient (DICOM spellings)."""

    patient_name: str  # PN, e.g. "DOE^JANE"
    patient_id: str  # medical record number, e.g. "MRN40312345"
    birth_date: str  # YYYYMMDD
    sex: str  # "F" | "M"
    accession_number: str
    institution: str
    referring_physician: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    station_name: str
    private_note: str  # stored in a private tag: identifiers hidden where naive tools do not look

    def planted_strings(self) -> list[str]:
        """Strings that must not appear anywhere in a workspace after ingest."""
        family, given = self.patient_name.split("^")
        return [
            self.patient_name, family + " " + given, self.patient_id, self.birth_date, self.accession_number,
            self.institution, self.referring_physician, self.station_name, self.private_note,
        ]

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def make_identity(index: int, seed: int) -> FakeIdentity:
    """A deterministic fake identity for phantom patient ``index`` of the cohort made with ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0x1D]))
    family = str(rng.choice(_FAMILY))
    given = str(rng.choice(_GIVEN))
    mrn = f"MRN{seed % 100:02d}{index:03d}{int(rng.integers(100, 1000))}"
    year = int(rng.integers(1938, 1995))
    birth = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    study = f"{int(rng.integers(2012, 2024))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return FakeIdentity(
        patient_name=f"{family}^{given}",
        patient_id=mrn,
        birth_date=birth,
        sex=str(rng.choice(["F", "M"])),
        accession_number=f"ACC{int(rng.integers(10**8, 10**9))}",
        institution=str(rng.choice(_INSTITUTIONS)),
        referring_physician=str(rng.choice(_PHYSICIANS)),
        study_date=study,
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
        station_name=f"CTSTATION{int(rng.integers(10, 99))}",
        private_note=f"PATIENT {family} {given} {mrn} DOB {birth}",
    )
