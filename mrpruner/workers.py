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
"""

from __future__ import annotations

import itertools
import json
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

from mrpruner.results import CELLS_DIR, atomic_write_json, create_json

CLAIMS_DIR = ".claims"
SLURM_ENV = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}
TIMEOUT_S = 600.0  # a claim untouched this long, from another host, is a gone worker's
EXECUTORS = ("slurm", "local")  # submitit's AutoExecutor on a SLURM cluster; its LocalExecutor (tests)
# --slurm KEY=VALUE -> the submitit parameter it sets (gpus, cpus: per array task; time: minutes)
SLURM_KEYS = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
              "constraint": "slurm_constraint", "gpus": "gpus_per_node", "cpus": "cpus_per_task",
              "mem": "slurm_mem", "time": "timeout_min", "parallelism": "slurm_array_parallelism"}


# --- who works ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Worker:
    """This process as a sweep worker: host, process id, the process's start time (so a reused
    process id is not mistaken for it), a random token, and the SLURM ids of its job when present."""

    host: str
    pid: int
    start: str | None
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


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def gone(claim: dict[str, Any], age_s: float, timeout: float) -> bool:
    """Whether the worker of `claim` (a claim file's record, untouched for `age_s` seconds) is gone:
    on this host, its process is not running; on another host, `age_s` exceeds `timeout`."""
    worker = claim["worker"]
    if worker["host"] != socket.gethostname():
        return age_s > timeout
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process
    return worker["process_start"] is not None and _process_start(worker["pid"]) != worker["process_start"]


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
        generations = self._generations(cell_id)
        if generations:
            top = generations[-1]
            claim, age = self._read(top)
            if claim is None:  # removed since it was listed: look again
                return self.take(cell_id)
            if claim.get("failed_at") is not None:
                if claim["failed_at"] >= self.started:
                    return "failed"
            elif not gone(claim, age, self.timeout):
                return "running"
            generation = int(top.name.split(".")[-2]) + 1
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
        claim, _ = self._read(path)
        atomic_write_json(path, {**claim, "failed_at": time.time()})

    def release(self, cell_id: str, *, done: bool) -> None:
        """Give up the held claim of `cell_id`; `done`: its result is written, so every claim of it goes."""
        path = self._held.pop(cell_id)
        for stale in self._generations(cell_id) if done else [path]:
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the heartbeat (claims still held stay on disk, and go to whoever finds them gone)."""
        self._stop.set()
        self._beat.join()

    def _generations(self, cell_id: str) -> list[Path]:
        pattern = re.compile(re.escape(cell_id) + r"\.(\d+)\.json")
        found = [(int(m.group(1)), p) for p in self.folder.glob(f"{cell_id}.*.json")
                 if (m := pattern.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def _read(self, path: Path) -> tuple[dict[str, Any] | None, float]:
        try:
            age = time.time() - path.stat().st_mtime
            return json.loads(path.read_text()), age
        except FileNotFoundError:
            return None, 0.0

    def _touch(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for path in list(self._held.values()):
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass


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
            children.append(subprocess.Popen([sys.executable, "-m", "mrpruner.experiments", *argv, "--no-progress"],
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
    time and parallelism whole numbers, time in minutes); an unknown key or bad value is a ValueError."""
    parameters: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if key not in SLURM_KEYS or not sep or not value:
            raise ValueError(f"--slurm takes KEY=VALUE pairs with keys {sorted(SLURM_KEYS)}, got {item!r}")
        if key in ("gpus", "cpus", "time", "parallelism"):
            if not value.isdigit() or int(value) < (0 if key == "gpus" else 1):
                raise ValueError(f"--slurm {key} must be a whole number" + (" of minutes" if key == "time" else "")
                                 + f", got {value!r}")
            value = int(value)
        parameters[SLURM_KEYS[key]] = value
    return parameters


@dataclass
class ArrayTask:
    """One array task of a submitted sweep: runs a worker with the sweep's command line. Preempted
    or timed out, submitit requeues it (`checkpoint`), and it resumes from the claims and results."""

    argv: list[str]

    def __call__(self, index: int) -> int:
        command = [sys.executable, "-m", "mrpruner.experiments", *self.argv, "--no-progress"]
        code = subprocess.run(command).returncode  # SLURM's SIGTERM reaches it too: it discards its cell
        if code not in (0, 1):
            raise RuntimeError(f"sweep worker {index} exited {code}: {shlex.join(command)}")
        return code

    def checkpoint(self, index: int) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)


def submit(argv: Sequence[str], out: Path, workers: int, executor: str, slurm: dict[str, Any],
           name: str, wait: bool) -> list[Any]:
    """Submit `workers` array tasks of the sweep `argv` through submitit (`executor` "slurm": a SLURM
    job array; "local": submitit's local executor), their logs in OUT/submitit; with `wait`,
    wait for them (a failed task raises)."""
    import submitit

    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {list(EXECUTORS)}, got {executor!r}")
    folder = out / "submitit"
    if executor == "local":
        runner = submitit.LocalExecutor(folder=folder)
        runner.update_parameters(timeout_min=slurm.get("timeout_min", 60 * 24))
    else:
        runner = submitit.AutoExecutor(folder=folder, cluster="slurm")
        runner.update_parameters(name=name, slurm_array_parallelism=slurm.pop("slurm_array_parallelism", workers),
                                 **slurm)
    jobs = runner.map_array(ArrayTask(list(argv)), range(workers))
    if wait:
        failed = [job for job in jobs if job.exception() is not None]  # exception() waits for the job
        if failed:
            raise RuntimeError(f"{len(failed)} of {workers} array task(s) failed; their logs: "
                               + ", ".join(str(job.paths.stderr) for job in failed))
    return jobs


def sbatch_script(argv: Sequence[str], out: Path, workers: int, slurm: dict[str, Any], name: str,
                  python: str = sys.executable) -> str:
    """The `sbatch --array` script that does what `submit` does, for clusters reached without
    submitit; its logs go to OUT/logs, which must exist when it is submitted."""
    flags = {"job-name": name, "array": f"0-{workers - 1}" + (f"%{slurm['slurm_array_parallelism']}"
                                                               if "slurm_array_parallelism" in slurm else ""),
             "output": str(out / "logs" / "slurm-%A_%a.log"), "ntasks": "1"}
    names = {"slurm_partition": "partition", "slurm_account": "account", "slurm_qos": "qos",
             "slurm_constraint": "constraint", "gpus_per_node": "gpus-per-task", "cpus_per_task": "cpus-per-task",
             "slurm_mem": "mem", "timeout_min": "time"}
    flags.update({names[key]: str(value) for key, value in slurm.items() if key in names})
    lines = ["#!/bin/bash", *(f"#SBATCH --{key}={value}" for key, value in flags.items()), "#SBATCH --requeue",
             "# Each array task is one worker; workers share the cells through the results folder's claims.",
             "# Requeued or resubmitted, a task resumes: finished cells are kept, a gone worker's cell runs again.",
             "srun " + shlex.join([python, "-m", "mrpruner.experiments", *argv, "--no-progress"])]
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
    """How many of the cell records each worker ran (host:pid, with the SLURM array task when present)."""
    def who(worker: dict[str, Any]) -> str:
        task = worker.get("slurm_array_task_id")
        return f"{worker['host']}:{worker['pid']}" + (f" (array task {task})" if task else "")

    counts = itertools.groupby(sorted(who(r["worker"]) for r in records if r.get("worker")))
    return {name: len(list(group)) for name, group in counts}
