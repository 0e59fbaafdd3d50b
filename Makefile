# Two commands: `make study` (regenerate the report) and `make test` (nbdev-test + pytest).
# Both create .venv on first use and install the study's locked environment: requirements.lock (hashes; every extra),
# then the project itself without dependencies. `make lock` regenerates the lock from pyproject.toml and constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
DATASET ?= synthetic
# `make study` runs the library and study cells only: the lessons are `make test`'s (nbdev-test), and the report's numbers
# do not depend on them; `make study STUDY_FLAGS=` executes the lessons too
STUDY_FLAGS ?= --no-lessons

.PHONY: install lock study test test-all check export clean readme loadtest recipes

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# uv installs the lock (faster than pip, which unpacks one wheel at a time); it is pinned here
UV_VERSION := 0.13.9
UV := $(BIN)/uv

$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(UV) pip sync --python $(BIN)/python --require-hashes requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	$(UV) pip check --python $(BIN)/python
	$(BIN)/python -c "import torch, torchvision, onnxruntime; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'onnxruntime', onnxruntime.__version__)"
	touch $@

# the lock: every extra, for Linux x86-64 and Python 3.11 (the reference machine), hashes; the torch build is constraints.txt's
lock: | $(BIN)/activate
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(UV) pip compile pyproject.toml --all-extras --constraint constraints.txt --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-strip-extras -o requirements.lock

install: $(VENV)/.installed

study: install
	$(BIN)/fabguard study --profile $(PROFILE) --dataset $(DATASET) $(STUDY_FLAGS)
	@if [ "$(PROFILE)/$(DATASET)" = "quick/synthetic" ]; then $(MAKE) --no-print-directory readme; fi

# 01's recipe study: every variant not yet in reports/synthetic/recipe_study/results.jsonl (about 20 min each at one thread)
recipes: install
	$(BIN)/python scripts/recipe_study.py --jobs 2

# the service under load on loopback (30 s), with the study's INT8 student; figures go to the README
loadtest: install
	$(BIN)/python scripts/loadtest.py --model artifacts/$(DATASET)-$(PROFILE)/student_int8.onnx --out reports/$(DATASET)/$(PROFILE)/loadtest.json
	$(MAKE) --no-print-directory readme

# pytest: one worker per core (pytest-xdist), one thread per worker (two 2-thread trainers on two cores would stall each
# other at OpenMP's barriers); worksteal: each worker starts on its half of the tests (the smoke study first, conftest.py)
# and a worker that runs out takes tests from the other's queue
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=10 -n auto --dist worksteal

test: install
	$(BIN)/nbdev-test --timing
	$(PYTEST)

# everything `make test` runs, and the tests marked slow (nightly-style)
test-all: install
	$(BIN)/nbdev-test --timing
	$(PYTEST) -m "slow or not slow"

# fails when fabguard/ is not what nbdev-export makes of the notebooks, a notebook is not clean, or pyflakes
# finds unused imports or undefined names in the exported modules
check: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/python -m pyflakes fabguard tests scripts
	@out=$$(git status --porcelain -- fabguard nbs); if [ -n "$$out" ]; then echo "$$out"; \
	  echo "fabguard/ or nbs/ out of step with nbdev-export/nbdev-clean: run 'make export' and commit" >&2; exit 1; fi

export: install
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

clean:
	rm -rf artifacts _proc _docs

readme: install
	$(BIN)/jupyter nbconvert --to markdown --execute --no-input nbs/index.ipynb --output-dir . --output README --log-level WARN
