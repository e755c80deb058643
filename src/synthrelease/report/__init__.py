"""Reports rendered from the one canonical ``report.json``: a self-contained HTML page (full for the workspace,
public for a release package), JUnit XML for CI, a Markdown summary for merge requests, and the public JSON.

The JSON is the record; every other file is a view of it and can be regenerated from it at any time.
"""

from synthrelease.report.files import write_reports
from synthrelease.report.html_page import render_html
from synthrelease.report.junit_xml import render_junit
from synthrelease.report.markdown_summary import render_markdown
from synthrelease.report.public import public_report

__all__ = ["public_report", "render_html", "render_junit", "render_markdown", "write_reports"]
