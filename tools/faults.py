"""The fault-and-bad-input table: what tinylab does when things go wrong, and what is lost.

Every case runs for real (``tinylab`` on the command line, in a subprocess, or the library
call named), in a scratch folder with a fresh cache that links the offline assets. Before each
case the script writes some "user files" where the case will touch; after it, it checks each
one byte for byte. The table says what tinylab did (exit code and its first line) and how many
of those files were lost or changed. Kill-and-resume cases also check that ``--resume``
finishes with exactly the student of an uninterrupted run.

    .venv/bin/python tools/faults.py              # writes docs/faults.md and prints it
    .venv/bin/python tools/faults.py --only case_hostile_packs   # one case, printed only

Takes about a quarter of an hour on 2 CPU cores (the kill/resume cases train small real
pipelines).
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repository import REPO_ROOT as ROOT  # noqa: E402

from tinylab.course import fresh_cache  # noqa: E402

TINYLAB = [sys.executable, "-m", "tinylab"]
# A small but real pipeline: the offline teacher, 128 training sentences, a tiny student.
SMALL = ["data.train_size=128", "data.validation_size=48", "data.test_size=48",
         "data.general_size=128", "augment.enabled=false", "student.num_layers=2",
         "student.hidden_size=48", "student.intermediate_size=96", "general.max_steps=6",
         "task_intermediate.max_steps=6", "task_prediction.max_steps=6", "teacher.max_steps=6"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


class Scratch:
    """A scratch folder with a fresh cache (assets linked) and helpers for user files."""

    def __init__(self, base: Path, name: str):
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.cache = fresh_cache(self.dir / "cache")
        self.user: dict[Path, str] = {}

    def user_file(self, path: Path, content: bytes = b"the user's own work\n") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self.user[path] = hashlib.sha256(content).hexdigest()
        return path

    def lost(self) -> int:
        return sum(1 for p, h in self.user.items()
                   if not p.exists() or hashlib.sha256(p.read_bytes()).hexdigest() != h)

    def private_assets(self, *, copy: bool) -> Path:
        """Replace the linked assets folder by one of this case's own: copies of the assets
        (``copy``, safe to corrupt) or links to each asset (its own folder for leftovers)."""
        assets = self.cache / "assets"
        real = assets.resolve()
        assets.unlink()
        if copy:
            shutil.copytree(real, assets)
            return assets
        assets.mkdir()
        for name in os.listdir(real):
            if not name.startswith("."):  # the assets, not the lock file
                (assets / name).symlink_to(real / name)
        return assets

    def env(self, **extra) -> dict[str, str]:
        return {**os.environ, "TINYLAB_CACHE": str(self.cache), "TQDM_DISABLE": "1",
                "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", **extra}

    def run(self, args, *, timeout=900, **popen) -> subprocess.CompletedProcess:
        return subprocess.run([*TINYLAB, *args], cwd=self.dir, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, **popen)


def said(proc) -> str:
    """Exit code and the first line of stderr (or the last line of stdout)."""
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    line = lines[-1] if lines else (proc.stdout.strip().splitlines() or [""])[-1]
    return f"exit {proc.returncode}: `{line.strip()[:170]}`"


def student_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "student" / "model.safetensors").read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

def case_output_folder(base):
    s = Scratch(base, "output_folder")
    out = s.dir / "my_results"
    s.user_file(out / "report.json", b'{"my": "report"}')
    s.user_file(out / "student" / "model.safetensors", b"my weights")
    proc = s.run(["distill", "--profile", "ci", "--output", str(out), *sets(SMALL)])
    return "`tinylab distill --output` a folder holding the user's files", said(proc), s.lost()


def case_checkpoint_folder(base):
    s = Scratch(base, "checkpoint_folder")
    script = f"""
import torch
from datasets import Dataset
from transformers import AutoTokenizer, AutoModelForSequenceClassification
from tinylab.assets import resolve_model_path
from tinylab.config import StageConfig
from tinylab.models import load_pretrained
from tinylab.data import tokenize
from tinylab.distill import RunOptions, make_accelerator, train_stage
from tinylab.distill.loop import model_inputs
path = resolve_model_path("offline:all-MiniLM-L6-v2")
tok = AutoTokenizer.from_pretrained(path)
model = load_pretrained(AutoModelForSequenceClassification, path, num_labels=2)
ds = tokenize(Dataset.from_dict({{"text": ["a fine film", "dull"] * 8}}), tok, 16)
loss = lambda m, b: {{"total": m["student"](**model_inputs(b)).logits.pow(2).mean()}}
train_stage("s", modules={{"student": model}}, loss_fn=loss,
            train=ds.select_columns(["input_ids", "attention_mask"]), tokenizer=tok,
            stage=StageConfig(batch_size=8, max_steps=2), seed=0,
            run=RunOptions(checkpoint_dir={str(s.dir / 'work')!r}, progress=False,
                           accelerator=make_accelerator("cpu")))
print("trained")
"""
    s.user_file(s.dir / "work" / "thesis.tex")
    s.user_file(s.dir / "work" / "data" / "notes.csv")
    proc = subprocess.run([sys.executable, "-c", script], cwd=s.dir, env=s.env(),
                          capture_output=True, text=True, timeout=600)
    return ("`train_stage(run=RunOptions(checkpoint_dir=<a folder with the user's files>))`, "
            "fresh run",
            said(proc), s.lost())


def case_resume_changed(base):
    s = Scratch(base, "resume_changed")
    out = s.dir / "run"
    first = s.run(["distill", "--profile", "ci", "--output", str(out), *sets(SMALL)])
    assert first.returncode == 0, first.stderr[-2000:]
    s.user_file(out / "my_notes.txt")
    proc = s.run(["distill", "--profile", "ci", "--output", str(out), "--resume",
                  *sets(SMALL + ["task_intermediate.learning_rate=0.001"])])
    return "`--resume` after changing a setting (a learning rate)", said(proc), s.lost()


def case_bad_values(base):
    rows = []
    for override in ("task_intermediate.learning_rate=-1e-4", "task_prediction.batch_size=0",
                     "loss.temperature=0", "student.num_layers=5",
                     "student.hidden_size=100", "device=cuda", "precision=fp16",
                     "teacher.epochs=inf", "loss.temperature=nan", "seed=-1",
                     "data.max_length=1024", "profile=full",
                     "teacher.model=bert-base-uncasedd", "data.task=my_reviews"):
        s = Scratch(base, f"bad_{len(rows)}_" + override.split("=")[0].replace(".", "_"))
        start = time.perf_counter()
        proc = s.run(["distill", "--profile", "ci", "--output", str(s.dir / "o"), "--set",
                      override])
        seconds = time.perf_counter() - start
        rows.append((f"`--set {override}`", said(proc) + f" after {seconds:.1f} s, before any "
                     f"data loads" if proc.returncode == 2 else said(proc), s.lost()))
    return rows


def case_task_files(base):
    rows = []
    files = {"a task file with a single class": b"text,label\n" + b"".join(
        b"review number %d,fresh\n" % i for i in range(60)),
        "an empty task file": b"",
        "a task file with one 125,000-character text": b"text,label\n" + b"".join(
            b"review number %d,%s\n" % (i, b"pos" if i % 2 else b"neg") for i in range(60))
        + b"x" * 125_000 + b",pos\n",
        "a task file whose rare class has no training example (`data.train_size=10`)":
            b"text,label\n" + b"".join(b"review number %d,%s\n" % (i, b"pos" if i % 2 else
                                                                   b"neg") for i in range(60))
            + b"the only mixed review,mixed\n",
        "a task file that is not UTF-8": "text,label\ncaf\u00e9,pos\nbad,neg\n".encode("latin-1")}
    for title, content in files.items():
        s = Scratch(base, "task_" + str(len(rows)))
        path = s.user_file(s.dir / "task.csv", content)
        extra = ["data.train_size=10"] if "train_size" in title else []
        proc = s.run(["distill", "--profile", "ci", "--output", str(s.dir / "o"),
                      *sets([f"data.task={path}", *extra])])
        rows.append((title, said(proc), s.lost()))
    return rows


def case_bad_places(base):
    rows = []
    s = Scratch(base, "cache_is_a_file")
    blocker = s.user_file(s.dir / "cachefile")
    proc = subprocess.run([*TINYLAB, "distill", "--profile", "ci", "--output",
                           str(s.dir / "o")], cwd=s.dir, env=s.env(TINYLAB_CACHE=str(blocker)),
                          capture_output=True, text=True, timeout=300)
    rows.append(("`$TINYLAB_CACHE` names a file", said(proc), s.lost()))
    s = Scratch(base, "dangling_output")
    link = s.dir / "out"
    link.symlink_to(s.dir / "gone")
    proc = s.run(["distill", "--profile", "ci", "--output", str(link)])
    rows.append(("`--output` is a symbolic link to nothing", said(proc), s.lost()))
    return rows


def case_rerun_keeps_user_files(base):
    s = Scratch(base, "rerun")
    out = s.dir / "run"
    first = s.run(["distill", "--profile", "ci", "--output", str(out), *sets(SMALL)])
    assert first.returncode == 0, first.stderr[-2000:]
    for path in (out / "notes.md", out / "student" / "handler.py",
                 out / "teacher" / "eval.csv", out / "checkpoints" / "mine.txt"):
        s.user_file(path)
    proc = s.run(["distill", "--profile", "ci", "--output", str(out), *sets(SMALL)])
    return ("`tinylab distill --output R` again into a finished run, with the user's files in "
            "R/, R/student/, R/teacher/, R/checkpoints/", said(proc), s.lost())


def case_changed_task_file(base):
    s = Scratch(base, "changed_task")
    rows = [f"review number {i} {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}"
            for i in range(120)]
    task = s.dir / "reviews.csv"
    task.write_text("text,label\n" + "\n".join(rows) + "\n")
    args = ["distill", "--profile", "ci", "--set", f"data.task={task}", *sets(SMALL)]
    first = s.run([*args, "--output", str(s.dir / "a")])
    assert first.returncode == 0, first.stderr[-2000:]
    rows[7] = rows[7].replace(",pos", ",neg")
    task.write_text("text,label\n" + "\n".join(rows) + "\n")
    proc = s.run([*args, "--output", str(s.dir / "b")])
    trained = "teacher: fine-tuning" in proc.stdout
    return ("one label changed in the task file, then `tinylab distill` again",
            f"exit {proc.returncode}; the teacher is "
            f"{'fine-tuned again (new cache key)' if trained else 'LOADED FROM THE OLD FILE'}",
            s.lost())


def case_course_run_folder(base):
    s = Scratch(base, "course_run")
    out = s.dir / "executed"
    s.user_file(out / "summary.md", b"my own summary")
    s.user_file(out / "01_tokenization.ipynb", b"my notebook")
    proc = s.run(["course", "run", "--profile", "ci", "--output", str(out)])
    rows = [("`tinylab course run --output` a folder with the user's `summary.md` and a "
             "notebook of the same name", said(proc), s.lost())]
    s = Scratch(base, "course_solutions")
    key = s.dir / "key"
    s.user_file(key / "grades.csv")
    proc = s.run(["course", "solutions", str(key)])
    rows.append(("`tinylab course solutions` into a folder with the user's files", said(proc),
                 s.lost()))
    return rows


def _pack(path: Path, entries, members) -> Path:
    """A pack whose manifest matches its files (sha256, this version) but names what it likes."""
    import io
    import tarfile

    from tinylab import __version__

    files = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
             for n, d in members.items()}
    with tarfile.open(path, "w") as tar:
        for name, data in {"tinylab-pack.json": json.dumps(
                {"format": 1, "tinylab": __version__, "entries": entries,
                 "files": files}).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def case_hostile_packs(base):
    rows = []
    packs = {"an entry `../../authorized_keys`": (["../../authorized_keys"],
                                                   {"../../authorized_keys": b"attacker"}),
             "an entry of an unknown kind (`plugins/x`)": (["plugins/x"], {"plugins/x": b"x"}),
             "a nested entry (`teachers/a/b`)": (["teachers/a/b"], {"teachers/a/b": b"x"}),
             "a file escaping its entry (`teachers/a/../../../x`)": (
                 ["teachers/a"], {"teachers/a/../../../x": b"x"})}
    for title, (entries, members) in packs.items():
        s = Scratch(base, "pack_" + str(len(rows)))
        s.user_file(s.dir / "authorized_keys", b"the user's keys")
        pack = _pack(s.dir / "room.tar", entries, members)
        outside = sorted(p.name for p in s.dir.iterdir())
        proc = s.run(["cache", "unpack", str(pack)])
        wrote = sorted(p.name for p in s.dir.iterdir()) != outside
        rows.append((f"`cache unpack` of a pack with {title} and a matching sha256",
                     said(proc) + ("; WROTE outside the cache" if wrote else
                                   "; nothing written"), s.lost()))
    s = Scratch(base, "pack_stale")
    stale = s.cache / ".unpack-killed"
    stale.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket

    (stale / ".tinylab-unpack.json").write_text(json.dumps({"pid": int(dead),
                                                            "host": socket.gethostname()}))
    s.user_file(s.cache / ".unpack-notes" / "mine.txt")
    proc = s.run(["cache", "unpack", str(_pack(s.dir / "ok.tar", ["augment/k.parquet"],
                                               {"augment/k.parquet": b"rows"}))])
    rows.append(("a killed unpack left a `.unpack-*` folder (and the user has a folder named "
                 "`.unpack-notes`)", f"next `cache unpack`: exit {proc.returncode}, leftover "
                 f"{'removed' if not stale.exists() else 'STILL THERE'}", s.lost()))
    (s.cache / "augment").mkdir(exist_ok=True)
    proc = s.run(["cache", "pack", str(s.cache / "augment" / "room.tar")])
    rows.append(("`cache pack` into the cache's own `augment/` folder", said(proc), s.lost()))
    return rows


def case_flipped_byte(base):
    s = Scratch(base, "flipped_byte")
    assets = s.private_assets(copy=True)
    weights = assets / "all-MiniLM-L6-v2" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    listed = s.run(["assets", "list"])
    status = next(l for l in listed.stdout.splitlines() if l.startswith("all-MiniLM"))
    proc = s.run(["assets", "verify"])
    line = next(l for l in proc.stdout.splitlines() if l.startswith("all-MiniLM"))
    return ("one byte flipped in the cached teacher weights (same size)",
            f"`assets list`: `{' '.join(status.split()[:4])}` (a size check); `assets verify`: "
            f"exit {proc.returncode}, `{line[:110]}`", s.lost())


def case_stale_fetch(base):
    s = Scratch(base, "stale_fetch")
    assets = s.private_assets(copy=False)
    stale = assets / ".tmp-all-MiniLM-L6-v2-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    proc = s.run(["assets", "fetch", "--quiet"])
    return ("a fetch killed mid-download left an 80 MB `.tmp-*` folder",
            f"next `assets fetch`: exit {proc.returncode}, leftover "
            f"{'removed' if not stale.exists() else 'STILL THERE'}", s.lost())


def case_read_only_cache(base):
    s = Scratch(base, "read_only")
    listing = lambda: sorted(str(p) for p in (s.cache / "assets").resolve().rglob("*"))
    before = listing()
    proc = s.run(["assets", "fetch", "--quiet"])
    wrote = listing() != before
    return ("`assets fetch` on a complete cache (as on a read-only folder)",
            f"exit {proc.returncode}, {'WROTE to the cache' if wrote else 'nothing written'} "
            f"(no lock file, no temporary folder)", s.lost())


def case_official_hidden(base):
    from tinylab.config import get_config
    from tinylab.distill.stages import general_cache_key, teacher_cache_setting

    a = get_config("ci")
    b = get_config("ci", ["loss.official_hidden=true"])
    same = general_cache_key(a) == general_cache_key(b)
    return ("`loss.official_hidden=true` with a general student cached without it",
            f"general cache key {'UNCHANGED' if same else 'changes'}; teacher targets "
            f"{'cached' if teacher_cache_setting(b)['enabled'] else 'computed on the fly'} "
            f"(padded positions count under the switch)", 0)


def case_disk_full(base):
    s = Scratch(base, "disk_full")
    out = s.dir / "run"
    first = s.run(["distill", "--profile", "ci", "--output", str(out), *sets(SMALL)])
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in out.rglob("*") if p.is_file() and p.name != ".tinylab-run.json"}
    s.user.update(before)            # the earlier run's outputs count as the user's files now

    def capped():                    # files may grow to 1 MB: the models need more
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = s.run(["distill", "--profile", "ci", "--output", str(out), *sets(
        SMALL + ["seed=7"])], preexec_fn=capped)
    return ("disk full while writing (a 1 MB file-size limit) over an earlier run's outputs",
            said(proc), s.lost())


def case_concurrent(base):
    s = Scratch(base, "concurrent")
    procs = [subprocess.Popen([*TINYLAB, "distill", "--profile", "ci", "--output",
                               str(s.dir / f"run{i}"), *sets(SMALL)], cwd=s.dir, env=s.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    codes = [p.wait(timeout=900) for p in procs]
    teachers = list((s.cache / "teachers").iterdir())
    same = student_digest(s.dir / "run0") == student_digest(s.dir / "run1") if not any(
        codes) else False
    return ("two `tinylab distill` runs at once sharing one cache",
            f"exit codes {codes}; {len(teachers)} cached teacher; the two students "
            f"{'are identical' if same else 'DIFFER'}", s.lost())


def _run_until(s: Scratch, out: Path, marker: str, sig: int) -> subprocess.CompletedProcess:
    """Start a run, wait for ``marker`` in its output plus a moment, then send ``sig``."""
    proc = subprocess.Popen([*TINYLAB, "distill", "--profile", "ci", "--output", str(out),
                             *sets(SMALL)], cwd=s.dir, env=s.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            time.sleep(2.0)
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + (rest or ""),
                                       "")


def case_kill_and_resume(base, reference: str):
    rows = []
    points = {"teacher fine-tuning": "teacher: fine-tuning",
              "general distillation": "general distillation: training",
              "task distillation": "task distillation on"}
    for sig in (signal.SIGKILL, signal.SIGINT):
        for where, marker in points.items():
            name = f"{sig.name}_{where.split()[0]}"
            s = Scratch(base, name)
            out = s.dir / "run"
            s.user_file(s.dir / "notes.md")
            stopped = _run_until(s, out, marker, sig)
            resumed = s.run(["distill", "--profile", "ci", "--output", str(out), "--resume",
                             *sets(SMALL)])
            ok = resumed.returncode == 0 and student_digest(out) == reference
            rows.append((f"{sig.name} during {where}, then `--resume`",
                         f"stopped with exit {stopped.returncode}; resume exit "
                         f"{resumed.returncode}, student "
                         f"{'identical to an uninterrupted run' if ok else 'DIFFERENT'}",
                         s.lost()))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "faults.md"))
    parser.add_argument("--only", action="append", metavar="CASE",
                        help="run only this case (e.g. case_hostile_packs; repeatable) and "
                             "print its rows; docs/faults.md is not written")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="tinylab-faults-"))
    start = time.perf_counter()
    if args.only:
        rows = []
        for name in args.only:
            result = globals()[name](base)
            rows += result if isinstance(result, list) else [result]
        for case, did, lost in rows:
            print(f"| {case} | {did.replace('|', '/')} | {lost} |")
        shutil.rmtree(base, ignore_errors=True)
        return 0 if sum(r[2] for r in rows) == 0 else 1
    ref = Scratch(base, "reference")
    proc = ref.run(["distill", "--profile", "ci", "--output", str(ref.dir / "run"),
                    *sets(SMALL)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = student_digest(ref.dir / "run")

    rows = []
    for case in (case_output_folder, case_checkpoint_folder, case_resume_changed,
                 case_bad_values, case_task_files, case_bad_places, case_rerun_keeps_user_files,
                 case_changed_task_file, case_course_run_folder, case_hostile_packs,
                 case_flipped_byte, case_stale_fetch, case_read_only_cache,
                 case_official_hidden, case_disk_full, case_concurrent):
        print(f"[faults] {case.__name__} ...", file=sys.stderr, flush=True)
        result = case(base)
        rows += result if isinstance(result, list) else [result]
    print("[faults] kill and resume ...", file=sys.stderr, flush=True)
    rows += case_kill_and_resume(base, reference)
    minutes = (time.perf_counter() - start) / 60

    lost = sum(r[2] for r in rows)
    lines = ["| case | what tinylab did | user files lost |", "|---|---|---:|"]
    lines += [f"| {c} | {d.replace('|', '/')} | {n} |" for c, d, n in rows]
    lines += ["", f"{len(rows)} cases, {lost} user files lost or changed. Generated by "
              f"`tools/faults.py` in {minutes:.1f} min on "
              f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."]
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(
        "# Faults and bad input\n\nGenerated by `tools/faults.py`; do not edit by hand.\n\n"
        + text)
    print(text)
    shutil.rmtree(base, ignore_errors=True)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
