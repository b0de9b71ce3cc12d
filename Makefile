# The two commands of the README:
#   make run    sets up .venv if needed and runs the main job (the TFX pipeline)
#   make test   sets up .venv if needed and runs the tests
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
DATA ?=
RUN_ARGS ?=

.PHONY: run test bench setup clean

$(STAMP): requirements.txt overrides.txt pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(VENV)/bin/python || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip install --python $(VENV)/bin/python -r requirements.txt --override overrides.txt
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
