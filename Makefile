# Set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo lint test bench clean

# torch is pinned by constraints.txt so pip takes the CPU build, never a CUDA download
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,ray,identity]"
	# the identity tests' photos of nine real people come in insightface's wheel; its declared onnxruntime
	# would replace onnxruntime-gpu's, so it comes without dependencies (nothing of it is imported)
	$(BIN)/pip install --quiet --no-deps "insightface==2.1"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/ncaer demo --out demo

# ruff settings (E, F, I; 120 columns) are in pyproject.toml
lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_leakage.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) demo
