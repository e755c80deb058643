"""synthrelease: release stand-alone synthetic CT/MRI datasets with proof of utility and privacy."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
