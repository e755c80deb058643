"""The fidelity family: is the synthetic set realistic and diverse? Paired MAE, per-ROI intensity distances,
MS-SSIM diversity, radiomics (the study's correlation, a classifier two-sample test, FRD), label statistics and
embedding FID / MMD. Importing the package registers every check."""

from synthrelease.checks.fidelity import diversity, embedding, intensity, labels, paired_mae, radiomics  # noqa: F401
