# One entry point. `make run` and `make test` each build the environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export QUANT_META_STORAGE ?= $(DAGSTER_HOME)/storage/quant_meta

.PHONY: install run dev test test-fast bench clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

## the main job on the bundled data: every sleeve on Ray, the check, the four meta stages
run: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster job execute -m quant_meta_assets -j meta_full

## the UI on 127.0.0.1:3000
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## every test, slow ones included
test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

bench: install
	$(PY) bench/bench_optimize.py

clean:
	rm -rf $(VENV) .dagster_home .quant_meta_storage
