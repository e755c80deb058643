"""``synthrelease audit``: run the checks over a synthetic set and write its report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from synthrelease_cli.cmd_utility import NETWORK_HELP, NETWORKS
from synthrelease_cli.output import Output


def _render(out_: Output, report: dict[str, Any], path: Path) -> None:
    if out_.quiet:
        return
    from rich.table import Table

    table = Table(title=f"audit of {report['synthetic_set']['name']}", show_lines=False)
    for col in ("check", "status", "metric", "value", "95% CI"):
        table.add_column(col)
    for name, check in report["checks"].items():
        if check["status"] != "ok":
            table.add_row(name, check["status"], check.get("reason", ""), "", "")
            continue
        for i, (metric, m) in enumerate(check["metrics"].items()):
            ci = m.get("ci95")
            table.add_row(name if i == 0 else "", "ok" if i == 0 else "", metric, f"{m['value']:.4g}",
                          f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
    out_.console.print(table)
    if "verdict" in report:
        _render_gate(out_, report)
    out_.info("gating audit (seed derived from the set and the policy)" if report.get("gating") else
              f"exploratory audit (seed {report.get('seed')}, on the {report.get('holdout', 'holdout')} split): "
              "export will refuse it; audit without --seed and --on tuning to gate")
    out_.info(f"report: {path / 'report.json'}  (HTML: {path / 'report.html'})")


def _render_gate(out_: Output, report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    rules = [r for r in report["rules"] if not r["passed"] and r.get("judged", True)]
    if rules:
        table = Table(title=f"rules not met (policy {report['policy']['name']})")
        for col in ("severity", "rule", "value", "why / reason"):
            table.add_column(col)
        for r in sorted(rules, key=lambda r: r["severity"] != "fail"):
            threshold = r["threshold_metric"] or r["threshold"]
            value = "missing" if r["value"] is None else f"{r['value']:.4g}"
            table.add_row(r["severity"], escape(f"{r['metric']} {r['op']} {threshold}"), value,
                          escape(r["reason"] or r["why"]))
        out_.console.print(table)
    gate = report["gate"]
    skipped = gate["n_not_judged"]
    colour = "green" if report["verdict"] == "pass" else "red"
    out_.info(f"[bold {colour}]verdict: {report['verdict'].upper()}[/bold {colour}] under policy "
              f"{report['policy']['name']}: {gate['n_passed']} of "
              f"{gate['n_rules']} rules met, {gate['n_failed']} failed, {gate['n_warned']} warnings"
              + (f", {skipped} not judged (their checks were not run: --fail-fast)" if skipped else ""))


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path), required=False)
@click.option("--synthetic", required=True, help="Set name under WS/synthetic/, or an nnU-Net raw folder.")
@click.option("--train", "train_dir", type=click.Path(path_type=Path), default=None,
              help="Without a workspace: the generator's training cases (nnU-Net raw folder).")
@click.option("--holdout", "holdout_dir", type=click.Path(path_type=Path), default=None,
              help="Without a workspace: real cases the generator never saw (nnU-Net raw folder).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Without a workspace: the audit folder to write (keep it private: it holds real-data figures).")
@click.option("--only", multiple=True, help="Families or checks to run (privacy, privacy.mia, ...); repeatable. "
              "Rules on checks left out fail: a partial audit never passes the gate.")
@click.option("--policy", "policy_name", default="default", show_default=True,
              help="Release policy: a shipped name (see 'synthrelease policies') or a TOML file; 'none' reports "
                   "metrics without a verdict.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of every random choice (subsamples, bootstrap, embedding training). Default: the gating "
                   "seed, derived from the set's and the policy's sha256. An explicit seed makes the audit "
                   "exploratory: logged and reported, but export refuses it.")
@click.option("--on", "on", type=click.Choice(["holdout", "tuning"]), default="holdout", show_default=True,
              help="Real cohort to compare with: the gate holdout, or the workspace's tuning split (ingest "
                   "--tuning-holdout), for choosing generator settings; audits on tuning are always exploratory.")
@click.option("--identifiers", "identifiers_file", type=click.Path(path_type=Path), default=None,
              help="Text file, one real-cohort identifier per line, that must not appear in the set.")
@click.option("--embedding-steps", type=click.IntRange(min=1), default=None,
              help="Training steps of the contrastive encoder (default 150; cached per training set).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes for per-case feature extraction (radiomics).")
@click.option("--extraction-samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also sample N more cases from the set's model (when this workspace holds it) and search them for "
                   "copies, as extraction attacks do (privacy.memorization.n_copies_extraction).")
@click.option("--engine", type=click.Choice(["auto", "monai", "nnunet"]), default="auto", show_default=True,
              help="Segmentation engine of the utility check; auto: nnunet with a CUDA GPU, else monai.")
@click.option("--utility-steps", type=click.IntRange(min=1), default=None,
              help="Training steps per arm of the utility check (default 500; the same for every arm).")
@click.option("--network", type=click.Choice(NETWORKS), default=None, help=NETWORK_HELP)
@click.option("--fail-fast", is_flag=True,
              help="Stop after the first family of checks that fails a rule of the policy (order: privacy, "
                   "integrity, fidelity, utility); the checks left are reported as skipped. Same verdict, sooner.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_obj
def audit(out_: Output, workspace: Path | None, synthetic: str, train_dir: Path | None, holdout_dir: Path | None,
          out_dir: Path | None, only: tuple[str, ...], seed: int | None, on: str, identifiers_file: Path | None,
          policy_name: str, embedding_steps: int | None, workers: int, extraction_samples: int, engine: str,
          utility_steps: int | None, network: str | None, fail_fast: bool, as_json: bool) -> None:
    """Audit a synthetic set (integrity, privacy, fidelity, utility checks), metrics into report.json.

    \b
    With a workspace:   synthrelease audit WS --synthetic SET            -> WS/audits/SET/report.json
    Without:            synthrelease audit --train DIR --holdout DIR --synthetic DIR --out DIR

    The audit folder also holds report.html, junit.xml, summary.md and the policy used; every audit of a
    workspace appends a line to WS/audits/log.jsonl. Only a gating audit (no --seed, on the holdout) clears a set
    for export. Exit code: 0 the gate passed (or --policy none), 1 it failed, 2 bad input.
    """
    from dataclasses import replace

    from synthrelease.audit import audit_directories, audit_workspace
    from synthrelease.checks import AuditSettings
    from synthrelease.checks.registry import select_checks
    from synthrelease.data.workspace import Workspace
    from synthrelease.errors import InputError

    free = (train_dir, holdout_dir, out_dir)
    if workspace is None and None in free:
        raise InputError("audit needs a workspace, or --train, --holdout and --out (and --synthetic) without one",
                         fix="see 'synthrelease audit --help'")
    if workspace is not None and any(p is not None for p in free):
        raise InputError("give either a workspace or --train/--holdout/--out, not both")
    if workspace is None and on != "holdout":
        raise InputError("--on tuning needs a workspace with a tuning split (ingest --tuning-holdout)",
                         fix="give the workspace, or pass the tuning cases as --holdout")
    if "utility.segmentation" in [c.name for c in select_checks(only)]:  # unknown --only fails before any work
        from synthrelease.segmentation import create_engine

        create_engine(engine)  # so does an engine that cannot run here
    from synthrelease.policy import load_policy

    policy = None if policy_name.lower() == "none" else load_policy(policy_name)  # a bad policy too
    if fail_fast and policy is None:
        raise InputError("--fail-fast stops once the policy's verdict is fail, and --policy none gives no verdict",
                         fix="name a policy, or drop --fail-fast")
    extra: list[str] = []
    if identifiers_file is not None:
        try:
            extra = [ln.strip() for ln in identifiers_file.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the identifiers file ({exc})", where=identifiers_file) from None
    settings = AuditSettings(workers=workers, utility_engine=engine, extraction_samples=extraction_samples)
    if utility_steps is not None:
        settings = replace(settings, utility_steps=utility_steps)
    if network is not None:
        settings = replace(settings, utility_network=network)
    if embedding_steps is not None:
        settings = replace(settings, embedding=replace(settings.embedding, steps=embedding_steps))
    with out_.progress() as progress:
        if workspace is not None:
            outcome = audit_workspace(Workspace(workspace), synthetic, only=only, seed=seed, extra_identifiers=extra,
                                      settings=settings, progress=progress, policy=policy, fail_fast=fail_fast,
                                      on=on)
        else:
            assert train_dir and holdout_dir and out_dir
            outcome = audit_directories(train_dir, holdout_dir, Path(synthetic), out_dir, only=only, seed=seed,
                                        extra_identifiers=extra, settings=settings, progress=progress,
                                        policy=policy, fail_fast=fail_fast)
    _render(out_, outcome.report, outcome.path)
    errors = outcome.report["summary"]["error"]
    if errors:
        out_.info(f"[yellow]checks that failed to run: {', '.join(errors)} (see report.json)[/yellow]")
    if as_json:
        out_.result_json(outcome.report)
    else:
        click.echo(str(outcome.path / "report.json"))
    if outcome.gate is not None and not outcome.gate.passed:
        sys.exit(1)


@click.command()
@click.argument("name", required=False)
@click.pass_obj
def policies(out_: Output, name: str | None) -> None:
    """List the shipped release policies, or print one (NAME: a shipped name or a TOML file; validated)."""
    from synthrelease.policy import load_policy
    from synthrelease.resources import list_policies

    if name is not None:
        policy = load_policy(name)
        click.echo(policy.text.rstrip("\n"))
        out_.info(f"{policy.name}: {len(policy.rules)} rules, sha256 {policy.sha256[:16]}..., "
                  f"{'release policy' if policy.release else 'NOT a release policy (export refuses its sets)'}")
        return
    from rich.table import Table

    table = Table(title="release policies")
    for col in ("name", "release", "fail rules", "warn rules", "description"):
        table.add_column(col)
    for n in list_policies():
        p = load_policy(n)
        table.add_row(p.name, "yes" if p.release else "no", str(sum(r.severity == "fail" for r in p.rules)),
                      str(sum(r.severity == "warn" for r in p.rules)), p.description)
    if out_.quiet:
        for n in list_policies():
            click.echo(n)
    else:
        out_.console.print(table)
