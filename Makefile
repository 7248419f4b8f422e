# Entry points for a fresh clone: only Python >= 3.10 and make are required.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up down status demo test bench lint

install: $(STAMP)

# Re-sync only when the lock file or project metadata changed since the last install.
$(STAMP): uv.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --extra dev
	@touch $@

up: install
	$(BIN)/python -m ml_ops.stack up

down:
	$(BIN)/python -m ml_ops.stack down

status:
	$(BIN)/python -m ml_ops.stack status

demo: install
	$(BIN)/python -m ml_ops.demo

test: install
	$(BIN)/pytest -q

bench: install
	@set -e; for f in bench/*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(BIN)/python $$f; done

lint: install
	$(BIN)/ruff check ml_ops tests dags plugins bench
