# layerpar: the commands a new user (and CI) needs.
#   make demo   set up .venv, fetch Fashion-MNIST, train the default preset (layer-parallel K=2, CPU)
#   make test   run the test suite (CI: make lint, then make test)
#   make lint   ruff check (layerpar, tests), ruff format --check (layerpar), mypy (layerpar)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build here (an unpinned torch resolves to a 5.5 GB CUDA build);
# pyproject.toml keeps a range so GPU users keep their own build.
TORCH  ?= torch==2.13.0

.PHONY: setup demo lint test test-fast clean

$(BIN)/layerpar: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q $(TORCH) -e ".[all]"
	touch $@

setup: $(BIN)/layerpar

demo: setup
	$(BIN)/layerpar data fetch fashion_mnist
	$(BIN)/layerpar info --config configs/demo.yaml
	$(BIN)/layerpar train --config configs/demo.yaml --cluster cluster_configs/local_cpu.yaml

lint: setup
	$(BIN)/ruff check layerpar tests
	$(BIN)/ruff format --check layerpar
	$(BIN)/mypy layerpar

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) runs .pytest_cache
