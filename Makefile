# One-command set-up, demo and tests. Only python3 is needed on the machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# Re-installs only when requirements.txt or pyproject.toml change (the stamp is newer otherwise).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	$(PY) -m tools.demo

test: setup
	$(PY) -m ruff check hpe_jax configs tools tests
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check hpe_jax configs tools tests

clean:
	rm -rf $(VENV) .pytest_cache
