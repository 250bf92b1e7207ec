# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYENV_PY := $(shell pyenv root 2>/dev/null)/versions/3.7.16/bin/python3.7
PYTHON37 ?= $(shell if [ -x "$(PYENV_PY)" ]; then echo "$(PYENV_PY)"; else command -v python3.7 || echo python3.7; fi)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	@test -x "$(PYTHON37)" || { echo "error: Python 3.7 not found at '$(PYTHON37)'; TF 1.15 needs it (pyenv install 3.7.16, or PYTHON37=/path/to/python3.7)" >&2; exit 1; }
	$(PYTHON37) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade 'pip<24' 'setuptools<68' wheel
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info

# Speed against PyTorch diffusers (docs/benchmarks.md); never part of `make test`. Creates .venv-peer (torch +
# diffusers), benchmarks/.venv-tf2 (the library on TF 2.11 with oneDNN) and benchmarks/.venv-mkl (intel-tensorflow
# 1.15), waits for a quiet machine, writes benchmarks/results/. BENCH_ARGS=--quick for a smoke run of a few minutes.
bench: install
	bash tools/make_peer_venv.sh
	PYTHON37="$(PYTHON37)" bash benchmarks/make_tf2_venv.sh
	PYTHON37="$(PYTHON37)" bash benchmarks/make_mkl_venv.sh
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
