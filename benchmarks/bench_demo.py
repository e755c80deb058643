"""The demo as a user runs it, once per seed: wall time per stage, peak memory, verdicts and headline metrics.

Run: ``python benchmarks/bench_demo.py --seeds 0 1 2`` (each seed a full ``synthrelease demo --seed S --json`` in its
own subprocess and folder; fp32 unless ``--cpu-bf16``). Extra demo options go in ``--demo-args``, e.g.
``--demo-args "--cases 60"``. ``--isa avx2`` runs the demo with ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2``: on a CPU with AVX-512 torch and oneDNN then pick the kernels an AVX2-only CPU runs (the
clock and the caches stay this machine's), so an fp32 AVX2 run can be measured on an AVX-512 host.

Per seed the table gives the exit code, each stage's seconds (``summary["stage_seconds"]``), the wall time and the
peak resident set of the demo's process tree, both verdicts, and the metrics the issue's margins are judged on:
``dice_ratio`` >= 0.75, the DCR and MIA upper bounds at least 0.05 inside their 0.7 lines, no copy; the last column
says whether the seed met them all (and the 10-minute, 4 GiB target).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import print_table
from run import GIB, machine_info, run_measured

TARGET_S, TARGET_GIB = 600, 4.0
MARGINS = {"utility.segmentation.dice_ratio": (">=", 0.75), "privacy.dcr.overfitting_p_ci_high": ("<=", 0.65),
           "privacy.mia.auc_ci_high": ("<=", 0.65), "privacy.memorization.n_copies": ("==", 0),
           "privacy.mask_memorization.n_copies": ("==", 0), "privacy.tumour_memorization.n_copies": ("==", 0)}


def cpu_flags() -> str:
    """Which of the instruction sets that change torch's kernels the CPU has (from /proc/cpuinfo)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def _met(value: Any, op: str, line: float) -> bool:
    if value is None:
        return False
    return {">=": value >= line, "<=": value <= line, "==": value == line}[op]


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    folder = work / f"demo-seed{seed}"
    out, err = work / f"seed{seed}.json", work / f"seed{seed}.log"
    cmd = [sys.executable, "-m", "synthrelease_cli", "demo", "--out", str(folder), "--seed", str(seed), "--json",
           "--cpu-bf16" if args.cpu_bf16 else "--no-cpu-bf16", *args.demo_args]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.isa == "avx2":
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    m = run_measured(cmd, out, err, env, args.timeout)
    text = out.read_text() if out.is_file() else ""
    summary = json.loads(text[text.index("{"):]) if "{" in text else {}
    audits = summary.get("audit", {})
    metrics = audits.get("demo", {}).get("metrics", {})
    row: dict[str, Any] = {"seed": seed, "exit_code": m.rc, "wall_s": round(m.wall_s, 1),
                           "peak_rss_tree_gib": round(m.peak_tree / GIB, 2),
                           "stage_seconds": summary.get("stage_seconds", {}),
                           "precision": summary.get("precision", {}).get("text"),
                           "verdict_demo": audits.get("demo", {}).get("verdict"),
                           "failed_rules": [r["metric"] for r in audits.get("demo", {}).get("failed_rules", [])],
                           "warnings": audits.get("demo", {}).get("warnings", []),
                           "verdict_copycat": audits.get("copycat-control", {}).get("verdict"),
                           "package_verified": summary.get("release", {}).get("verified"),
                           "metrics": metrics, "log": str(err)}
    margins = {k: _met(metrics.get(k), op, line) for k, (op, line) in MARGINS.items()}
    row["margins_met"] = all(margins.values()) and row["verdict_demo"] == "pass" and m.rc == 0
    row["missed_margins"] = [k for k, ok in margins.items() if not ok]
    row["within_target"] = m.wall_s <= TARGET_S and m.peak_tree / GIB <= TARGET_GIB
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for the demo (2: the target machine)")
    p.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast where the CPU has it (default fp32)")
    p.add_argument("--isa", choices=["native", "avx2"], default="native")
    p.add_argument("--timeout", type=float, default=None, help="seconds per seed")
    p.add_argument("--work", type=Path, default=None, help="folder for the demo folders and logs (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep each seed's demo folder")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--demo-args", default="", help="more demo options, one string, e.g. '--cases 60'")
    args = p.parse_args(argv)
    args.demo_args = demo_args = shlex.split(args.demo_args)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed, args, work))
        print(f"seed {seed}: exit {rows[-1]['exit_code']}, {rows[-1]['wall_s']} s", file=sys.stderr, flush=True)
    stages = sorted({k for r in rows for k in r["stage_seconds"]}, key=lambda s: int(s.split("/")[0]))
    head = ["seed", "exit", *[f"stage {s} s" for s in stages], "wall s", "peak GiB", "verdict", "copycat",
            "dice_ratio", "DCR hi", "MIA hi", "copies (image/mask/tumour)", "radiomics AUC", "margins",
            "<=10 min, 4 GiB"]
    table = []
    for r in rows:
        mt = r["metrics"]

        def f(key: str, mt: dict[str, Any] = mt) -> str:
            v = mt.get(key)
            return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

        table.append([str(r["seed"]), str(r["exit_code"]), *[str(r["stage_seconds"].get(s, "-")) for s in stages],
                      str(r["wall_s"]), str(r["peak_rss_tree_gib"]), str(r["verdict_demo"]),
                      str(r["verdict_copycat"]), f("utility.segmentation.dice_ratio"),
                      f("privacy.dcr.overfitting_p_ci_high"), f("privacy.mia.auc_ci_high"),
                      f"{f('privacy.memorization.n_copies')}/{f('privacy.mask_memorization.n_copies')}/"
                      f"{f('privacy.tumour_memorization.n_copies')}",
                      f("fidelity.radiomics.classifier_auc"),
                      "yes" if r["margins_met"] else "NO: " + ", ".join(r["missed_margins"] or r["failed_rules"]),
                      "yes" if r["within_target"] else "NO"])
    info = {**machine_info(args.threads), "CPU flags of note": cpu_flags()}
    for key in ("date", "CPU", "CPU flags of note", "cores", "commit"):
        print(f"{key}: {info[key]}")
    print(f"isa: {args.isa}; precision: {rows[0]['precision'] if rows else '-'}; demo args: {demo_args}")
    print_table(head, table)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "isa": args.isa, "rows": rows}, indent=2, default=str))
    return 0 if all(r["exit_code"] in (0, 1) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
