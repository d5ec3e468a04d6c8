# One command for each thing a newcomer wants; each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install system-deps bench-tools test lint typecheck unit run bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# The real servers the tests start (Redis, Postgres) and the browser that judges the
# dashboard; installed from Debian only when missing (CI runs as root on a fresh machine).
SYSTEM_PACKAGES := redis-server:redis-server postgresql:initdb chromium:chromium chromium-driver:chromedriver
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do pkg=$${pair%%:*}; bin=$${pair#*:}; \
	  command -v $$bin >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/$$bin >/dev/null 2>&1 \
	  || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# Benchmarks only (never `make test`): bench.workers and bench.ab --lean drive the server
# with wrk and answer as the upstream with nginx, so the load and the fake upstream take
# almost no CPU; bench.instructions counts a server's instructions under valgrind.
bench-tools:
	@missing=""; for pair in wrk:wrk nginx-light:nginx valgrind:valgrind; do pkg=$${pair%%:*}; bin=$${pair#*:}; \
	  command -v $$bin >/dev/null 2>&1 || test -x /usr/sbin/$$bin || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check engine tests bench
	$(VENV)/bin/ruff format --check engine tests bench
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict engine

unit: $(STAMP) system-deps
	$(PY) -m pytest -q

test: lint typecheck unit

run: $(STAMP)
	$(PY) -m engine serve --config . $(ARGS)

bench: $(STAMP)  # make bench BENCH=routing|adapters|runtime|proxy|workers ARGS=...
	$(PY) -m bench.$(or $(BENCH),routing) $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
