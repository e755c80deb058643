"""Write the three human and CI views next to ``report.json`` in the audit folder.

These are the workspace versions (full evidence, every figure): the audit folder never leaves the hospital. Each
file is written to a temporary name and renamed, so a reader (a CI job collecting ``junit.xml``) never sees half a
file, and a failed render leaves the previous version in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthrelease.report.html_page import render_html
from synthrelease.report.junit_xml import render_junit
from synthrelease.report.markdown_summary import render_markdown

__all__ = ["write_reports"]


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(audit_dir: Path, report: Mapping[str, Any]) -> dict[str, Path]:
    """Render all views first, then write ``report.html``, ``junit.xml`` and ``summary.md``; returns
    ``{"html": ..., "junit": ..., "markdown": ...}``."""
    audit_dir = Path(audit_dir)
    texts = {"html": ("report.html", render_html(report, audit_dir)),
             "junit": ("junit.xml", render_junit(report)),
             "markdown": ("summary.md", render_markdown(report))}
    paths: dict[str, Path] = {}
    for key, (name, text) in texts.items():
        paths[key] = audit_dir / name
        _write_atomic(paths[key], text)
    return paths
