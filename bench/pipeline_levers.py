"""What a change to the ``quick`` pipeline buys: ``tinylab distill`` reports side by side.

    .venv/bin/python bench/pipeline_levers.py \\
        --group "L2, GD 250 steps on 8k=runs/quick-l2,runs/quick-l2-s43" \\
        --group "L2, GD 750 steps on 24k=runs/quick-l2-gd750,runs/quick-l2-gd750-s43"

Each ``--group LABEL=DIR,DIR,...`` names the output folders of ``tinylab distill`` runs that
differ only in their seed (``--set seed=...``). For each group the script reads every
``report.json`` and prints the mean and standard deviation over the runs of: the student's test
accuracy, the share of the teacher's accuracy it keeps in domain and on each out-of-domain set,
and its speed-up at batch 32. It refuses groups whose runs differ in anything but the seed, so
a table never mixes settings by mistake. It trains nothing; the runs are the commands in their
reports. Writes ``levers.md`` and ``levers.json`` under ``--output`` (default
``bench/results/quick/``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import markdown_table, write_json, write_text  # noqa: E402


def parse_group(text: str) -> tuple[str, list[Path]]:
    """``"label=dir1,dir2"`` -> ``("label", [Path("dir1"), Path("dir2")])``."""
    label, sep, dirs = text.partition("=")
    folders = [Path(d) for d in dirs.split(",") if d.strip()]
    if not sep or not label.strip() or not folders:
        raise ValueError(f"--group {text!r} must look like 'LABEL=DIR[,DIR...]', e.g. "
                         f"'baseline=runs/quick,runs/quick-s43'")
    return label.strip(), folders


def load_report(folder: Path) -> dict[str, Any]:
    path = folder / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the --output folder of a finished "
                                f"`tinylab distill` run")
    return json.loads(path.read_text())


def _settings_without_seed(config: dict[str, Any]) -> dict[str, Any]:
    """A report's settings, seed left out, with every setting it does not name at tinylab's
    default: a run made before a setting existed ran with what is now its default (settings
    are added that way; it is also why older cache keys stay valid)."""
    import dataclasses

    from tinylab.config import Config

    out = {k: v for k, v in config.items() if k != "seed"}
    for section in dataclasses.fields(Config):
        if isinstance(out.get(section.name), dict) and \
                section.default_factory is not dataclasses.MISSING:
            out[section.name] = {**dataclasses.asdict(section.default_factory()),
                                 **out[section.name]}
    return out


def group_row(label: str, reports: list[dict[str, Any]], folders: list[Path]) -> dict[str, Any]:
    """Mean and sd over the runs of one group (sd is 0.0 for a single run)."""
    first = _settings_without_seed(reports[0]["config"])
    for report, folder in zip(reports[1:], folders[1:]):
        settings = _settings_without_seed(report["config"])
        if settings != first:
            changed = sorted(k for k in first if settings.get(k) != first[k])
            raise ValueError(f"group {label!r}: {folder} differs from {folders[0]} in "
                             f"{', '.join(changed)}, not just the seed")
    columns: dict[str, list[float]] = {
        "teacher_accuracy": [r["summary"]["teacher_accuracy"] for r in reports],
        "student_accuracy": [r["summary"]["student_accuracy"] for r in reports],
        "kept_in_domain": [r["summary"]["accuracy_retained"] for r in reports],
        "speedup_b32": [r["summary"]["speedup_b32"] for r in reports],
    }
    for name in reports[0].get("out_of_domain", {}):
        columns[f"kept_{name}"] = [r["out_of_domain"][name]["retained"] for r in reports]
    row: dict[str, Any] = {"label": label, "runs": [str(f) for f in folders],
                           "seeds": [r["config"]["seed"] for r in reports],
                           "wall_seconds": [r["timings"]["total_seconds"] for r in reports]}
    for key, values in columns.items():
        row[key] = {"mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return row


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    keys = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    body = []
    for row in rows:
        cells = [row["label"], ", ".join(str(s) for s in row["seeds"])]
        for k in keys:
            scale, unit = (1.0, "x") if k == "speedup_b32" else (100.0, "")
            sd = f" ± {scale * row[k]['sd']:.1f}" if len(row[k]["values"]) > 1 else ""
            cells.append(f"{scale * row[k]['mean']:.1f}{unit}{sd}")
        body.append(cells)
    table = markdown_table(["setting", "seeds"] + [k.replace("_", " ") for k in keys], body,
                           align="ll" + "r" * len(keys))
    return (f"Command: `{command}`  \n"
            "Mean ± sd over the seeds (no sd for one seed; accuracies and kept shares in %; speed-up of the student "
            "over the teacher at batch 32, both timed in fp32).\n\n" + table + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", action="append", required=True,
                        help="LABEL=DIR[,DIR...]: tinylab distill output folders, one per seed")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "quick")
    args = parser.parse_args(argv)
    try:
        groups = [parse_group(g) for g in args.group]
        rows = [group_row(label, [load_report(f) for f in folders], folders)
                for label, folders in groups]
    except (ValueError, FileNotFoundError) as err:
        print(f"pipeline_levers.py: {err}", file=sys.stderr)
        return 2
    command = ".venv/bin/python bench/pipeline_levers.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    text = markdown(rows, command)
    args.output.mkdir(parents=True, exist_ok=True)
    write_text(args.output / "levers.md", text)
    write_json(args.output / "levers.json", rows)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
