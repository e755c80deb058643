"""``fidelity.radiomics``: do synthetic cases have the intensity, texture and shape statistics of real ones?

PyRadiomics features (``radiomics_params.yaml``, shipped with the package: first order, shape, GLCM, GLRLM, GLSZM on
the model range ``[-1, 1]`` with a fixed bin width) of each region of interest (each foreground label and ``tissue``,
``rois.roi_masks``), per image channel, compared between the synthetic set and the training set three ways:

- the study's measure: for each feature, |Pearson r| with the label (0 = train, 1 = synthetic) over the cases where
  the feature is present; the mean over features and the mean of the 10 largest;
- a classifier two-sample test: out-of-fold ROC AUC of a random forest told to separate the two sets (0.5: it
  cannot), with a bootstrap interval; missing features are imputed with the median and flagged by indicators, so a
  generator whose tumours are too small to measure is told apart by that too;
- the Frechet Radiomics Distance: features z-scored with the training mean and deviation, Gaussians fitted to both
  sets, Frechet distance between them.

The same measures of the holdout (real patients the generator never saw) against train are the noise floor at this
sample size: |r| of unrelated samples is not 0 and the FRD of two finite samples of one population is not 0 either.

Real-case features are cached in the workspace (``cache_dir/radiomics``, one JSON file per case) under the SHA-256 of
everything they depend on (model-range image, labels, spacing, channels, label schema, parameter file, pyradiomics
version), so the audit of a second synthetic set extracts only its own cases. Synthetic features are not cached: a set
is usually audited once, and the cache then stays one file per real case however many sets are audited.

Extraction (``synthrelease.data.radiomics.extract_case``) runs in ``settings.workers`` processes, spawned (the parent
holds torch and ITK thread pools that a fork would copy mid-state); each task is one case's arrays and spacing, and
results are gathered by case index, so the features do not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.rois import TISSUE, roi_masks, roi_names
from synthrelease.checks.stats import auc_with_ci, frechet_distance
from synthrelease.data import radiomics as _radiomics
from synthrelease.data.radiomics import extract_case, extractors, init_worker, pyradiomics_version

__all__ = ["CACHE_VERSION", "PARAMS", "CohortFeatures", "RadiomicsCheck", "abs_correlations", "cache_key",
           "classifier_scores", "extract_case", "feature_matrix", "frd", "frechet_distance", "informative_columns",
           "radiomics_features", "standardize"]

PARAMS = Path(__file__).with_name("radiomics_params.yaml")
# part of every cache key: bump when the regions, the body mask or the feature naming change
CACHE_VERSION = 1
COHORTS = ("train", "holdout", "synthetic")
REAL = ("train", "holdout")
MIN_CASES = 4  # per side: with fewer, a cross-validated classifier and a fitted covariance mean little
N_TREES = 200
TOP_K = 10
# regions whose shape features are left out: ``tissue`` is the body minus the labels, its outline is the body's (the
# label statistics compare volumes), and the quadratic diameter search over its large surface dominates extraction
SHAPELESS = frozenset({TISSUE})
COLOURS = {"train": "#1f77b4", "holdout": "#2ca02c", "synthetic": "#d62728"}

Row = dict[str, float]


# -- the workspace cache of real-case features ----------------------------------------------------------------------
def cache_key(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], channels: Sequence[str],
              schema: Mapping[str, int], params: bytes, version: str) -> str:
    """SHA-256 of everything a case's features depend on (the labels as uint8: schema values lie in 0..255, so the
    key does not change with the dtype a reader chose)."""
    h = hashlib.sha256()
    meta = {"cache": CACHE_VERSION, "image_shape": list(image.shape), "labels_shape": list(labels.shape),
            "spacing": [float(s) for s in spacing], "channels": list(channels), "schema": dict(schema),
            "pyradiomics": version}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(hashlib.sha256(params).digest())
    h.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _read_cached(path: Path) -> Row | None:
    """The cached features, or None when there are none or the file is unreadable (it is then re-extracted)."""
    try:
        data = json.loads(path.read_text())
        features = data["features"]
        return {str(k): float(v) for k, v in features.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cached(path: Path, features: Row) -> None:
    """Atomic: written beside the target and renamed, so a concurrent or interrupted audit never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"features": features}, sort_keys=True))
    os.replace(tmp, path)


# -- cohorts --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CohortFeatures:
    """Per case (cohort order): its id and features; ``from_cache``: how many came from the workspace cache."""

    case_ids: tuple[str, ...]
    rows: tuple[Row, ...]
    from_cache: int = 0


class _Runner:
    """Runs ``extract_case`` in-process (``workers`` <= 1) or in a process pool started at the first task, so an
    audit whose real features are all cached starts no process for them."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self.max_pending = 2 * self.workers if self.workers > 1 else 1
        self._pool: Executor | None = None

    def submit(self, *args: Any) -> Future[Row]:
        if self.workers == 1:
            fut: Future[Row] = Future()
            fut.set_result(extract_case(*args))  # this module's name, looked up at call time (tests patch it)
            return fut
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=init_worker)
        return self._pool.submit(_radiomics.extract_case, *args)

    def __enter__(self) -> _Runner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc is not None)


def _extract_cohort(ctx: AuditContext, which: str, runner: _Runner, cache: Path | None) -> CohortFeatures:
    params, params_bytes, version = str(PARAMS), PARAMS.read_bytes(), pyradiomics_version()
    cohort = ctx.cohort(which)
    total, channels = len(cohort), tuple(cohort.channel_names)
    ids: list[str] = []
    rows: list[Row | None] = []
    pending: dict[Future[Row], tuple[int, Path | None]] = {}
    done, cached = 0, 0

    def collect(futures: Sequence[Future[Row]]) -> None:
        nonlocal done
        for fut in futures:
            i, path = pending.pop(fut)
            rows[i] = row = fut.result()
            if path is not None:
                _write_cached(path, row)
            done += 1
            ctx.progress(f"radiomics {which}", done, total)

    for i, (case, image, body) in enumerate(ctx.model_cases(which)):
        ids.append(case.case_id)
        rows.append(None)
        path = None
        if cache is not None:
            key = cache_key(image, case.labels, case.geometry.spacing, channels, case.schema.labels, params_bytes,
                            version)
            path = cache / f"{key}.json"
            hit = _read_cached(path)
            if hit is not None:
                rows[i], cached, done = hit, cached + 1, done + 1
                ctx.progress(f"radiomics {which}", done, total)
                continue
        masks = roi_masks(case.labels, body, case.schema)
        pending[runner.submit(image, masks, case.geometry.spacing, channels, params, SHAPELESS)] = (i, path)
        while len(pending) >= runner.max_pending:  # bounded: only a few cases' arrays are in flight at once
            collect(list(wait(pending, return_when=FIRST_COMPLETED).done))
    collect(sorted(pending, key=lambda f: pending[f][0]))
    return CohortFeatures(tuple(ids), tuple(r if r is not None else {} for r in rows), cached)


def radiomics_features(ctx: AuditContext) -> dict[str, CohortFeatures]:
    """Features of train, holdout and synthetic (real ones through the workspace cache), memoized on the context.
    One runner serves the three cohorts, so a process pool is started at most once per audit."""

    def compute() -> dict[str, CohortFeatures]:
        cache = ctx.cache_dir / "radiomics"
        with _Runner(ctx.settings.workers) as runner:
            return {w: _extract_cohort(ctx, w, runner, cache if w in REAL else None) for w in COHORTS}

    return ctx.memo("radiomics/features", compute)


# -- statistics -----------------------------------------------------------------------------------------------------
def feature_matrix(rows: Sequence[Mapping[str, float]], columns: Sequence[str]) -> np.ndarray:
    """``(cases, columns)`` float64; a feature a case lacks (or a non-finite one) is NaN."""
    x = np.array([[row.get(c, np.nan) for c in columns] for row in rows], dtype=np.float64).reshape(len(rows),
                                                                                                   len(columns))
    x[~np.isfinite(x)] = np.nan
    return x


def informative_columns(x: np.ndarray) -> np.ndarray:
    """Boolean mask of columns with at least two distinct present values: a constant or all-missing feature cannot
    tell sets apart, and has no scale to standardize by."""
    keep = np.zeros(x.shape[1], dtype=bool)
    for j in range(x.shape[1]):
        v = x[:, j][~np.isnan(x[:, j])]
        keep[j] = v.size >= 2 and bool(v.min() < v.max())
    return keep


def abs_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|Pearson r| of each column of ``x`` with the 0/1 labels ``y``, over the rows where that column is present;
    NaN where it is undefined (fewer than two present rows of either label, or a constant column on them)."""
    y = np.asarray(y, dtype=np.float64)
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        ok = ~np.isnan(x[:, j])
        xs, ys = x[ok, j], y[ok]
        if min(int((ys == 0).sum()), int((ys == 1).sum())) < 2 or not xs.min() < xs.max():
            continue
        xc, yc = xs - xs.mean(), ys - ys.mean()
        out[j] = abs(float(xc @ yc) / float(np.sqrt((xc @ xc) * (yc @ yc))))
    return out


def _column_medians(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    med = fallback.astype(np.float64).copy()
    for j in range(x.shape[1]):
        v = x[:, j][~np.isnan(x[:, j])]
        if v.size:
            med[j] = float(np.median(v))
    return med


def standardize(sets: Sequence[np.ndarray], reference: np.ndarray) -> list[np.ndarray]:
    """Each set z-scored with the reference's mean and deviation (over present values), on the columns that vary in
    the reference; a missing value is replaced by its set's median of that feature (the reference's where the set
    has none), so a set's centre and spread come from the values it has."""
    keep = informative_columns(reference)
    ref = reference[:, keep]
    mean = np.array([float(np.mean(c[~np.isnan(c)])) for c in ref.T])
    std = np.array([float(np.std(c[~np.isnan(c)], ddof=1)) for c in ref.T])
    z_ref = (ref - mean) / std
    ref_median = _column_medians(z_ref, np.zeros(z_ref.shape[1]))
    out = []
    for s in sets:
        z = (s[:, keep] - mean) / std
        med = _column_medians(z, ref_median)
        out.append(np.where(np.isnan(z), med, z))
    return out


def frd(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet Radiomics Distance of ``features_a`` from the reference ``features_b`` (``(cases, features)``, NaN =
    missing): both z-scored with the reference (``standardize``), Gaussians fitted, ``frechet_distance``."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the FRD needs at least two cases per set, got {len(a)} and {len(b)}")
    za, zb = standardize([a, b], b)
    if za.shape[1] == 0:
        raise ValueError("no feature varies in the reference set")
    return frechet_distance(za.mean(axis=0), np.cov(za, rowvar=False), zb.mean(axis=0), np.cov(zb, rowvar=False))


def classifier_scores(x: np.ndarray, y: np.ndarray, seed: int, *, n_trees: int = N_TREES) -> tuple[np.ndarray, int]:
    """Out-of-fold P(label 1) of a random forest (median imputation with missing-value indicators, standardized,
    balanced class weights), stratified k-fold with k = min(5, smaller class); the scores and k."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, dtype=int)
    k = min(5, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        raise ValueError("the classifier needs at least two cases of each label")
    rng = np.random.default_rng(seed)
    cv_seed, forest_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
    model = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(),
                          RandomForestClassifier(n_estimators=n_trees, class_weight="balanced",
                                                 random_state=forest_seed, n_jobs=1))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=cv_seed)
    with warnings.catch_warnings():  # a feature missing in every training case of a fold is dropped there
        warnings.filterwarnings("ignore", message=".*[Ss]kipping features without any observed values.*")
        scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return np.asarray(scores, dtype=np.float64), k


# -- the check ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Comparison:
    """One set (synthetic or holdout) against train on the columns informative over both."""

    columns: list[str]
    abs_r: np.ndarray
    auc: tuple[float, float, float] | None
    folds: int


def _compare(ctx: AuditContext, x_train: np.ndarray, x_other: np.ndarray, columns: Sequence[str],
             salt: str) -> _Comparison:
    both = np.vstack([x_train, x_other])
    y = np.r_[np.zeros(len(x_train), dtype=int), np.ones(len(x_other), dtype=int)]
    keep = informative_columns(both)
    cols = [c for c, k in zip(columns, keep, strict=True) if k]
    abs_r = abs_correlations(both[:, keep], y)
    auc, folds = None, 0
    if keep.any() and min(len(x_train), len(x_other)) >= MIN_CASES:
        seeds = ctx.rng(f"radiomics/{salt}").integers(0, 2**31 - 1, size=2)
        scores, folds = classifier_scores(both[:, keep], y, int(seeds[0]))
        auc = auc_with_ci(scores[y == 1], scores[y == 0], seed=int(seeds[1]), n_boot=ctx.settings.n_boot)
    return _Comparison(cols, abs_r, auc, folds)


def _roi(column: str) -> str:
    return column.split("/", 1)[0]


def _per_roi_mean(comp: _Comparison, rois: Sequence[str]) -> dict[str, float]:
    out = {}
    for roi in rois:
        r = np.array([v for c, v in zip(comp.columns, comp.abs_r, strict=True) if _roi(c) == roi and np.isfinite(v)])
        if r.size:
            out[roi] = round(float(r.mean()), 4)
    return out


def _pca_figure(path: Path, z: Mapping[str, np.ndarray]) -> Path:
    """Scatter of the first two principal components of the z-scored features, fitted on the real cases."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="full").fit(np.vstack([z["train"], z["holdout"]]))
    fig = Figure(figsize=(4.6, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for which in COHORTS:
        p = pca.transform(z[which])
        ax.scatter(p[:, 0], p[:, 1], s=14, alpha=0.7, label=f"{which} ({len(p)})", color=COLOURS[which],
                   marker="x" if which == "synthetic" else "o")
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of real variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)")
    ax.set_title("radiomics features (z-scored on train)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


@register
class RadiomicsCheck(Check):
    name = "fidelity.radiomics"
    description = ("PyRadiomics features per region: |Pearson r| with the real/synthetic label, a classifier "
                   "two-sample test (AUC, 0.5 ideal) and the Frechet Radiomics Distance, holdout as the noise floor")

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        if len(ctx.train) < MIN_CASES or len(ctx.synthetic) < MIN_CASES:
            raise Skip(f"radiomics compares sets of at least {MIN_CASES} cases; train has {len(ctx.train)}, "
                       f"the synthetic set {len(ctx.synthetic)}")
        feats = radiomics_features(ctx)
        columns = sorted({k for f in feats.values() for row in f.rows for k in row})
        x = {w: feature_matrix(feats[w].rows, columns) for w in COHORTS}
        if not informative_columns(x["train"]).any():
            raise Skip("no radiomics feature varies across the training cases (every region too small for the "
                       "parameter file's minimumROISize / minimumROIDimensions, or identical cases)")
        syn = _compare(ctx, x["train"], x["synthetic"], columns, "classifier/synthetic")
        hold = _compare(ctx, x["train"], x["holdout"], columns, "classifier/holdout")
        r = syn.abs_r[np.isfinite(syn.abs_r)]
        if r.size == 0 or syn.auc is None:
            raise Skip("no radiomics feature is present in at least two training and two synthetic cases")
        r_hold = hold.abs_r[np.isfinite(hold.abs_r)]
        auc, lo, hi = syn.auc
        metrics = {
            "mean_abs_r": Metric(float(r.mean()), Direction.LOWER,
                                 "mean over features of |Pearson r| with the train (0) / synthetic (1) label"),
            "top10_abs_r": Metric(float(np.sort(r)[::-1][:TOP_K].mean()), Direction.LOWER,
                                  f"mean |Pearson r| of the {TOP_K} features that separate the sets most"),
            "classifier_auc": Metric(auc, Direction.LOWER,
                                     f"out-of-fold ROC AUC of a random forest telling synthetic from train "
                                     f"({syn.folds}-fold; 0.5 = indistinguishable)", lo, hi),
            "frd": Metric(frd(x["synthetic"], x["train"]), Direction.LOWER,
                          "Frechet Radiomics Distance, synthetic vs train (features z-scored on train)"),
            "frd_holdout": Metric(frd(x["holdout"], x["train"]), Direction.INFO,
                                  "the same distance of the real holdout vs train: the floor at this sample size"),
        }
        if r_hold.size:
            metrics["mean_abs_r_holdout"] = Metric(float(r_hold.mean()), Direction.INFO,
                                                   "mean |Pearson r| of holdout vs train: the floor of mean_abs_r")
        if hold.auc is not None:
            metrics["classifier_auc_holdout"] = Metric(hold.auc[0], Direction.INFO,
                                                       "classifier AUC of holdout vs train (the floor)",
                                                       hold.auc[1], hold.auc[2])
        rois = roi_names(ctx.train.schema)
        order = np.argsort(-np.nan_to_num(syn.abs_r, nan=-1.0), kind="stable")[:TOP_K]
        n_real = {w: len(feats[w].rows) for w in REAL}
        n_cached = {w: feats[w].from_cache for w in REAL}
        evidence: dict[str, Any] = {
            "n_features": {roi: sum(_roi(c) == roi for c in syn.columns) for roi in rois},
            "n_features_undefined_r": int(np.isnan(syn.abs_r).sum()),
            "cases_with_features": {w: {roi: sum(any(_roi(k) == roi for k in row) for row in feats[w].rows)
                                        for roi in rois} | {"cases": len(feats[w].rows)} for w in COHORTS},
            "top_features": [{"feature": syn.columns[j], "abs_r": round(float(syn.abs_r[j]), 4)}
                             for j in order if np.isfinite(syn.abs_r[j])],
            "mean_abs_r_per_roi": _per_roi_mean(syn, rois),
            "mean_abs_r_per_roi_holdout": _per_roi_mean(hold, rois),
            "real_features_cached": {w: f"{n_cached[w]}/{n_real[w]}" for w in REAL},
            "real_features_from_cache": all(n_cached[w] == n_real[w] for w in REAL),
            "method": {"pyradiomics": pyradiomics_version(), "parameters": PARAMS.name,
                       "feature_classes": sorted(extractors(str(PARAMS))[0].enabledFeatures),
                       "shape_left_out_for": sorted(SHAPELESS), "classifier": f"random forest ({N_TREES} trees, "
                       f"balanced), median imputation + missing indicators, {syn.folds}-fold out-of-fold",
                       "workers": ctx.settings.workers},
        }
        z = dict(zip(COHORTS, standardize([x[w] for w in COHORTS], x["train"]), strict=True))
        if z["train"].shape[1] >= 2:
            path = _pca_figure(ctx.figure_dir() / "radiomics_pca.png", z)
            evidence["figures"] = [{"figure": f"figures/{path.name}", "contains_real_data": True}]
        return metrics, evidence
