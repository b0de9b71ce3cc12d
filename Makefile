# The two commands of the README:
#   make run    sets up .venv if needed and runs the main job (the TFX pipeline)
#   make test   sets up .venv if needed and runs the tests
# Set-up needs only Python 3.11 (any patch release): every dependency installs
# from a wheel or a pure-Python source package, so no compiler is involved.
PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := .venv
STAMP := $(VENV)/.installed
DATA ?=
RUN_ARGS ?=

.PHONY: run test bench setup prerequisites clean

prerequisites:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found. E2E-GRec needs Python 3.11 (e.g. apt-get install python3.11 python3.11-venv, or set PYTHON=/path/to/python3.11)." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "make: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); E2E-GRec needs 3.11 (set PYTHON=)." >&2; exit 1; }

$(STAMP): requirements.txt requirements-dev.txt overrides.txt pyproject.toml | prerequisites
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@test -x $(VENV)/bin/python || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip install --python $(VENV)/bin/python -r requirements-dev.txt --override overrides.txt
	uv pip install --python $(VENV)/bin/python --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/e2e-grec run $(if $(DATA),--data $(DATA)) $(RUN_ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs
