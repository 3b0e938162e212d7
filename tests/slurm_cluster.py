"""A real single-node SLURM for the tests and for the cluster chapter's captured run: Debian's
slurmctld, slurmd and munge, started as root with a private configuration (its own ports, state
folders and cluster name, found through SLURM_CONF), and stopped again with every job it ran.

    python tests/slurm_cluster.py FOLDER     # start one, print the SLURM_CONF to export; Ctrl-C stops it
    python tests/slurm_cluster.py --capture results/cluster/slurm-run.json
                                             # run the cluster chapter's example on one and record it
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")
PACKAGES = "slurmctld slurmd slurm-client munge"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing() -> str | None:
    """Why a single-node SLURM cannot be started here (None when it can)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "starting a single-node SLURM needs root on Linux (slurmd runs each job as its user)"
    absent = [c for c in COMMANDS if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]
    if absent:
        return f"{', '.join(absent)} not installed: `make slurm` installs Debian's {PACKAGES}"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _which(command: str) -> str:
    return shutil.which(command) or str(Path("/usr/sbin", command))


@dataclass
class Cluster:
    """A running single-node SLURM: its folder, configuration file, the environment that reaches
    it (SLURM_CONF) and the daemons this process started."""

    folder: Path
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    munged: int | None = None  # munged's process id when this process started it

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster (text output)."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def version(self) -> str:
        return self.run("sinfo", "--version").stdout.strip()

    def stop(self) -> None:
        """Cancel every job of this cluster, wait for them to end, then stop the daemons started here."""
        if self.processes and self.processes[0].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.monotonic() + 60
            while self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.munged is not None:
            try:
                os.kill(self.munged, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _munge() -> int | None:
    """Start munged as the munge user unless one answers already; its process id if started here."""
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "-c"], check=True, capture_output=True)
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    for path in (key, run, Path("/var/lib/munge"), Path("/var/log/munge")):
        if path.exists():
            shutil.chown(path, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", _which("munged")], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not start")
        time.sleep(0.2)
    return int(Path("/run/munge/munged.pid").read_text())


def _total_mib() -> int:
    return int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")).split()[1]) // 1024


def start(folder: str | Path) -> Cluster:
    """Start a single-node SLURM whose files live in `folder` (see the module docstring), with
    SLURM's defaults beyond the minimal single node's settings (KillWait 30 s between the SIGTERM
    and the SIGKILL that end a job) and no accounting (sacct fails, as on many small clusters)."""
    why = missing()
    if why:
        raise RuntimeError(why)
    folder = Path(folder).resolve()
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    ctld_port, slurmd_port = _free_ports(2)
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        f"ClusterName=mrpruner{ctld_port}", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root",
        "AuthType=auth/munge",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "ReturnToService=2",
        "MpiDefault=none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={_total_mib() * 9 // 10} "
        "State=UNKNOWN",  # on the loopback: the host's name need not resolve
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    cluster = Cluster(folder, conf, munged=_munge())
    try:
        for daemon in ("slurmctld", "slurmd"):
            log = open(folder / "log" / f"{daemon}.out", "w")
            cluster.processes.append(subprocess.Popen([_which(daemon), "-D", "-f", str(conf)], env=cluster.env,
                                                      stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            state = cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return cluster
            if time.monotonic() > deadline or any(p.poll() is not None for p in cluster.processes):
                logs = "\n".join((folder / "log" / name).read_text()[-2000:] for name in
                                 ("slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log")
                                 if (folder / "log" / name).exists())
                raise RuntimeError(f"the single-node SLURM did not become idle (sinfo: {state!r}):\n{logs}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise


# The chapter's example: the miniature's 4-cell grid (cells of a few seconds on a 2-core CPU), as a
# 2-task array on one CPU each, one task requeued in the middle of a cell.
DEMO_GRID = {"name": "demo", "model": "mini", "tasks": ["mrpruner_mini_detail"], "limit": 16, "device": "cpu",
             "runner": "in-process", "ratios": [0.5, 0.9],
             "methods": ["random", {"label": "MR-Pruner", "method": "mrpruner"}]}
DEMO_SLURM = "partition=debug,cpus=1,mem=1000,time=30"


def capture(path: str | Path) -> dict:
    """Run the cluster chapter's example on a fresh single-node SLURM and write what each command
    printed, with its provenance, to `path` (JSON, written whole): `mrpruner-sweep ... --wait`, a
    `scontrol requeue` of one array task while it runs a cell, `--status` from outside the array
    then and at the end, squeue, and the requeued task's own log."""
    from mrpruner import results

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        cluster = start(work / "slurm")
        try:
            steps = _demo(cluster, work)
            version = cluster.version()
        finally:
            cluster.stop()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    system = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    commit = results.git_commit()
    record = {"provenance": {
        "what": "measured here on a single-node SLURM started by tests/slurm_cluster.py (no accounting)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "slurm": version, "machine": f"{os.cpu_count()} CPU(s), {cpu}, {_total_mib() / 1024:.0f} GiB memory",
        "system": system.get("PRETTY_NAME", "").strip('"'), "python": platform.python_version(),
        "versions": results.versions(), "commit": commit.get("commit"), "dirty": commit.get("dirty"),
        "grid": DEMO_GRID, "command": "python tests/slurm_cluster.py --capture " + str(path)},
        "steps": steps}
    results.atomic_write_json(path, record)
    return record


def _demo(cluster: Cluster, work: Path) -> list[dict]:
    """The example's steps, run in `work` (so that the commands and their output name relative paths)."""
    env = {**cluster.env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "hf")}
    (work / "demo.yaml").write_text(json.dumps(DEMO_GRID, indent=1))
    sweep = ["mrpruner-sweep", "demo.yaml", "--out", "results/demo", "--workers", "2", "--slurm", DEMO_SLURM,
             "--wait", "--poll", "2"]
    status = ["mrpruner-sweep", "--status", "results/demo"]

    def run(command: list[str], note: str) -> dict:
        done = subprocess.run(_python(command), cwd=work, env=env, capture_output=True, text=True, timeout=600)
        return {"command": shlex.join(command), "output": done.stdout + done.stderr, "exit_code": done.returncode,
                "note": note}

    steps = []
    started = time.monotonic()
    launcher = subprocess.Popen(_python(sweep), cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    claims = work / "results" / "demo" / ".claims"
    while not (found := sorted(claims.glob("*.json")) if claims.is_dir() else []):
        if launcher.poll() is not None or time.monotonic() - started > 600:
            raise RuntimeError("the array claimed no cell: " + (launcher.communicate()[0] or ""))
        time.sleep(0.05)
    worker = json.loads(found[0].read_text())["worker"]
    task = f"{worker['slurm_array_job_id']}_{worker['slurm_array_task_id']}"
    requeue = ["scontrol", "requeue", task]
    done = cluster.run(*requeue)
    steps.append({"command": shlex.join(requeue), "output": done.stdout + done.stderr, "exit_code": done.returncode,
                  "note": f"array task {worker['slurm_array_task_id']} is running a cell: requeue it, as a "
                          "preempting partition does (SIGTERM, then back to PENDING)",
                  "at_s": round(time.monotonic() - started)})
    steps.append(run(status, "from outside the array (as from a login node), while it runs"))
    time.sleep(5)
    queue = ["squeue", "--array", "--jobs", worker["slurm_array_job_id"], "--format", "%.8i %.9T %.12r %.9M"]
    done = cluster.run(*queue)
    steps.append({"command": shlex.join(queue), "output": done.stdout, "exit_code": done.returncode,
                  "note": "SLURM holds the requeued task about two minutes (BeginTime) before it may start again"})
    output = launcher.communicate(timeout=600)[0]
    took = round(time.monotonic() - started)
    steps.insert(0, {"command": shlex.join(sweep), "output": output, "exit_code": launcher.returncode,
                     "note": f"the sweep, submitted and waited for: what it printed over its {took} s, while the "
                             "next three commands ran beside it", "took_s": took})
    steps.append(run(status, "once --wait has returned"))
    log = work / "results" / "demo" / "submitit" / f"{task}_0_log.out"
    lines = [line for line in log.read_text().splitlines() if re.search(r"signal|stopped|Starting", line)]
    steps.append({"command": f"grep -E 'signal|stopped|Starting' results/demo/submitit/{task}_0_log.out",
                  "output": "\n".join(lines) + "\n", "exit_code": 0,
                  "note": "the requeued task's own log: its worker discarded its cell and released it"})
    return steps


def _python(command: list[str]) -> list[str]:
    """`mrpruner-sweep ...` as this Python runs it (the console script may belong to another install)."""
    return [sys.executable, "-m", "mrpruner.sweep", *command[1:]] if command[0] == "mrpruner-sweep" else command


def _stop_signal(signum: int, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    if sys.argv[1] == "--capture":
        capture(sys.argv[2])
        sys.exit(0)
    running = start(sys.argv[1])
    print(f"export SLURM_CONF={running.conf}  # {running.version()}; Ctrl-C or SIGTERM stops it", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):  # a background job starts with SIGINT ignored
        signal.signal(sig, _stop_signal)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
