"""``croissant.json``: Croissant 1.1 JSON-LD metadata with the Responsible-AI (RAI 1.0) fields.

Every file of the package (except ``croissant.json`` and the manifest pair, which cannot list themselves) is a
``FileObject`` with its sha256 and size; ``FileSet`` s describe the image and label folders; the ``cases`` record
set lists each case's channel files and label map inline, so a Croissant reader gets the case table without
parsing file names, and ``labels`` enumerates the label values. The RAI fields are filled from the sampling
provenance and the audit, so a catalogue shows how the data was made and why it may be shared.
Validated with ``mlcroissant`` before the package is written (offline: only the metadata is read).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthrelease.release.info import PackageInfo
from synthrelease.release.manifest import sha256_file

__all__ = ["CONFORMS_TO", "CONTEXT", "CroissantInvalid", "build_croissant", "dumps", "validate_croissant"]

CONFORMS_TO = ["http://mlcommons.org/croissant/1.1", "http://mlcommons.org/croissant/RAI/1.0"]
# The 1.1 specification's context (Appendix 1), with https://schema.org/ as vocabulary as mlcroissant and the
# published 1.1 datasets use it, plus the 1.0 terms mlcroissant still expects (path, repeated, replace, samplingRate).
CONTEXT: dict[str, Any] = {
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/", "annotation": "cr:annotation", "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs", "column": "cr:column", "conformsTo": "dct:conformsTo", "containedIn": "cr:containedIn",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"},
    "excludes": "cr:excludes", "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes",
    "isArray": "cr:isArray", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "readLines": "cr:readLines",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "samplingRate": "cr:samplingRate", "sdVersion": "cr:sdVersion",
    "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
    "unArchive": "cr:unArchive", "value": "cr:value",
}
_FORMATS = {".nii.gz": "application/gzip", ".json": "application/json", ".md": "text/markdown",
            ".html": "text/html", ".toml": "application/toml"}


class CroissantInvalid(ValueError):
    """mlcroissant found errors in the metadata (the message lists them)."""


def _format(rel: str) -> str:
    return next((fmt for suffix, fmt in _FORMATS.items() if rel.endswith(suffix)), "application/octet-stream")


def _file_object(root: Path, rel: str) -> dict[str, Any]:
    path = root / rel
    return {"@type": "cr:FileObject", "@id": rel, "name": rel, "contentUrl": rel, "encodingFormat": _format(rel),
            "contentSize": f"{path.stat().st_size} B", "sha256": sha256_file(path)}


def _field(record_set: str, name: str, data_type: str | list[str], description: str) -> dict[str, Any]:
    return {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name, "dataType": data_type,
            "description": description}


def _cases(info: PackageInfo) -> dict[str, Any]:
    fields = [_field("cases", "case_id", "sc:Text", "synthetic case id (never a patient's)")]
    fields += [_field("cases", f"image_{i:04d}", "sc:Text", f"path of channel {i} ({name}), NIfTI")
               for i, name in enumerate(info.channels)]
    fields.append(_field("cases", "label", "sc:Text", "path of the label map (NIfTI, values as in the labels set)"))
    rows = []
    for case in info.case_ids:
        row = {"cases/case_id": case, "cases/label": info.label_path(case)}
        row.update({f"cases/image_{i:04d}": p for i, p in enumerate(info.image_paths(case))})
        rows.append(row)
    return {"@type": "cr:RecordSet", "@id": "cases", "name": "cases", "key": {"@id": "cases/case_id"},
            "description": "One record per synthetic case: its image channels and label map (nnU-Net raw layout).",
            "field": fields, "data": rows}


def _labels(info: PackageInfo) -> dict[str, Any]:
    return {"@type": "cr:RecordSet", "@id": "labels", "name": "labels", "key": {"@id": "labels/value"},
            "description": "Values of the label maps.",
            "field": [_field("labels", "value", "sc:Integer", "voxel value"),
                      _field("labels", "name", "sc:Text", "structure")],
            "data": [{"labels/value": v, "labels/name": k} for k, v in sorted(info.labels.items(), key=lambda x: x[1])]}


def _rai(info: PackageInfo) -> dict[str, str]:
    gen, policy, data = info.generator, info.policy, info.report.get("data") or {}
    made = (f"Synthetic: every case was sampled from the {gen.get('generator', 'unknown')} generator "
            f"(mode {gen.get('mode', 'n/a')}, label maps {gen.get('mask_source', 'n/a')}, seed {gen.get('seed')}) "
            f"trained on {data.get('n_train', '?')} protected patient cases that never leave the hospital; "
            f"{data.get('n_holdout', '?')} further patients were held out as the audit's privacy baseline.")
    return {
        "rai:dataCollection": made,
        "rai:dataCollectionType": "Others: generated by a generative model (synthetic data)",
        "rai:dataPreprocessingProtocol": (
            f"Real cases were de-identified, resampled to one grid (z, y, x {data.get('grid_zyx')}) and "
            "intensity-normalized before training; samples were mapped back to "
            f"{'Hounsfield units' if info.modality == 'CT' else 'the cohort MR intensity scale'}, label maps cleaned."),
        "rai:dataLimitations": (
            "Synthetic images approximate the training cohort only: small or rare structures, scanner variety and "
            "pathology outside that cohort are missing or distorted. Not validated for clinical use; evaluate models "
            "trained on it on real data before any conclusion."),
        "rai:dataBiases": (
            f"Inherits the demographic, scanner and protocol biases of the {data.get('n_train', '?')} training "
            "patients, and may under-represent their rare cases (generators favour the common)."),
        "rai:personalSensitiveInformation": (
            f"None intended: no case is a patient. The audit under policy {policy.get('name')!r} (verdict "
            f"{info.report.get('verdict')}) ran the privacy checks: {', '.join(info.privacy_checks) or 'none'}. "
            "Export searched every file name and content (decompressed too) for the identifiers of the real cohort "
            "and found none."),
        "rai:dataUseCases": (
            f"Training and benchmarking 3D segmentation of {', '.join(k for k in info.labels if k != 'background')} "
            f"on {info.modality} ({', '.join(info.channels)}) with nnU-Net or MONAI; method development and teaching. "
            "Out of scope: diagnosis, treatment decisions, or any claim about real patients."),
        "rai:dataSocialImpact": "Lets teams outside the hospital develop models without access to patient data.",
        "rai:dataReleaseMaintenancePlan": "A fixed release: any change is a new version with a new signed manifest.",
    }


def build_croissant(root: Path, info: PackageInfo, files: list[str], *, date: str) -> dict[str, Any]:
    """The Croissant document of the package folder ``root``; ``files`` are the package paths it lists."""
    gen = info.generator
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": info.name,
        "description": (f"Synthetic {info.modality} dataset for segmentation: {len(info.case_ids)} cases (images and "
                        f"label maps) sampled from the {gen.get('generator', 'unknown')} generator, released after "
                        f"an audit under policy {info.policy.get('name')!r} (verdict {info.report.get('verdict')}). "
                        "nnU-Net raw layout."),
        "version": info.version,
        "license": info.license_url,
        "datePublished": date,
        "citeAs": f"@misc{{{info.name},title={{{info.name} (synthetic, version {info.version})}},year={{{date[:4]}}}}}",
        "keywords": ["synthetic data", "medical imaging", info.modality, "segmentation", "nnU-Net"],
        **_rai(info),
        "distribution": [
            *[_file_object(root, rel) for rel in files],
            {"@type": "cr:FileSet", "@id": "images", "name": "images", "encodingFormat": "application/gzip",
             "includes": "imagesTr/*.nii.gz", "description": "image channels, <case>_<channel 4 digits>.nii.gz"},
            {"@type": "cr:FileSet", "@id": "label-maps", "name": "label-maps", "encodingFormat": "application/gzip",
             "includes": "labelsTr/*.nii.gz", "description": "label maps, <case>.nii.gz"},
        ],
        "recordSet": [_cases(info), _labels(info)],
    }


def validate_croissant(path: Path) -> list[str]:
    """mlcroissant's warnings for the file at ``path``; ``CroissantInvalid`` on errors. Reads no data, no network."""
    import mlcroissant as mlc
    from absl import logging as absl_logging

    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # warnings are returned, not printed
    try:
        dataset = mlc.Dataset(jsonld=Path(path))
    except mlc.ValidationError as exc:
        raise CroissantInvalid(str(exc).replace("\n", " ")) from None
    finally:
        absl_logging.set_verbosity(previous)
    return sorted(dataset.metadata.ctx.issues.warnings)


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
