# Two commands set up a fresh machine (see README.md):
#   make demo   installs everything into .venv and runs the main job
#   make test   installs everything into .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: a bare `torch` on Linux pulls several GB of CUDA packages.
# On a GPU machine: make TORCH_SPEC=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_OUT ?= runs/demo
DEMO_PRESET ?= tiny

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/worldloom pipeline run --preset $(DEMO_PRESET) --out $(DEMO_OUT)

test: install
	bash tests/setup_browser.sh
	bash tests/setup_minetest.sh
	# test files run in parallel, one per process (--dist loadfile: a file's Ray cluster stays in
	# its process), a process per logical CPU up to 4: 1.75x faster on 2 cores than one process.
	# 4 processes on 2 cores were 15% faster but started Ray clusters side by side, and one missed
	# its 2 x 30 s start-up (measured 2026-12-01)
	$(VENV)/bin/pytest -q -n logical --maxprocesses 4 --dist loadfile --durations=25 tests

lint: install
	$(VENV)/bin/ruff check .

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
