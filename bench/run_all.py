"""All benchmarks, one after the other, then one Markdown file with every result.

    .venv/bin/python bench/run_all.py                  # bench budget (what `make bench` runs)
    .venv/bin/python bench/run_all.py --budget ci --seeds 1 --variants full,gold   # smoke
    .venv/bin/python bench/run_all.py --workers 2 --pass "speed=--repeats 3"

Runs ``ablations.py``, ``speed.py`` and ``inference.py`` as separate processes (each sets its
own torch threads), in that order: the inference benchmark reuses the teacher, general student
and augmented data that the ablations cached. Then writes ``results/<budget>/RESULTS.md``:
the machine, each script's fragment (its command, budget and tables) and the wall time of each
script. A failing script stops the run with its exit code.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

SCRIPTS = ("ablations", "speed", "inference")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=list(benchlib.BUDGETS), default="bench")
    p.add_argument("--only", default=",".join(SCRIPTS),
                   help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    p.add_argument("--seeds", type=int, default=3, help="ablations: number of seeds")
    p.add_argument("--variants", default="all", help="ablations: variants (default all)")
    p.add_argument("--workers", type=int, default=None,
                   help="ablations: parallel runs (default: the script's, 2 on 2 cores)")
    p.add_argument("--pass", dest="passthrough", action="append", default=[],
                   metavar="SCRIPT=ARGS", help="extra arguments for one script, e.g. "
                   "--pass 'speed=--repeats 3' (repeatable)")
    p.add_argument("--output", default=None, help="results folder (default: bench/results/<budget>)")
    args = p.parse_args(argv)
    args.extra = {}
    for item in args.passthrough:
        script, sep, rest = item.partition("=")
        if not sep or script not in SCRIPTS:
            p.error(f"--pass {item!r}: expected SCRIPT=ARGS with SCRIPT one of {', '.join(SCRIPTS)}")
        args.extra.setdefault(script, []).extend(shlex.split(rest))
    args.scripts = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.scripts if s not in SCRIPTS]
    if bad:
        p.error(f"unknown script(s) {bad}; choose from {', '.join(SCRIPTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = benchlib.results_dir(args.budget, args.output)
    common = ["--budget", args.budget] + (["--output", str(out)] if args.output else [])
    extra = {"ablations": ["--seeds", str(args.seeds), "--variants", args.variants]
             + (["--workers", str(args.workers)] if args.workers else [])}
    for script, more in args.extra.items():
        extra[script] = extra.get(script, []) + more
    timings = {}
    for name in args.scripts:
        cmd = [sys.executable, str(benchlib.BENCH_DIR / f"{name}.py"), *common,
               *extra.get(name, [])]
        print(f"== run_all: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        timings[name] = time.perf_counter() - start
        if code:
            print(f"== run_all: {name}.py failed with exit code {code}", file=sys.stderr)
            return code
        print(f"== run_all: {name}.py took {timings[name] / 60:.1f} min", flush=True)

    benchlib.quiet_libraries()
    parts = [f"## Results (budget `{args.budget}`)", "",
             f"Produced by `.venv/bin/python bench/run_all.py --budget {args.budget}` "
             f"({', '.join(f'{n}.py {t / 60:.1f} min' for n, t in timings.items())}).  ",
             benchlib.machine_line(benchlib.machine_info()), ""]
    for name in SCRIPTS:
        fragment = out / f"{name}.md"
        if fragment.exists():
            parts += [fragment.read_text().strip(), ""]
    benchlib.write_text(out / "RESULTS.md", "\n".join(parts))
    print(f"== run_all: wrote {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
