"""Prepare a TCIA head & neck download for ``synthrelease ingest``: one planning CT series with one RTSTRUCT each.

``ingest --layout dicom`` takes every CT series it finds and wants exactly one RTSTRUCT (or SEG) for each. A TCIA
download (NBIA Data Retriever: ``<collection>/<patient>/<study>/<series>/*.dcm``) also holds diagnostic CTs without
structures, PET series, RT plans and doses, and sometimes several structure sets for one CT. This script keeps,
for every RTSTRUCT that references a CT series of the download, that series and the structure set (when several
reference one series: the one with most ROIs the ROI map labels, then the latest), and links them (or copies them,
``--copy``) into ``DST/case-0001/``, ``DST/case-0002/``, ... Folder names carry no identifier; headers are left
as they are (ingest de-identifies them). Nothing is written under SRC.

    python examples/hnscc_ct/select_rt_series.py SRC DST --roi-map examples/hnscc_ct/roi_map.txt
    python examples/hnscc_ct/select_rt_series.py SRC --list-rois --roi-map examples/hnscc_ct/roi_map.txt

``--list-rois`` prints every ROI name of the selected structure sets with its count and the label the map gives
it (``-``: ignored), to check the map against a collection before ingesting.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from synthrelease.data.dicom.rtstruct import match_roi, parse_roi_map, referenced_series_uids

SKIP_SUFFIXES = {".json", ".txt", ".md", ".csv", ".xml", ".png", ".jpg", ".zip", ".tcia"}
RoiMap = list[tuple[int, str]]


@dataclass(frozen=True)
class StructureSet:
    path: Path
    series: frozenset[str]
    roi_names: tuple[str, ...]
    when: str  # StructureSetDate + StructureSetTime: the latest wins a tie


def read_roi_map(path: Path) -> RoiMap:
    """A map file as in roi_map.txt: comment lines start with '#', entries end with ';'."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    return parse_roi_map("".join(ln.strip() for ln in lines))


def label_of(name: str, roi_map: RoiMap) -> int | None:
    """The label an ROI is painted with (the last matching entry), or None."""
    hits = match_roi(name, roi_map)
    return roi_map[hits[-1]][0] if hits else None


def scan(src: Path) -> tuple[dict[str, list[Path]], list[StructureSet]]:
    """CT series (SeriesInstanceUID -> files) and structure sets found under ``src`` (headers only)."""
    series: dict[str, list[Path]] = defaultdict(list)
    structures: list[StructureSet] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        if path.suffix.lower() in SKIP_SUFFIXES or path.name.startswith(".") or path.name == "DICOMDIR":
            continue
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        modality = str(ds.get("Modality", "")).upper()
        if modality == "CT":
            series[str(ds.get("SeriesInstanceUID", ""))].append(path)
        elif modality == "RTSTRUCT":
            names = tuple(str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", []))
            when = f"{ds.get('StructureSetDate', '')}{ds.get('StructureSetTime', '')}"
            structures.append(StructureSet(path, frozenset(referenced_series_uids(ds)), names, when))
    return series, structures


def select(series: dict[str, list[Path]], structures: list[StructureSet],
           roi_map: RoiMap | None) -> dict[str, StructureSet]:
    """CT series UID -> its chosen structure set (most labelled ROIs, then the latest, then the first path).
    Structure sets that reference no CT series of the download, or several, are left out."""
    def score(s: StructureSet) -> tuple[int, str]:
        labelled = sum(label_of(n, roi_map) is not None for n in s.roi_names) if roi_map else 0
        return labelled, s.when

    chosen: dict[str, StructureSet] = {}
    for s in sorted(structures, key=lambda s: str(s.path)):
        present = s.series & series.keys()
        if len(present) != 1:
            continue
        uid = next(iter(present))
        if uid not in chosen or score(s) > score(chosen[uid]):
            chosen[uid] = s
    return chosen


def link_cases(series: dict[str, list[Path]], chosen: dict[str, StructureSet], dst: Path, copy: bool) -> int:
    if dst.exists():
        raise SystemExit(f"{dst}: already exists; give a new folder")
    put = shutil.copy2 if copy else (lambda a, b: Path(b).symlink_to(Path(a).resolve()))
    for i, uid in enumerate(sorted(chosen, key=lambda u: str(chosen[u].path)), start=1):
        case = dst / f"case-{i:04d}"
        (case / "image").mkdir(parents=True)
        for j, path in enumerate(sorted(series[uid]), start=1):
            put(path, case / "image" / f"{j:05d}.dcm")
        put(chosen[uid].path, case / "rtstruct.dcm")
    return len(chosen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="the downloaded collection (any folder tree of DICOM files)")
    p.add_argument("dst", type=Path, nargs="?", help="a new folder for the selected cases")
    p.add_argument("--roi-map", type=Path, default=None, help="roi_map.txt: to rank structure sets, --list-rois")
    p.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    p.add_argument("--list-rois", action="store_true", help="print the ROI names of the selected structure sets")
    args = p.parse_args(argv)
    if args.dst is None and not args.list_rois:
        p.error("give DST, or --list-rois")
    roi_map = read_roi_map(args.roi_map) if args.roi_map else None
    series, structures = scan(args.src)
    chosen = select(series, structures, roi_map)
    print(f"{len(series)} CT series, {len(structures)} structure sets; {len(chosen)} CT series have one "
          f"({len(series) - len(chosen)} without are left out)", file=sys.stderr)
    if args.list_rois:
        counts = Counter(n for s in chosen.values() for n in s.roi_names)
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower())):
            label = label_of(name, roi_map) if roi_map else None
            print(f"{n:6d}  {'-' if label is None else label:>3}  {name}")
    if args.dst is not None:
        n = link_cases(series, chosen, args.dst, args.copy)
        print(f"{n} cases in {args.dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
