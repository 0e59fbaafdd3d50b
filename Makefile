# Two commands: `make study` (regenerate the report) and `make test` (nbdev-test + pytest).
# Both create .venv on first use and install the project with the study's dependencies (the `study` extra).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
DATASET ?= synthetic

.PHONY: install study test check export clean readme loadtest recipes

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --upgrade pip
	# torch and torchvision together from the registry, so pip picks a matching pair
	$(BIN)/python -m pip install -e ".[study,dev,elpv]"
	$(BIN)/python -c "import torch, torchvision, onnxruntime; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'onnxruntime', onnxruntime.__version__)"
	touch $@

install: $(VENV)/.installed

study: install
	$(BIN)/fabguard study --profile $(PROFILE) --dataset $(DATASET)
	@if [ "$(PROFILE)/$(DATASET)" = "quick/synthetic" ]; then $(MAKE) --no-print-directory readme; fi

# 01's recipe study: every variant not yet in reports/synthetic/recipe_study/results.jsonl (about 20 min each at one thread)
recipes: install
	$(BIN)/python scripts/recipe_study.py --jobs 2

# the service under load on loopback (30 s), with the study's INT8 student; figures go to the README
loadtest: install
	$(BIN)/python scripts/loadtest.py --model artifacts/$(DATASET)-$(PROFILE)/student_int8.onnx --out reports/$(DATASET)/$(PROFILE)/loadtest.json
	$(MAKE) --no-print-directory readme

test: install
	$(BIN)/nbdev-test --timing
	$(BIN)/python -m pytest -q

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
