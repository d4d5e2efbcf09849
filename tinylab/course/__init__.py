"""The course tooling: running the notebooks, what they call at run time, and room set-up.

The teaching library is the rest of ``tinylab``; this subpackage is what runs the course
around it, from the installed package as well as from a checkout:

* :mod:`~tinylab.course.runner`: list, select and execute the notebooks (``tinylab course
  run``, :func:`~tinylab.course.runner.run_course`), fill the cache as they would
  (``tinylab course prepare``, :func:`~tinylab.course.runner.prepare`), an empty cache for
  a notebook run alone (:func:`~tinylab.course.runner.fresh_cache`), JupyterLab on the
  notebooks (``tinylab course lab``);
* :mod:`~tinylab.course.results`: each notebook's results file
  (:func:`~tinylab.course.results.save_results`) and the summary of a run;
* :mod:`~tinylab.course.expected`: the course's reference figures per profile, printed next to
  a learner's own with a warning when one is far off
  (:func:`~tinylab.course.expected.compare_with_expected`);
* :mod:`~tinylab.course.notebook`: what a notebook calls at run time, on Colab too
  (:func:`~tinylab.course.notebook.notebook_output_dir`,
  :func:`~tinylab.course.notebook.repository_file`,
  :func:`~tinylab.course.notebook.release_ref`);
* :mod:`~tinylab.course.answer_key`: ``tinylab course solutions``, the notebooks with every
  exercise filled in;
* :mod:`~tinylab.course.cache_pack`: ``tinylab cache pack`` / ``unpack``, a prepared cache on a
  USB stick;
* :mod:`~tinylab.course.gpu_check`: ``tinylab gpu-check``, the course on a CUDA GPU;
* :mod:`~tinylab.course.checkout`: the one place that finds the source checkout; what needs
  the notebooks fails there in one line (:class:`~tinylab.course.checkout.CheckoutNeeded`)
  when tinylab is an installed package.

The names notebooks, the command line and the tests use are importable from here
(``from tinylab.course import save_results``). What writes into the repository (the
notebooks' Colab cells, the agendas, the run-time table, the site, the fault table) is not
here: it is in ``tools/`` of the repository, run by make.
"""
from __future__ import annotations

from tinylab.course.answer_key import write_solutions
from tinylab.course.cache_pack import PackError, pack_cache, unpack_cache
from tinylab.course.checkout import CheckoutNeeded, checkout_root, require_checkout
from tinylab.course.expected import compare_with_expected, expected_numbers
from tinylab.course.gpu_check import run_gpu_check
from tinylab.course.notebook import (notebook_output_dir, package_version, release_ref,
                                     repository_file)
from tinylab.course.results import (NotebookRun, build_summary, load_results, save_results,
                                    summary_markdown)
from tinylab.course.runner import (DEFAULT_OUTPUT_DIR, default_notebook_dir, fresh_cache,
                                   list_notebooks, open_lab, prepare, run_course, run_notebook,
                                   select_notebooks)

__all__ = [
    # runner
    "DEFAULT_OUTPUT_DIR", "default_notebook_dir", "list_notebooks", "select_notebooks",
    "run_notebook", "run_course", "prepare", "fresh_cache", "open_lab",
    # results
    "NotebookRun", "save_results", "load_results", "build_summary", "summary_markdown",
    # expected figures
    "compare_with_expected", "expected_numbers",
    # notebook
    "notebook_output_dir", "repository_file", "release_ref", "package_version",
    # checkout
    "CheckoutNeeded", "checkout_root", "require_checkout",
    # answer key, cache packs, gpu check
    "write_solutions", "pack_cache", "unpack_cache", "PackError", "run_gpu_check",
]
