"""Every benchmark figure in one table: machine info on top, then ``benchmark | figure | value | unit | command``.

Run: ``python benchmarks/run.py`` (the sizes the issues ask for: hours on 2 cores, the privacy family at 400 x 400
alone takes over an hour; ``--skip privacy`` leaves it out) or ``python benchmarks/run.py --quick`` (tiny sizes: a
smoke run whose numbers are not the measured ones; the scripts take a few minutes, the demo, whose audit trains
segmentation networks, most of the time; DDPM-1000 sampling is left out: it alone took 15 minutes on shared cores).
``--only NAME...`` / ``--skip NAME...`` pick the benchmarks (names below); ``--threads`` is passed to the scripts
that take it and set as ``OMP_NUM_THREADS`` for all; ``--out DIR`` keeps each script's log and JSON,
``results.json`` (every figure) and ``table.md`` (what is printed).

Each benchmark runs as a subprocess (``python benchmarks/X.py ... --json OUT/X.json``, its stdout and stderr in
``OUT/X.log``); its wall time and the peak resident set of its process tree (the sum over the process and its
descendants, sampled every 0.5 s) are measured here. The demo (``synthrelease demo ... --json``) is measured the same
way, with the peak of its largest single process (``ru_maxrss``) beside it, against the issue's targets: at most
10 minutes wall and 4 GiB peak on 2 cores. A benchmark that fails (non-zero exit or ``--timeout``) is reported in
the table with its log; the exit status is then 1. ``quality`` (the generators' quality bar, ~15 min) runs only when
named in ``--only``; ``gpu_study_scale.py`` needs a GPU and is not run from here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
DEMO_TARGET_S, DEMO_TARGET_BYTES, DEMO_TARGET_CORES = 600.0, 4 * GIB, 2
# figure name suffix -> unit (longest first); the suffix is dropped from the name shown
UNITS = (("_cases_per_min", "cases/min"), ("_pairs_per_s", "pairs/s"), ("_mib", "MiB"), ("_gib", "GiB"),
         ("_frac", "fraction"), ("_hu", "HU"), ("_x", "x"), ("_s", "s"))


@dataclass(frozen=True)
class Bench:
    name: str
    script: str  # under benchmarks/; "" for the demo (the CLI)
    full: tuple[str, ...]  # arguments at the sizes the issues ask for
    quick: tuple[str, ...]  # arguments of --quick
    threads: bool = False  # takes --threads
    default: bool = True  # run unless --only leaves it out (False: only when named in --only)
    what: str = ""


BAR_CONFIG = "examples/configs/wgan-shape-ct-cpu32.toml"  # the route that meets the quality bar (RESULTS.md)

BENCHMARKS = (
    Bench("data", "bench_data.py", ("--sizes", "32", "64", "128", "--cases", "4"), ("--sizes", "32", "--cases", "2"),
          what="phantoms, NIfTI I/O, preprocessing, DICOM ingest per volume size"),
    Bench("generators", "bench_generators.py", ("--sizes", "32", "64", "--steps", "4", "--ddpm-size", "32"),
          ("--sizes", "32", "--generators", "ldm", "--steps", "4", "--ddpm-size", "0"), threads=True,
          what="train step and sampling time per generator; DDPM-1000 vs DDIM-50 on the same model"),
    Bench("privacy", "bench_privacy.py", ("--n", "400", "--shape", "64", "--brute-subset", "4", "--exhaustive-subset",
                                          "8", "--exhaustive-boundary", "8"), ("--smoke", "--exhaustive-boundary", "2"),
          threads=True, what="privacy family time and peak memory at n x n; brute-force ratio; flags"),
    Bench("redteam", "bench_redteam.py", (), ("--quick",), threads=True,
          what="red-team copies outside the old search envelope: detection per class, false copies, the gate"),
    Bench("copynull", "bench_copynull.py", (), ("--quick",), threads=True, default=False,
          what="the per-copy rules' error rates over many holdout / set splits: false alarms, one copy's detection"),
    Bench("msssim", "bench_msssim.py", ("--n", "50", "--shape", "64"), ("--smoke",), threads=True,
          what="batched MS-SSIM vs a per-pair MONAI loop"),
    Bench("radiomics", "bench_radiomics.py", ("--n", "40", "--shape", "64", "--workers", "1", "2"), ("--smoke",),
          what="radiomics extraction with 1 and 2 workers; second audit on the same cache"),
    Bench("demo", "", ("--shape", "32"),  # its defaults: 140 patients (60 unseen), wgan, 120 samples
          ("--cases", "8", "--samples", "4", "--shape", "32", "--train-steps", "8"),
          what="synthrelease demo: phantoms -> ingest -> train -> sample -> audit -> export -> copycat control"),
    Bench("demo-seeds", "bench_demo.py", ("--seeds", "0", "1", "2"),
          ("--seeds", "0", "--demo-args", "--cases 8 --samples 4 --train-steps 8 --utility-steps 5"),
          threads=True, default=False,
          what="the demo per seed in fp32: stage times, peak memory, verdicts, the margins of issue 27"),
    Bench("quality", "quality_phantoms.py", ("--generator", "wgan", "--config", BAR_CONFIG, "--samples", "60"),
          ("--generator", "wgan", "--config", BAR_CONFIG, "--patients", "6", "--holdout", "2", "--samples", "2",
           "--set", "steps = 4"), threads=True, default=False,
          what="the generators' quality bar on phantom CT at 32^3, by its CPU route (wgan on shape-model masks)"),
)
NAMES = [b.name for b in BENCHMARKS]


# -- machine -----------------------------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(threads: int) -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in _read("/proc/meminfo").splitlines()
           if line.startswith(("MemTotal:", "MemAvailable:"))}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    # torch is asked in a child: imported here it would stay resident, and a forked child's ru_maxrss starts from
    # its parent's resident set
    probe = "import torch; print(f'yes ({torch.cuda.get_device_name(0)})' if torch.cuda.is_available() else 'no')"
    try:
        cuda = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:  # report, never stop the run for it
        cuda = f"unknown ({type(exc).__name__})"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu,
        "cores": f"{os.cpu_count()} (os.cpu_count), {affinity} usable (affinity)",
        "load average": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "RAM": f"{mem.get('MemTotal', 0) / GIB:.1f} GiB ({mem.get('MemAvailable', 0) / GIB:.1f} GiB available)",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "MONAI": _version("monai"),
        "CUDA": cuda or "unknown (torch did not load)",
        "threads": str(threads),
        "commit": (commit + dirty) if commit else "unknown",
    }


# -- running a benchmark -----------------------------------------------------------------------------------------
def _rss(pid: int) -> int:
    try:
        return int(_read(f"/proc/{pid}/statm").split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    """Resident set of ``root`` and all its descendants (Linux ``/proc``; 0 elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return 0
    for name in entries:
        stat = _read(f"/proc/{name}/stat")
        if stat:
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss(pid)
        stack.extend(children.get(pid, ()))
    return total


def _kill_group(pid: int) -> None:
    """Kill the session this script started for one benchmark (the benchmark and every process it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Measured:
    rc: int | None  # None: killed at the timeout
    wall_s: float
    peak_tree: int  # bytes, sampled (at least the largest process's peak)
    peak_process: int  # bytes: ru_maxrss of the process and its reaped descendants (the largest one)


def run_measured(cmd: Sequence[str], stdout: Path, stderr: Path | None, env: dict[str, str],
                 timeout: float | None) -> Measured:
    """Run ``cmd`` in its own session; wall time, sampled peak RSS of its process tree, and its ``ru_maxrss``."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(stdout, "wb"))
        err: IO[bytes] | int = subprocess.STDOUT if stderr is None else files.enter_context(open(stderr, "wb"))
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        t0 = time.perf_counter()
        peak = [0]
        stop = threading.Event()

        def poll() -> None:
            while True:
                peak[0] = max(peak[0], tree_rss(proc.pid))
                if stop.wait(0.5):
                    return

        sampler = threading.Thread(target=poll, daemon=True)
        sampler.start()
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if timeout is not None and time.perf_counter() - t0 > timeout:
                    timed_out = True
                    _kill_group(proc.pid)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:  # Ctrl-C: stop what this run started, then stop
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            stop.set()
        wall = time.perf_counter() - t0
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
    largest = usage.ru_maxrss * 1024  # KiB on Linux
    return Measured(None if timed_out else proc.returncode, wall, max(peak[0], largest), largest)


@dataclass
class Result:
    bench: Bench
    command: str  # to reproduce, from the repository root
    log: Path
    measured: Measured
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # non-empty: failed


def _json_object(path: Path) -> dict[str, Any]:
    text = path.read_text() if path.is_file() else ""
    if "{" not in text:
        return {}
    try:
        data = json.loads(text[text.index("{"):])
    except ValueError:  # cut short: no figures
        return {}
    return data if isinstance(data, dict) else {}


def demo_figures(summary: dict[str, Any], m: Measured, quick: bool) -> dict[str, Any]:
    audits = summary.get("audit", {})
    out: dict[str, Any] = {"exit_code": m.rc, "wall_time_s": round(m.wall_s, 1),
                           "peak_rss_tree_gib": round(m.peak_tree / GIB, 2),
                           "peak_rss_largest_process_gib": round(m.peak_process / GIB, 2)}
    if "training" in summary:
        out[f"train_{summary['training'].get('generator', 'generator')}_s"] = summary["training"].get("seconds")
    for name, audit in audits.items():
        out[f"verdict_{name}"] = audit.get("verdict")
    if "release" in summary:
        out["package_verified"] = "yes" if summary["release"].get("verified") else "NO"
    if "deidentification" in summary:
        out["planted_identifiers_found"] = summary["deidentification"].get("found_in_workspace")
    misses = []
    if m.wall_s > DEMO_TARGET_S:
        misses.append(f"wall {m.wall_s / 60:.1f} min > {DEMO_TARGET_S / 60:.0f} min")
    if m.peak_tree > DEMO_TARGET_BYTES:
        misses.append(f"peak {m.peak_tree / GIB:.2f} GiB > {DEMO_TARGET_BYTES / GIB:.0f} GiB")
    verdict = "yes" if not misses else "NO: " + "; ".join(misses)
    notes = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores != DEMO_TARGET_CORES:
        notes.append(f"measured on {cores} cores, the target is for {DEMO_TARGET_CORES}")
    if quick:
        notes.append("quick sizes, not the target run")
    out["meets target (<= 10 min wall, <= 4 GiB peak, 2 cores)"] = verdict + (f" ({'; '.join(notes)})"
                                                                               if notes else "")
    return out


def run_bench(bench: Bench, args: argparse.Namespace, env: dict[str, str]) -> Result:
    sizes = list(bench.quick if args.quick else bench.full)
    if bench.threads:
        sizes += ["--threads", str(args.threads)]
    log, data = args.out / f"{bench.name}.log", args.out / f"{bench.name}.json"
    data.unlink(missing_ok=True)
    if bench.script:
        script = f"benchmarks/{bench.script}"
        cmd, shown = [sys.executable, script, *sizes, "--json", str(data)], ["python", script, *sizes]
        m = run_measured(cmd, log, None, env, args.timeout)
        figures = _json_object(data)
    else:
        folder = args.out / "demo"
        demo_args = ["demo", "--out", str(folder), *sizes, "--json"]
        cmd, shown = [sys.executable, "-m", "synthrelease_cli", *demo_args], ["synthrelease", *demo_args]
        m = run_measured(cmd, data, log, env, args.timeout)
        summary = _json_object(data) if m.rc is not None else {}
        figures = demo_figures(summary, m, args.quick) if summary else {}
        if not args.keep_demo:  # the folder, or what a demo cut short left of it
            for path in [folder, *args.out.glob(".demo.partial-*")]:
                shutil.rmtree(path, ignore_errors=True)
    error = ""
    if m.rc is None:
        error = f"timed out after {args.timeout:g} s"
    elif m.rc < 0:
        error = f"killed by signal {-m.rc}"
        with contextlib.suppress(ValueError):
            error = f"killed by {signal.Signals(-m.rc).name}"
    elif m.rc != 0 and not (not bench.script and m.rc == 1 and figures):
        error = f"exit {m.rc}"  # the demo's exit 1 with a summary is its verdict (gate failed), not a crash
    elif not figures:
        error = f"no figures in {data}"
    if bench.script:
        figures = {**figures, "script_wall_time_s": round(m.wall_s, 1),
                   "script_peak_rss_tree_mib": round(m.peak_tree / 1024**2)}
    return Result(bench, shlex.join(shown), log, m, figures, error)


# -- table -------------------------------------------------------------------------------------------------------
def split_unit(name: str) -> tuple[str, str]:
    for suffix, unit in UNITS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], unit
    return name, ""


def fmt_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def table(results: Sequence[Result]) -> list[str]:
    """One markdown row per figure; a failed benchmark first gets a FAILED row with its log. The command is given
    on each benchmark's first row."""
    lines = ["benchmark | figure | value | unit | command", "--- | --- | --- | --- | ---"]
    for r in results:
        rows = [(split_unit(key), fmt_value(value)) for key, value in r.figures.items()]
        if r.error:
            log = os.path.relpath(r.log, ROOT) if r.log.is_relative_to(ROOT) else str(r.log)
            rows.insert(0, ((f"**FAILED** ({r.error}; log: {log})", ""), "-"))
        for i, ((name, unit), value) in enumerate(rows):
            lines.append(" | ".join((r.bench.name, name, value, unit, "" if i else f"`{r.command}`")).rstrip())
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few minutes")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=None, metavar="NAME",
                        help=f"run only these ({', '.join(NAMES)})")
    parser.add_argument("--skip", nargs="+", choices=NAMES, default=[], metavar="NAME", help="leave these out")
    parser.add_argument("--threads", type=int, default=2, help="threads per benchmark (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="logs, JSON and table (default: benchmarks/out/<UTC date-time>)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark before it is killed")
    parser.add_argument("--keep-demo", action="store_true", help="keep the demo folder under --out")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    args.out = (args.out or ROOT / "benchmarks" / "out" / stamp).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    selected = [b for b in BENCHMARKS if (b.name in args.only if args.only else b.default) and b.name not in args.skip]

    machine = machine_info(args.threads)
    head = [f"# synthrelease benchmarks ({'--quick: tiny sizes' if args.quick else 'full sizes'})", ""]
    head += [f"- {k}: {v}" for k, v in machine.items()]
    print("\n".join(head) + "\n", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}

    results = []
    for bench in selected:
        print(f"running {bench.name}: {bench.what} (log: {args.out / bench.name}.log)", flush=True)
        res = run_bench(bench, args, env)
        print(f"  {'FAILED: ' + res.error if res.error else 'done'} in {res.measured.wall_s:.1f} s", flush=True)
        results.append(res)

    lines = table(results)
    print("\n" + "\n".join(lines), flush=True)
    (args.out / "table.md").write_text("\n".join([*head, "", *lines]) + "\n")
    (args.out / "results.json").write_text(json.dumps({
        "machine": machine, "quick": args.quick,
        "benchmarks": {r.bench.name: {"command": r.command, "log": str(r.log), "error": r.error,
                                      "wall_s": round(r.measured.wall_s, 2), "figures": r.figures}
                       for r in results}}, indent=2) + "\n")
    print(f"\nlogs, results.json and table.md: {args.out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
