"""Many workers on one sweep: each claims a cell before running it, so no cell runs twice, and takes
over the claim of a worker that is gone, so no cell is lost; N workers on this machine, or a SLURM
job array through submitit.

A claim is a file `OUT/.claims/<cell id>.<generation>.json` that names its worker (host, process id
and start time, SLURM ids). It is created whole and exclusively (`results.create_json`: of workers
creating the same name, one succeeds), and its worker touches it every
`heartbeat` seconds. A worker is gone when its process is (same host), or when its claim has not
been touched for `timeout` seconds (another host). A gone worker's claim is taken over by creating
the next generation, which again only one worker can do. A finished cell's claims are removed after
its result file is written whole, and a worker that wins a claim reads the result file again first.

On a cluster a worker is stopped by signals: SIGTERM (SLURM ends or requeues its task: preemption,
`scontrol requeue`, `scancel`, the time limit) and the grace signal before a time limit (`--signal`,
USR2 for submitit, USR1 on some sites). A worker stops its cell on each, discards it and releases
its claim at once (`mrpruner.sweep.run`); the array task around it (`ArrayTask`) records no
exception for that, and on a grace signal is checkpointed and requeued by submitit.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrpruner.results import CELLS_DIR, CLAIM_KEYS, atomic_write_json, create_json, read_record

CLAIMS_DIR = ".claims"
SLURM_ENV = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}
TIMEOUT_S = 600.0  # a claim untouched this long, from another host, is a gone worker's
EXECUTORS = ("slurm", "local")  # submitit's AutoExecutor on a SLURM cluster; its LocalExecutor (tests)
# --slurm KEY=VALUE -> the submitit parameter it sets (gpus, cpus: per array task; time: minutes;
# grace: seconds between the grace signal and the time limit, submitit's `--signal=USR2@90` by default)
SLURM_KEYS = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
              "constraint": "slurm_constraint", "gpus": "gpus_per_node", "cpus": "cpus_per_task",
              "mem": "slurm_mem", "time": "timeout_min", "parallelism": "slurm_array_parallelism",
              "grace": "slurm_signal_delay_s"}
GRACE_S = 90  # submitit's default grace, also the sbatch script's
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # each stops a worker's cell (module docstring)


# --- who works ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Worker:
    """This process as a sweep worker: host, process id, the process's start time (so a reused
    process id is not mistaken for it), a random token, and the SLURM ids of its job when present."""

    host: str
    pid: int
    start: float | None
    token: str
    slurm: tuple[tuple[str, str], ...] = ()

    def record(self) -> dict[str, Any]:
        """The worker as stored in its claims and in the cells it ran."""
        return {"host": self.host, "pid": self.pid, "process_start": self.start, "token": self.token,
                **dict(self.slurm)}


def this_worker() -> Worker:
    """The worker this process is."""
    slurm = tuple((key, os.environ[var]) for key, var in SLURM_ENV.items() if os.environ.get(var))
    return Worker(socket.gethostname(), os.getpid(), _process_start(os.getpid()), uuid.uuid4().hex[:12], slurm)


def _process_start(pid: int) -> float | None:
    """The start time of process `pid` (seconds since the epoch, psutil), None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def gone(claim: dict[str, Any], age_s: float, timeout: float) -> bool:
    """Whether the worker of `claim` (a claim file's record, untouched for `age_s` seconds) is gone:
    on this host, its process is not running; on another host, `age_s` exceeds `timeout`."""
    worker = claim["worker"]
    if worker["host"] != socket.gethostname():
        return age_s > timeout
    start = _process_start(worker["pid"])
    return start is None or (worker["process_start"] is not None and start != worker["process_start"])


# --- claims ------------------------------------------------------------------------------------

class Claims:
    """The claims of one results folder, as seen by one worker (module docstring)."""

    def __init__(self, out: str | Path, worker: Worker, *, timeout: float = TIMEOUT_S,
                 heartbeat: float | None = None) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.folder = Path(out) / CLAIMS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.worker, self.timeout = worker, float(timeout)
        self.heartbeat = heartbeat or min(60.0, self.timeout / 4)
        self.started = time.time()
        self._held: dict[str, Path] = {}
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._touch, daemon=True, name="mrpruner-claims-heartbeat")
        self._beat.start()

    def take(self, cell_id: str) -> bool | str:
        """Claim `cell_id`: True when this worker now holds it, else what holds it: "running" (a
        live worker), or "failed" (it failed for a worker that started after this one, in which
        case it is not retried now)."""
        generations = generations_of(self.folder, cell_id)
        if generations:
            top = generations[-1]
            claim, age = read_claim(top)
            if claim is None:  # removed since it was listed: look again
                return self.take(cell_id)
            if claim.get("failed_at") is not None:
                if claim["failed_at"] >= self.started:
                    return "failed"
            elif not gone(claim, age, self.timeout):
                return "running"
            generation = _generation(top) + 1
        else:
            generation = 0
        path = self.folder / f"{cell_id}.{generation}.json"
        claim = {"cell_id": cell_id, "worker": self.worker.record(), "claimed_at": time.time(), "failed_at": None}
        if not create_json(path, claim):  # another worker created this generation first
            return "running"
        self._held[cell_id] = path
        return True

    def failed(self, cell_id: str) -> None:
        """Mark the held claim of `cell_id` as failed now (it stays, so workers started earlier skip it)."""
        path = self._held.pop(cell_id)
        claim, _ = read_claim(path)
        atomic_write_json(path, {**claim, "failed_at": time.time()})

    def release(self, cell_id: str, *, done: bool) -> None:
        """Give up the held claim of `cell_id`; `done`: its result is written, so every claim of it goes."""
        path = self._held.pop(cell_id)
        for stale in generations_of(self.folder, cell_id) if done else [path]:
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the heartbeat (claims still held stay on disk, and go to whoever finds them gone)."""
        self._stop.set()
        self._beat.join()

    def _touch(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for path in list(self._held.values()):
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass


_CLAIM_NAME = re.compile(r"(?P<cell>.+)\.(?P<generation>\d+)\.json")


def _generation(path: Path) -> int:
    return int(_CLAIM_NAME.fullmatch(path.name).group("generation"))


def generations_of(folder: Path, cell_id: str) -> list[Path]:
    """The claim files of `cell_id` in the claims folder `folder`, oldest generation first."""
    found = [p for p in folder.glob(f"{cell_id}.*.json") if (m := _CLAIM_NAME.fullmatch(p.name))
             and m.group("cell") == cell_id]
    return sorted(found, key=_generation)


def read_claim(path: Path) -> tuple[dict[str, Any] | None, float]:
    """A claim file's record and the seconds since it was last touched; (None, 0) if it is gone; a
    ValueError naming a damaged one (`results.read_record`)."""
    try:
        age = time.time() - path.stat().st_mtime
        return read_record(path, CLAIM_KEYS), age
    except FileNotFoundError:
        return None, 0.0


def held_claims(out: str | Path, timeout: float = TIMEOUT_S) -> dict[str, tuple[str, dict[str, Any], float]]:
    """The latest claim of each claimed cell of results folder `out`, read without taking any (what
    `--status` shows): cell id -> (state, claim record, seconds since touched), the state "running"
    (a live worker), "gone" (its worker is gone: `gone`, `timeout`) or "failed"."""
    folder = Path(out) / CLAIMS_DIR
    latest: dict[str, Path] = {}
    for path in folder.glob("*.json") if folder.is_dir() else []:
        match = _CLAIM_NAME.fullmatch(path.name)
        cell = match and match.group("cell")
        if cell and (cell not in latest or _generation(latest[cell]) < _generation(path)):
            latest[cell] = path
    found = {}
    for cell_id, path in latest.items():
        claim, age = read_claim(path)
        if claim is not None:
            state = ("failed" if claim.get("failed_at") is not None
                     else "gone" if gone(claim, age, timeout) else "running")
            found[cell_id] = (state, claim, age)
    return found


def describe(worker: dict[str, Any]) -> str:
    """A worker record in words: host:pid, with its SLURM job (and array task) when it has one."""
    task, array, job = (worker.get(k) for k in ("slurm_array_task_id", "slurm_array_job_id", "slurm_job_id"))
    return f"{worker['host']}:{worker['pid']}" + (f" (array job {array}, task {task})" if task is not None
                                                  else f" (SLURM job {job})" if job else "")


# --- workers on this machine ---------------------------------------------------------------------

def local_devices(workers: int, processes: int = 1) -> list[dict[str, str]]:
    """The environment of each of `workers` local workers: with GPUs, CUDA_VISIBLE_DEVICES naming
    its own `processes` of them; without, one CPU thread each. Too few GPUs is a ValueError."""
    check_count("workers", workers)
    visible = _visible_gpus()
    if not visible:
        return [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} for _ in range(workers)]
    if workers * processes > len(visible):
        raise ValueError(f"--workers {workers} x num_processes {processes} needs {workers * processes} GPUs; "
                         f"{len(visible)} are visible ({','.join(visible)})")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(visible[i * processes:(i + 1) * processes])} for i in range(workers)]


def _visible_gpus() -> list[str]:
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return listed.split(",")[:count] if listed else [str(i) for i in range(count)]


def check_count(name: str, value: Any) -> int:
    """A positive whole number of workers, or a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{name} must be a positive whole number, got {value!r}")
    return value


def run_local(argv: Sequence[str], out: Path, workers: int, processes: int, total: int,
              progress: bool = True, poll: float = 1.0) -> int:
    """Start `workers` sweep processes (`argv` is the sweep's command line without --workers) on
    this machine, each on its own GPUs or CPU thread and logging to OUT/logs/worker-<i>.log,
    with one progress bar over the `total` cells; the worst exit code of them (Ctrl-C stops all)."""
    from tqdm.auto import tqdm

    envs = local_devices(workers, processes)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    children = []
    for i, env in enumerate(envs):
        with open(out / "logs" / f"worker-{i}.log", "w", encoding="utf-8") as log:
            children.append(subprocess.Popen([sys.executable, "-m", "mrpruner.sweep", *argv, "--no-progress"],
                                             env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT))
    bar = tqdm(total=total, unit="cell", desc=f"{workers} workers", disable=not progress)
    try:
        while any(child.poll() is None for child in children):
            bar.n = len(list((out / CELLS_DIR).glob("*.json"))) if (out / CELLS_DIR).is_dir() else 0
            bar.refresh()
            time.sleep(poll)
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(signal.SIGTERM)  # each discards its cell in progress
        for child in children:
            child.wait()
        raise
    finally:
        bar.close()
    codes = [child.returncode for child in children]
    for i, code in enumerate(codes):
        print(f"worker {i} ({', '.join(f'{k}={v}' for k, v in envs[i].items())}) exited {code}; "
              f"its log: {out / 'logs' / f'worker-{i}.log'}")
    return max(codes, key=lambda c: (c != 0, c))


# --- SLURM through submitit ----------------------------------------------------------------------

def parse_slurm(text: str) -> dict[str, Any]:
    """`--slurm partition=gpu,gpus=1,time=120` as submitit parameters (keys SLURM_KEYS; gpus, cpus,
    time, parallelism and grace whole numbers, time in minutes, grace in seconds); an unknown key or
    bad value is a ValueError."""
    parameters: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if key not in SLURM_KEYS or not sep or not value:
            raise ValueError(f"--slurm takes KEY=VALUE pairs with keys {sorted(SLURM_KEYS)}, got {item!r}")
        if key in ("gpus", "cpus", "time", "parallelism", "grace"):
            if not value.isdigit() or int(value) < (0 if key == "gpus" else 1):
                unit = {"time": " of minutes", "grace": " of seconds"}.get(key, "")
                raise ValueError(f"--slurm {key} must be a whole number{unit}, got {value!r}")
            value = int(value)
        parameters[SLURM_KEYS[key]] = value
    return parameters


@dataclass
class ArrayTask:
    """One array task of a submitted sweep: runs a worker (`python -m mrpruner.sweep` with the
    sweep's command line) and returns its exit code (0: every cell finished, 1: some failed).

    A worker stopped by a signal (module docstring) has discarded its cell and released its claim;
    the task then records no result, so submitit counts no failure: on SIGTERM, SLURM itself
    requeues the task (preemption, `scontrol requeue`) or ends it (`scancel`, the time limit); on
    the grace signal (submitit's USR2, or USR1), submitit calls `checkpoint` and requeues it (for a
    time limit at most `max_num_timeout` times). Requeued or resubmitted, it resumes from the folder."""

    argv: list[str]

    def __call__(self, index: int) -> int:
        command = [sys.executable, "-m", "mrpruner.sweep", *self.argv, "--no-progress"]
        grace = _grace_handler()
        if grace is not None:
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, grace)
        self._child = child = subprocess.Popen(command)
        try:
            code = child.wait()
        except BaseException:  # submitit requeued this task and exits (SystemExit), or it was interrupted
            _stop(child)
            raise
        if code in (0, 1):
            return code
        stopped = stopped_by(code)
        if stopped is None:
            raise RuntimeError(f"sweep worker {index} exited {code}: {shlex.join(command)}")
        print(f"array task {index}: the worker was stopped by {stopped.name}; it discarded its cell in progress "
              "and released its claim", flush=True)
        if grace is not None and stopped in (signal.SIGUSR1, signal.SIGUSR2):
            grace(stopped, None)  # the grace signal reached the worker alone: checkpoint and requeue now
        raise SystemExit(code)  # not an Exception: submitit writes no result, SLURM requeues or ends the task

    def checkpoint(self, index: int) -> Any:
        """submitit's hook on the grace signal: stop the worker (SLURM signals it too, submitit's local
        executor does not), and requeue this task as it was submitted."""
        import submitit

        child = getattr(self, "_child", None)
        if child is not None and child.returncode is None:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return submitit.helpers.DelayedSubmission(ArrayTask(self.argv), index)


def stopped_by(code: int) -> signal.Signals | None:
    """The signal that stopped a worker with exit code `code` (128 + its number, as the worker
    exits on one, or minus it, killed by it before it could): one of STOP_SIGNALS or SIGINT, else None."""
    for sig in (*STOP_SIGNALS, signal.SIGINT):
        if code in (128 + sig, -sig):
            return sig
    return None


def _grace_handler() -> Any:
    """submitit's checkpoint-and-requeue signal handler, when this process is a submitit job
    (its preemption signal: USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise), else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    handler = signal.getsignal(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
    return handler if callable(handler) else None


def _stop(child: subprocess.Popen, timeout: float = 60.0) -> None:
    """Let a worker finish stopping (SIGTERM if nothing stopped it yet); kill it after `timeout` seconds."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def submit(argv: Sequence[str], out: Path, workers: int, executor: str, slurm: dict[str, Any],
           name: str) -> list[Any]:
    """Submit `workers` array tasks of the sweep `argv` through submitit (`executor` "slurm": a SLURM
    job array; "local": submitit's local executor), their logs in OUT/submitit, and return the jobs."""
    import submitit

    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {list(EXECUTORS)}, got {executor!r}")
    folder = out / "submitit"
    slurm = dict(slurm)
    if executor == "local":
        runner = submitit.LocalExecutor(folder=folder)
        runner.update_parameters(timeout_min=slurm.get("timeout_min", 60 * 24))
    else:
        runner = submitit.AutoExecutor(folder=folder, cluster="slurm")
        runner.update_parameters(name=name, slurm_array_parallelism=slurm.pop("slurm_array_parallelism", workers),
                                 **slurm)
    return runner.map_array(ArrayTask(list(argv)), range(workers))


# SLURM's job states in which a task will not run again (squeue --states); REQUEUE_HOLD and
# SPECIAL_EXIT wait for someone to release them.
ENDED = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                   "PREEMPTED", "TIMEOUT", "REVOKED", "REQUEUE_HOLD", "SPECIAL_EXIT", "ENDED"})


@dataclass(frozen=True)
class TaskState:
    """One array task as its scheduler sees it: SLURM's state (squeue), the reason SLURM gives
    for it, and how often it was requeued; "ENDED" once squeue no longer lists it."""

    index: int
    state: str
    reason: str = ""
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.state not in ENDED

    def words(self) -> str:
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        return (f"array task {self.index}: {self.state}{reason}"
                + (f", requeued {self.restarts} time(s)" if self.restarts else ""))


def task_states(jobs: Sequence[Any], executor: str) -> list[TaskState] | str:
    """The states of submitted array tasks (`submit`'s jobs), or why they are unknown. On SLURM from
    squeue, which needs no accounting (submitit's job states come from sacct, absent on many
    clusters); with the local executor, from its processes."""
    if executor == "local":
        return [TaskState(i, "RUNNING" if not job.done() else "ENDED") for i, job in enumerate(jobs)]
    array = jobs[0].job_id.split("_")[0]  # "<array>_<task>", or "<job>" for an array of one
    try:
        done = subprocess.run(["squeue", "--noheader", "--array", "--states", "all", "--jobs", array, "--Format",
                               "JobArrayID:|,State:|,Reason:|,RestartCnt:|"], check=False, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"squeue failed ({error})"
    if done.returncode != 0 and "Invalid job id" not in done.stderr:  # an unknown id: every task ended long ago
        return f"squeue failed ({done.stderr.strip() or done.returncode})"
    listed = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        job, state, reason, restarts, *_ = line.split("|")
        listed[job] = (state.split()[0], reason, int(restarts or 0))
    return [TaskState(i, *listed.get(job.job_id, ("ENDED",))) for i, job in enumerate(jobs)]


def sbatch_script(argv: Sequence[str], out: Path, workers: int, slurm: dict[str, Any], name: str,
                  python: str = sys.executable) -> str:
    """The `sbatch --array` script that does what `submit` does, for clusters reached without
    submitit; its logs go to OUT/logs, which must exist when it is submitted. Its grace signal
    (USR2, `grace` seconds before the time limit) stops each worker's cell cleanly; requeued or
    resubmitted, the array resumes."""
    flags = {"job-name": name, "array": f"0-{workers - 1}" + (f"%{slurm['slurm_array_parallelism']}"
                                                               if "slurm_array_parallelism" in slurm else ""),
             "output": str(out / "logs" / "slurm-%A_%a.log"), "ntasks": "1"}
    names = {"slurm_partition": "partition", "slurm_account": "account", "slurm_qos": "qos",
             "slurm_constraint": "constraint", "gpus_per_node": "gpus-per-task", "cpus_per_task": "cpus-per-task",
             "slurm_mem": "mem", "timeout_min": "time"}
    flags.update({names[key]: str(value) for key, value in slurm.items() if key in names})
    flags["signal"] = f"USR2@{slurm.get('slurm_signal_delay_s', GRACE_S)}"
    lines = ["#!/bin/bash", *(f"#SBATCH --{key}={value}" for key, value in flags.items()), "#SBATCH --requeue",
             "# Each array task is one worker; workers share the cells through the results folder's claims.",
             "# Stopped (preempted, requeued, the time limit's USR2), a worker discards its cell and releases it.",
             "# Requeued or resubmitted, a task resumes: finished cells are kept, a gone worker's cell runs again.",
             "srun " + shlex.join([python, "-m", "mrpruner.sweep", *argv, "--no-progress"])]
    return "\n".join(lines) + "\n"


def without(argv: Sequence[str], options: dict[str, bool]) -> list[str]:
    """`argv` without the given options (name -> whether it takes a value), in either spelling
    (`--opt value`, `--opt=value`): what each worker runs of the launching command line."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in options:
            skip = options[name] and "=" not in arg
            continue
        kept.append(arg)
    return kept


def ran_by(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many of the cell records each worker ran (`describe`: host:pid, with its SLURM ids when present)."""
    counts = itertools.groupby(sorted(describe(r["worker"]) for r in records if r.get("worker")))
    return {name: len(list(group)) for name, group in counts}
