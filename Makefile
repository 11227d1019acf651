# `make quickstart` and `make test` create .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python

.PHONY: venv quickstart test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

quickstart: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/quickstart.sh

test: venv
	$(VENV_PYTHON) -m pytest -q tests

bench: venv
	$(VENV_PYTHON) bench/bench_losses.py
	$(VENV_PYTHON) bench/bench_nc_metrics.py
	$(VENV_PYTHON) bench/bench_throughput.py

clean:
	rm -rf $(VENV) save
