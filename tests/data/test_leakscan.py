"""The byte search used to prove de-identification finds strings in plain and gzip files, and in names."""

from __future__ import annotations

import gzip

from synthrelease.data.leakscan import find_strings


def test_finds_plain_gzip_and_path_hits(tmp_path):
    (tmp_path / "a.txt").write_text("nothing here")
    (tmp_path / "b.json").write_text('{"n": "Doe^Jane"}')
    (tmp_path / "c.gz").write_bytes(gzip.compress(b"xx MRN123 yy"))
    (tmp_path / "MRN999_0000.nii.gz").write_bytes(b"")
    found = find_strings(tmp_path, ["DOE^JANE", "MRN123", "MRN999", "absent"])
    got = {(f.path.name, f.needle, f.inside_gzip) for f in found}
    assert got == {("b.json", "DOE^JANE", False), ("c.gz", "MRN123", True), ("MRN999_0000.nii.gz", "MRN999", False)}


def test_dicom_name_caret_is_matched_with_space(tmp_path):
    (tmp_path / "x.txt").write_text("patient doe jane")
    assert [f.needle for f in find_strings(tmp_path, ["DOE^JANE"])] == ["DOE^JANE"]
    assert find_strings(tmp_path, []) == []
