"""The ``synthrelease`` command line: a thin click app over the library's public API."""
