# One entry point. `make run` and `make test` each build the environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export QUANT_META_STORAGE ?= $(DAGSTER_HOME)/storage/quant_meta

.PHONY: install run report dev test test-fast bench bench-incremental docs clean

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

## the main job on the bundled data: every sleeve on Ray, the check, the four meta stages; then the
## run's summary (how it ended, failed sleeves and why, headline numbers, the report's path), last
## (Dagster's console at INFO; RUN_CONFIG=deploy/run.yaml adds your run config).
## The CLI's notice that `dg launch` supersedes `dagster job execute` is filtered here, by its text.
RUN_CONFIG ?=
run: install $(DAGSTER_HOME)/dagster.yaml
	@since=$$(date +%s); \
	PYTHONWARNINGS="ignore:Function \`job_execute_command\` is superseded" \
	$(VENV)/bin/dagster job execute -m quant_meta_assets -j meta_full -c deploy/console_info.yaml \
		$(if $(RUN_CONFIG),-c $(RUN_CONFIG)); \
	echo; $(PY) -m quant_meta_assets.dagster_defs.run_summary --job meta_full --since $$since

## the summary of the latest meta_full run again, with the path of its report
report: install $(DAGSTER_HOME)/dagster.yaml
	@$(PY) -m quant_meta_assets.dagster_defs.run_summary --job meta_full

## the UI on 127.0.0.1:3000
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## every test, slow ones included
test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

## docs/strategies.md from the code (a test fails when it is stale)
docs: install
	$(PY) -m quant_meta_assets.sleeves.strategy_docs

bench: install
	$(PY) bench/bench_optimize.py

## meta_full in full, then a daily update (+1, +5 days) in the same instance, checked against a fresh
## full run (150 sleeves x 100 tickers x 2,520 days, several minutes; docs/performance.md)
bench-incremental: install
	$(PY) bench/bench_incremental.py --grid 150x100x2520

clean:
	rm -rf $(VENV) .dagster_home .quant_meta_storage
