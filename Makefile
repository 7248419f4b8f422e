# Entry points for a fresh clone: only Python >= 3.10 and make are required.
PYTHON ?= python3
CHROMIUM ?= /usr/bin/chromium
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up down status demo test bench lint browser

install: $(STAMP)

# Re-sync only when the lock file or project metadata changed since the last install.
$(STAMP): uv.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --extra dev
	@touch $@

# `mlops` is the console script of this package (ml_ops/cli.py); the stack runs under its own supervisord.
up: install
	$(BIN)/mlops stack up

down: install
	$(BIN)/mlops stack down

status: install
	$(BIN)/mlops stack status

demo: install
	$(BIN)/mlops demo

test: install
	$(BIN)/pytest -q -n 2 --dist loadscope --no-loadscope-reorder

bench: install
	@set -e; for f in bench/*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(BIN)/python $$f; done

# Headless Chromium (Debian's `chromium` package) renders the HTML reports in tests and takes the README's
# screenshots. Installs it with apt-get as root or with passwordless sudo; otherwise says why and goes on
# (the render test then skips, except under CI where it fails).
browser:
	@if [ -x "$(CHROMIUM)" ]; then \
		echo "browser: $(CHROMIUM) present"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser: $(CHROMIUM) missing and no apt-get (not Debian/Ubuntu): install Chromium yourself"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
		else echo "browser: $(CHROMIUM) missing; not root and no passwordless sudo: run 'sudo apt-get install chromium'"; exit 0; fi; \
		echo "browser: installing Debian's chromium with apt-get"; \
		{ $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
		  && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "browser: apt-get install chromium failed (see above)"; \
	fi

lint: install
	$(BIN)/ruff check ml_ops tests dags plugins bench
