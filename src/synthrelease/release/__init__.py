"""Release packages: export (atomic, signed), verify (hashes, signature, audit, headers, safe extraction), load.

```
<name>/  dataset.json imagesTr/ labelsTr/   README.md  croissant.json  provenance.json
         audit/report.json report.html policy.toml   MANIFEST.sha256  MANIFEST.sig
```
"""

from synthrelease.release.clearance import Clearance, clear_for_release
from synthrelease.release.errors import ExportRefused, InvalidPackage
from synthrelease.release.export import ExportOutcome, export_package
from synthrelease.release.info import DEFAULT_LICENSE
from synthrelease.release.load import load
from synthrelease.release.signing import generate_keypair
from synthrelease.release.verify import Problem, VerifyResult, verify_package

__all__ = ["DEFAULT_LICENSE", "Clearance", "ExportOutcome", "ExportRefused", "InvalidPackage", "Problem",
           "VerifyResult", "clear_for_release", "export_package", "generate_keypair", "load", "verify_package"]
