"""A real single-node SLURM for the tests and for the cluster chapter's captured run: Debian's
slurmctld, slurmd and munge, started as root with a private configuration (its own ports, state
folders and cluster name, found through SLURM_CONF), and stopped again with every job it ran.

    python tests/slurm_cluster.py FOLDER   # start one and print the SLURM_CONF to export; Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")
PACKAGES = "slurmctld slurmd slurm-client munge"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing() -> str | None:
    """Why a single-node SLURM cannot be started here (None when it can)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "a single-node SLURM is started as root on Linux (slurmd runs jobs as their user)"
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


def _memory_mib() -> int:
    total_kib = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal:")).split()[1])
    return total_kib // 1024 * 9 // 10


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
        f"ClusterName=mrpruner{ctld_port}", f"SlurmctldHost={host}", "SlurmUser=root", "AuthType=auth/munge",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "ReturnToService=2",
        "MpiDefault=none",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory={_memory_mib()} State=UNKNOWN",
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


def _stop_signal(signum: int, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
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
