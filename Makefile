# `make run` serves InterOcc on the embedded SQLite database; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Two installs into one virtualenv: what running needs (`make run`), and that with the test
# extras (`make test`, lint, bench). Each stamp is redone whenever pyproject.toml changes.
RUN_STAMP := $(VENV)/.install-run-stamp
STAMP := $(VENV)/.install-stamp
FEDIFY_PEER ?= tests/interop/fedify-peer
NODE_STAMP := $(FEDIFY_PEER)/node_modules/.ci-stamp
BOVINE_PEER ?= tests/interop/bovine-peer
BOVINE_STAMP := $(BOVINE_PEER)/.venv/.install-stamp
BROWSER_TESTS ?= tests/browser
BROWSER_STAMP := $(BROWSER_TESTS)/node_modules/.ci-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
HOST ?= 127.0.0.1
PORT ?= 8000
export INTEROCC_DATABASE_URL ?= sqlite+aiosqlite:///data/interocc.sqlite3
export INTEROCC_BASE_URL ?= http://$(HOST):$(PORT)

.PHONY: translations install install-run run test test-sqlite test-postgres test-reference lint bench clean \
	chromium

PYTHON_CHECK := $(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'

# The package and what it needs to run, and no more; nothing to do when the install with the
# test extras below is up to date (it holds all of it).
$(RUN_STAMP): pyproject.toml
	if test $(STAMP) -nt pyproject.toml; then echo "$(STAMP) is up to date: nothing to install"; \
	else \
		$(PYTHON_CHECK) && \
		{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && \
		$(BIN)/pip install --quiet --upgrade pip && \
		$(BIN)/pip install --quiet -e . ; \
	fi
	touch $@

# The same with the test extras (pytest, mypy, ruff, playwright…): `make test`, lint, bench.
$(STAMP): pyproject.toml
	$(PYTHON_CHECK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

install-run: $(RUN_STAMP)
install: $(STAMP)

data/secret_key:
	mkdir -p data
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))' > $@
	chmod 600 $@

run: install-run data/secret_key
	export INTEROCC_SECRET_KEY="$${INTEROCC_SECRET_KEY:-$$(cat data/secret_key)}"; \
	$(BIN)/interocc migrate && \
	exec $(BIN)/interocc serve --host $(HOST) --port $(PORT) --with-worker

# The Fedify peer of the interop tests (tests/interop): its node_modules, installed exactly
# from package-lock.json, again whenever the lock file (or package.json) changes.
$(NODE_STAMP): $(FEDIFY_PEER)/package-lock.json $(FEDIFY_PEER)/package.json
	cd $(FEDIFY_PEER) && npm ci --no-audit --no-fund
	touch $@

# The bovine peer of the interop tests: its own virtualenv (never ours: its pins may clash
# with ours), installed exactly from the hashed requirements.txt, afresh whenever that changes.
$(BOVINE_STAMP): $(BOVINE_PEER)/requirements.txt
	rm -rf $(BOVINE_PEER)/.venv
	$(PYTHON) -m venv $(BOVINE_PEER)/.venv
	$(BOVINE_PEER)/.venv/bin/pip install --quiet --require-hashes --no-deps --only-binary :all: \
		-r $(BOVINE_PEER)/requirements.txt
	touch $@

# The browser tests (tests/browser) drive Debian's chromium through Playwright, which never
# downloads a browser of its own; axe-core comes from their package-lock.json.
chromium:
	test -x $(CHROMIUM) || ( $(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium )

$(BROWSER_STAMP): $(BROWSER_TESTS)/package-lock.json $(BROWSER_TESTS)/package.json
	cd $(BROWSER_TESTS) && npm ci --no-audit --no-fund
	touch $@

# The whole suite but the reference leg: it needs nothing outside the repository. Two pytest
# workers (one per core), each test file kept on one worker so that its fixtures are shared.
PYTEST_MAIN := $(BIN)/pytest --ignore=tests/reference -n 2 --dist loadfile

test: install $(NODE_STAMP) $(BOVINE_STAMP) chromium $(BROWSER_STAMP)
	$(PYTEST_MAIN)

test-sqlite: install $(NODE_STAMP) $(BOVINE_STAMP) chromium $(BROWSER_STAMP)
	INTEROCC_TEST_BACKENDS=sqlite $(PYTEST_MAIN)

test-postgres: install $(NODE_STAMP) $(BOVINE_STAMP) chromium $(BROWSER_STAMP)
	INTEROCC_TEST_BACKENDS=postgresql $(PYTEST_MAIN)

# The translation catalogues (server/translations, docs in README): the strings of the
# templates and the code extracted, each language's .po brought up to date (new strings come
# in untranslated: tests/test_i18n.py fails until they are translated), then compiled.
LOCALES := es fr ca
translations: install
	$(BIN)/pybabel extract -F babel.cfg --no-location --sort-output --project=InterOcc \
		--copyright-holder="the InterOcc contributors" \
		-o server/translations/messages.pot server
	for l in $(LOCALES); do \
		test -f server/translations/$$l/LC_MESSAGES/messages.po || \
			$(BIN)/pybabel init -i server/translations/messages.pot -d server/translations -l $$l; \
		$(BIN)/pybabel update --no-fuzzy-matching -i server/translations/messages.pot \
			-d server/translations -l $$l || exit 1; \
	done
	$(BIN)/pybabel compile -d server/translations

# Other projects' real documents and published vectors, kept outside the repository
# (INTEROCC_REFERENCE_DIR, relative to this folder; default ../shared/reference).
export INTEROCC_REFERENCE_DIR ?= ../shared/reference
test-reference: install
	@test -d "$(INTEROCC_REFERENCE_DIR)/remote" || { echo "make test-reference: no reference documents at $(INTEROCC_REFERENCE_DIR) (set INTEROCC_REFERENCE_DIR)"; exit 2; }
	$(BIN)/pytest tests/reference

lint: install
	$(BIN)/ruff check server tests bench
	$(BIN)/ruff format --check server tests bench
	$(BIN)/mypy server

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
