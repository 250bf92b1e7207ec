# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Two stacks, one code base (README, "Which stack"): STACK=tf1 is TensorFlow 1.15 on Python 3.7 in .venv (the
# original's stack, the default wherever Python 3.7 is found); STACK=tf2 is TensorFlow 2.15 on Python 3.11 in
# .venv-tf2 (current CPUs, CUDA 12 GPUs, TPU VMs). Without Python 3.7, plain `make` uses tf2 and says so.
PYENV_ROOT_DIR := $(shell pyenv root 2>/dev/null)
PYENV_PY37 := $(PYENV_ROOT_DIR)/versions/3.7.16/bin/python3.7
PYENV_PY311 := $(PYENV_ROOT_DIR)/versions/3.11.7/bin/python3.11
PYTHON37 ?= $(shell if [ -x "$(PYENV_PY37)" ]; then echo "$(PYENV_PY37)"; else command -v python3.7 || echo python3.7; fi)
PYTHON311 ?= $(shell if [ -x "$(PYENV_PY311)" ]; then echo "$(PYENV_PY311)"; else command -v python3.11 || echo python3.11; fi)

ifeq ($(origin STACK),undefined)
  ifeq ($(shell [ -x "$(PYTHON37)" ] || command -v "$(PYTHON37)" >/dev/null 2>&1 && echo yes),yes)
    STACK := tf1
  else
    STACK := tf2
    $(info Python 3.7 not found: using the TF 2.15 / Python 3.11 stack (.venv-tf2); STACK=tf1 PYTHON37=/path/to/python3.7 for TF 1.15)
  endif
endif

ifeq ($(STACK),tf1)
  VENV := .venv
  REQUIREMENTS := requirements.txt
  BASE_PYTHON := $(PYTHON37)
  BASE_NAME := Python 3.7
  BASE_HINT := TF 1.15 needs it (pyenv install 3.7.16, or PYTHON37=/path/to/python3.7)
  PIP_PINS := 'pip<24' 'setuptools<68' wheel
else ifeq ($(STACK),tf2)
  VENV := .venv-tf2
  REQUIREMENTS := requirements-tf2.txt
  BASE_PYTHON := $(PYTHON311)
  BASE_NAME := Python 3.11
  BASE_HINT := TF 2.15 needs it (pyenv install 3.11.7, or PYTHON311=/path/to/python3.11)
  PIP_PINS := 'pip==23.3.2' 'setuptools==69.0.3' 'wheel==0.42.0'
else
  $(error STACK=$(STACK); expected tf1 (TensorFlow 1.15, Python 3.7) or tf2 (TensorFlow 2.15, Python 3.11))
endif

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The peer environment (torch 2.13.0 CPU, diffusers 0.42.1; pins in tools/make_peer_venv.sh): `make test` loads our
# diffusers export in the real diffusers with it (tests/test_checkpoints.py), on either stack. Python 3.11 only.
PEER_VENV := .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

# `make lint`: ruff, pinned, in its own small Python 3.11 venv (rules in ruff.toml); offline once installed.
LINT_VENV := .venv-lint
RUFF_VERSION := 0.16.9
LINT_STAMP := $(LINT_VENV)/.installed-ruff-$(RUFF_VERSION)

.PHONY: install install-peer test test-fast demo bench lint clean

install: $(STAMP)

install-peer: $(PEER_STAMP)

$(PEER_STAMP): tools/make_peer_venv.sh
	PYTHON311="$(PYTHON311)" VENV=$(PEER_VENV) bash tools/make_peer_venv.sh
	touch $(PEER_STAMP)

$(STAMP): $(REQUIREMENTS) setup.py
	@command -v "$(BASE_PYTHON)" >/dev/null 2>&1 || { echo "error: $(BASE_NAME) not found at '$(BASE_PYTHON)'; $(BASE_HINT)" >&2; exit 1; }
	$(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade $(PIP_PINS)
	$(PY) -m pip install -q --disable-pip-version-check -r $(REQUIREMENTS)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Two test processes by default (the development machines have 2 cores); PYTEST_WORKERS=0 runs in this process.
# DIFFUSION_TF_REQUIRE_PEER=1: the diffusers round trip fails instead of skipping when .venv-peer is missing.
# --durations=40: every run, CI's included, ends with its slowest tests (CI must stay under 60 minutes).
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=40

test: install install-peer
	DIFFUSION_TF_REQUIRE_PEER=1 $(PYTEST) tests

# The quick loop: every test not marked slow (pytest.ini).
test-fast: install
	$(PYTEST) -m 'not slow' tests

lint: $(LINT_STAMP)
	$(LINT_VENV)/bin/ruff check .

$(LINT_STAMP):
	@command -v "$(PYTHON311)" >/dev/null 2>&1 || { echo "error: Python 3.11 not found at '$(PYTHON311)'; ruff's venv needs it (PYTHON311=/path/to/python3.11)" >&2; exit 1; }
	rm -rf $(LINT_VENV)
	$(PYTHON311) -m venv $(LINT_VENV)
	echo '*' > $(LINT_VENV)/.gitignore
	$(LINT_VENV)/bin/python -m pip install -q --disable-pip-version-check ruff==$(RUFF_VERSION)
	touch $(LINT_STAMP)

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf .venv .venv-tf2 $(PEER_VENV) $(LINT_VENV) build *.egg-info

# Speed against PyTorch diffusers (docs/benchmarks.md); never part of `make test`. Creates .venv-peer (torch +
# diffusers), .venv-tf2 (the library on TF 2.15, `make install STACK=tf2`) beside .venv (TF 1.15), waits for a quiet
# machine, writes benchmarks/results/. BENCH_ARGS=--quick for a smoke run of a few minutes.
bench:
	$(MAKE) install STACK=tf2
	$(MAKE) install STACK=tf1
	$(MAKE) install-peer
	.venv-tf2/bin/python benchmarks/bench.py $(BENCH_ARGS)
