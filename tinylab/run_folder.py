"""The output folder of ``tinylab distill``: claimed before any work, never anyone else's files.

A run writes ``teacher/``, ``student/``, ``checkpoints/``, ``report.json`` and a few plots into
its folder, and replaces them when it runs again. So before any work :func:`claim_output_dir`
makes sure the folder is tinylab's to write into:

* a new or empty folder is claimed: tinylab writes a marker, ``.tinylab-run.json``, holding the
  configuration of the run;
* a folder with that marker was made by an earlier tinylab run: it is reused (its own outputs
  are replaced, files a user added next to them are left alone);
* a non-empty folder without the marker holds someone's files: refused in one line, unless the
  user says ``overwrite=True`` (``--overwrite``);
* ``resume=True`` compares the configuration in the marker with this run's and refuses any
  difference, listing the keys (a resumed run that silently trained half its steps with the
  old learning rate would report numbers no configuration produced). ``device`` may differ:
  moving an interrupted run to another machine changes where it runs, not what it computes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from tinylab.config import Config

__all__ = ["MARKER", "claim_output_dir", "config_differences"]

MARKER = ".tinylab-run.json"
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"device"}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every setting that differs (dotted keys, sorted)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]


def claim_output_dir(out: str | Path, cfg: Config, *, resume: bool = False,
                     overwrite: bool = False) -> Path:
    """Check that ``out`` may receive this run's outputs, then mark it; see the module doc.

    Raises ``ValueError`` (one line, naming the folder and the fix) for a folder with someone
    else's files or a resume with changed settings; ``FileExistsError`` if ``out`` is a file.
    Call it on the main process only, before any data or model loads.
    """
    out = Path(out)
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} is a file, not a folder; choose another --output")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if marker.exists():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise ValueError(f"{marker} is unreadable; it marks {out} as a tinylab run folder. "
                             f"Delete the marker (and the run's outputs) or choose another "
                             f"--output") from None
        if resume:
            diff = config_differences(previous.get("config", {}), cfg.to_dict())
            if diff:
                raise ValueError(f"cannot resume the run in {out}: its settings changed "
                                 f"({'; '.join(diff)}); undo the change, or start a new run "
                                 f"without --resume in another --output")
    elif existing and not overwrite:
        shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise ValueError(f"output folder {out} already holds files tinylab did not write "
                         f"({shown}); choose another --output, or pass --overwrite to let "
                         f"tinylab write its outputs there (its own file names only)")
    out.mkdir(parents=True, exist_ok=True)
    from tinylab.atomic import atomic_write_text

    atomic_write_text(marker, json.dumps({"kind": "tinylab distill run",
                                          "config": cfg.to_dict()}, indent=1) + "\n")
    return out
