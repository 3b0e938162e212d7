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

.PHONY: venv browser slurm test book clean-book
venv: $(BIN)/.installed

# The browser test drives Debian's headless Chromium (needs root or sudo to install once).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && apt-get install -y -q chromium chromium-driver; }

# tests/test_slurm.py starts a single-node SLURM from Debian's packages, as root; without root it
# skips those tests (saying why), so a user's `make test` does not need root for them.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && \
	  command -v munged >/dev/null || \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q slurmctld slurmd slurm-client munge; \
	  else echo "SLURM is not installed and this is not root: tests/test_slurm.py will skip"; fi

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

test: venv browser slurm
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

book: venv
	$(BIN)/python -m mrpruner.book

clean-book:
	rm -rf _build results/tiny book/*.ipynb
