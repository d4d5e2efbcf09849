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
  The marker also holds the content fingerprint of every local file the settings name
  (:func:`tinylab.fingerprint.input_fingerprints`): a task file edited between the
  interruption and ``--resume`` is a changed setting too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from tinylab.atomic import atomic_write_text
from tinylab.config import Config
from tinylab.fingerprint import input_fingerprints

__all__ = ["MARKER", "claim_output_dir", "claim_folder", "config_differences"]

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


def _check_not_dangling(out: Path) -> None:
    """A symbolic link to nothing would make ``mkdir`` fail with a bare "File exists"."""
    if out.is_symlink() and not out.exists():
        raise ValueError(f"output {out} is a symbolic link to {os.readlink(out)}, which does "
                         f"not exist; create that folder or choose another --output")


def claim_folder(out: str | Path, kind: str, *, overwrite: bool = False,
                 writes: Sequence[str] = ()) -> Path:
    """Claim ``out`` for a command other than ``distill`` (``kind`` names it, e.g.
    ``"tinylab course run"``), by the same rules as :func:`claim_output_dir`.

    A new or empty folder is claimed (the marker records ``kind``); a folder this kind of
    command marked before is reused; a folder with other files is refused in one line unless
    ``overwrite``. ``writes``: the file names the command will write into ``out``: if one of
    them is a symbolic link the command is refused, because writing would change whatever the
    link points at. A marker of another kind is left as it is (the folder stays that
    command's). Call it before any kernel, data or model starts.
    """
    out = Path(out)
    _check_not_dangling(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} is a file, not a folder; choose another --output")
    links = [out / name for name in writes if (out / name).is_symlink()]
    if links:
        raise ValueError(f"{links[0]} is a symbolic link; tinylab never writes through one. "
                         f"Remove the link or choose another --output")
    marker = out / MARKER
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            previous = "unreadable"
    if previous != kind and existing and not overwrite:
        shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise ValueError(f"output folder {out} already holds files {kind} did not write "
                         f"({shown}); choose another folder, or pass --overwrite to let "
                         f"tinylab write its outputs there (its own file names only)")
    out.mkdir(parents=True, exist_ok=True)
    if previous is None:
        atomic_write_text(marker, json.dumps({"kind": kind}, indent=1) + "\n")
    return out


def _named(cfg: Config, key: str) -> str:
    value = cfg
    for part in key.split("."):
        value = getattr(value, part, None)
    return repr(value)


def claim_output_dir(out: str | Path, cfg: Config, *, resume: bool = False,
                     overwrite: bool = False, check_only: bool = False) -> Path:
    """Check that ``out`` may receive this run's outputs, then mark it; see the module doc.

    Raises ``ValueError`` (one line, naming the folder and the fix) for a folder with someone
    else's files or a resume with changed settings; ``FileExistsError`` if ``out`` is a file.
    Call it on the main process only, before any data or model loads. ``check_only=True``
    makes every check and writes nothing: the pipeline checks the folder, then the task data,
    and claims the folder only when both are fine.
    """
    out = Path(out)
    marker = out / MARKER
    _check_not_dangling(out)
    inputs = input_fingerprints(cfg)
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
        if previous.get("kind", "tinylab distill run") != "tinylab distill run" \
                and not overwrite:
            raise ValueError(f"output folder {out} belongs to {previous.get('kind')}, not to "
                             f"a distill run; choose another --output, or pass --overwrite")
        if resume:
            diff = config_differences(previous.get("config", {}), cfg.to_dict())
            if "inputs" in previous:   # the files the settings name, by content
                diff += [f"{key}: the content of {_named(cfg, key)} changed" for key in sorted(
                    set(previous["inputs"]) | set(inputs))
                    if previous["inputs"].get(key) != inputs.get(key)
                    and not any(d.startswith(f"{key}:") for d in diff)]
            if diff:
                raise ValueError(f"cannot resume the run in {out}: its settings changed "
                                 f"({'; '.join(diff)}); undo the change, or start a new run "
                                 f"without --resume in another --output")
    elif existing and not overwrite:
        shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise ValueError(f"output folder {out} already holds files tinylab did not write "
                         f"({shown}); choose another --output, or pass --overwrite to let "
                         f"tinylab write its outputs there (its own file names only)")
    if check_only:
        return out
    out.mkdir(parents=True, exist_ok=True)

    atomic_write_text(marker, json.dumps({"kind": "tinylab distill run",
                                          "config": cfg.to_dict(), "inputs": inputs},
                                         indent=1) + "\n")
    return out
