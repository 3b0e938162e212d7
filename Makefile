# The two commands of the README: `make book` (main job) and `make test`.
# Each creates .venv and installs everything on a fresh machine first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines of this project install this CUDA build from local disk; override on others.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Everything runs offline: no model or dataset hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: venv browser test book clean-book
venv: $(BIN)/.installed

# The browser test drives Debian's headless Chromium (needs root or sudo to install once).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && apt-get install -y -q chromium chromium-driver; }

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

test: venv browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

book: venv
	$(BIN)/python -m mrpruner.book

clean-book:
	rm -rf _build results/tiny book/*.ipynb
