"""The sweep loop: every unfinished or stale cell of a grid run into a results folder, as one of any
number of workers sharing it (`mrpruner.workers`' claims), a failing cell recorded and the rest run
(`run_sweep`); stop signals and Ctrl-C; and where a grid stands, read from its folder alone
(`grid_status`, `mrpruner-sweep --status`)."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrpruner import models, results, workers
from mrpruner.sweep.cells import RUNNER_FUNCTIONS, CellFailed, Runner, cell_record, one_line
from mrpruner.sweep.grid import Cell, Grid, grid_from_folder

WORK_DIR = ".work"
LOGS_DIR = "logs"


class Stopped(KeyboardInterrupt):
    """A stop signal (`workers.STOP_SIGNALS`: SIGTERM, or a grace signal before a time limit) reached
    the sweep: like Ctrl-C, the cell in progress is discarded and its claim released."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)


class _Stop:
    """What `interrupt` and `_whole` share: how deep in `_whole` sections the sweep is, and the
    signal held back until the outermost one ends."""

    depth = 0
    held: int | None = None


def interrupt(signum: int, frame: Any) -> None:
    """A stop signal's handler under `main`: raise `Stopped` (held back inside `_whole`); later
    stop signals are ignored, so that nothing interrupts the cell's discarding."""
    for sig in workers.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if _Stop.depth:
        _Stop.held = signum
    else:
        raise Stopped(signum)


@contextlib.contextmanager
def _whole():
    """A section a stop signal does not cut (claims and result files change whole): one that arrives
    in it is raised as `Stopped` when it ends."""
    _Stop.depth += 1
    try:
        yield
    finally:
        _Stop.depth -= 1
    if not _Stop.depth and _Stop.held is not None:
        signum, _Stop.held = _Stop.held, None
        raise Stopped(signum)


# --- the sweep ---------------------------------------------------------------------------------

@dataclass
class SweepReport:
    """Counts of a sweep run, by cell id: finished by this worker (`rerun`: those of them that were
    stale), skipped (finished before it started), finished meanwhile by other workers (`elsewhere`),
    failed here, and failed for another worker that started later (`failed_elsewhere`: not retried)."""

    finished: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    failed_elsewhere: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # each failed cell's reason


def check_here(grid: Grid) -> None:
    """What only the machine that runs the cells can check, before any runs: the grid's CUDA device
    is visible, and each hub model is in the local cache when the hub is offline (`models.check_cached`)."""
    if grid.device is not None and grid.device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(grid.device.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(f"device {grid.device!r}: " + ("no CUDA GPU is visible here (torch.cuda.is_available() is "
                                                            "False): use device cpu, or run on a machine with a GPU"
                                                            if not count else f"only {count} CUDA GPU(s) are visible"))
    for model in grid.models:
        models.check_cached(model)


def run_sweep(grid: Grid, out: str | Path, *, runner: Runner | None = None, progress: bool = True,
              claim_timeout: float = workers.TIMEOUT_S, poll: float = 5.0) -> SweepReport:
    """Run every unfinished or stale cell of `grid` into the results folder `out`, with `runner`
    (default: the grid's, `RUNNER_FUNCTIONS[grid.runner]`, once `check_here` passed), as one of any
    number of workers.

    The folder is bound to the grid (results.claim_folder: another grid is an error). A cell runs
    only under this worker's claim (mrpruner.workers.Claims), so workers sharing the folder never
    run a cell twice; cells other workers hold are waited for (every `poll` seconds) and taken
    over when their worker is gone (`claim_timeout`: for a worker on another host). Finished cells
    are skipped unless their `fingerprint` changed, when they run again; a failed cell is reported
    (whatever it raised, its reason in `SweepReport.why`) and the sweep goes on; only Ctrl-C (or a stop signal, `Stopped`, under `main`) stops the cell in
    progress, discards it, releases its claim at once and re-raises. A cell's file appears (or is
    replaced) only whole, and a claim is never left half-taken.
    """
    if runner is None:
        check_here(grid)  # what the grid's own runners need (models, device); a given runner loads none
    runner = runner or RUNNER_FUNCTIONS[grid.runner]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = results.claim_folder(out, grid.identity())
    (out / LOGS_DIR).mkdir(exist_ok=True)
    claims = workers.Claims(out, workers.this_worker(), timeout=claim_timeout)
    try:
        return _run_cells(grid, out, stamp, runner, progress, claims, poll)
    finally:
        claims.close()


def _state(cell: Cell, out: Path, stamp: str, current: Callable[[str, str], dict[str, str]]) -> str:
    """"done" (a current result), "stale" (a result of older code or weights: `results.stale`, with
    `current` a `results.current_fingerprints` memo) or "new"."""
    path = out / results.CELLS_DIR / f"{cell.cell_id}.json"
    if not path.exists():
        return "new"
    return "stale" if results.stale(results.read_cell(path, stamp), current) else "done"


def _run_cells(grid: Grid, out: Path, stamp: str, runner: Runner, progress: bool, claims: workers.Claims,
               poll: float) -> SweepReport:
    from tqdm.auto import tqdm

    report, current = SweepReport(), results.current_fingerprints()
    cells = grid.cells()
    bar = tqdm(total=len(cells), desc=grid.name, unit="cell", disable=not progress)
    pending, first = cells, True
    while pending:
        waiting = []
        for cell in pending:
            state = _state(cell, out, stamp, current)
            if state == "done":
                (report.skipped if first else report.elsewhere).append(cell.cell_id)
                bar.update()
                continue
            with _whole():
                held = claims.take(cell.cell_id)
            if held is not True:
                (report.failed_elsewhere if held == "failed" else waiting).append(cell)
                continue
            state = _state(cell, out, stamp, current)  # another worker may have finished it before this claim
            if state == "done":
                claims.release(cell.cell_id, done=True)
                report.elsewhere.append(cell.cell_id)
                bar.update()
                continue
            if not _run_cell(cell, grid, out, stamp, runner, claims, report, bar, len(cells)):
                continue
            if state == "stale":
                report.rerun.append(cell.cell_id)
            bar.update()
        pending, first = waiting, False
        if pending:
            bar.set_postfix_str(f"waiting for {len(pending)} cell(s) other workers hold")
            time.sleep(poll)
    bar.close()
    return report


def _run_cell(cell: Cell, grid: Grid, out: Path, stamp: str, runner: Runner, claims: workers.Claims,
              report: SweepReport, bar: Any, total: int) -> bool:
    """Run one claimed cell in its own work folder and write its record whole; False if it failed."""
    bar.set_postfix_str(f"{cell.task} {cell.label} r={cell.ratio:g}")
    for debris in (out / WORK_DIR).glob(f"{cell.cell_id}.*"):  # a gone worker's: this claim makes it debris
        shutil.rmtree(debris, ignore_errors=True)
    workdir = out / WORK_DIR / f"{cell.cell_id}.{claims.worker.token}"
    workdir.mkdir(parents=True)
    log = out / LOGS_DIR / f"{cell.cell_id}.log"
    try:
        run = runner(cell, grid, workdir, log)
        record = cell_record(cell, run, grid, stamp, claims.worker)
    except KeyboardInterrupt as stop:  # Ctrl-C or a stop signal (`Stopped`): only these stop the sweep
        claims.release(cell.cell_id, done=False)
        finished = len(list((out / results.CELLS_DIR).glob("*.json"))) if (out / results.CELLS_DIR).is_dir() else 0
        why = f" by {stop.signal.name}" if isinstance(stop, Stopped) else ""
        bar.write(f"stopped during {cell.task} | {cell.label} r={cell.ratio:g}{why}: that cell is discarded and "
                  f"its claim released; {finished} of {total} cells are finished in {out}. Run the same command "
                  "again to resume.")
        raise
    except BaseException as error:  # anything else fails this cell alone, as a failing lmms-eval process does
        with _whole():
            claims.failed(cell.cell_id)
        report.failed.append(cell.cell_id)
        report.why[cell.cell_id] = str(error) if isinstance(error, CellFailed) else _logged(error, log)
        bar.write(f"FAILED {cell.task} | {cell.label} r={cell.ratio:g}: {report.why[cell.cell_id]}")
        return False
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with _whole():  # a stop signal now waits until the record is written and the claim released
        results.atomic_write_json(out / results.CELLS_DIR / f"{cell.cell_id}.json", record)
        claims.release(cell.cell_id, done=True)
    report.finished.append(cell.cell_id)
    bar.write(one_line(record))
    return True


def _logged(error: BaseException, log: Path) -> str:
    """Append `error`'s traceback to the cell's log; the failure in a line that names the log."""
    with open(log, "a", encoding="utf-8") as f:
        traceback.print_exception(error, file=f)
    return f"{type(error).__name__}: {error}; see {log}"


def finished_records(out: str | Path) -> list[dict[str, Any]]:
    """The records of a results folder's finished cells (`results.cell_files`), each checked whole
    (`results.read_record`: a damaged one is a ValueError naming it)."""
    return [results.read_record(p, results.CELL_KEYS) for p in results.cell_files(out)]


# --- where a grid stands -------------------------------------------------------------------------

@dataclass
class GridStatus:
    """Where each cell of a grid stands in its results folder (`grid_status`): finished (a current
    result), running (claimed by a live worker: the claim record), claimed by a gone worker (taken
    over by the next worker to reach it), failed (the claim of the worker it failed for) and
    remaining (no current result and no claim: with "stale" when an older result is there)."""

    grid: Grid
    out: Path
    finished: list[Cell] = field(default_factory=list)
    running: list[tuple[Cell, dict[str, Any]]] = field(default_factory=list)
    gone: list[tuple[Cell, dict[str, Any]]] = field(default_factory=list)
    failed: list[tuple[Cell, dict[str, Any]]] = field(default_factory=list)
    remaining: list[tuple[Cell, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every cell of the grid has a current result."""
        return len(self.finished) == len(self.grid.cells())

    def summary(self) -> str:
        """One line: the counts of each state."""
        return (f"{self.grid.name}: {len(self.finished)} of {len(self.grid.cells())} cell(s) finished, "
                f"{len(self.running)} running, {len(self.gone)} claimed by a gone worker, {len(self.failed)} failed, "
                f"{len(self.remaining)} remaining")

    def lines(self) -> list[str]:
        """One line per cell that is not finished: its state, the cell, and its worker or log."""
        now = time.time()
        return ([f"running   {self._words(c)}: worker {workers.describe(claim['worker'])}, for "
                 f"{now - claim['claimed_at']:.0f} s" for c, claim in self.running]
                + [f"gone      {self._words(c)}: worker {workers.describe(claim['worker'])} is gone; the next worker "
                   "to reach the cell runs it again" for c, claim in self.gone]
                + [f"failed    {self._words(c)}: on worker {workers.describe(claim['worker'])}; its log: "
                   f"{self.out / LOGS_DIR / (c.cell_id + '.log')}" for c, claim in self.failed]
                + [f"remaining {self._words(c)}{note}" for c, note in self.remaining])

    def _words(self, cell: Cell) -> str:
        return (f"{cell.task} | {cell.label} r={cell.ratio:g}"
                + (f" | {cell.model}" if len(self.grid.models) > 1 else "")
                + (f" | limit {cell.limit}" if len(self.grid.limits) > 1 else ""))


def grid_status(grid: Grid, out: str | Path, claim_timeout: float = workers.TIMEOUT_S) -> GridStatus:
    """Read where each cell of `grid` stands in the results folder `out` (`GridStatus`), from its
    result files and claims alone: nothing is claimed or changed, and no scheduler is asked.
    `claim_timeout`: after how many seconds an untouched claim of another host's worker is a gone
    worker's (as the workers judge it)."""
    out = Path(out)
    stamp, claims = results.fingerprint(grid.identity()), workers.held_claims(out, claim_timeout)
    current = results.current_fingerprints()
    status = GridStatus(grid, out)
    for cell in grid.cells():
        state = _state(cell, out, stamp, current)
        held = claims.get(cell.cell_id)
        if state == "done":
            status.finished.append(cell)
        elif held is not None:
            getattr(status, held[0]).append((cell, held[1]))
        else:
            status.remaining.append((cell, " (a stale result: older code or weights)" if state == "stale" else ""))
    return status


def print_status(out: Path, claim_timeout: float) -> int:
    """`mrpruner-sweep --status DIR`: print where the grid of results folder `out` stands, and who ran
    its cells; 0 when the grid is complete, 1 when not."""
    status = grid_status(grid_from_folder(out), out, claim_timeout)
    print(status.summary())
    for line in status.lines():
        print("  " + line)
    counts = workers.ran_by(finished_records(out))
    if counts:
        print("cells run by each worker: " + ", ".join(f"{who}: {n}" for who, n in counts.items()))
    print("the grid is complete" if status.complete else
          "the grid is not complete: running cells finish, and the same sweep command (or a resubmission of its "
          "array) runs what remains and retries what failed")
    return 0 if status.complete else 1


def wait_for_grid(grid: Grid, out: Path, tasks: Callable[[], list[workers.TaskState] | str], where: str, *,
                  poll: float, claim_timeout: float) -> tuple[GridStatus, list[workers.TaskState] | str]:
    """Wait until the grid is complete or no array task is left to run (`tasks`: their states, or why
    they are unknown, from `where`), printing a line when either changes; the last status and states.
    Array tasks that ended are no failure when the grid is complete, nor is a requeue."""
    print(f"waiting for {grid.name}: the status comes from the results folder {out} (cells and claims) and the "
          f"array tasks' from {where}; SLURM's accounting (sacct) is not used", flush=True)
    shown = None
    while True:
        status, states = grid_status(grid, out, claim_timeout), tasks()
        line = f"{status.summary()}; " + (states if isinstance(states, str) else tasks_words(states))
        if line != shown:
            print(line, flush=True)
            shown = line
        if status.complete or (not isinstance(states, str) and not any(t.alive for t in states)):
            return status, states
        time.sleep(poll)


def tasks_words(states: Sequence[workers.TaskState]) -> str:
    """Array tasks by state, in words, with the requeued ones named."""
    counts = itertools.groupby(sorted(t.state for t in states))
    requeued = [f"task {t.index} {t.restarts} time(s)" for t in states if t.restarts]
    return ("array tasks: " + ", ".join(f"{len(list(group))} {state}" for state, group in counts)
            + (f" (requeued: {', '.join(requeued)})" if requeued else ""))
