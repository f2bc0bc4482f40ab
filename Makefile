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
	@# setuptools prints an information-only notice for every editable install that maps package folders
	@# ("Editable installation ... folders with the same name as your package"); silence that one message only
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/python -m pkdn_edge.webcam

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# `make bench`: pkdn-bench report (Markdown + JSON + plots) into $(BENCH_OUT), then the pytest-benchmark
# suite on the same artifacts. Pass e.g. BENCH_ARGS="--weights4 runs/a/best.pt --weights8 runs/b/best.pt".
BENCH_OUT       ?= benchmarks/report
BENCH_ARTIFACTS ?= exports/bench
BENCH_ARGS      ?=

bench: install
	$(BIN)/pkdn-bench --out $(BENCH_OUT) --artifacts $(BENCH_ARTIFACTS) $(BENCH_ARGS)
	PKDN_BENCH_ARTIFACTS=$(BENCH_ARTIFACTS) $(BIN)/python -m pytest benchmarks -q --benchmark-enable --benchmark-warmup=on \
		--benchmark-warmup-iterations=20 --benchmark-min-rounds=50 --benchmark-max-time=0.5 \
		--benchmark-sort=name --benchmark-columns=min,median,mean,max,rounds \
		--benchmark-json=$(BENCH_OUT)/pytest-benchmark.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
