"""``synthrelease keygen | export | verify``: the release package, from the steward's side and the recipient's.

Exit codes: 0 done / valid; 1 export refused (the set is not cleared for release, like a failed gate) or the
package failed verification, one line per reason; 2 bad input (paths, keys, options).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synthrelease_cli.output import Output


def _identifiers(path: Path | None) -> list[str]:
    from synthrelease.errors import InputError

    if path is None:
        return []
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the identifiers file ({exc})", where=path) from None


_IDENTIFIERS = click.option("--identifiers", "identifiers_file", type=click.Path(path_type=Path), default=None,
                            help="Text file, one string per line, that must appear nowhere in the package.")


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.pass_obj
def keygen(out_: Output, out: Path) -> None:
    """Create an Ed25519 key pair: the private key at OUT (PEM PKCS#8, mode 0600), the public key at OUT.pub.

    Sign packages with 'export --key OUT'; give OUT.pub to recipients for 'verify --key'. Never overwrites.
    """
    from synthrelease.release import generate_keypair

    private, public = generate_keypair(out)
    out_.info(f"private key: {private} (keep it secret; sign with 'export --key {private}')")
    out_.info(f"public key:  {public} (give it to recipients: 'verify --key {public.name}')")
    click.echo(str(public))


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path))
@click.option("--synthetic", "set_name", required=True, help="Name of the set under WS/synthetic/ to release.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="The package folder to create (its name is the package's name); must not exist.")
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="Private key from 'synthrelease keygen' to sign MANIFEST.sha256 (without it: no MANIFEST.sig).")
@click.option("--tar", is_flag=True, help="Also write OUT.tar.gz (deterministic bytes) beside the folder.")
@click.option("--license", "license_", default="CC-BY-4.0", show_default=True,
              help="Licence of the package: an SPDX id or a URL (written to the card and croissant.json).")
@click.option("--version", "version", default="1.0.0", show_default=True, help="Version of the package.")
@click.option("--date", default=None, help="Publication date YYYY-MM-DD (default: SOURCE_DATE_EPOCH, else today).")
@_IDENTIFIERS
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_obj
def export(out_: Output, workspace: Path, set_name: str, out: Path, key: Path | None, tar: bool, license_: str,
           version: str, date: str | None, identifiers_file: Path | None, as_json: bool) -> None:
    """Write the release package of a set that passed its audit under a release policy.

    Refused (exit 1, nothing written) unless the latest audit of exactly this set passed under a release policy,
    was the gating audit (no --seed, not --on tuning) and is recorded in WS/audits/log.jsonl; never for a
    negative control (copycat). The card and provenance.json state how many audits of these files the log records.
    The package is built in a hidden folder and renamed at the end.
    """
    from synthrelease.data.workspace import Workspace
    from synthrelease.release import ExportRefused, export_package

    extra = _identifiers(identifiers_file)
    try:
        outcome = export_package(Workspace(workspace), set_name, out, key=key, tar=tar, license=license_,
                                 version=version, date=date, identifiers=extra)
    except ExportRefused as exc:
        click.echo(f"refused: {exc.one_line()}", err=True)
        sys.exit(1)
    out_.info(f"{outcome.n_cases} cases, {outcome.n_files} files, "
              f"{'signed' if outcome.signed else 'UNSIGNED (no --key): recipients can check hashes only'}")
    if as_json:
        out_.result_json({"package": str(outcome.path), "tarball": str(outcome.tarball) if outcome.tarball else None,
                          "signed": outcome.signed, "n_cases": outcome.n_cases, "n_files": outcome.n_files,
                          "croissant_warnings": list(outcome.croissant_warnings)})
        return
    click.echo(str(outcome.path))
    if outcome.tarball is not None:
        click.echo(str(outcome.tarball))


@click.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="The publisher's public key (.pub): the signature must match it. Without it: not checked.")
@_IDENTIFIERS
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def verify(out_: Output, package: Path, key: Path | None, identifiers_file: Path | None, as_json: bool) -> None:
    """Check a release package (folder or .tar.gz): every hash, no missing or extra file, the signature (with
    --key), the audit verdict and policy, dataset.json, NIfTI headers, croissant.json.

    Prints one line per problem and exits 1, or prints 'valid' and exits 0. A .tar.gz is extracted safely into a
    temporary folder (absolute paths, '..', links and devices refused).
    """
    from synthrelease.release import verify_package

    result = verify_package(package, key=key, identifiers=_identifiers(identifiers_file))
    if as_json:
        out_.result_json(result.to_dict())
    elif result.valid:
        click.echo("valid")
    else:
        for line in result.lines():
            click.echo(line)
    if result.valid:
        out_.info("signature checked" if result.signature_checked else
                  "signature NOT checked: give the publisher's public key with --key" if result.signed else
                  "the package is unsigned: only its internal consistency was checked")
    else:
        out_.info(f"[red]invalid: {len(result.problems)} problem(s)[/red]")
        sys.exit(1)
