"""The utility family: is the synthetic set useful for what it is released for? Segmentation models trained on
real, synthetic and both, tested on the real holdout. Importing the package registers every check."""

from synthrelease.checks.utility import segmentation  # noqa: F401
