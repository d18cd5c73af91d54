# spinenet: `make test` and `make demo` work on a fresh machine; each creates
# .venv (Python 3.11 + the pinned dependencies of pyproject.toml) when missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv test test-fast demo demo-maskrcnn clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m 'not slow' tests

demo: $(STAMP)
	$(PY) -m spinenet.cli.demo --output_dir=demo_output

demo-maskrcnn: $(STAMP)
	$(PY) -m spinenet.cli.demo --task=maskrcnn --output_dir=demo_maskrcnn

clean:
	rm -rf $(VENV) demo_output demo_maskrcnn demo_classification *.egg-info
