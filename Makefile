# The two commands of the README: `make book` (main job) and `make test`.
# Each creates .venv and installs everything on a fresh machine first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines of this project install this CUDA build from local disk; override on others.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: venv test book clean-book
venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

book: venv
	$(BIN)/python -m mrpruner.book

clean-book:
	rm -rf _build
