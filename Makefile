# Streamify: `make run` runs the whole platform, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps run test lint fmt bench clean lock screenshots

WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html web/package.json \
	web/package-lock.json web/vite.config.ts web/tsconfig.json web/build.sh

install: $(STAMP) web/dist/index.html

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

# The SPA, built with the lockfile's packages (Node.js from PATH, else from PyPI into the venv).
web/dist/index.html: $(WEB_SOURCES) | $(STAMP)
	web/build.sh $(CURDIR)/$(BIN)
	@touch $@

# ffmpeg/ffprobe for upload sniffing and transcoding (required), Prometheus (promtool and the
# server) for the observability tests and Chromium for the browser tests: Debian's packages when
# we may install them (Playwright drives the system Chromium; it never downloads a browser).
system-deps:
	@missing=""; \
	command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (Debian packages)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  elif ! command -v ffprobe >/dev/null 2>&1; then \
	    echo "ffmpeg/ffprobe not found: install ffmpeg (e.g. sudo apt-get install ffmpeg)" >&2; exit 1; \
	  else \
	    echo "promtool or chromium not found: the observability or browser tests will be skipped" \
	      "(sudo apt-get install prometheus chromium)" >&2; \
	  fi; \
	fi

run: install system-deps
	$(BIN)/streamify up

test: install system-deps
	$(BIN)/python -m streamify.testenv
	$(BIN)/python -m pytest

# Refresh docs/screenshots from the browser tests (real Chromium against `streamify up`).
screenshots: install system-deps
	$(BIN)/python -m streamify.testenv
	STREAMIFY_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest tests/web -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/gateway.py

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11 -q

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache web/node_modules web/dist
