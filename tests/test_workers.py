"""Many workers on one sweep (mrpruner.workers): claims taken once, a gone worker's claim taken over
(same host: its process is gone; another host: its heartbeat is older than the timeout), a worker
killed mid-cell, two real workers on a miniature grid, submitit's local executor, the sbatch script,
the cost estimate of --dry-run, and bad launch arguments refused before anything runs."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mrpruner import cost, paper, results, workers
from mrpruner.sweep import cells, cli, run
from mrpruner.sweep import grid as grids

from test_experiments import FakeRunner, grid, hanging_sweep, leftovers

MINI_GRID = {"name": "shared", "model": "mini", "tasks": ["mrpruner_mini_detail"], "limit": 60, "device": "cpu",
             "runner": "in-process", "ratios": [0.5, 0.9],
             "methods": ["random", "gprune", {"label": "MR-Pruner", "method": "mrpruner"}]}


def worker(host: str = None, pid: int = None) -> workers.Worker:
    me = workers.this_worker()
    return workers.Worker(host or me.host, pid or me.pid, me.start if pid is None else None, os.urandom(6).hex())


def test_a_claim_is_taken_once_and_released(tmp_path):
    first, second = (workers.Claims(tmp_path, worker()) for _ in range(2))
    try:
        assert first.take("cell") is True
        assert second.take("cell") == "running"  # a live worker (this very process) holds it
        first.release("cell", done=False)
        assert second.take("cell") is True and first.take("cell") == "running"
        second.release("cell", done=True)
        assert not list((tmp_path / workers.CLAIMS_DIR).iterdir())
    finally:
        first.close(), second.close()


def test_a_gone_workers_claim_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone_here = workers.Claims(tmp_path, worker(pid=int(dead.stdout)))  # a process that has exited
    elsewhere = workers.Claims(tmp_path, worker(host="another-host.example"), timeout=5)
    me = workers.Claims(tmp_path, worker(), timeout=5)
    try:
        assert gone_here.take("a") is True and elsewhere.take("b") is True
        assert me.take("a") is True  # same host, process gone: at once
        assert me.take("b") == "running"  # another host, touched just now
        claim = next((tmp_path / workers.CLAIMS_DIR).glob("b.*.json"))
        os.utime(claim, (time.time() - 6, time.time() - 6))  # its heartbeat stopped 6 s ago
        assert me.take("b") is True
        assert sorted(p.name for p in (tmp_path / workers.CLAIMS_DIR).iterdir()) == \
               ["a.0.json", "a.1.json", "b.0.json", "b.1.json"]
        assert json.loads((tmp_path / workers.CLAIMS_DIR / "b.1.json").read_text())["worker"]["host"] == \
               socket.gethostname()
    finally:
        for claims in (gone_here, elsewhere, me):
            claims.close()


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path):
    claims = workers.Claims(tmp_path, worker(), heartbeat=0.05)
    try:
        claims.take("cell")
        path = next((tmp_path / workers.CLAIMS_DIR).glob("cell.*.json"))
        os.utime(path, (0, 0))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime < time.time() - 60:
            assert time.monotonic() < deadline, "the claim was not touched"
            time.sleep(0.05)
    finally:
        claims.close()


def test_workers_in_threads_share_a_grid_without_running_a_cell_twice(tmp_path):
    g, runners = grid(), [FakeRunner(), FakeRunner()]

    def slow(runner):
        def run(cell, grid_, workdir, log):
            time.sleep(0.05)
            return runner(cell, grid_, workdir, log)
        return run

    threads = [threading.Thread(target=run.run_sweep, args=(g, tmp_path),
                                kwargs={"runner": slow(r), "progress": False, "poll": 0.05}) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    calls = runners[0].calls + runners[1].calls
    assert sorted(calls) == sorted(c.cell_id for c in g.cells()) and all(r.calls for r in runners)
    assert not leftovers(tmp_path) and not list((tmp_path / workers.CLAIMS_DIR).iterdir())
    record = results.read_json(results.cell_files(tmp_path)[0])
    assert record["worker"]["host"] == socket.gethostname() and record["worker"]["pid"] == os.getpid()


def test_a_failed_cell_is_not_retried_by_workers_started_before_the_failure(tmp_path):
    g = grid()
    early = workers.Claims(tmp_path, worker())  # started before the failure below
    try:
        report = run.run_sweep(g, tmp_path, runner=FakeRunner(fail=("pope",)), progress=False)
        failed = report.failed[0]
        assert early.take(failed) == "failed"
        later = FakeRunner()
        again = run.run_sweep(g, tmp_path, runner=later, progress=False)  # started after it: retries
        assert later.calls == report.failed and not again.failed
    finally:
        early.close()


def test_a_worker_killed_mid_cell_is_taken_over_by_another(tmp_path):
    """One worker hangs in its second cell and is SIGKILLed while another works through the rest
    and waits for that cell: the other runs it again, and nothing half-written remains."""
    child = hanging_sweep(tmp_path)
    other, report = FakeRunner(), {}
    thread = None
    try:
        deadline = time.monotonic() + 120
        thread = threading.Thread(target=lambda: report.update(
            done=run.run_sweep(grid(), tmp_path, runner=other, progress=False, poll=0.1)))
        thread.start()
        cells = grid().cells()
        while len(other.calls) < len(cells) - 2:  # all but the killed worker's two
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        assert thread.is_alive(), "the other worker must wait for the cell the first one holds"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()  # already killed, unless an assertion above failed
        child.wait(60)
        if thread is not None:
            thread.join(60)
    assert other.calls[-1] == cells[1].cell_id and sorted(other.calls) == sorted(c.cell_id for c in cells[1:])
    assert report["done"].skipped == [cells[0].cell_id] and len(results.cell_files(tmp_path)) == len(cells)
    assert not leftovers(tmp_path) and not list((tmp_path / workers.CLAIMS_DIR).iterdir())
    by_pid = {results.read_json(p)["worker"]["pid"] for p in results.cell_files(tmp_path)}
    assert by_pid == {child.pid, os.getpid()}


# --- the command line --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be a positive whole number, got 0"),
    (["--workers", "-2"], "--workers must be a positive whole number, got -2"),
    (["--workers", "1.5"], "--workers must be a positive whole number, got '1.5'"),
    (["--slurm", "partition=gpu,nodes=2"], "--slurm takes KEY=VALUE pairs with keys ['account', 'constraint', "),
    (["--slurm", "time=1h"], "--slurm time must be a whole number of minutes, got '1h'"),
    (["--executor", "kubernetes"], "--executor must be one of ['slurm', 'local'], got 'kubernetes'"),
    (["--workers", "2", "--claim-timeout", "0"], "--claim-timeout must be a positive number of seconds"),
    (["--slurm", "grace=soon"], "--slurm grace must be a whole number of seconds, got 'soon'"),
    (["--workers", "2", "--slurm", "partition=gpu", "--wait", "--poll", "-1"],
     "--poll must be a positive number of seconds, got -1.0"),
])
def test_bad_launch_arguments_are_refused_before_anything_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli.main(["--out", str(out), "--model", "mini", "--methods", "random", "--ratios", "0.5",
                    "--tasks", "mrpruner_mini_detail", *argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_folder_of_another_grid_is_refused_before_workers_start(tmp_path, capsys):
    run.run_sweep(grid(), tmp_path, runner=FakeRunner(), progress=False)
    assert cli.main(["--out", str(tmp_path), "--model", "mini", "--methods", "random", "--ratios", "0.5",
                    "--tasks", "mrpruner_mini_detail", "--workers", "2"]) == 2
    assert "was written by another grid" in capsys.readouterr().err
    assert not (tmp_path / run.LOGS_DIR / "worker-0.log").exists()


def test_the_sbatch_script_runs_the_same_sweep_as_an_array(tmp_path, capsys):
    out = tmp_path / "t1"
    assert cli.main(["table1", "--out", str(out), "--tasks", "gqa", "--workers", "4", "--slurm",
                    "partition=gpu,gpus=1,time=240,parallelism=2", "--slurm-script"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --array=0-3%2\n" in script
    assert "#SBATCH --partition=gpu\n" in script and "#SBATCH --gpus-per-task=1\n" in script
    assert "#SBATCH --time=240\n" in script and "#SBATCH --requeue\n" in script
    assert "#SBATCH --signal=USR2@90\n" in script  # the grace signal: each worker releases its cell before the kill
    assert f"#SBATCH --output={out}/logs/slurm-%A_%a.log\n" in script and (out / "logs").is_dir()
    srun = script.splitlines()[-1]
    assert srun.startswith("srun ") and "-m mrpruner.sweep table1 --out" in srun
    assert "--workers" not in srun and "--slurm" not in srun and srun.endswith("--no-progress")


def test_slurm_settings_and_the_signals_that_stop_a_worker():
    assert workers.parse_slurm("partition=gpu,time=60,grace=120") == {
        "slurm_partition": "gpu", "timeout_min": 60, "slurm_signal_delay_s": 120}
    script = workers.sbatch_script(["x"], Path("out"), 2, {"slurm_signal_delay_s": 120}, "n")
    assert "#SBATCH --signal=USR2@120\n" in script
    # A worker exits 128 + the signal that stopped it, or dies of it before it could handle it.
    assert [workers.stopped_by(c) for c in (143, -15, 138, 140, -12, 130)] == [
        signal.SIGTERM, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR2, signal.SIGINT]
    assert [workers.stopped_by(c) for c in (0, 1, 2, 137, -9, 139)] == [None] * 6  # a crash stays a failure


def test_local_devices_are_one_thread_each_without_gpus(monkeypatch):
    monkeypatch.setattr(workers, "_visible_gpus", lambda: [])
    assert workers.local_devices(3) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 3
    monkeypatch.setattr(workers, "_visible_gpus", lambda: ["2", "5", "7", "9"])
    assert workers.local_devices(2, processes=2) == [{"CUDA_VISIBLE_DEVICES": "2,5"}, {"CUDA_VISIBLE_DEVICES": "7,9"}]
    with pytest.raises(ValueError, match=r"--workers 3 x num_processes 2 needs 6 GPUs; 4 are visible"):
        workers.local_devices(3, processes=2)


# --- where a grid stands: --status ------------------------------------------------------------------

def test_status_reads_each_cells_state_from_the_folder_alone(tmp_path, capsys):
    g = grid()
    run.run_sweep(g, tmp_path, runner=FakeRunner(fail=("pope",)), progress=False)  # gqa finished, pope failed
    gqa = [c for c in g.cells() if c.task == "gqa"]
    for cell in gqa[:2]:
        (tmp_path / results.CELLS_DIR / f"{cell.cell_id}.json").unlink()
    stale = tmp_path / results.CELLS_DIR / f"{gqa[2].cell_id}.json"
    stale.write_text(json.dumps({**results.read_json(stale), "fingerprint": {"code": "older", "model": "older"}}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live, gone = workers.Claims(tmp_path, worker()), workers.Claims(tmp_path, worker(pid=int(dead.stdout)))
    try:
        assert live.take(gqa[0].cell_id) is True and gone.take(gqa[1].cell_id) is True
        capsys.readouterr()
        assert cli.main(["--status", str(tmp_path)]) == 1
        out = capsys.readouterr().out.splitlines()
    finally:
        live.close(), gone.close()
    assert out[0] == "t: 2 of 10 cell(s) finished, 1 running, 1 claimed by a gone worker, 5 failed, 1 remaining"
    me = workers.this_worker()
    assert out[1].startswith(f"  running   gqa | LLaVA-NeXT-8B r=0: worker {me.host}:{me.pid}, for ")
    assert out[2] == f"  gone      gqa | MR-Pruner r=0.5: worker {me.host}:{dead.stdout.strip()} is gone; the next " \
                     "worker to reach the cell runs it again"
    pope = [c for c in g.cells() if c.task == "pope"]
    assert out[3:8] == [f"  failed    pope | {c.label} r={c.ratio:g}: on worker {me.host}:{me.pid}; its log: "
                        f"{tmp_path / run.LOGS_DIR / (c.cell_id + '.log')}" for c in pope]
    assert out[8] == "  remaining gqa | MR-Pruner r=0.9 (a stale result: older code or weights)"
    assert out[9] == f"cells run by each worker: {me.host}:{me.pid}: 3"  # the result files there
    assert out[10].startswith("the grid is not complete")


def test_status_of_a_complete_folder_and_of_what_is_not_one(tmp_path, capsys):
    committed = Path(__file__).parent.parent / "results" / "mini" / "table1"
    assert cli.main(["--status", str(committed)]) == 0  # the miniature's committed sweep, current
    shown = capsys.readouterr().out
    assert shown.startswith("mini_table1: 44 of 44 cell(s) finished, 0 running") and "the grid is complete" in shown
    assert cli.main(["--status", str(tmp_path)]) == 2
    assert f"{tmp_path} is not an mrpruner results folder (it has no grid.json)" in capsys.readouterr().err
    run.run_sweep(grid(), tmp_path, runner=FakeRunner(), progress=False)
    stored = results.read_json(tmp_path / results.GRID_FILE)
    stored["grid"]["limits"] = [20]
    (tmp_path / results.GRID_FILE).write_text(json.dumps(stored))
    assert cli.main(["--status", str(tmp_path)]) == 2
    assert "does not match its own fingerprint" in capsys.readouterr().err
    for argv in (["--status", str(tmp_path), "--out", "x"], ["--status", str(tmp_path), "--workers", "2"], []):
        with pytest.raises(SystemExit) as refused:
            cli.main(argv)
        assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--status DIR takes no other option but --claim-timeout, got --out" in err
    assert "--status DIR takes no other option but --claim-timeout, got --workers" in err
    assert "--out is required (or --status DIR)" in err


# --- the cost before the run -------------------------------------------------------------------------

def test_the_estimate_uses_the_papers_throughput_then_the_folders(tmp_path):
    g = grids.grid_from_config({**grids.load_config("table1"), "tasks": ["gqa", "mme"]})
    frame = cost.estimate(g.cells(), []).set_index(["label", "ratio", "task"])
    reported = paper.reported(1).query("benchmark == 'Throughput'").set_index(["method", "ratio"])["value"]
    assert frame.loc[("FastV", 0.9, "gqa"), "hours"] == pytest.approx(12578 / reported[("FastV", 0.9)] / 3600)
    assert frame.loc[("LLaVA-NeXT-8B", 0.0, "mme"), "samples"] == 2374
    assert frame["source"].eq("paper").all()
    assert cost.total(frame) == pytest.approx(frame["hours"].sum())

    run.run_sweep(grid(), tmp_path, runner=FakeRunner(), progress=False)  # 0.75 samples/s over 2 ranks
    records = [results.read_json(p) for p in results.cell_files(tmp_path)]
    mine = cost.estimate(grid(limit=30).cells(), records).set_index(["label", "ratio", "task"])
    assert mine.loc[("MR-Pruner", 0.5, "gqa"), "hours"] == pytest.approx(30 / 0.375 / 3600)
    assert mine["source"].eq("measured").all()  # the same cells', at another limit
    other = cost.estimate(grid(tasks=["textvqa"], limit=None).cells(), records).set_index(["label", "ratio", "task"])
    assert other.loc[("MR-Pruner", 0.5, "textvqa_val"), "source"] == "measured"  # the row's, on other tasks
    assert other.loc[("MR-Pruner", 0.5, "textvqa_val"), "hours"] == pytest.approx(5000 / 0.375 / 3600)
    table3 = cost.estimate(grids.grid_from_config(grids.load_config("table3")).cells(), []).set_index(["label", "ratio", "task"])
    assert table3.loc[("MR-Pruner [-IR]", 0.9, "gqa"), "source"] == "paper, unpruned"
    unknown = cost.estimate(grids.grid_from_config(MINI_GRID).cells(), [])
    assert unknown["hours"].isna().all() and "unknown" in cost.summary_line(unknown, "CPU")


# --- real workers on the miniature ------------------------------------------------------------------

def sweep_command(out: Path, *extra: str, grid: dict = MINI_GRID) -> list[str]:
    grid_file = out.parent / "grid.yaml"
    grid_file.write_text(json.dumps(grid))
    return [sys.executable, "-m", "mrpruner.sweep", str(grid_file), "--out", str(out), "--no-progress", *extra]


def scores(out: Path) -> dict:
    return {(r["cell"]["label"], r["cell"]["ratio"]): (r["score"], r["sample_scores"]["value"])
            for r in map(results.read_json, results.cell_files(out))}


@pytest.mark.slow
def test_two_workers_share_a_miniature_grid_and_give_one_workers_results(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    one = subprocess.run(sweep_command(tmp_path / "one"), env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    two = subprocess.run(sweep_command(tmp_path / "two", "--workers", "2"), env=env, capture_output=True, text=True,
                         timeout=900)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count("exited 0") == 2
    records = [results.read_json(p) for p in results.cell_files(tmp_path / "two")]
    assert len(records) == 6 and len({r["cell_id"] for r in records}) == 6
    ran = workers.ran_by(records)
    assert len(ran) == 2 and sum(ran.values()) == 6, ran  # each cell once, both workers ran some
    assert scores(tmp_path / "two") == scores(tmp_path / "one")
    logs = [(tmp_path / "two" / run.LOGS_DIR / f"worker-{i}.log").read_text() for i in range(2)]
    assert all("cell(s) run" in log for log in logs)


@pytest.mark.slow
def test_submitits_local_executor_runs_a_grid_as_an_array_of_two(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    done = subprocess.run(sweep_command(tmp_path / "out", "--workers", "2", "--executor", "local", "--poll", "1"),
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 array task(s) submitted through submitit (local)" in done.stdout
    records = [results.read_json(p) for p in results.cell_files(tmp_path / "out")]
    assert len(records) == 6 and sum(workers.ran_by(records).values()) == 6
    assert len(list((tmp_path / "out" / "submitit").glob("*_0_log.out"))) == 2  # one log per array task


@pytest.mark.slow
def test_two_cpu_processes_in_a_cell_give_one_processs_answers_and_score(tmp_path, monkeypatch):
    """Issue 20, item 4: a cell with num_processes 2 on the CPU runs lmms-eval under torchrun in two
    processes (rank0.json and rank1.json), each answering its share of the documents; the answers,
    per-document scores and score equal one process's, through the runner and the sweep's command line."""
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")
                       }.items():
        monkeypatch.setenv(key, value)
    spec = {"name": "dp", "model": "mini", "tasks": ["mrpruner_mini_detail"], "limit": 24, "device": "cpu",
            "batch_size": 4, "ratios": [0.9], "methods": [{"label": "MR-Pruner", "method": "mrpruner"}]}
    runs = {}
    for processes in (1, 2):
        g = grids.grid_from_config({**spec, "num_processes": processes})
        workdir = tmp_path / f"cell{processes}"
        workdir.mkdir()
        runs[processes] = cells.run_lmms_eval(g.cells()[0], g, workdir, workdir / "log")
        ranks = sorted(p.name for p in (workdir / "stats").glob("rank*.json"))
        assert ranks == [f"rank{i}.json" for i in range(processes)], (workdir / "log").read_text()[-3000:]
    one, two = runs[1], runs[2]
    assert [s["world_size"] for s in two.stats] == [2, 2]
    assert all(s["batches"] for s in two.stats)  # both processes answered some documents
    answers = {n: {x["doc_id"]: x["filtered_resps"] for x in run.samples} for n, run in runs.items()}
    assert len(answers[1]) == 24 and answers[2] == answers[1]
    cell_task = "mrpruner_mini_detail"
    assert two.results["results"][cell_task] == one.results["results"][cell_task]

    out = tmp_path / "sweep"
    argv = ["--out", str(out), "--model", "mini", "--methods", "mrpruner", "--ratios", "0.9", "--tasks", cell_task,
            "--limit", "24", "--batch-size", "4", "--device", "cpu", "--num-processes", "2", "--no-progress"]
    assert cli.main(argv) == 0
    [record] = [results.read_json(p) for p in results.cell_files(out)]
    assert record["world_size"] == 2 and record["command"][1:3] == ["-m", "torch.distributed.run"]
    single = cells.cell_record(grids.grid_from_config({**spec, "num_processes": 1}).cells()[0], one,
                            grids.grid_from_config({**spec, "num_processes": 1}), "-")
    assert record["score"] == single["score"] and record["sample_scores"] == single["sample_scores"]


@pytest.mark.slow
def test_a_preempted_array_task_is_checkpointed_and_requeued_through_submitit(tmp_path):
    """submitit's preemption signal (USR2; on SLURM, `--signal` at a time limit) to an array task in
    the middle of a cell: its worker discards the cell and releases it, submitit calls the task's
    checkpoint and requeues it (its local executor restarts it), and the grid completes with every
    cell run once and no exception recorded. tests/test_slurm.py does this on a real SLURM."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    out, small = tmp_path / "out", {**MINI_GRID, "limit": 16, "methods": ["random", "gprune"]}
    launcher = subprocess.Popen(sweep_command(out, "--workers", "1", "--executor", "local", "--poll", "1", grid=small),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (claims := list((out / workers.CLAIMS_DIR).glob("*.json")) if out.is_dir() else []):
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        cell_worker = json.loads(claims[0].read_text())["worker"]["pid"]
        array_task = int(Path(f"/proc/{cell_worker}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
        os.kill(array_task, signal.SIGUSR2)
        stdout = launcher.communicate(timeout=600)[0]
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stdout[-4000:]
    assert "shared: the grid is complete" in stdout
    found = [results.read_json(p) for p in results.cell_files(out)]
    assert len(found) == 4 and len({r["cell_id"] for r in found}) == 4 and not leftovers(out)
    assert not list((out / workers.CLAIMS_DIR).iterdir())
    log = "".join(p.read_text() for p in (out / "submitit").glob("*_log.*"))
    assert "Calling checkpoint method" in log and "Requeued job" in log and "triggered an exception" not in log
    assert re.search(r"stopped during .* by SIGTERM: that cell is discarded and its claim released", log), log
