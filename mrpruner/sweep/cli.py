"""Resumable experiment sweeps: a grid of models x methods x pruning ratios x tasks x limits, each
cell one lmms-eval run of the `llava_next_pruned` model, one JSON result file per cell.

    mrpruner-sweep table1 --out results/table1           # a sweep shipped in mrpruner/data/sweeps
    mrpruner-sweep my_grid.yaml --out results/mine --limit 100
    python -m mrpruner.sweep --model llava-hf/llama3-llava-next-8b-hf --methods mrpruner,fastv \\
        --ratios 0.5,0.9 --tasks gqa,textvqa --out results/quick --limit 200

Each cell runs `python -m lmms_eval --model llava_next_pruned ...` (or `torchrun
--nproc_per_node N -m lmms_eval ...`) in its own process, so a crash or an out-of-memory error
stays in its cell; or, with `runner: in-process` (for CPU cells, where the command's start-up
would dominate), the same lmms-eval evaluator in this process. Models are named as
`mrpruner.models` accepts ("mini", "tiny", a folder, a hub id); mrpruner's own tasks (the
miniature's) are found without an include path. The model plug-in reports per batch its wall time, prefill latency and token
counts (mrpruner.lmms_eval_model); a finished cell is written atomically to
`OUT/cells/<cell id>.json` with its score, throughput, prefill latency, FLOPs and provenance.
A re-run skips finished cells, and runs again every cell whose fingerprint (the code that can change
its answers, and the model's weights: `mrpruner.results.stale`) no longer matches, replacing it whole; Ctrl-C
or a crash loses at most the cell in progress.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from mrpruner import results, workers
from mrpruner.sweep.cells import lmms_eval_command
from mrpruner.sweep.grid import RUNNERS, Grid, config_path, grid_from_config, load_config, shipped_sweeps
from mrpruner.sweep.run import (LOGS_DIR, WORK_DIR, Stopped, interrupt, finished_records, print_status, run_sweep,
                                wait_for_grid)


class _Parser(argparse.ArgumentParser):
    """argparse with errors in one line (no usage block), as every error of the command is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (`main`); a malformed one exits with code 2 and one line on stderr."""
    parser = _Parser(
        prog="mrpruner-sweep", description=__doc__.split("\n\n")[0],
        epilog=f"Shipped sweeps: {', '.join(shipped_sweeps())}. Command-line values replace the config's.")
    parser.add_argument("config", nargs="?", help="sweep YAML file or the name of a shipped sweep")
    parser.add_argument("--out", help="results folder (created; bound to this grid)")
    parser.add_argument("--name", help="grid name (default: the config's, else 'sweep')")
    parser.add_argument("--model", help="model(s), comma-separated: \"mini\" (the miniature trained here), \"tiny\", "
                                        "a local folder or a hub id")
    parser.add_argument("--methods", help="method names, comma-separated (replaces the config's methods)")
    parser.add_argument("--ratios", help="pruning ratios, comma-separated")
    parser.add_argument("--protocol", help="budgets: 'paper' (each method's own, as its authors ran it; the "
                                           "shipped sweeps') or 'exact' (one for all methods)")
    parser.add_argument("--tasks", help="benchmark keys or lmms-eval task names, comma-separated")
    parser.add_argument("--limit", help="samples per task (an integer or 'none' for all); comma-separated for several")
    parser.add_argument("--dtype", help="auto, float16, bfloat16 or float32")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, help="lmms-eval batch size per process")
    parser.add_argument("--num-processes", type=int, help="processes per cell, started by torchrun (one GPU each, or CPU processes with --device cpu)")
    parser.add_argument("--seed", type=int, help="lmms-eval --seed")
    parser.add_argument("--include-path", help="folder of extra lmms-eval task YAMLs")
    parser.add_argument("--runner", help=f"how each cell runs: {' or '.join(RUNNERS)} (default lmms-eval: its own "
                                         "process; in-process: lmms-eval's evaluator here, for quick CPU cells)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the cells, their commands and estimated device-hours; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = parser.add_argument_group(
        "many workers", "Any number of sweeps into one --out share its cells, on one machine or many over a shared "
                        "filesystem: each cell runs once, and a gone worker's cell runs again.")
    cluster.add_argument("--workers", help="start N workers: here, one per visible GPU (or one CPU thread each); "
                                           "with --slurm or --executor, N array tasks")
    cluster.add_argument("--slurm", metavar="KEY=VALUE,...",
                         help=f"submit the workers as a SLURM job array through submitit; keys: "
                              f"{', '.join(sorted(workers.SLURM_KEYS))} (time in minutes)")
    cluster.add_argument("--slurm-script", action="store_true",
                         help="print the equivalent sbatch --array script instead of submitting")
    cluster.add_argument("--executor", help=f"submitit executor: {' or '.join(workers.EXECUTORS)} (default slurm; "
                                            "local runs the array on this machine and waits)")
    cluster.add_argument("--wait", action="store_true",
                         help="with --slurm: wait until the grid is complete or no array task is left, reading the "
                              "results folder (and squeue for the tasks); exit 0 when the grid is complete")
    cluster.add_argument("--poll", type=float, default=15.0,
                         help="seconds between two reads of the grid's status while waiting (default 15)")
    cluster.add_argument("--status", metavar="DIR",
                         help="print where the grid of results folder DIR stands (finished, running and on which "
                              "worker, claimed by a gone worker, failed with its log, remaining) and exit: 0 when it "
                              "is complete, 1 when not; reads the folder alone (e.g. from a login node)")
    cluster.add_argument("--claim-timeout", type=float, default=workers.TIMEOUT_S,
                         help="seconds after which the claim of a worker on another host that stopped "
                              f"refreshing it is taken over (default {workers.TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    if args.status is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                 if k not in ("status", "claim_timeout") and v not in (None, False, parser.get_default(k))]
        if given:
            parser.error(f"--status DIR takes no other option but --claim-timeout, got {', '.join(given)}")
    elif args.out is None:
        parser.error("--out is required (or --status DIR)")
    return args


def grid_from_args(args: argparse.Namespace) -> Grid:
    """The grid of the command line: its sweep file's mapping with the command line's values on top;
    an error in it names the sweep file."""
    path = config_path(args.config) if args.config else None
    config = load_config(path) if path is not None else {}
    overrides = {"name": args.name, "model": args.model, "methods": args.methods, "ratios": args.ratios,
                 "protocol": args.protocol,
                 "tasks": args.tasks, "limit": args.limit, "dtype": args.dtype, "device": args.device,
                 "batch_size": args.batch_size, "num_processes": args.num_processes, "seed": args.seed,
                 "include_path": args.include_path, "runner": args.runner}
    given = {k: v for k, v in overrides.items() if v is not None}
    config.update(given)
    try:
        return grid_from_config(config)
    except (ValueError, TypeError) as error:
        if path is None:
            raise
        raise type(error)(f"{error} (sweep {path}" + (" with the command line's values)" if given else ")")) from None


def writable_folder(option: str, value: str) -> Path:
    """`value` as a folder that exists or can be created, and can be written in, else a ValueError
    naming `option`; nothing is created."""
    if not value:
        raise ValueError(f"{option} must name a results folder, got an empty string")
    path = Path(value)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {value!r}: {existing} is a file, not a folder; name a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{option} {value!r}: cannot write in {existing} ({error.strerror or error})") from None
    return path


def _error(error: BaseException) -> int:
    """Print a command-line error in one line on stderr; its exit code, 2."""
    text = " ".join(str(error).split()) or type(error).__name__
    print(f"mrpruner-sweep: error: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """`mrpruner-sweep` / `python -m mrpruner.sweep`: 0 when every cell is finished, 1 when some
    failed (each listed with its reason; or, with --status or --wait, the grid is not complete), 2 on
    a bad grid, argument or results file (one line on stderr, checked before any work starts), 130
    on Ctrl-C and 128 + its number on a stop signal (`Stopped`)."""
    args = parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        _positive("--claim-timeout", args.claim_timeout)
        _positive("--poll", args.poll)
        if args.status is not None:
            return print_status(Path(args.status), args.claim_timeout)
        grid = grid_from_args(args)
        launch = _launch_settings(args)
        out = writable_folder("--out", args.out)
        if args.dry_run:
            dry_run(grid, out)
            return 0
    except (ValueError, TypeError, OSError) as error:
        return _error(error)
    previous = {sig: signal.signal(sig, interrupt) for sig in workers.STOP_SIGNALS}
    try:
        if launch is not None:
            return _launch(grid, out, args, *launch)
        report = run_sweep(grid, out, progress=not args.no_progress, claim_timeout=args.claim_timeout)
    except Stopped as stop:
        print(f"mrpruner-sweep: stopped by {stop.signal.name}; no claim of this worker is left in {out}", flush=True)
        return 128 + stop.signal
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError) as error:
        return _error(error)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{grid.name}: {len(report.finished)} cell(s) run ({len(report.rerun)} of them stale), "
          f"{len(report.skipped)} already finished, {len(report.failed)} failed"
          + (f", {len(report.elsewhere)} run by other workers" if report.elsewhere else "")
          + (f", {len(report.failed_elsewhere)} failed for other workers" if report.failed_elsewhere else "")
          + f"; results in {out}")
    for cell_id in report.failed:
        print(f"  failed {cell_id}: {report.why[cell_id]}")
    return 1 if report.failed or report.failed_elsewhere else 0


def dry_run(grid: Grid, out: Path) -> None:
    """Print each cell's state, estimated device-hours and command, then the sweep's estimate (mrpruner.cost)."""
    import pandas as pd

    from mrpruner import cost

    records = []
    if (out / results.GRID_FILE).exists():  # a folder bound to another grid, or damaged, is an error
        stamp = results.check_folder(out, grid.identity())
        records = [results.read_cell(p, stamp) for p in results.cell_files(out)]
    frame = cost.estimate(grid.cells(), records, grid.num_processes)
    unit = "CPU" if grid.device == "cpu" else "GPU"
    for cell, hours in zip(grid.cells(), frame["hours"]):
        done = (out / results.CELLS_DIR / f"{cell.cell_id}.json").exists()
        command = lmms_eval_command(cell, grid, out / WORK_DIR / cell.cell_id / "lmms_eval", None)
        print(("finished " if done else "to run   ") + ("    ?    " if pd.isna(hours) else f"{hours:7.2f}h ")
              + shlex.join(command))
    print(f"{grid.name}: {cost.summary_line(frame, unit)}")


_LAUNCH_OPTIONS = {"--workers": True, "--slurm": True, "--slurm-script": False, "--executor": True, "--wait": False,
                   "--poll": True}


def _launch_settings(args: argparse.Namespace) -> tuple[int, str | None, dict[str, Any]] | None:
    """(workers, executor, SLURM parameters) when the command starts workers, else None; bad values are ValueErrors."""
    if args.workers is None and args.slurm is None and args.executor is None and not args.slurm_script:
        return None
    count = 1 if args.workers is None else args.workers
    if isinstance(count, str):
        count = int(count) if re.fullmatch(r"[+-]?\d+", count.strip()) else count
    workers.check_count("workers", count)
    _positive("--claim-timeout", args.claim_timeout)
    _positive("--poll", args.poll)
    slurm = workers.parse_slurm(args.slurm or "")
    executor = args.executor or ("slurm" if args.slurm is not None or args.slurm_script else None)
    if executor is not None and executor not in workers.EXECUTORS:
        raise ValueError(f"--executor must be one of {list(workers.EXECUTORS)}, got {executor!r}")
    return count, executor, slurm


def _positive(name: str, seconds: float) -> float:
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return seconds


def _launch(grid: Grid, out: Path, args: argparse.Namespace, count: int, executor: str | None,
            slurm: dict[str, Any]) -> int:
    """Start the workers: here (`executor` None), or as a submitit array; the folder is bound first."""
    argv = workers.without(sys.argv[1:] if args.argv is None else args.argv, _LAUNCH_OPTIONS)
    out.mkdir(parents=True, exist_ok=True)
    results.claim_folder(out, grid.identity())
    (out / LOGS_DIR).mkdir(exist_ok=True)  # SLURM writes the array's logs there and needs it to exist
    if args.slurm_script:
        print(workers.sbatch_script(argv, out, count, slurm, grid.name), end="")
        return 0
    if executor is None:
        return workers.run_local(argv, out, count, grid.num_processes, len(grid.cells()), progress=not args.no_progress)
    try:
        jobs = workers.submit(argv, out, count, executor, slurm, grid.name)
    except RuntimeError as error:  # submitit's FailedJobError: sbatch refused the array
        print(f"mrpruner-sweep: {error}", file=sys.stderr)
        return 1
    print(f"{grid.name}: {count} array task(s) submitted through submitit ({executor}), job "
          f"{jobs[0].job_id.split('_')[0]}; logs in {out / 'submitit'}. Submitting the same command again "
          "(after a preemption, a time-out or a failure) resumes: finished cells are kept.", flush=True)
    if not (executor == "local" or args.wait):
        print(f"See where the grid stands with: mrpruner-sweep --status {out}")
        return 0
    status, states = wait_for_grid(grid, out, lambda: workers.task_states(jobs, executor),
                                   "squeue" if executor == "slurm" else "submitit's local executor",
                                   poll=args.poll, claim_timeout=args.claim_timeout)
    for line in status.lines():
        print("  " + line)
    for state in [] if isinstance(states, str) else states:
        if state.restarts or state.state not in ("RUNNING", "COMPLETING", "COMPLETED", "ENDED"):
            print(f"  {state.words()}" + (": when it starts it finds the grid complete and ends" if status.complete
                                          and state.state == "PENDING" else ""))
    counts = workers.ran_by(finished_records(out))
    print("cells run by each worker: " + ", ".join(f"{who}: {n}" for who, n in counts.items()))
    if status.complete:
        print(f"{grid.name}: the grid is complete; results in {out}")
        return 0
    print(f"{grid.name}: every array task has ended and the grid is not complete; submitting the same command "
          f"again runs what remains and retries what failed (array task logs in {out / 'submitit'})")
    return 1


def command() -> None:
    """`python -m mrpruner.sweep` (how workers are started): `main`, and when a signal stopped it
    (its cell already discarded, its claim released), an exit without the interpreter's teardown,
    seconds of garbage collection with torch loaded, which a cluster's SIGKILL would cut short."""
    code = main()
    if code > 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
