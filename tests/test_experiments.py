"""The sweep runner and result files: grids from YAML/CLI, atomic writes, resume, interruption and
crash (fake cell runner), one grid per folder (many workers sharing one: tests/test_workers.py), provenance, loading into pandas, the shipped
sweeps, and an interrupted-and-resumed real sweep through `python -m lmms_eval` on the tiny model."""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mrpruner.sweep import cells, cli, run
from mrpruner.sweep import grid as grids
from mrpruner import paper, results, workers
from mrpruner.benchmarks import TINY, write_tiny_task
from mrpruner.budget import keep_count

TESTS = Path(__file__).parent
MODEL = "llava-hf/llama3-llava-next-8b-hf"  # never loaded by the fake runner


CONFIG = {"name": "t", "model": MODEL, "tasks": ["gqa", "pope"], "ratios": [0.5, 0.9], "limit": 10,
          "methods": [{"label": "LLaVA-NeXT-8B", "method": "none", "ratios": [0]},
                      {"label": "MR-Pruner", "method": "mrpruner"},
                      {"label": "G-Prune", "method": "gprune", "options": {"iterations": 3}}]}


def grid(**changes) -> grids.Grid:
    return grids.grid_from_config({**CONFIG, **changes})


def fake_run(cell: grids.Cell, workdir: Path) -> cells.CellRun:
    """What lmms-eval and the plug-in report, made up: score 50 + 10 * ratio (percent), two ranks."""
    (workdir / "partial.json").write_text("{")  # debris the sweep must clean up
    visual = 2000

    def sample(text: int) -> dict:
        kept = keep_count(visual, cell.ratio)
        return {"text_tokens": text, "visual_tokens": visual, "kept_tokens": kept, "generated_tokens": 2,
                "images_visual": [visual], "images_kept": [kept],
                "prefill_flops": 10 * (text + kept), "dense_prefill_flops": 10 * (text + visual)}

    def rank(elapsed: float, prefill: list[float]) -> dict:
        return {"world_size": 2, "dtype": "float16", "device_name": "Fake GPU", "elapsed_s": elapsed,
                "batches": [{"prefill_s": p, "generate_s": 2 * p, "samples": [sample(20)]} for p in prefill]}

    score = 0.5 + cell.ratio / 10
    metric = {"gqa": "exact_match,none", "pope": "pope_f1_score,none"}.get(cell.task, "exact_match,none")
    lmms = {"results": {cell.task: {metric: score, "alias": cell.task}}, "n-samples": {cell.task: {"effective": 3}},
            "samples": {"dropped": True}, "configs": {"dropped": True}, "lmms_eval_version": "0.7.3"}
    return cells.CellRun(lmms, [rank(3.0, [0.1, 0.2]), rank(4.0, [0.3])], ["fake"])


class FakeRunner:
    """Counts calls; raises KeyboardInterrupt on call number `interrupt_at`, CellFailed for tasks in `fail`."""

    def __init__(self, interrupt_at: int | None = None, fail: tuple = ()) -> None:
        self.calls: list[str] = []
        self.interrupt_at, self.fail = interrupt_at, fail

    def __call__(self, cell, grid_, workdir, log):
        self.calls.append(cell.cell_id)
        if len(self.calls) == self.interrupt_at:
            (workdir / "half.json").write_text("{")
            raise KeyboardInterrupt
        if cell.task in self.fail:
            raise cells.CellFailed(f"lmms-eval exited with 1; see {log}")
        return fake_run(cell, workdir)


def leftovers(folder: Path) -> list[Path]:
    """Temporary files anywhere, and anything inside the work folder."""
    tmp = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    return tmp + [p for p in (folder / run.WORK_DIR).rglob("*") if p.is_file()]


# --- grids ---------------------------------------------------------------------------------------

def test_grid_is_the_product_of_its_axes():
    g = grid()
    cells = g.cells()
    assert len(cells) == (1 + 2 + 2) * 2  # (baseline + 2 methods x 2 ratios) x 2 tasks, one limit
    assert [c.task for c in cells[:2]] == ["gqa", "pope"]  # row by row: a table row's tasks together
    assert {(c.label, c.ratio) for c in cells} == {("LLaVA-NeXT-8B", 0.0), ("MR-Pruner", 0.5), ("MR-Pruner", 0.9),
                                                   ("G-Prune", 0.5), ("G-Prune", 0.9)}
    assert dict(cells[-1].options) == {"iterations": 3}
    assert len({c.cell_id for c in cells}) == len(cells)
    two = grid(model=[MODEL, "other/model"], limit=[5, None], tasks=["textvqa"])
    assert len(two.cells()) == 2 * 5 * 2 and {c.limit for c in two.cells()} == {5, None}
    assert {c.task for c in two.cells()} == {"textvqa_val"}  # benchmark key -> lmms-eval task


@pytest.mark.parametrize("changes, message", [
    ({"colour": "red"}, r"unknown sweep key\(s\) \['colour'\]"),
    ({"methods": ["magic"]}, "method must be 'none', one of .* or an import path"),
    ({"methods": [{"method": "mrpruner", "options": {"layer": 2}}]}, r"unknown model argument\(s\) \['layer'\]"),
    ({"methods": [{"method": "fastv", "rank": 1}]}, r"unknown key\(s\) \['rank'\] in methods entry"),
    ({"ratios": [0.5, 1.0]}, r"ratios must be in \[0, 1\)"),
    ({"methods": ["mrpruner", "mrpruner"]}, "labels must be unique"),
    ({"methods": [{"method": "none", "ratios": [0.5]}]}, "prunes nothing"),
    ({"limit": 0}, "limit must be a positive number"),
    ({"model": None}, "the sweep needs 'model'"),
    ({"methods": [{"method": "mrpruner", "options": {"variant": "1"}}]}, "cannot pass through lmms-eval"),
    ({"protocol": "released"}, r"protocol must be one of \('exact', 'paper'\)"),
])
def test_bad_grids_fail_before_anything_runs(changes, message):
    with pytest.raises(ValueError, match=message):
        grid(**changes)


def test_unknown_task_is_an_error():
    with pytest.raises(ValueError, match=r"unknown lmms-eval task\(s\) \['no_such_task_anywhere'\]"):
        grid(tasks=["gqa", "no_such_task_anywhere"])


def test_model_args_survive_lmms_eval_parsing(tmp_path):
    from mrpruner.lmms_eval_model import check_model_args

    g = grid(methods=[{"label": "x", "method": "mrpruner",
                       "options": {"alpha": 0.25, "intra": False, "variant": "released", "s_a": 0.5}}],
             device="cpu", dtype="bfloat16")
    command = cells.lmms_eval_command(g.cells()[0], g, tmp_path / "o", tmp_path / "s")
    args = check_model_args(command[command.index("--model_args") + 1])
    assert args.options == {"alpha": 0.25, "intra": False, "variant": "released", "s_a": 0.5}
    assert (args.method, args.ratio, args.protocol, args.device, args.dtype, args.stats_dir) == (
        "mrpruner", 0.5, "exact", "cpu", "bfloat16", str(tmp_path / "s"))
    paper_grid = grid(protocol="paper")
    paper_args = cells.lmms_eval_command(paper_grid.cells()[1], paper_grid, tmp_path / "o", None)
    assert check_model_args(paper_args[paper_args.index("--model_args") + 1]).protocol == "paper"
    assert {c.protocol for c in paper_grid.cells()} == {"paper"} and grid().cells()[1].protocol == "exact"
    assert paper_grid.cells()[1].cell_id != grid().cells()[1].cell_id
    assert command[:4] == [sys.executable, "-m", "lmms_eval", "--model"]
    assert command[command.index("--limit") + 1] == "10" and command[command.index("--tasks") + 1] == "gqa"
    multi = grid(num_processes=4)
    launch = cells.lmms_eval_command(multi.cells()[0], multi, tmp_path, None)
    assert launch[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert "stats_dir" not in " ".join(launch)


PAPER_SWEEPS = ["figure4", "table1", "table2", "table3"]


def test_shipped_sweeps_are_the_papers_tables():
    assert grids.shipped_sweeps() == sorted(PAPER_SWEEPS + [f"mini_{name}" for name in PAPER_SWEEPS] + ["mini_protocols"])
    sizes = {}
    for name in PAPER_SWEEPS:
        g = grids.grid_from_config(grids.load_config(name))
        assert g.models == (MODEL,) and g.limits == (None,) and g.batch_size == 1 and g.num_processes == 1
        mini = grids.grid_from_config(grids.load_config(f"mini_{name}"))
        assert g.protocol == mini.protocol == "exact"  # a GPU and a CPU build of a chapter: the same budgets
        sizes[name] = len(g.cells())
    assert sizes == {"table1": (1 + 5 * 3) * 8, "table2": 3 * 4, "table3": 5 * 4, "figure4": (1 + 3 * 6) * 4}
    table1 = grids.grid_from_config(grids.load_config("table1"))
    assert {m.label: m.method for m in table1.methods} == paper.METHODS
    authors = grids.grid_from_config(grids.load_config("mini_protocols"))  # the authors' budgets where they differ
    assert authors.protocol == "paper" and {m.method for m in authors.methods} == {"fastv", "gprune", "mrpruner"}
    table3 = grids.grid_from_config(grids.load_config("table3"))
    assert {m.label: {**paper.ABLATIONS["MR-Pruner"], **dict(m.options)} for m in table3.methods} == paper.ABLATIONS
    reported = paper.reported()
    for name, number in (("table1", 1), ("table2", 2), ("table3", 3)):
        g = grids.grid_from_config(grids.load_config(name))
        rows = reported[(reported.table == number) & (reported.unit == "score")]
        assert set(zip(rows.method, rows.ratio)) == {(m.label, r) for m in g.methods for r in m.ratios}


# --- result files ----------------------------------------------------------------------------------

def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = results.atomic_write_json(tmp_path / "a.json", {"old": 1})
    with pytest.raises(TypeError):
        results.atomic_write_json(path, {"new": [1, 2, object()]})  # fails half-way through json.dump
    assert results.read_json(path) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_provenance_names_what_produced_a_number():
    from importlib.metadata import version

    prov = results.provenance(model=MODEL, dtype="float16", device="Fake GPU", seed=3, limit=None)
    assert prov["versions"] == {name: version(name) for name in ("torch", "transformers", "lmms_eval", "mrpruner")}
    assert prov["git"]["commit"] is None or len(prov["git"]["commit"]) == 40
    assert (prov["model"], prov["dtype"], prov["device"], prov["seed"], prov["limit"]) == (MODEL, "float16",
                                                                                       "Fake GPU", 3, None)
    assert results.label(prov).startswith(f"measured here: {MODEL} (float16) on Fake GPU, all samples, seed 3")


def test_summary_pools_ranks_and_counts_flops(tmp_path):
    summary = cells.summarize(fake_run(grid().cells()[2], tmp_path).stats)
    assert summary["samples"] == 3
    assert summary["throughput"] == pytest.approx(3 / 4.0)  # slowest rank
    assert summary["prefill_ms"] == pytest.approx(200.0) and summary["prefill_ms_median"] == pytest.approx(200.0)
    kept = keep_count(2000, 0.5)
    assert summary["kept_tokens"] == kept and summary["visual_tokens"] == 2000
    assert summary["image_kept_tokens"] == kept and summary["image_visual_tokens"] == 2000
    assert summary["flops_reduction"] == pytest.approx(1 - (20 + kept) / 2020)


# --- sweeps with a fake runner -------------------------------------------------------------------

def test_sweep_writes_one_file_per_cell_and_resumes(tmp_path):
    g, runner = grid(), FakeRunner()
    report = run.run_sweep(g, tmp_path, runner=runner, progress=False)
    assert len(report.finished) == len(g.cells()) == len(runner.calls) and not report.skipped
    assert not leftovers(tmp_path)
    cell = results.read_json(tmp_path / results.CELLS_DIR / f"{g.cells()[3].cell_id}.json")
    assert cell["cell"]["label"] == "MR-Pruner" and cell["benchmark"] == "POPE"
    assert cell["score"] == pytest.approx(100 * (0.5 + 0.05)) and cell["metric"] == "pope_f1_score,none"
    assert cell["provenance"]["device"] == "2 x Fake GPU" and cell["world_size"] == 2
    assert "samples" not in cell["lmms_eval"] and "configs" not in cell["lmms_eval"]
    assert cell["protocol"] == cell["cell"]["protocol"] == "exact"
    assert cell["images"] == {"visual": [2000] * 3, "kept": [keep_count(2000, 0.5)] * 3}  # every image of the cell

    again = FakeRunner()
    report = run.run_sweep(g, tmp_path, runner=again, progress=False)
    assert again.calls == [] and len(report.skipped) == len(g.cells())

    frame = results.load_results(tmp_path)
    assert len(frame) == len(g.cells()) and list(frame.columns) == list(results.COLUMNS)
    assert set(frame.benchmark) == {"GQA", "POPE"} and frame.throughput.eq(0.75).all()
    assert frame.protocol.eq("exact").all()
    assert frame.provenance.str.startswith("measured here").all()


def test_interrupted_sweep_loses_only_the_cell_in_progress(tmp_path):
    g = grid()
    first = FakeRunner(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        run.run_sweep(g, tmp_path, runner=first, progress=False)
    done = {p.name: p.read_bytes() for p in results.cell_files(tmp_path)}
    assert len(done) == 3 and not leftovers(tmp_path)

    second = FakeRunner()
    run.run_sweep(g, tmp_path, runner=second, progress=False)
    assert second.calls == [c.cell_id for c in g.cells()[3:]]
    assert all((tmp_path / results.CELLS_DIR / name).read_bytes() == data for name, data in done.items())
    assert len(results.cell_files(tmp_path)) == len(g.cells())


def test_failed_cells_are_reported_and_rerun(tmp_path, capsys):
    g = grid()
    report = run.run_sweep(g, tmp_path, runner=FakeRunner(fail=("pope",)), progress=False)
    assert len(report.failed) == 5 and len(report.finished) == 5
    assert capsys.readouterr().out.count("FAILED pope | ") == 5
    rerun = FakeRunner()
    run.run_sweep(g, tmp_path, runner=rerun, progress=False)
    assert rerun.calls == report.failed


def hanging_sweep(folder: Path, command: bool = False) -> subprocess.Popen:
    """A sweep of `grid()` into `folder` in another process, once it hangs in its second cell
    (with half a file written in its work folder); with `command`, run as `mrpruner-sweep` is
    (`main`, its output piped)."""
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        import test_experiments as t
        from mrpruner.sweep import cells, cli, run

        def runner(cell, grid, workdir, log):
            if cell == grid.cells()[1]:
                (workdir / "half.json").write_text("{{")
                (workdir.parent.parent / "second-started").touch()
                time.sleep(600)
            return t.fake_run(cell, workdir)

        if {command!r}:
            cells.RUNNER_FUNCTIONS["lmms-eval"] = runner
            run.check_here = lambda grid: None  # the fake runner loads no model (MODEL is not cached here)
            config = {str(folder)!r} + ".yaml"
            with open(config, "w") as f:
                json.dump(t.CONFIG, f)
            sys.exit(cli.main([config, "--out", {str(folder)!r}, "--no-progress"]))
        run.run_sweep(t.grid(), {str(folder)!r}, runner=runner, progress=False)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], **(
        {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True} if command else {}))
    deadline = time.monotonic() + 120
    while not (folder / "second-started").exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError("the sweep did not reach its second cell")
        time.sleep(0.1)
    return child


def test_killed_sweep_leaves_no_partial_file(tmp_path):
    child = hanging_sweep(tmp_path)
    child.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
    child.wait(60)
    assert len(results.cell_files(tmp_path)) == 1
    assert not [p for p in tmp_path.rglob("*.tmp")]
    resumed = FakeRunner()
    run.run_sweep(grid(), tmp_path, runner=resumed, progress=False)
    assert resumed.calls == [c.cell_id for c in grid().cells()[1:]] and not leftovers(tmp_path)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_a_stop_signal_discards_the_cell_and_releases_its_claim_at_once(tmp_path, stop):
    """What SLURM sends a worker (SIGTERM: preemption, requeue, cancel, the time limit; USR1/USR2:
    the grace signal before a time limit) stops it as Ctrl-C does, with its claim released at once
    and an exit code naming the signal; the same command resumes."""
    child = hanging_sweep(tmp_path / "out", command=True)
    child.send_signal(stop)
    output = child.communicate(timeout=60)[0]
    assert child.returncode == 128 + stop, output
    second = grid().cells()[1]
    assert f"stopped during {second.task} | {second.label} r={second.ratio:g} by {stop.name}: that cell is " \
           "discarded and its claim released" in output
    assert f"mrpruner-sweep: stopped by {stop.name}" in output
    assert not list((tmp_path / "out" / workers.CLAIMS_DIR).iterdir()) and not leftovers(tmp_path / "out")
    resumed = FakeRunner()
    run.run_sweep(grid(), tmp_path / "out", runner=resumed, progress=False)
    assert resumed.calls == [c.cell_id for c in grid().cells()[1:]]


def test_a_stop_signal_in_a_whole_section_waits_for_its_end():
    """A claim taken or a result written is never cut half-way: a stop signal arriving inside such a
    section is raised when it ends, and stop signals after the first are ignored."""
    previous = {sig: signal.signal(sig, run.interrupt) for sig in workers.STOP_SIGNALS}
    reached = []
    try:
        with pytest.raises(run.Stopped) as stopped:
            with run._whole():
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(0.2)  # the handler runs here and holds the signal back
                os.kill(os.getpid(), signal.SIGTERM)  # ignored: the sweep is already stopping
                time.sleep(0.2)
                reached.append(True)
        assert reached and stopped.value.signal == signal.SIGUSR1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_folder_holds_one_grid(tmp_path):
    run.run_sweep(grid(), tmp_path / "a", runner=FakeRunner(), progress=False)
    with pytest.raises(ValueError, match=r"another grid \(methods: .*ratios"):
        run.run_sweep(grid(ratios=[0.5, 0.7]), tmp_path / "a", runner=FakeRunner(), progress=False)
    with pytest.raises(ValueError, match=r"another grid \(models: \['llava-hf"):
        run.run_sweep(grid(model="another/llava"), tmp_path / "a", runner=FakeRunner(), progress=False)
    run.run_sweep(grid(ratios=[0.7]), tmp_path / "b", runner=FakeRunner(), progress=False)
    stray = results.cell_files(tmp_path / "b")[-1]
    (tmp_path / "a" / results.CELLS_DIR / stray.name).write_bytes(stray.read_bytes())
    with pytest.raises(ValueError, match="belongs to another grid"):
        results.load_results(tmp_path / "a")
    with pytest.raises(ValueError, match="not an mrpruner results folder"):
        results.load_results(tmp_path)


def test_measured_numbers_line_up_with_the_paper(tmp_path):
    run.run_sweep(grid(), tmp_path, runner=FakeRunner(), progress=False)
    measured = results.paper_frame(results.load_results(tmp_path))
    side = paper.compare(paper.reported(1), measured).set_index(["method", "ratio", "benchmark"])
    assert side.loc[("MR-Pruner", 0.9, "GQA"), "measured"] == pytest.approx(59.0)
    assert side.loc[("LLaVA-NeXT-8B", 0.0, "POPE"), "measured"] == pytest.approx(50.0)
    assert side.loc[("G-Prune", 0.5, "Throughput"), "measured"] == pytest.approx(0.75)
    assert side.loc[("MR-Pruner", 0.9, "GQA"), "provenance"].startswith("measured here")
    assert side.loc[("MR-Pruner", 0.9, "MME"), "provenance"] == paper.NOT_MEASURED


def test_command_line_checks_then_lists_or_runs(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path), "--model", MODEL, "--methods", "magic", "--tasks", "gqa",
                    "--ratios", "0.5"]) == 2
    assert "or an import path 'package.module:function'" in capsys.readouterr().err
    assert cli.main(["table1", "--out", str(tmp_path / "t1"), "--tasks", "gqa", "--limit", "20", "--dry-run"]) == 0
    *lines, total = capsys.readouterr().out.splitlines()
    assert len(lines) == 16 and all(line.startswith("to run ") for line in lines)
    assert "--model llava_next_pruned" in lines[-1] and "method=mrpruner,ratio=0.9,protocol=exact" in lines[-1]
    assert "--limit 20" in lines[-1] and not (tmp_path / "t1").exists()
    assert total.startswith("table1: 16 cell(s), 320 samples: estimated ")
    assert cli.main(["table1", "--out", str(tmp_path / "t1"), "--tasks", "gqa", "--protocol", "exact", "--dry-run"]) == 0
    assert "method=mrpruner,ratio=0.9,protocol=exact" in capsys.readouterr().out.splitlines()[-2]


# --- the real thing: lmms-eval on the tiny model, interrupted and resumed ---------------------------

@pytest.mark.slow
def test_real_sweep_interrupted_and_resumed(tmp_path):
    from mrpruner.testing import tiny_llava_next

    model, processor = tiny_llava_next()
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    task = write_tiny_task(tmp_path / "task")
    out = tmp_path / "results"
    command = [sys.executable, "-m", "mrpruner.sweep", "--out", str(out), "--model", str(tmp_path / "tiny"),
               "--methods", "mrpruner,fastv", "--ratios", "0.5,0.9", "--tasks", TINY.key, "--limit", "1",
               "--device", "cpu", "--include-path", str(task), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}

    # A background job (nohup, &) inherits SIGINT ignored, and Python then keeps ignoring it: give the
    # sweep the default disposition, as a terminal's Ctrl-C finds it.
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not results.cell_files(out):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0]
        time.sleep(0.2)
    time.sleep(2)  # into the second cell's lmms-eval run
    sweep.send_signal(signal.SIGINT)  # Ctrl-C
    log = sweep.communicate(timeout=120)[0]
    assert sweep.returncode == 130, log
    assert "stopped during" in log and "Run the same command again to resume" in log
    first = {p.name: p.read_bytes() for p in results.cell_files(out)}
    assert 1 <= len(first) < 4 and not leftovers(out), log

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"{4 - len(first)} cell(s) run (0 of them stale), {len(first)} already finished, 0 failed" in done.stdout
    assert all((out / results.CELLS_DIR / name).read_bytes() == data for name, data in first.items())
    frame = results.load_results(out)
    assert len(frame) == 4 and set(frame.method) == {"mrpruner", "fastv"} and set(frame.ratio) == {0.5, 0.9}
    assert (frame.samples == 1).all() and frame.score.between(0, 100).all() and (frame.throughput > 0).all()
    assert (frame.kept_tokens == [keep_count(int(v), r) for v, r in zip(frame.visual_tokens, frame.ratio)]).all()
    for _, rows in frame.groupby("method"):
        assert rows.sort_values("ratio").flops_reduction.is_monotonic_increasing
    assert (frame.prefill_ms > 0).all() and frame.device.str.len().gt(0).all() and not leftovers(out)
    assert len(list((out / run.LOGS_DIR).glob("*.log"))) >= 4


@pytest.mark.parametrize("name, host", [("tiny-onevision", "llava_onevision"), ("tiny-internvl", "internvl")])
def test_a_sweep_names_a_onevision_or_internvl_checkpoint(tmp_path, monkeypatch, name, host):
    """Cells of another family record it and its code fingerprint (`results.code_fingerprint(host)`):
    read back current, and stale under LLaVA-NeXT's fingerprint."""
    from mrpruner import models

    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    g = grids.grid_from_config({"name": "hosts", "model": name, "tasks": [TINY.key], "limit": 2, "device": "cpu",
                             "dtype": "float32", "runner": "in-process", "include_path": str(write_tiny_task(tmp_path / "task")),
                             "methods": [{"label": "all tokens", "method": "none", "ratios": [0]},
                                         {"label": "MR-Pruner", "method": "mrpruner", "ratios": [0.9]}]})
    report = run.run_sweep(g, tmp_path / "results", progress=False)
    assert len(report.finished) == 2 and not report.failed
    frame = results.load_results(tmp_path / "results")
    assert not frame["stale"].any() and (frame["samples"] == 2).all() and frame["score"].notna().all()
    for path in results.cell_files(tmp_path / "results"):
        cell = results.read_json(path)
        assert cell["host"] == host and cell["fingerprint"]["code"] == results.code_fingerprint(host)
        assert cell["fingerprint"]["code"] != results.code_fingerprint()
    pruned = frame[frame["method"] == "mrpruner"]
    assert (pruned["kept_tokens"] < pruned["visual_tokens"]).all()
