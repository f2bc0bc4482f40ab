# pkdn-edge developer/user entry points. `make install` builds .venv with everything (CPU torch).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# A bare `torch` would pull a multi-GB CUDA build: pin the CPU wheel first (GPU users: set TORCH_SPEC).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/python -m pkdn_edge.webcam

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pytest benchmarks -q --benchmark-enable

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
