"""Every bad input of the sweep's command line, its YAML, its results folders and the miniature's API
gets one clear error before any work starts (issue 32): on the command line one line on stderr, exit
code 2, no traceback, naming the option, key or file; in the API a ValueError/TypeError naming the
argument. And no failure hides another: a cell that raises anything is recorded as failed and the
sweep goes on, whatever the runner."""

import re
from pathlib import Path

import pytest
import torch

from mrpruner.sweep import cells, cli, run
from mrpruner.sweep import grid as grids
from mrpruner import results, workers

MODEL = "mini"  # never loaded: every case stops before a cell runs
BASE = ["--model", MODEL, "--methods", "mrpruner", "--ratios", "0.5", "--tasks", "gqa", "--limit", "2",
        "--no-progress"]
CONFIG = {"model": MODEL, "methods": "mrpruner", "ratios": "0.5", "tasks": "gqa", "limit": "2"}


def sweep(argv: list[str], tmp: Path, capsys, monkeypatch) -> tuple[int, str]:
    """`mrpruner-sweep argv`'s exit code and stderr, with runners that fail any cell that would run."""
    def refuse(cell, grid, workdir, log):
        raise cells.CellFailed("a bad input reached a cell")

    for name in list(cells.RUNNER_FUNCTIONS):
        monkeypatch.setitem(cells.RUNNER_FUNCTIONS, name, refuse)
    monkeypatch.chdir(tmp)  # `--out ""` must not make the current folder a results folder
    try:
        code = cli.main(argv)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def assert_clear(code: int, err: str, *names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mrpruner-sweep: error: "), (code, err)
    assert all(name in lines[0] for name in names), (names, err)


def _file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file"


def _yaml(tmp: Path, text: str) -> str:
    (tmp / "grid.yaml").write_text(text)
    return str(tmp / "grid.yaml")


OUT = ["--out", "{tmp}/out"]
# case: (command line, with {tmp} the test's folder; what the error line must name)
CLI = {
    "out empty": (["--out", "", *BASE], ["--out"]),
    "out a file": (["--out", "{file}", *BASE], ["--out", "{file}"]),
    "out under a file": (["--out", "{file}/sub", *BASE], ["--out", "{file}"]),
    "out unwritable": (["--out", "/proc/mrpruner-out", *BASE], ["--out", "/proc"]),
    "no out": (BASE, ["--out"]),
    "unknown option": ([*OUT, *BASE, "--modle", "x"], ["--modle"]),
    "model twice": ([*OUT, *BASE, "--model", "mini,mini"], ["model", "mini"]),
    "model empty": ([*OUT, *BASE, "--model", ""], ["model"]),
    "methods twice": ([*OUT, *BASE, "--methods", "mrpruner,mrpruner"], ["mrpruner"]),
    "ratios twice": ([*OUT, *BASE, "--ratios", "0.5,0.5"], ["ratios", "0.5"]),
    "tasks twice": ([*OUT, *BASE, "--tasks", "gqa,gqa"], ["tasks", "gqa"]),
    "limits twice": ([*OUT, *BASE, "--limit", "2,2"], ["limit", "2"]),
    "ratio out of range": ([*OUT, *BASE, "--ratios", "1.5"], ["ratio", "1.5"]),
    "ratio not a number": ([*OUT, *BASE, "--ratios", "abc"], ["ratio", "abc"]),
    "limit zero": ([*OUT, *BASE, "--limit", "0"], ["limit", "0"]),
    "limit not a number": ([*OUT, *BASE, "--limit", "abc"], ["limit", "abc"]),
    "batch size zero": ([*OUT, *BASE, "--batch-size", "0"], ["batch_size", "0"]),
    "batch size not a number": ([*OUT, *BASE, "--batch-size", "x"], ["--batch-size", "x"]),
    "processes negative": ([*OUT, *BASE, "--num-processes", "-1"], ["num_processes", "-1"]),
    "seed not a number": ([*OUT, *BASE, "--seed", "x"], ["--seed", "x"]),
    "dtype": ([*OUT, *BASE, "--dtype", "float8"], ["dtype", "float8"]),
    "device": ([*OUT, *BASE, "--device", "gpu"], ["device", "gpu"]),
    "runner": ([*OUT, *BASE, "--runner", "foo"], ["runner", "foo"]),
    "protocol": ([*OUT, *BASE, "--protocol", "foo"], ["protocol", "foo"]),
    "name empty": ([*OUT, *BASE, "--name", ""], ["name"]),
    "include path missing": ([*OUT, *BASE, "--include-path", "{tmp}/none"], ["include_path", "{tmp}/none"]),
    "include path a file": ([*OUT, *BASE, "--include-path", "{file}"], ["include_path", "{file}"]),
    "config missing": (["{tmp}/none.yaml", *OUT, "--no-progress"], ["{tmp}/none.yaml"]),
    "yaml syntax": (["{yaml:model: [a\nmethods: x\n}", *OUT, "--no-progress"], ["grid.yaml", "line"]),
    "yaml a list": (["{yaml:- a\n}", *OUT, "--no-progress"], ["grid.yaml"]),
    "yaml unknown key": (["{yaml:modle: mini\n}", *OUT, "--no-progress"], ["grid.yaml", "modle"]),
    "yaml bad ratio": (["{yaml:model: mini\nmethods: random\ntasks: gqa\nratios: [2]\n}", *OUT, "--no-progress"],
                       ["grid.yaml", "ratio"]),
    "workers zero": ([*OUT, *BASE, "--workers", "0"], ["workers", "0"]),
    "workers not a number": ([*OUT, *BASE, "--workers", "x"], ["workers", "x"]),
    "executor": ([*OUT, *BASE, "--executor", "foo"], ["executor", "foo"]),
    "slurm key": ([*OUT, *BASE, "--slurm", "bogus=1"], ["bogus"]),
    "poll zero": ([*OUT, *BASE, "--poll", "0"], ["--poll", "0"]),
    "poll nan": ([*OUT, *BASE, "--poll", "nan"], ["--poll", "nan"]),
    "claim timeout negative": ([*OUT, *BASE, "--claim-timeout", "-1"], ["--claim-timeout", "-1"]),
    "status missing": (["--status", "{tmp}/none"], ["{tmp}/none"]),
    "status and other options": (["--status", "{tmp}", "--model", "mini"], ["--status", "--model"]),
}


def _fill(text: str, tmp: Path) -> str:
    if text.startswith("{yaml:"):
        return _yaml(tmp, text[len("{yaml:"):-1])
    return text.replace("{file}", str(tmp / "file")).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", list(CLI))
def test_a_bad_command_line_is_one_clear_line(case, tmp_path, capsys, monkeypatch):
    _file(tmp_path)
    argv, names = CLI[case]
    code, err = sweep([_fill(a, tmp_path) for a in argv], tmp_path, capsys, monkeypatch)
    assert_clear(code, err, *(_fill(n, tmp_path) for n in names))
    assert not (tmp_path / "out").exists()  # nothing written before the error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_cell(tmp_path, capsys, monkeypatch):
    code, err = sweep(["--out", str(tmp_path / "out"), *BASE, "--device", "cuda"], tmp_path, capsys, monkeypatch)
    assert_clear(code, err, "device", "cuda", "no CUDA")
    assert not (tmp_path / "out").exists()


def test_an_uncached_hub_model_offline_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, err = sweep(["--out", str(tmp_path / "out"), *BASE, "--model", "nobody/not-cached"], tmp_path, capsys, monkeypatch)
    assert_clear(code, err, "nobody/not-cached", "not in the local cache", "download nobody/not-cached")
    from mrpruner.models import load

    with pytest.raises(FileNotFoundError, match="not in the local cache.*download nobody/not-cached"):
        load("nobody/not-cached")


# --- damaged results folders ---------------------------------------------------------------------

def _bound(folder: Path) -> tuple[Path, str]:
    """A results folder bound to BASE's grid, and the id of its one cell."""
    grid = grids.grid_from_config(CONFIG)
    results.claim_folder(folder, grid.identity())
    return folder, grid.cells()[0].cell_id


def _damage(folder: Path, cell_id: str, what: str) -> Path:
    cell = folder / results.CELLS_DIR / f"{cell_id}.json"
    grid = folder / results.GRID_FILE
    claim = folder / workers.CLAIMS_DIR / f"{cell_id}.0.json"
    path, text = {"grid truncated": (grid, grid.read_text()[:40]), "grid a list": (grid, "[]"),
                  "grid without fingerprint": (grid, "{}"),
                  "cell truncated": (cell, '{"schema": 1, "cell_id": "x'), "cell a list": (cell, "[]"),
                  "cell empty mapping": (cell, "{}"), "claim truncated": (claim, '{"cell_id": "x'),
                  "claim a list": (claim, "[]")}[what]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


DAMAGE = ["grid truncated", "grid a list", "grid without fingerprint", "cell truncated", "cell a list",
          "cell empty mapping", "claim truncated", "claim a list"]


@pytest.mark.parametrize("what", DAMAGE)
@pytest.mark.parametrize("command", ["run", "status", "dry-run"])
def test_a_damaged_result_file_is_named_with_what_to_do(what, command, tmp_path, capsys, monkeypatch):
    folder, cell_id = _bound(tmp_path / "out")
    path = _damage(folder, cell_id, what)
    argv = {"run": ["--out", str(folder), *BASE], "status": ["--status", str(folder)],
            "dry-run": ["--out", str(folder), *BASE, "--dry-run"]}[command]
    if command == "dry-run" and what.startswith("claim"):
        pytest.skip("a dry run reads no claim")
    code, err = sweep(argv, tmp_path, capsys, monkeypatch)
    assert_clear(code, err, str(path), "delete it")


@pytest.mark.parametrize("what", [w for w in DAMAGE if not w.startswith("claim")])
def test_loading_a_damaged_folder_names_the_file(what, tmp_path):
    folder, cell_id = _bound(tmp_path / "out")
    path = _damage(folder, cell_id, what)
    with pytest.raises(ValueError, match=f"{path}.*delete it"):
        results.load_results(folder)


# --- no failure hides another --------------------------------------------------------------------

@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError("disk"), SystemExit(3)])
def test_a_cell_that_raises_anything_fails_alone(error, tmp_path, capsys):
    def runner(cell, grid, workdir, log):
        if cell.ratio == 0.5:
            raise error
        raise cells.CellFailed("second")

    grid = grids.grid_from_config({**CONFIG, "ratios": "0.5,0.9"})
    report = run.run_sweep(grid, tmp_path, runner=runner, progress=False)
    assert len(report.failed) == 2 and not report.finished
    first = report.failed[0]
    assert report.why[first] == f"{type(error).__name__}: {error}; see {tmp_path / run.LOGS_DIR / first}.log"
    assert type(error).__name__ in (tmp_path / run.LOGS_DIR / f"{first}.log").read_text()  # its traceback
    assert "stopped during" not in capsys.readouterr().out


def test_the_closing_summary_lists_the_failed_cells(tmp_path, capsys, monkeypatch):
    from test_experiments import fake_run

    def runner(cell, grid, workdir, log):
        if cell.ratio == 0.5:
            raise RuntimeError("boom")
        return fake_run(cell, workdir)

    monkeypatch.setitem(cells.RUNNER_FUNCTIONS, "in-process", runner)
    code = cli.main(["--out", str(tmp_path / "out"), *BASE, "--ratios", "0.5,0.9", "--runner", "in-process"])
    out = capsys.readouterr().out
    assert code == 1 and "1 cell(s) run (0 of them stale), 0 already finished, 1 failed" in out, out
    assert re.search(r"\n  failed gqa__mrpruner__r0\.5__\w+: RuntimeError: boom; see \S+\.log\n", out), out


# --- the miniature's API ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini():
    from mrpruner import mini, models
    from mrpruner.mini import measure

    model, processor = models.load("mini")
    return measure, model, processor, mini.samples(4, mini.SPLITS["test"])


# case: (evaluate's arguments after model and processor, given the samples; the argument the error names)
MINI = {
    "batch zero": (lambda s: ((s,), {"batch": 0}), "batch"),
    "batch negative": (lambda s: ((s,), {"batch": -1}), "batch"),
    "batch not an integer": (lambda s: ((s,), {"batch": 1.5}), "batch"),
    "batch a bool": (lambda s: ((s,), {"batch": True}), "batch"),
    "samples empty": (lambda s: (([],), {}), "samples"),
    "samples strings": (lambda s: ((["a", "b"],), {}), "samples"),
    "samples a number": (lambda s: ((5,), {}), "samples"),
    "bootstrap zero": (lambda s: ((s,), {"bootstrap": 0}), "bootstrap"),
    "method unknown": (lambda s: ((s, "magic", 0.5), {}), "method"),
    "ratio out of range": (lambda s: ((s, "random", 1.5), {}), "ratio"),
    "ratio without method": (lambda s: ((s, None, 0.5), {}), "ratio"),
}


@pytest.mark.parametrize("case", list(MINI))
def test_the_miniatures_api_names_the_bad_argument(case, mini):
    module, model, processor, samples = mini
    make, name = MINI[case]
    args, kwargs = make(samples)
    with pytest.raises((ValueError, TypeError), match=name):
        module.evaluate(model, processor, *args, **kwargs)


def test_evaluate_reads_what_a_patched_model_kept(mini):
    import mrpruner

    module, model, processor, samples = mini
    with mrpruner.pruned(model, "random", 0.9):
        table = module.evaluate(model, processor, samples, bootstrap=10)
    whole = module.evaluate(model, processor, samples, bootstrap=10)
    assert table.loc["all", "kept_tokens"] < 0.2 * whole.loc["all", "kept_tokens"]
    assert table.loc["all", "flops_reduction"] > 0 and whole.loc["all", "flops_reduction"] == 0
