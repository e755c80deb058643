"""The privacy family: memorization and per-copy search (images, masks, tumour regions), distance to closest
record, membership inference, face re-identification and metadata. Importing the package registers every check."""

from synthrelease.checks.privacy import dcr, memorization, metadata, mia, reidentification, tumour  # noqa: F401
