# One command for each thing a newcomer wants; each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test lint typecheck unit run bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check engine tests bench
	$(VENV)/bin/ruff format --check engine tests bench
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict engine

unit: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck unit

run: $(STAMP)
	$(PY) -m engine serve --config . $(ARGS)

bench: $(STAMP)  # make bench BENCH=routing|adapters|runtime|proxy ARGS=...
	$(PY) -m bench.$(or $(BENCH),routing) $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
