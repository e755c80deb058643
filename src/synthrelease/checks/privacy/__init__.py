"""The privacy family: memorization (images and masks), distance to closest record, membership inference,
face re-identification and metadata. Importing the package registers every check."""

from synthrelease.checks.privacy import dcr, memorization, metadata, mia, reidentification  # noqa: F401
