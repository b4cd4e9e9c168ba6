# One-command set-up, demo and tests. Only python3 is needed on the machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# jax's backend: cpu (requirements.txt as is), cuda (= cuda12), cuda13 or tpu; the pinned jax
# version either way. Default: cuda where nvidia-smi exists, cpu elsewhere.
ACCEL ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
JAX_VERSION := $(shell sed -n 's/^jax\[cpu\]==//p' requirements.txt)
JAX_EXTRA_cuda := cuda12
JAX_EXTRA_cuda12 := cuda12
JAX_EXTRA_cuda13 := cuda13
JAX_EXTRA_tpu := tpu
JAX_LINKS_tpu := -f https://storage.googleapis.com/jax-releases/libtpu_releases.html

.PHONY: setup demo reproduce test lint clean

setup: $(STAMP) $(if $(filter-out cpu,$(ACCEL)),$(VENV)/.installed-$(ACCEL))

# Re-installs only when requirements.txt or pyproject.toml change (the stamp is newer otherwise).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The accelerator's jax on top of the CPU set (same version; the CPU backend stays available).
$(VENV)/.installed-%: $(STAMP)
	@test -n "$(JAX_EXTRA_$*)" || { echo "ACCEL=$* is not one of cpu, cuda, cuda12, cuda13, tpu"; exit 2; }
	$(PY) -m pip install --quiet "jax[$(JAX_EXTRA_$*)]==$(JAX_VERSION)" $(JAX_LINKS_$*)
	touch $@

# The demo fine-tunes the pre-trained network the repository ships (assets/demo_pretrained,
# written by `make reproduce`); FROM_SCRATCH=1 pre-trains it first (the reproduce config).
demo: setup
	$(PY) -m tools.demo $(if $(FROM_SCRATCH),--config=configs/reproduce.py --workdir=runs/demo_from_scratch)

# Pre-training until the source model has learned, fine-tuning, evaluation (under an hour on a
# 2-core CPU); rewrites assets/demo_pretrained. Re-running resumes.
reproduce: setup
	$(PY) -m tools.demo --config=configs/reproduce.py --workdir=runs/reproduce \
		--export_pretrained=assets/demo_pretrained

test: setup
	$(PY) -m ruff check hpe_jax configs tools tests
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check hpe_jax configs tools tests

clean:
	rm -rf $(VENV) .pytest_cache
