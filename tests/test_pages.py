"""Publishing as the ecosystem does it: the GitHub Actions workflow (.github/workflows/pages.yml)
builds the book on the CPU defaults from the committed cells and deploys it to GitHub Pages, inert
until _config.yml's repository.url names the (public) repository it runs in; the same setting
switches on the book's repository, issue and Colab launch buttons, and Colab opens the clean
notebook. The workflow is parsed, and its gate's script run, here."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mrpruner import book

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "pages.yml"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
HERE = "https://github.com/someone/mrpruner"  # the repository a test's workflow runs in


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def test_the_workflow_runs_on_main_and_by_hand_never_on_pull_requests(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push", "workflow_dispatch"} and triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"] == {"group": "pages", "cancel-in-progress": False}


def test_building_waits_for_the_gate_and_deploying_for_the_build(workflow):
    jobs = workflow["jobs"]
    assert set(jobs) == {"gate", "build", "deploy"}
    assert jobs["gate"]["outputs"]["publish"] == "${{ steps.gate.outputs.publish }}"
    assert jobs["build"]["needs"] == "gate" and jobs["build"]["if"] == "needs.gate.outputs.publish == 'true'"
    assert jobs["deploy"]["needs"] == "build" and "if" not in jobs["deploy"]  # skipped with a skipped build
    assert jobs["deploy"]["environment"]["name"] == "github-pages"
    assert [s.get("uses", "").split("@")[0] for s in _steps(jobs["deploy"])] == ["actions/deploy-pages"]


def test_the_build_reads_the_committed_cells_on_the_cpu_defaults(workflow):
    """The book is built by `make book` (every chapter on its default parameters) with the CPU build
    of the torch and torchvision the Makefile pins, offline; before it, the committed cells of the
    miniature's sweeps must be complete and current, so the runner measures nothing; the HTML folder
    `mrpruner.book` writes is what is uploaded."""
    build = workflow["jobs"]["build"]
    assert build["env"]["HF_HUB_OFFLINE"] == build["env"]["HF_DATASETS_OFFLINE"] == "1"
    pinned = re.search(r"^TORCH_SPEC \?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).strip()
    assert build["env"]["TORCH_SPEC"] == f"{pinned} --index-url https://download.pytorch.org/whl/cpu"
    runs = [s.get("run", "") for s in _steps(build)]
    check = next(i for i, run in enumerate(runs) if "tests/test_one_path.py" in run)
    make = next(i for i, run in enumerate(runs) if run.startswith("make book"))
    assert check < make and "-k committed" in runs[check]
    assert runs[make] == 'make book TORCH_SPEC="$TORCH_SPEC"', "the book is built on the notebooks' defaults"
    selected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "test_one_path.py"), "-k", "committed"],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "test_the_committed_miniature_results_are_complete_and_current" in selected
    upload = next(s for s in _steps(build) if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == book.HTML_DIR


def _gate(tmp_path: Path, workflow: dict, url, *, repository: str = HERE, private: str = "false") -> str:
    """Run the gate job's script in a folder whose _config.yml has repository.url `url` (None: no
    repository section), as GitHub would for `repository`; returns what it writes to GITHUB_OUTPUT."""
    step = next(s for s in _steps(workflow["jobs"]["gate"]) if s.get("id") == "gate")
    config = {"title": "t"} if url is None else {"repository": {"url": url, "branch": "main"}}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    output = tmp_path / "output"
    output.write_text("")
    env = {**os.environ, "GITHUB_OUTPUT": str(output), "REPOSITORY": repository, "PRIVATE": private,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert set(step["env"]) == {"REPOSITORY", "PRIVATE"}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, check=True, capture_output=True)
    return output.read_text()


@pytest.mark.parametrize("url, private, publish", [
    ("", "false", False),                          # unset: the workflow is inert
    (None, "false", False),                        # no repository section at all
    ("https://github.com/other/mrpruner", "false", False),  # a fork that kept its upstream's URL
    (HERE, "true", False),                         # private
    (HERE, "false", True),
    (HERE.upper() + "/", "false", True),           # GitHub's names are case-insensitive; a trailing slash
    (HERE + ".git", "false", True),
])
def test_the_gate_publishes_only_this_public_repository_once_its_url_is_set(tmp_path, workflow, url, private,
                                                                             publish):
    assert _gate(tmp_path, workflow, url, private=private) == f"publish={str(publish).lower()}\n"


def test_the_gate_reads_the_committed_config_as_it_is(tmp_path, workflow):
    """Today's _config.yml: publishes exactly when repository.url is set (run where it points)."""
    url = (CONFIG.get("repository") or {}).get("url") or ""
    where = url.rstrip("/").removesuffix(".git") or HERE
    assert _gate(tmp_path, workflow, url, repository=where) == f"publish={str(bool(url)).lower()}\n"


def test_the_same_setting_switches_on_the_launch_buttons():
    """_config.yml asks for Colab launch buttons; `mrpruner.book` keeps them (with the repository and
    issue buttons) only with a repository URL, and points Colab at the clean notebook in notebooks/."""
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["branch"] == "main" and CONFIG["repository"]["path_to_book"] == ""
    launch = {"colab_url": CONFIG["launch_buttons"]["colab_url"]}
    for url in ("", HERE):
        options = {"repository_url": url, "launch_buttons": dict(launch)}
        book._buttons_follow_repository(None, SimpleNamespace(html_theme_options=options))
        assert options["launch_buttons"] == (launch if url else {})
        assert options["use_repository_button"] is options["use_issues_button"] is bool(url)
    # what sphinx-book-theme puts in the page's context for book/hosts.ipynb, and what the book shows
    colab = {"text": "Colab",
             "url": "https://colab.research.google.com/github/someone/mrpruner/blob/main/book/hosts.ipynb"}
    other = {"text": "Binder", "url": "https://mybinder.org/v2/gh/someone/mrpruner/main?urlpath=tree/book/hosts.ipynb"}
    context = {"header_buttons": [{"type": "group", "buttons": [colab, other]}]}
    book._colab_opens_source(None, "book/hosts", "page.html", context, None)
    assert colab["url"] == "https://colab.research.google.com/github/someone/mrpruner/blob/main/notebooks/hosts.ipynb"
    assert other["url"].endswith("/book/hosts.ipynb")  # only Colab's link is redirected
    assert (ROOT / book.SOURCE_DIR / "hosts.ipynb").is_file()
