# Set-up and the project's jobs. Every target installs what it needs first (idempotent), so on a
# fresh machine `make course` and `make test` are the only two commands needed.
#
#   make course      run the whole course (6 notebooks, offline `quick` profile) -> runs/course/
#   make test        the test suite, including every notebook under the `ci` profile
#   make lab         open JupyterLab on notebooks/
#   make distill     the `tinylab distill` pipeline (PROFILE=quick by default)
#   make bench       the benchmarks in bench/ (see README "Results")
#   make gpu-check   on a machine with a CUDA GPU: the ci pipeline and every notebook on it
#
# torch: the CPU build is installed before anything that depends on it (a bare `torch`
# requirement pulls a multi-GB CUDA build). Elsewhere, point pip at the CPU wheels with
#   make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" test

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PROFILE ?= quick
BIN := $(VENV)/bin
STAMP := $(VENV)/.tinylab-installed

export TRANSFORMERS_VERBOSITY ?= error
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup assets course test lab distill bench gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[course,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tinylab)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

assets: setup
	$(BIN)/tinylab assets fetch

course: assets
	$(BIN)/tinylab course run --profile $(PROFILE) --output runs/course

# One pytest run: the unit tests, every notebook under the ci profile (tests/test_notebooks.py),
# and nbval's comparison of the stored golden cells with a fresh run (notebooks/*.ipynb).
test: assets
	TINYLAB_PROFILE=ci TQDM_DISABLE=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks

lab: assets
	$(BIN)/tinylab course lab

distill: assets
	$(BIN)/tinylab distill --profile $(PROFILE) --output runs/$(PROFILE)

bench: assets
	$(BIN)/python bench/run_all.py

# On a CUDA machine, install a CUDA build of torch instead of the CPU one, e.g.
#   make TORCH="torch" gpu-check
gpu-check: assets
	$(BIN)/tinylab gpu-check

clean:
	rm -rf $(VENV) runs .pytest_cache
