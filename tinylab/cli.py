"""The ``tinylab`` command line.

    tinylab assets fetch [NAME ...]     download, verify and cache the offline assets
    tinylab assets list                 what is cached, its size, verified or not
    tinylab assets verify [NAME ...]    re-hash every cached file against its manifest
    tinylab distill --profile P [--output DIR] [--set key=value ...] [--resume]
    tinylab course run [--profile P] [--output DIR] [--alone]   execute every notebook
    tinylab course solutions DIR        the answer key: notebooks with every exercise filled in
    tinylab course lab                  open JupyterLab on the course
    tinylab course prepare [--profile P]   fill the cache as the notebooks would (room set-up)
    tinylab cache pack FILE / unpack FILE  move a prepared cache on a USB stick, verified
    tinylab gpu-check                   the ci pipeline and every notebook on a CUDA GPU

Each subcommand is a thin wrapper: the work lives in the module named in its help text, so
what the command line does, a notebook can do with the same call. What writes into the
repository (the notebooks' Colab cells, the agendas, the run-time table, the site) is not a
subcommand: it is ``tools/`` of the repository, run by ``make sync``, ``make times`` and
``make site``.
"""
from __future__ import annotations

import argparse
import errno
import sys

from tinylab import __version__


def _cmd_assets_fetch(args: argparse.Namespace) -> int:
    from tinylab import assets

    paths = assets.fetch(args.names or None, progress=not args.quiet)
    for name, path in paths.items():
        print(f"{name:<22} {path}")
    return 0


def _cmd_assets_list(args: argparse.Namespace) -> int:
    from tinylab import assets

    rows = assets.list_assets()
    print(f"cache: {assets.cache_dir()}")
    print(f"{'asset':<22} {'size':>10}  {'status':<10} source")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.1f} MB" if row.get("size_bytes") else "-"
        print(f"{row['name']:<22} {size:>10}  {row['status']:<10} {row['source']}")
    print(f"checked: {rows[0]['checked']}" if rows else "no assets")
    return 0


def _cmd_assets_verify(args: argparse.Namespace) -> int:
    from tinylab import assets

    bad = 0
    for name in args.names or list(assets.ASSETS):
        problems = assets.verify_problems(name)
        bad += bool(problems)
        print(f"{name:<22} " + ("ok (every file re-hashed)" if not problems
                                 else "FAILED: " + "; ".join(problems)))
    if bad:
        print("tinylab: error: fix with `tinylab assets fetch` (a corrupt asset is fetched "
              "again)", file=sys.stderr)
    return 1 if bad else 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from tinylab.config import get_config
    from tinylab.pipeline import run_pipeline

    cfg = get_config(args.profile, args.set or [])
    run_pipeline(cfg, output_dir=args.output, resume=args.resume, overwrite=args.overwrite)
    return 0


def _cmd_course_run(args: argparse.Namespace) -> int:
    from tinylab.course import run_course

    return run_course(profile=args.profile, output_dir=args.output,
                      notebooks=args.notebooks or None, alone=args.alone,
                      overwrite=args.overwrite)


def _cmd_course_prepare(args: argparse.Namespace) -> int:
    from tinylab.assets import cache_dir
    from tinylab.config import resolve_profile_name
    from tinylab.course import prepare

    profile = resolve_profile_name(args.profile)
    for step, seconds in prepare(profile).items():
        print(f"{step:<16} {seconds:8.1f} s")
    print(f"cache {cache_dir()} is prepared for the {profile!r} notebooks; "
          f"`tinylab cache pack FILE` copies it to other machines")
    return 0


def _cmd_cache_pack(args: argparse.Namespace) -> int:
    from tinylab.course import pack_cache

    manifest = pack_cache(args.file)
    size = sum(f["size"] for f in manifest["files"].values())
    print(f"packed {len(manifest['entries'])} entries ({len(manifest['files'])} files, "
          f"{size / 1e6:.1f} MB) into {args.file}")
    return 0


def _cmd_cache_unpack(args: argparse.Namespace) -> int:
    from tinylab.assets import cache_dir
    from tinylab.course import unpack_cache

    result = unpack_cache(args.file)
    print(f"verified every file; added {len(result['added'])} entries to {cache_dir()}, kept "
          f"{len(result['kept'])} already there")
    return 0


def _cmd_course_solutions(args: argparse.Namespace) -> int:
    from tinylab.course import write_solutions

    for path in write_solutions(args.folder, overwrite=args.overwrite):
        print(path)
    return 0


def _cmd_course_lab(args: argparse.Namespace) -> int:
    from tinylab.course import open_lab

    return open_lab(extra_args=args.lab_args)


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from tinylab.course import run_gpu_check

    return run_gpu_check(args.device, args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinylab",
        description="TinyBERT-style knowledge distillation: offline assets, the two-stage "
                    "distillation pipeline and the course notebooks.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    parser.add_argument("--version", action="version",
                        version=f"tinylab {__version__} (distribution tinylab-course)")
    sub = parser.add_subparsers(dest="command", required=True)

    p_assets = sub.add_parser("assets", help="offline assets (tinylab.assets)")
    sub_assets = p_assets.add_subparsers(dest="assets_command", required=True)
    p_fetch = sub_assets.add_parser("fetch", help="download, verify and cache assets (idempotent)")
    p_fetch.add_argument("names", nargs="*", help="asset names (default: all)")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress output")
    p_fetch.set_defaults(func=_cmd_assets_fetch)
    p_list = sub_assets.add_parser("list", help="list assets: size and whether verified")
    p_list.set_defaults(func=_cmd_assets_list)
    p_verify = sub_assets.add_parser("verify", help="re-hash every cached file (sha256)")
    p_verify.add_argument("names", nargs="*", help="asset names (default: all)")
    p_verify.set_defaults(func=_cmd_assets_verify)

    p_distill = sub.add_parser(
        "distill", help="teacher fine-tuning, general + task distillation, evaluation "
                        "(tinylab.pipeline)")
    p_distill.add_argument("--profile", default=None,
                           help="ci, quick or full (default: $TINYLAB_PROFILE or quick)")
    p_distill.add_argument("--output", default=None,
                           help="output folder (default: runs/<profile>)")
    p_distill.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="config override, e.g. --set student.num_layers=2 (repeatable)")
    p_distill.add_argument("--resume", action="store_true",
                           help="continue an interrupted run from its last checkpoint")
    p_distill.add_argument("--overwrite", action="store_true",
                           help="write into an output folder that holds other files (tinylab "
                                "replaces only its own file names there)")
    p_distill.set_defaults(func=_cmd_distill)

    p_course = sub.add_parser("course", help="the notebooks (tinylab.course)")
    sub_course = p_course.add_subparsers(dest="course_command", required=True)
    p_run = sub_course.add_parser("run", help="execute every notebook with papermill")
    p_run.add_argument("--profile", default=None, help="ci, quick or full (default: quick)")
    p_run.add_argument("--output", default=None, help="folder for executed notebooks")
    p_run.add_argument("--alone", action="store_true",
                       help="each notebook on its own, with an empty cache (as on a new machine)")
    p_run.add_argument("notebooks", nargs="*", help="run only these notebooks")
    p_run.add_argument("--overwrite", action="store_true",
                       help="write into an output folder that holds other files (tinylab "
                            "replaces only its own file names there)")
    p_run.set_defaults(func=_cmd_course_run)
    p_prep = sub_course.add_parser(
        "prepare", help="fill the cache with the teacher, general student and augmented data "
                        "the notebooks would compute (tinylab.course.runner.prepare)")
    p_prep.add_argument("--profile", default=None, help="ci, quick or full (default: quick)")
    p_prep.set_defaults(func=_cmd_course_prepare)
    p_sol = sub_course.add_parser(
        "solutions", help="the answer key: notebook copies with every exercise filled in "
                          "(tinylab.course.answer_key)")
    p_sol.add_argument("folder", help="a new or empty folder for the copies")
    p_sol.add_argument("--overwrite", action="store_true",
                       help="write into a folder that holds other files, replacing earlier "
                            "answer-key copies there")
    p_sol.set_defaults(func=_cmd_course_solutions)
    p_lab = sub_course.add_parser("lab", help="open JupyterLab on notebooks/")
    p_lab.add_argument("lab_args", nargs=argparse.REMAINDER, help="passed to jupyter lab")
    p_lab.set_defaults(func=_cmd_course_lab)
    p_cache = sub.add_parser("cache", help="move a prepared cache between machines "
                                           "(tinylab.course.cache_pack)")
    sub_cache = p_cache.add_subparsers(dest="cache_command", required=True)
    p_pack = sub_cache.add_parser("pack", help="write the cache into a tar file")
    p_pack.add_argument("file")
    p_pack.set_defaults(func=_cmd_cache_pack)
    p_unpack = sub_cache.add_parser("unpack", help="verify a pack and add its entries")
    p_unpack.add_argument("file")
    p_unpack.set_defaults(func=_cmd_cache_unpack)

    p_gpu = sub.add_parser(
        "gpu-check", help="the ci pipeline and every notebook on a CUDA GPU "
                          "(tinylab.course.gpu_check)")
    p_gpu.add_argument("--device", default="cuda", help="device to check (default: cuda)")
    p_gpu.add_argument("--output", default=None, help="folder for its outputs (default: temp)")
    p_gpu.set_defaults(func=_cmd_gpu_check)
    return parser


# A full disk, a quota or a file-size limit: the user's to fix, not a bug.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _disk_full(err: BaseException) -> bool:
    """A full disk, even when a library (safetensors, torch.save) wraps the OS error."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, OSError) and err.errno in _FULL:
            return True
        text = str(err)
        if any(s in text for s in ("No space left on device", "File too large",
                                   "Disk quota exceeded", "FileTooLarge", "StorageFull")):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input or a bad state in words the user can act on."""
    from tinylab.distill.checkpoint import CheckpointError

    # ValueError covers DeviceError and bad settings; FileNotFoundError covers
    # tinylab.assets.AssetNotAvailableError; PermissionError a read-only folder.
    return (ValueError, FileNotFoundError, FileExistsError, PermissionError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    """Run the command line. Known errors: one line on stderr, exit 2. Anything unexpected:
    one line that says so, exit 1; ``--debug`` shows the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("tinylab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every error ends in one readable line
        if args.debug:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if _disk_full(err):
            where = getattr(err, "filename", None) or "a file"
            print(f"tinylab: error: no room to write {where} ({first[:120]}); free some "
                  f"space, or choose another --output / "
                  f"$TINYLAB_CACHE. Files already written are intact (every write goes to a "
                  f"temporary name first).", file=sys.stderr)
            return 2
        if isinstance(err, _known_errors()):
            # (multi-line messages, e.g. check_compatible's list, are joined into one line)
            print(f"tinylab: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        print(f"tinylab: unexpected error: {type(err).__name__}: {first} (run again with "
              f"--debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
