"""``utility.segmentation``: can a segmentation model trained on the synthetic set replace one trained on real data?

The study's protocol: train one model per arm, ``real`` (the training split), ``synthetic`` (the set) and
``real+synthetic`` (both), and test every model on the real holdout, which no generator and no arm has seen. Every
arm gets the same budget (``utility_steps`` optimisation steps of the same batch and patch size), the same seed
(same initial weights and sampling stream) and the same engine (``utility_engine``: nnU-Net v2 with a CUDA GPU,
else the built-in MONAI U-Net). Before training, every case is brought to the model range ``[-1, 1]``
(``AuditContext.model_image``): real cases are stored there, sampled sets in HU / MR scale.

Headline: ``dice_ratio`` = Dice of the synthetic arm / Dice of the real arm (mean over foreground classes); 1 means
the set is as useful as the real patients, the default policy asks for at least 0.7. Beside it: Dice per arm, per
class and per region (BraTS WT/TC/ET), HD95 in mm, bootstrap intervals over holdout cases, per-case tables, pooled
Dice and a box plot (``segmentation.evaluate`` defines the conventions for empty structures).

Work files (model-range copies of the cohorts, predictions) go to a folder under the workspace's ``cache/utility``
and are deleted at the end. The real arm's model depends only on the training split, engine and budget: it is kept
in ``cache/utility/models`` and reused by the audit of the next set.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease import __version__
from synthrelease.checks.base import Check, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.utility.summary import arm_key, summarize
from synthrelease.data.nifti import read_nifti
from synthrelease.data.nnunet import dataset_json, write_nnunet_case
from synthrelease.errors import InputError
from synthrelease.segmentation import CaseScores, SegmentationConfig, SegmentationEngine, create_engine, score_case
from synthrelease.segmentation.base import Progress

__all__ = ["ARMS", "SegmentationUtilityCheck", "check_arms"]

ARMS: dict[str, tuple[str, ...]] = {"real": ("train",), "synthetic": ("synthetic",),
                                    "real+synthetic": ("train", "synthetic")}


def check_arms(arms: Sequence[str]) -> tuple[str, ...]:
    """The arms, validated (unknown or repeated names are an input error)."""
    out = tuple(a.strip() for a in arms if a.strip())
    bad = [a for a in out if a not in ARMS]
    if bad or not out or len(set(out)) != len(out):
        raise InputError(f"utility arms {list(arms)} are not distinct names of {list(ARMS)}",
                         fix="choose among real, synthetic and real+synthetic")
    return out


def _write_model_range(ctx: AuditContext, which: str, root: Path) -> str:
    """The cohort on the model range as an nnU-Net raw folder; returns a digest of what was written."""
    cohort = ctx.cohort(which)
    digest = hashlib.sha256()
    for i, case in enumerate(cohort):
        image = np.ascontiguousarray(ctx.model_image(case), dtype=np.float32)
        write_nnunet_case(case.with_(image=image), root)
        for part in (case.case_id.encode(), image.tobytes(), case.labels.tobytes(),
                     json.dumps(case.geometry.to_dict()).encode()):
            digest.update(part)
        ctx.progress(f"utility: write {which}", i + 1, len(cohort))
    data = dataset_json(name=which, schema=cohort.schema, modality=cohort.modality,
                        channel_names=cohort.channel_names, n_cases=len(cohort))
    (root / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    return digest.hexdigest()


def _real_model(engine: SegmentationEngine, train_dir: Path, digest: str, config: SegmentationConfig,
                cache: Path) -> tuple[Path, bool]:
    """The real arm's model from the cache, or trained and stored there (atomically); ``True`` when reused."""
    key = hashlib.sha256(json.dumps({"engine": engine.name, "config": config.to_dict(), "data": digest,
                                     "version": __version__}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache / f"{engine.name}-real-{key}"
    if (path / "model.json").is_file():
        return path, True
    tmp = cache / f".{path.name}.{secrets.token_hex(4)}.partial"
    try:
        engine.train([train_dir], tmp, config)
        os.replace(tmp, path)
    except OSError:
        if not (path / "model.json").is_file():  # not a concurrent audit that stored the same model first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path, False


def _arm_progress(ctx: AuditContext, arm: str) -> Progress:
    def report(task: str, done: int, total: int) -> None:
        ctx.progress(f"utility {arm}: {task}", done, total)

    return report


def _score(pred_dir: Path, ctx: AuditContext) -> list[CaseScores]:
    rows = []
    for case in ctx.holdout:
        pred, _ = read_nifti(pred_dir / f"{case.case_id}.nii.gz")
        rows.append(score_case(case.case_id, pred, case.labels, case.schema, case.geometry.spacing[::-1]))
    return rows


@register
class SegmentationUtilityCheck(Check):
    name = "utility.segmentation"
    description = ("segmentation models trained on real, synthetic and both, tested on the real holdout: "
                   "Dice per class and region, HD95, synthetic / real Dice ratio")

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        settings = ctx.settings
        arms = check_arms(settings.utility_arms)
        seed = int(ctx.rng("utility/seed").integers(2**31))
        config = SegmentationConfig(steps=settings.utility_steps, seed=seed, network=settings.utility_network,
                                    cpu_bf16=settings.utility_cpu_bf16)
        cache = ctx.cache_dir / "utility"
        work = cache / f"run-{secrets.token_hex(4)}"
        scores: dict[str, list[CaseScores]] = {}
        timing: dict[str, float] = {}
        reused = False
        try:
            needed = ["holdout", *dict.fromkeys(w for a in arms for w in ARMS[a])]
            digests = {w: _write_model_range(ctx, w, work / w) for w in needed}
            for arm in arms:
                start = time.perf_counter()
                engine = create_engine(settings.utility_engine, _arm_progress(ctx, arm))
                if arm == "real":
                    model, reused = _real_model(engine, work / "train", digests["train"], config, cache / "models")
                else:
                    model = engine.train([work / w for w in ARMS[arm]], work / f"model-{arm_key(arm)}", config)
                pred = engine.predict(model, work / "holdout", work / f"pred-{arm_key(arm)}")
                scores[arm] = _score(pred, ctx)
                timing[arm] = round(time.perf_counter() - start, 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        metrics, evidence = summarize(scores, ctx.holdout.schema, seed=seed, n_boot=settings.n_boot)
        evidence = {"engine": engine.name, "arms": list(arms), "seed": seed, "config": config.to_dict(),
                    "n_cases": {"holdout": len(ctx.holdout),
                                **{a: sum(len(ctx.cohort(w)) for w in ARMS[a]) for a in arms}},
                    "seconds_per_arm": timing, "real_model_reused": reused, **evidence,
                    "figures": [self._figure(ctx, scores, evidence["structures"])], "contains_real_data": True}
        return metrics, evidence

    @staticmethod
    def _figure(ctx: AuditContext, scores: dict[str, list[CaseScores]], names: list[str]) -> dict[str, Any]:
        from synthrelease.checks.utility.plots import dice_boxplot

        tables = {arm: np.array([[r.dice[s] for s in names] for r in rows], dtype=float)
                  for arm, rows in scores.items()}
        path = dice_boxplot(ctx.figure_dir() / "utility_dice.png", tables, names)
        return {"figure": f"figures/{path.name}", "contains_real_data": True}
