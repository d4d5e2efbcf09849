"""What a notebook's run should give: the figures of the course's reference runs, per profile.

Every notebook ends by saving its figures (:func:`tinylab.course.save_results`) and comparing
them with the reference runs of the same profile (:func:`compare_with_expected`): a learner
sees "under ``quick`` the teacher lands near 82 %, TinyBERT near 79 %" next to their own
numbers, and a warning when one of theirs is far outside.

The reference figures are in ``expected.json`` beside this module. They are generated, never
typed: ``make expected`` (``tools/expected.py``) reads the ``*_results.json`` files of a
``make course`` run (profile ``quick``) and of the notebook tests (profile ``ci``) and writes
them with the command, machine and date that produced them. The installed package carries the
file, so a notebook on Colab compares with the same figures.

Which figures: every model's ``accuracy`` and every metric whose name says it is an accuracy,
an agreement rate, a share or an efficiency (``accuracy_retained``, ``onnx_fp32_agreement``,
``truncated_share``...; not the differences named ``*_cost``). They are fractions in [0, 1]; "far" means more than :data:`TOLERANCE` away (5 points), about three
times the spread between two seeds at these sizes. Timings are left out: they depend on the
machine.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

__all__ = ["EXPECTED_FILE", "TOLERANCE", "figures_of", "expected_numbers",
           "compare_with_expected"]

EXPECTED_FILE = Path(__file__).resolve().parent / "expected.json"
#: How far (absolute, on a fraction) a figure may lie from the reference before a warning.
TOLERANCE = 0.05
_COMPARED = re.compile(r"accuracy|agreement|retained|kept|efficiency|share")


def figures_of(results: Mapping[str, Any]) -> dict[str, float]:
    """The comparable figures of one notebook's results (the dict ``save_results`` writes):
    ``{"<model> accuracy": value, "<metric>": value}``, fractions only."""
    out: dict[str, float] = {}
    for model, row in (results.get("models") or {}).items():
        value = row.get("accuracy") if isinstance(row, Mapping) else None
        if isinstance(value, (int, float)):
            out[f"{model} accuracy"] = float(value)
    for name, value in (results.get("metrics") or {}).items():
        if (_COMPARED.search(name) and "cost" not in name and isinstance(value, (int, float))
                and not isinstance(value, bool) and 0.0 <= value <= 1.0):
            out[name] = float(value)
    return out


def _load(path: Path = EXPECTED_FILE) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def expected_numbers(notebook: str, profile: str, *, path: Path = EXPECTED_FILE
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """The reference figures of ``notebook`` under ``profile`` and where they come from
    (``{"command", "machine", "date"}``); two empty dicts when none were measured."""
    entry = _load(path).get("profiles", {}).get(profile, {})
    return dict(entry.get("notebooks", {}).get(notebook, {})), {
        k: entry[k] for k in ("command", "machine", "date") if k in entry}


def compare_with_expected(results: str | Path | Mapping[str, Any], *,
                          tolerance: float = TOLERANCE, path: Path = EXPECTED_FILE):
    """Print this run's figures next to the reference run's, warn about those more than
    ``tolerance`` away, and return the table (a ``pandas.DataFrame``: ``expected``, ``yours``,
    ``difference``, ``far``).

    ``results``: the path :func:`tinylab.course.save_results` returned, or its content.
    """
    import pandas as pd  # here, not at the top: `import tinylab.course` stays light

    if not isinstance(results, Mapping):
        results = json.loads(Path(results).read_text(encoding="utf-8"))
    notebook, profile = results["notebook"], results["profile"]
    expected, source = expected_numbers(notebook, profile, path=path)
    yours = figures_of(results)
    if not expected:
        print(f"no reference figures for {notebook} under profile {profile!r} (the course "
              f"measures 'ci' and 'quick'); yours: "
              + ", ".join(f"{k} {v:.1%}" for k, v in yours.items()))
        return pd.DataFrame(columns=["expected", "yours", "difference", "far"])
    names = [n for n in expected if n in yours] + [n for n in yours if n not in expected]
    table = pd.DataFrame({"expected": [expected.get(n) for n in names],
                          "yours": [yours.get(n) for n in names]}, index=names, dtype=float)
    table["difference"] = table["yours"] - table["expected"]
    table["far"] = table["difference"].abs() > tolerance
    print(f"reference run ({profile!r}, {source.get('machine', 'machine not recorded')}, "
          f"{source.get('date', 'date not recorded')}; {source.get('command', '')}):")
    with pd.option_context("display.float_format", "{:.3f}".format):
        print(table.to_string())
    far = table.index[table["far"]].tolist()
    if far:
        print(f"WARNING: {', '.join(far)} lie more than {tolerance:.0%} from the reference run. "
              f"Check that nothing was changed by accident: the profile ({profile!r}), the seed, "
              f"a setting, an exercise answer that the cells below used. A GPU or another CPU "
              f"moves results a little, not this much.")
    else:
        print(f"every figure is within {tolerance:.0%} of the reference run")
    return table
