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


def test_indexed_scan_equals_a_plain_search_per_string(tmp_path):
    """Large files take the indexed scan: it must find exactly what a plain search of each string finds, at the
    start, the end and across the whole of a haystack, for strings of every length and with shared prefixes."""
    import numpy as np

    from synthrelease.data.leakscan import _Needles

    rng = np.random.default_rng(1)
    for _ in range(300):
        needles = {bytes(rng.integers(97, 100, int(rng.integers(1, 9))).astype(np.uint8)): f"n{i}"
                   for i in range(int(rng.integers(1, 30)))}
        hay = bytes(rng.integers(96, 101, int(rng.choice([10, 5000, 20000]))).astype(np.uint8))
        assert _Needles(needles).found_in(hay) == {n for b, n in needles.items() if b in hay}
    noise = rng.integers(0, 256, 1 << 20).astype(np.uint8).tobytes().replace(b"MRN", b"xxx")
    (tmp_path / "img.nii.gz").write_bytes(gzip.compress(b"MRN4471" + noise + b"case0042"))
    found = find_strings(tmp_path, ["mrn4471", "CASE0042", "case9999", *[f"id{i:05d}" for i in range(2000)]])
    assert {f.needle for f in found if f.inside_gzip} == {"mrn4471", "CASE0042"}
    assert {f.needle for f in found} == {"mrn4471", "CASE0042"}  # random bytes stay stored verbatim in the gzip
