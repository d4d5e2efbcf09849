# Set-up and the project's jobs. Every target installs what it needs first (idempotent), so on a
# fresh machine `make course` and `make test` are the only two commands needed. `make` alone
# lists the targets.
#
# Installing: torch first, the build that fits the machine (scripts/install_torch.py: the CPU
# build on Linux without an NVIDIA GPU, the CUDA build with one; TORCH_BUILD=cpu|cuda|default
# overrides), then exactly the tested versions of everything else (requirements/lock.txt).
# The locked set goes in with uv, which installs it in well under half of pip's time
# (docs/results.md, "Installing"); where uv cannot (no wheel of it for the platform, or an
# index that only pip's own configuration names), pip installs the same set. Either way
# scripts/lock.py --verify then checks the environment against the lock.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_BUILD ?=
TORCH_PIP_ARGS ?=
PIP_VERSION ?= 26.3
UV_VERSION ?= 0.13.10
PROFILE ?= quick
MATHJAX_VERSION ?= 3.2.2
SITE_NOTEBOOKS ?=
TAG ?=
CHECK ?=
SUMMARIES ?=
LABEL ?=
# pytest workers for `make test`, one torch thread each. Tiny models barely use a second
# thread, and many tests wait on subprocesses, pip or disk, so on 2 cores three single-threaded
# workers finish the suite sooner than two, and two sooner than one worker with two threads
# (docs/results.md, "Tests and CI"). Each worker holds a model or a notebook kernel: up to
# ~1.7 GB of memory apiece.
TEST_WORKERS ?= 3
BIN := $(VENV)/bin
STAMP := $(VENV)/.tinylab-installed
MATHJAX := $(VENV)/share/mathjax/tex-svg.js
EXTRAS := course,dev,site,deploy
LATEST := .venv-latest

export TRANSFORMERS_VERBOSITY ?= error
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export TOKENIZERS_PARALLELISM ?= false
# The offline profiles never reach for the model hub; `full` downloads BERT-base and SST-2.
ifneq ($(PROFILE),full)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
endif

# apt-get as root, else through sudo, else a one-line message naming the package.
APT_GET = if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get $(1); \
	elif command -v sudo >/dev/null; then sudo DEBIAN_FRONTEND=noninteractive apt-get $(1); \
	else echo "make: installing $(2) needs root: run 'apt-get install $(2)' as root, or install it another way"; exit 2; fi

.DEFAULT_GOAL := help
.PHONY: help setup assets course test test-latest lab distill bench gpu-check clean site \
	site-deps browser lock release-check sync times faults

help: ## list the targets
	@echo "tinylab: make TARGET [PROFILE=ci|quick|full] [TORCH_BUILD=cpu|cuda|default]"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1|\2/' | \
		awk -F'|' '{ printf "  %-15s %s\n", $$1, $$2 }'

$(STAMP): pyproject.toml requirements/lock.txt scripts/install_torch.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==$(PIP_VERSION)"
	$(BIN)/python scripts/install_torch.py --version $(TORCH_VERSION) --build "$(TORCH_BUILD)" \
		--pip-args "$(TORCH_PIP_ARGS)"
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)" 2>/dev/null && \
		$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode \
			-c requirements/lock.txt -e ".[$(EXTRAS)]" || { \
		echo "make: uv $(UV_VERSION) could not install the locked set here; pip installs it"; \
		$(BIN)/python -m pip install --quiet -c requirements/lock.txt -e ".[$(EXTRAS)]"; }
	$(BIN)/python scripts/lock.py --verify
	touch $(STAMP)

setup: $(STAMP) ## create .venv/ with torch and the locked set of everything else

assets: setup ## fetch and verify the offline teacher and data (idempotent)
	$(BIN)/tinylab assets fetch

course: assets ## the main job: the shared models once, then every notebook -> runs/course/
	$(BIN)/tinylab course prepare --profile $(PROFILE)
	$(BIN)/tinylab course run --profile $(PROFILE) --output runs/course

# One pytest run: the unit tests and every notebook under the ci profile, executed once
# (tests/test_notebooks.py), each execution also compared with the stored golden cells as
# nbval would. Then the site, built from those executed notebooks, opened in headless Chromium.
CI_NOTEBOOKS := $(CURDIR)/runs/ci-notebooks
test: assets site-deps ## the tests, every notebook under the ci profile, and the site check
	$(BIN)/python scripts/lock.py --check
	TINYLAB_PROFILE=ci TQDM_DISABLE=1 TINYLAB_NOTEBOOK_OUTPUT=$(CI_NOTEBOOKS) \
		OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=25 tests
	$(BIN)/python tools/site.py build --profile ci --notebooks $(CI_NOTEBOOKS) --output runs/site-ci
	$(BIN)/python tools/site.py check --output runs/site-ci

# Drift watch, not a gate: the newest versions pyproject.toml allows, in their own venv (torch
# stays the build install_torch.py chose: an eager upgrade would swap the CPU build for CUDA's).
test-latest: ## the quick test loop against the newest allowed versions (.venv-latest/)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python scripts/install_torch.py --version $(TORCH_VERSION) \
		--build "$(TORCH_BUILD)" --pip-args "$(TORCH_PIP_ARGS)"
	$(LATEST)/bin/python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" \
		> $(LATEST)/torch-kept.txt
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		-c $(LATEST)/torch-kept.txt -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(transformers|accelerate|datasets|tokenizers|huggingface.hub|kernels|torch)=='
	$(LATEST)/bin/tinylab assets fetch --quiet
	TINYLAB_UNLOCKED=1 TINYLAB_PROFILE=ci TQDM_DISABLE=1 $(LATEST)/bin/python -m pytest -q \
		-m "not slow" tests

lock: ## requirements/lock.txt and environment.yml from pyproject.toml (UPGRADE=1: newest)
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/python scripts/lock.py $(if $(UPGRADE),--upgrade) \
		$(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX))

# The generated parts of the repository (tools/): each notebook's Colab badge, install cell and
# run-time line, and the agendas of docs/instructor.md. CHECK=1 only reports (exit 1 if stale).
sync: setup ## notebook badges, install cells, run-time lines, agendas, design.md's layer table (CHECK=1: only check)
	$(BIN)/python tools/notebook_cells.py $(if $(CHECK),--check)
	$(BIN)/python tools/agenda.py $(if $(CHECK),--check)
	$(BIN)/python tools/layers.py $(if $(CHECK),--check)

times: setup ## docs/notebook-times.* from SUMMARIES="runs/X/summary.json ..." (LABEL=...), then sync
	@test -n "$(SUMMARIES)" || { echo "make times: name the summary.json files of \
	\`tinylab course run --alone\`: make times SUMMARIES=\"runs/X/summary.json ...\""; exit 2; }
	$(BIN)/python tools/times.py $(if $(LABEL),--label "$(LABEL)") $(SUMMARIES)

expected: setup ## tinylab/course/expected.json from PROFILE's results in RESULTS (COMMAND: what made them)
	@test -n "$(RESULTS)" -a -n "$(COMMAND)" || { echo "make expected: name the results folder and \
	the command that filled it: make expected PROFILE=quick RESULTS=runs/course COMMAND=\"make course\""; exit 2; }
	$(BIN)/python tools/expected.py --profile $(PROFILE) --command "$(COMMAND)" $(RESULTS)

faults: assets ## the fault-and-bad-input table, docs/faults.md (about a quarter of an hour)
	$(BIN)/python tools/faults.py

release-check: setup ## tag, version and notebook refs agree; the wheel installs and imports
	$(BIN)/python scripts/release_check.py $(if $(TAG),--tag $(TAG)) \
		--torch-version $(TORCH_VERSION) --torch-pip-args "$(TORCH_PIP_ARGS)"

# The site's browser-side pieces: MathJax 3 from the npm registry (served by the site itself,
# so pages work offline) and Debian's Chromium for the check. Installs what is missing.
$(MATHJAX): | $(STAMP)
	@command -v npm >/dev/null || { echo "installing npm (apt-get)"; \
		{ $(call APT_GET,update -qq,npm); } && { $(call APT_GET,install -y -qq npm,npm); } >/dev/null; }
	rm -rf $(VENV)/share/mathjax-pack && mkdir -p $(VENV)/share/mathjax-pack $(VENV)/share/mathjax
	cd $(VENV)/share/mathjax-pack && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && \
		tar xzf mathjax-$(MATHJAX_VERSION).tgz
	cd $(VENV)/share/mathjax-pack/package/es5 && cp -r tex-svg.js input output ui a11y adaptors \
		$(CURDIR)/$(VENV)/share/mathjax/
	rm -rf $(VENV)/share/mathjax-pack

browser:
	@command -v chromium >/dev/null || { echo "installing chromium (apt-get)"; \
		{ $(call APT_GET,update -qq,chromium); } && \
		{ $(call APT_GET,install -y -qq chromium,chromium); } >/dev/null; }

site-deps: $(MATHJAX) browser

site: assets site-deps ## the course as a static site in runs/site/html, checked in Chromium
	$(BIN)/python tools/site.py build --profile $(PROFILE) \
		$(if $(SITE_NOTEBOOKS),--notebooks $(SITE_NOTEBOOKS)) --output runs/site
	$(BIN)/python tools/site.py check --output runs/site

lab: assets ## JupyterLab on notebooks/
	$(BIN)/tinylab course lab

distill: assets ## the `tinylab distill` pipeline (PROFILE=quick by default) -> runs/PROFILE/
	$(BIN)/tinylab distill --profile $(PROFILE) --output runs/$(PROFILE)

bench: assets ## the benchmarks in bench/ (docs/results.md)
	$(BIN)/python bench/run_all.py

gpu-check: assets ## on a CUDA machine: the ci pipeline and every notebook on the GPU
	$(BIN)/tinylab gpu-check

clean: ## remove .venv/, .venv-latest/ and runs/
	rm -rf $(VENV) $(LATEST) runs .pytest_cache
