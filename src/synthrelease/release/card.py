"""The dataset card (``README.md``): what the package is, what it is for and not for, how it was made, what the
audit found, and the exact commands to verify it and train on it (nnU-Net, MONAI).

Written for the recipient, who has neither the workspace nor the steward at hand: every statement comes from the
package's own files (provenance, public report), so the card can be checked against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synthrelease.release.info import PackageInfo

__all__ = ["NNUNET_DATASET_ID", "render_card"]

NNUNET_DATASET_ID = 501  # any free id from 001 to 999; ids below 500 are used by public nnU-Net datasets


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _rules_table(report: Mapping[str, Any]) -> list[str]:
    rules = report.get("rules") or []
    if not rules:
        return ["The policy has no rules."]
    lines = ["| metric | rule | value | result | severity |", "|---|---|---|---|---|"]
    for r in rules:
        bound = r.get("threshold_metric") or _value(r.get("threshold"))
        if r.get("threshold_metric") and r.get("margin"):
            bound = f"{bound} {'+' if r['margin'] > 0 else '-'} {abs(r['margin']):g}"
        result = "pass" if r.get("passed") else ("warn" if r.get("severity") == "warn" else "FAIL")
        lines.append(f"| `{r.get('metric')}` | {r.get('op')} {bound} | {_value(r.get('value'))} | {result} | "
                     f"{r.get('severity')} |")
    return lines


def _generation(info: PackageInfo) -> list[str]:
    gen = info.generator
    rows = [("generator", gen.get("generator")), ("mode", gen.get("mode")), ("label maps", gen.get("mask_source")),
            ("mask generator", gen.get("mask_generator")), ("sampling seed", gen.get("seed")),
            ("sampler / steps", f"{_value(gen.get('sampler'))} / {_value(gen.get('steps'))}"),
            ("config sha256", gen.get("config_sha256")), ("checkpoint sha256", gen.get("checkpoint_sha256")),
            ("synthrelease (sampling)", gen.get("synthrelease_version")),
            ("synthetic set sha256", (info.provenance.get("synthetic_set") or {}).get("sha256"))]
    return ["| | |", "|---|---|", *[f"| {k} | {_value(v)} |" for k, v in rows if v is not None]]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _history(info: PackageInfo) -> list[str]:
    """How often these exact files were audited: a gate re-run until it passed shows as gating audits that failed."""
    h, seed = info.history, (info.provenance.get("audit") or {}).get("seed")
    n, gating, failed = int(h.get("n_audits", 0)), int(h.get("n_gating", 0)), int(h.get("n_failed", 0))
    return [f"Audit history: the steward's audit log records {_plural(n, 'audit')} of exactly these files (same "
            f"sha256), {gating} gating and {n - gating} exploratory; {failed} of them failed. "
            f"A gating audit's seed ({_value(seed)} here) is derived from the set's and the policy's sha256, so "
            "re-running the gate draws the same seed, not a luckier one; exploratory audits (an explicit seed, or "
            "a tuning split in place of the holdout) cannot clear a set for release. `provenance.json` holds these "
            "counts under `audit.history`."]


def render_card(info: PackageInfo) -> str:
    """The package's README.md."""
    report, policy, data = info.report, info.policy, info.report.get("data") or {}
    labels = ", ".join(f"{v} {k}" for k, v in sorted(info.labels.items(), key=lambda x: x[1]))
    name, nid = info.name, f"{NNUNET_DATASET_ID:03d}"
    folder = f"Dataset{nid}_{''.join(c for c in name.title() if c.isalnum()) or 'Synthetic'}"
    lines = [
        f"# {name} (version {info.version})",
        "",
        f"A **synthetic** {info.modality} dataset for 3D segmentation: {len(info.case_ids)} cases, each with image "
        f"channel(s) {', '.join(info.channels)} and a label map ({labels}). No case is a patient: every volume was "
        f"sampled from a generative model. Licence: {info.license} ({info.license_url}).",
        "",
        "## Intended uses and limits",
        "",
        "- For: training, benchmarking and teaching segmentation methods (nnU-Net, MONAI) without access to "
        "patient data; pre-training before fine-tuning on real data.",
        "- Not for: diagnosis, treatment or any clinical decision; conclusions about real patients or populations.",
        "- Limits: synthetic images approximate the training cohort only. Rare anatomy, scanners and pathology "
        "outside it are missing or distorted. Validate every model on real data.",
        "",
        "## How it was generated",
        "",
        *_generation(info),
        "",
        f"Trained on {data.get('n_train', '?')} patients; {data.get('n_holdout', '?')} further patients were held "
        f"out as the audit's privacy baseline. Grid (z, y, x): {data.get('grid_zyx')}. `provenance.json` holds "
        "these facts in machine-readable form.",
        "",
        "## Audit",
        "",
        f"Verdict **{str(report.get('verdict')).upper()}** under policy `{policy.get('name')}` "
        f"(sha256 `{policy.get('sha256')}`): {policy.get('description', '')}",
        "",
        *_rules_table(report),
        "",
        *_history(info),
        "",
        f"Privacy checks that ran: {', '.join(f'`{c}`' for c in info.privacy_checks) or 'none'}. Export searched "
        "every file name and content (decompressed too) for the identifiers of the real cohort and found none.",
        "",
        "`audit/report.json` and `audit/report.html` are the public audit (every metric and rule; the evidence, "
        "which is derived from patient data, is withheld); `audit/policy.toml` is the policy file it was judged by.",
        "",
        "## Verify",
        "",
        "```bash",
        f"synthrelease verify {name} --key PUBLISHER.pub      # every hash, the signature, the audit, the headers",
        "sha256sum -c MANIFEST.sha256                         # the hashes alone, without synthrelease",
        "base64 -d MANIFEST.sig > /tmp/sig.bin && openssl pkeyutl -verify -pubin -inkey PUBLISHER.pub -rawin "
        "-in MANIFEST.sha256 -sigfile /tmp/sig.bin",
        "```",
        "",
        "`MANIFEST.sha256` lists the sha256 of every other file; `MANIFEST.sig` (when present) is the publisher's "
        "Ed25519 signature of the manifest, base64-encoded. Get the public key from the publisher, not from the "
        "package.",
        "",
        "## Train with nnU-Net v2",
        "",
        f"The folder is an nnU-Net raw dataset as it is. Link (or copy) it under `nnUNet_raw` with an id, here {nid}:",
        "",
        "```bash",
        "export nnUNet_raw=$HOME/nnUNet_raw nnUNet_preprocessed=$HOME/nnUNet_preprocessed "
        "nnUNet_results=$HOME/nnUNet_results",
        f'mkdir -p "$nnUNet_raw" && ln -s "$(realpath {name})" "$nnUNet_raw/{folder}"',
        f"nnUNetv2_plan_and_preprocess -d {nid} --verify_dataset_integrity",
        f"nnUNetv2_train {nid} 3d_fullres 0",
        "```",
        "",
        "## Load with MONAI",
        "",
        "```python",
        "from monai.data import Dataset",
        "from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged",
        "from synthrelease.release import load",
        "",
        f'items = load("{name}")   # verifies first; [{{"image": path or [paths per channel], "label": path, '
        '"case_id": ...}]',
        'ds = Dataset(items, Compose([LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", '
        '"label"])]))',
        "```",
        "",
        "## Files",
        "",
        "```",
        "dataset.json imagesTr/ labelsTr/   nnU-Net raw layout",
        "README.md                          this card",
        "croissant.json                     Croissant 1.1 metadata with RAI fields and the sha256 of every file",
        "audit/report.json report.html policy.toml",
        "provenance.json                    generator, seeds, config and checkpoint hashes, audit policy and verdict",
        "MANIFEST.sha256 MANIFEST.sig       every file's sha256; the Ed25519 signature of the manifest",
        "```",
        "",
        f"Exported by synthrelease {(info.provenance.get('tool') or {}).get('version', '')}.",
        "",
    ]
    return "\n".join(lines)
