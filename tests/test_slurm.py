"""The sweep's cluster path on a real SLURM (issue 35): a single-node SLURM from Debian's packages,
started here as root (tests/slurm_cluster.py; `make slurm` installs it), these tests skipped with
the reason where it cannot be. It has no accounting (sacct fails), as many small clusters.

On it, with the miniature's cells: a 2-task array gives one worker's results; a task requeued in
the middle of a cell (`scontrol requeue`, what a preempting partition does) leaves every cell
finished once, `--wait` exits 0 once the grid is complete and says the task was requeued, and the
requeued task later finds the grid complete; a task at its time limit gets the grace signal, is
requeued by submitit's checkpointing rather than failing, and resubmitting the same command
finishes the grid; a failing cell is reported failed with its log, and not run again."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrpruner import benchmarks, results, workers
from mrpruner.sweep import cli, run
from mrpruner.sweep import grid as grids

sys.path.insert(0, str(Path(__file__).parent))
import slurm_cluster  # noqa: E402

GRID = {"name": "slurm", "model": "mini", "tasks": ["mrpruner_mini_detail"], "limit": 8, "device": "cpu",
        "runner": "in-process", "ratios": [0.5, 0.9],
        "methods": ["random", {"label": "MR-Pruner", "method": "mrpruner"}]}
# Each array task: one CPU; memory is only booked (task/none enforces nothing), small enough for two.
SLURM = "partition=debug,cpus=1,mem=1000,time=30"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_cluster.missing()
    if why:
        pytest.skip(why)
    running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield running
    running.stop()


@pytest.fixture
def env(cluster, tmp_path):
    return {**cluster.env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_path / "hf")}


def sweep(out: Path, *extra: str, grid: dict = GRID) -> list[str]:
    """The sweep command of `grid` into `out` (its YAML written beside `out`)."""
    grid_file = out.parent / f"{out.name}.yaml"
    grid_file.write_text(json.dumps(grid))
    return [sys.executable, "-m", "mrpruner.sweep", str(grid_file), "--out", str(out), "--no-progress", *extra]


def records(out: Path) -> list[dict]:
    return [results.read_json(p) for p in results.cell_files(out)]


def scores(out: Path) -> dict:
    return {(r["cell"]["label"], r["cell"]["ratio"]): (r["score"], r["sample_scores"]["value"]) for r in records(out)}


def leftovers(out: Path) -> list[Path]:
    """Claims, half-written files and work folders: what a cleanly stopped worker leaves none of."""
    return ([*(out / workers.CLAIMS_DIR).glob("*")] + [*(out / run.WORK_DIR).glob("*")]
            + [p for p in out.rglob("*.tmp")])


def tasks(cluster, job: str) -> dict[str, tuple[str, str, int]]:
    """squeue's view of job `job`'s tasks: id -> (state, reason, restarts)."""
    listed = cluster.run("squeue", "-h", "-r", "-t", "all", "-j", job, "-O",
                         "JobArrayID:|,State:|,Reason:|,RestartCnt:|").stdout
    return {i: (s, r, int(n)) for i, s, r, n, *_ in (line.split("|") for line in listed.splitlines())}


def until(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)
    return found


def submitted_job(stdout: str) -> str:
    return re.search(r"submitted through submitit \(slurm\), job (\d+)", stdout).group(1)


@pytest.fixture
def one_worker(tmp_path, monkeypatch):
    """The grid's scores from one worker in this process, without SLURM."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-one"))
    report = run.run_sweep(grids.grid_from_config(GRID), tmp_path / "one", progress=False)
    assert len(report.finished) == 4 and not report.failed
    return scores(tmp_path / "one")


@pytest.mark.slow
def test_a_two_task_array_gives_one_workers_results(cluster, env, tmp_path, one_worker):
    out = tmp_path / "out"
    done = subprocess.run(sweep(out, "--workers", "2", "--slurm", SLURM, "--wait", "--poll", "1"), env=env,
                          capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    job = submitted_job(done.stdout)
    assert "slurm: the grid is complete" in done.stdout
    # No accounting here: one line says where the status comes from, and submitit never polls sacct.
    assert log.count("SLURM's accounting (sacct) is not used") == 1 and "Bypassing sacct" not in log
    found = records(out)
    assert len(found) == 4 and len({r["cell_id"] for r in found}) == 4
    assert {r["worker"]["slurm_array_job_id"] for r in found} == {job}
    assert {r["worker"]["slurm_array_task_id"] for r in found} <= {"0", "1"}
    assert scores(out) == one_worker
    assert cli.main(["--status", str(out)]) == 0


@pytest.mark.slow
def test_a_task_requeued_mid_cell_loses_nothing_and_wait_says_so(cluster, env, tmp_path, capsys):
    import submitit

    out = tmp_path / "out"
    longer = {**GRID, "name": "slurm", "limit": 16}  # cells of a few seconds here, to be caught in the middle
    launcher = subprocess.Popen(sweep(out, "--workers", "2", "--slurm", SLURM, "--wait", "--poll", "1", grid=longer),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        claim = until(lambda: next((out / workers.CLAIMS_DIR).glob("*.json"), None) if out.is_dir() else None,
                      300, "a worker's first claim", poll=0.05)
        worker = json.loads(claim.read_text())["worker"]
        task = f"{worker['slurm_array_job_id']}_{worker['slurm_array_task_id']}"
        # From outside the array (as from a login node), while it runs: the folder says who runs what.
        assert cli.main(["--status", str(out)]) == 1
        status = capsys.readouterr().out
        assert re.search(rf"running   .*: worker {worker['host']}:{worker['pid']} \(array job "
                         rf"{worker['slurm_array_job_id']}, task {worker['slurm_array_task_id']}\)", status), status
        cluster.run("scontrol", "requeue", task)  # what a preempting partition does: SIGTERM, back to PENDING
        stdout = launcher.communicate(timeout=600)[0]
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stdout[-4000:]
    assert "slurm: the grid is complete" in stdout
    index = worker["slurm_array_task_id"]
    assert re.search(rf"array task {index}: PENDING \(BeginTime\), requeued 1 time\(s\)", stdout), stdout
    assert len(records(out)) == 4 and len({r["cell_id"] for r in records(out)}) == 4 and not leftovers(out)
    requeued_log = out / "submitit" / f"{task}_0_log.out"
    assert re.search(r"stopped during .* by SIGTERM: that cell is discarded", requeued_log.read_text())
    assert not (out / "submitit" / f"{task}_0_result.pkl").exists()  # no exception recorded for the requeue

    # SLURM holds a requeued task about two minutes (BeginTime); release it now, as an admin may.
    cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now")
    until(lambda: tasks(cluster, worker["slurm_array_job_id"])[task][0] == "COMPLETED", 300, "the requeued task")
    assert submitit.SlurmJob(out / "submitit", task).result() == 0
    assert "0 cell(s) run (0 of them stale), 4 already finished" in requeued_log.read_text()
    assert len(records(out)) == 4 and not leftovers(out)


@pytest.mark.slow
def test_a_task_at_its_time_limit_is_requeued_and_resubmitting_finishes_the_grid(cluster, env, tmp_path):
    out = tmp_path / "out"
    command = sweep(out, "--workers", "1", "--slurm", SLURM.replace("time=30", "time=1,grace=5"))
    # This test holds the last cell, so the one-minute task cannot finish the grid before its time limit.
    grid = grids.grid_from_config(GRID)
    out.mkdir()
    results.claim_folder(out, grid.identity())
    held = workers.Claims(out, workers.this_worker())
    try:
        assert held.take(grid.cells()[-1].cell_id) is True
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0 and "mrpruner-sweep --status" in first.stdout, first.stdout + first.stderr
        job = submitted_job(first.stdout)
        # SLURM sends the grace signal (USR2, `grace` s before the limit, within its 30 s resolution):
        # submitit checkpoints the task and requeues it.
        until(lambda: tasks(cluster, job)[job][2] >= 1, 240, "the requeue at the time limit", poll=1)
        assert leftovers(out) == [held._held[grid.cells()[-1].cell_id]]  # the claim this test holds, alone
        log = (out / "submitit" / f"{job}_0_log.out").read_text()
        assert "this job is timed-out" in log and f"Requeued job {job}" in log
        assert not (out / "submitit" / f"{job}_0_result.pkl").exists()  # no exception recorded
        held.release(grid.cells()[-1].cell_id, done=False)
    finally:
        held.close()
    cluster.run("scancel", job)  # the user resubmits instead of waiting for the requeued task
    before = len(records(out))
    again = subprocess.run(command + ["--wait", "--poll", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "slurm: the grid is complete" in again.stdout and before < 4
    assert len(records(out)) == 4 and len({r["cell_id"] for r in records(out)}) == 4 and not leftovers(out)


@pytest.mark.slow
def test_a_failing_cell_is_reported_with_its_log_and_not_run_again(cluster, env, tmp_path):
    tasks_folder = tmp_path / "tasks"  # a task whose documents are missing: its cells fail in lmms-eval
    tasks_folder.mkdir()
    detail = (Path(benchmarks.tasks_folder()) / "mrpruner_mini_detail.yaml").read_text()
    (tasks_folder / "mrpruner_mini_broken.yaml").write_text(
        detail.replace("mrpruner_mini_detail", "mrpruner_mini_broken"))
    grid = {**GRID, "methods": ["random"], "include_path": str(tasks_folder),
            "tasks": ["mrpruner_mini_detail", "mrpruner_mini_broken"]}
    out = tmp_path / "out"
    done = subprocess.run(sweep(out, "--workers", "2", "--slurm", SLURM, "--wait", "--poll", "1", grid=grid),
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    broken = [c for c in grids.grid_from_config(grid).cells() if c.task == "mrpruner_mini_broken"]
    for cell in broken:
        log = out / run.LOGS_DIR / f"{cell.cell_id}.log"
        assert re.search(rf"failed    mrpruner_mini_broken \| random r={cell.ratio:g}: on worker .*; its log: {log}",
                         done.stdout), done.stdout
        assert "FileNotFoundError" in log.read_text()
    assert "every array task has ended and the grid is not complete" in done.stdout
    logs = "".join(p.read_text() for p in (out / "submitit").glob("*_log.out"))
    assert logs.count("FAILED mrpruner_mini_broken") == 2  # each broken cell ran once, on one task
    assert len(records(out)) == 2 and {r["cell"]["task"] for r in records(out)} == {"mrpruner_mini_detail"}
    assert cli.main(["--status", str(out)]) == 1
