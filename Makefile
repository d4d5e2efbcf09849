# Set-up and the project's jobs. Every target installs what it needs first (idempotent), so on a
# fresh machine `make course` and `make test` are the only two commands needed.
#
#   make course      the shared models once (`tinylab course prepare`), then the whole course
#                    (7 notebooks, offline `quick` profile) -> runs/course/
#   make test        the test suite, including every notebook under the `ci` profile
#   make lab         open JupyterLab on notebooks/
#   make distill     the `tinylab distill` pipeline (PROFILE=quick by default)
#   make bench       the benchmarks in bench/ (see README "Results")
#   make site        the course as a static site in runs/site/html, checked in headless Chromium
#                    (PROFILE=quick by default; SITE_NOTEBOOKS=DIR reuses executed notebooks)
#   make gpu-check   on a machine with a CUDA GPU: the ci pipeline and every notebook on it
#
# torch: the CPU build is installed before anything that depends on it (a bare `torch`
# requirement pulls a multi-GB CUDA build). Elsewhere, point pip at the CPU wheels with
#   make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" test

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
PROFILE ?= quick
MATHJAX_VERSION ?= 3.2.2
SITE_NOTEBOOKS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.tinylab-installed
MATHJAX := $(VENV)/share/mathjax/tex-svg.js

export TRANSFORMERS_VERBOSITY ?= error
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup assets course test lab distill bench gpu-check clean site site-deps browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[course,dev,site]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tinylab)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

assets: setup
	$(BIN)/tinylab assets fetch

# The shared models first (teacher, general student, augmented data: `tinylab course prepare`),
# then the seven notebooks on that cache, so the per-notebook times in runs/course/summary.md
# are those of a prepared room (docs/instructor.md) and the total is the empty-cache total.
course: assets
	$(BIN)/tinylab course prepare --profile $(PROFILE)
	$(BIN)/tinylab course run --profile $(PROFILE) --output runs/course

# One pytest run: the unit tests, every notebook under the ci profile (tests/test_notebooks.py),
# and nbval's comparison of the stored golden cells with a fresh run (notebooks/*.ipynb).
# Then the site, built from the notebooks that run just executed, opened in headless Chromium.
CI_NOTEBOOKS := $(CURDIR)/runs/ci-notebooks
test: assets site-deps
	TINYLAB_PROFILE=ci TQDM_DISABLE=1 TINYLAB_NOTEBOOK_OUTPUT=$(CI_NOTEBOOKS) \
		$(BIN)/python -m pytest --durations=25 --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks
	$(BIN)/python scripts/site.py build --profile ci --notebooks $(CI_NOTEBOOKS) --output runs/site-ci
	$(BIN)/python scripts/site.py check --output runs/site-ci

# The site's browser-side pieces: MathJax 3 from the npm registry (served by the site itself,
# so pages work offline) and Debian's Chromium for the check. Installs what is missing.
$(MATHJAX): | $(STAMP)
	@command -v npm >/dev/null || { echo "installing npm (apt-get)"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	rm -rf $(VENV)/share/mathjax-pack && mkdir -p $(VENV)/share/mathjax-pack $(VENV)/share/mathjax
	cd $(VENV)/share/mathjax-pack && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && \
		tar xzf mathjax-$(MATHJAX_VERSION).tgz
	cd $(VENV)/share/mathjax-pack/package/es5 && cp -r tex-svg.js input output ui a11y adaptors \
		$(CURDIR)/$(VENV)/share/mathjax/
	rm -rf $(VENV)/share/mathjax-pack

browser:
	@command -v chromium >/dev/null || { echo "installing chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || { echo "make: Chromium is needed for the site check; install the \
		'chromium' package (as root: apt-get install chromium)"; exit 2; }

site-deps: $(MATHJAX) browser

site: assets site-deps
	$(BIN)/python scripts/site.py build --profile $(PROFILE) \
		$(if $(SITE_NOTEBOOKS),--notebooks $(SITE_NOTEBOOKS)) --output runs/site
	$(BIN)/python scripts/site.py check --output runs/site

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
