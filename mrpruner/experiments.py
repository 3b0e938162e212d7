"""Resumable experiment sweeps: a grid of models x methods x pruning ratios x tasks x limits, each
cell one lmms-eval run of the `llava_next_pruned` model, one JSON result file per cell.

    mrpruner-sweep table1 --out results/table1           # a sweep shipped in mrpruner/data/sweeps
    mrpruner-sweep my_grid.yaml --out results/mine --limit 100
    python -m mrpruner.experiments --model llava-hf/llama3-llava-next-8b-hf --methods mrpruner,fastv \\
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
its answers, and the model's weights: `fingerprint`) no longer matches, replacing it whole; Ctrl-C
or a crash loses at most the cell in progress.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mrpruner import benchmarks, models, results, workers
from mrpruner.checks import check_protocol, check_ratio
from mrpruner.lmms_eval_model import MODEL_NAME, check_model_args

GRID_KEYS = ("name", "model", "methods", "ratios", "protocol", "tasks", "limit", "dtype", "device", "batch_size",
             "num_processes", "seed", "include_path", "runner")
RUNNERS = ("lmms-eval", "in-process")  # a cell in its own `python -m lmms_eval` process, or in this one
METHOD_KEYS = ("method", "label", "options", "ratios")
WORK_DIR = ".work"
LOGS_DIR = "logs"
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


@dataclass(frozen=True)
class MethodSpec:
    """One row family of a table: a pruning method with its options under a label (the paper's
    row name in the shipped sweeps), and the ratios it runs at."""

    label: str
    method: str
    options: tuple[tuple[str, Any], ...]
    ratios: tuple[float, ...]


@dataclass(frozen=True)
class Cell:
    """One lmms-eval run: a model, a method with options at one ratio under a budget protocol
    (mrpruner.patch), one task, one limit."""

    model: str
    label: str
    method: str
    options: tuple[tuple[str, Any], ...]
    ratio: float
    task: str
    limit: int | None
    protocol: str = "exact"

    def spec(self) -> dict[str, Any]:
        """The cell as a JSON-able dict (options as a mapping): stored in its result file and hashed into cell_id."""
        return {"model": self.model, "label": self.label, "method": self.method, "options": dict(self.options),
                "ratio": self.ratio, "protocol": self.protocol, "task": self.task, "limit": self.limit}

    @property
    def cell_id(self) -> str:
        """File name stem: readable task, label and ratio, plus a hash of the whole cell."""
        return f"{_slug(self.task)}__{_slug(self.label)}__r{self.ratio:g}__{results.fingerprint(self.spec())[:10]}"


@dataclass(frozen=True)
class Grid:
    """A validated sweep: the product of models x methods (each with its ratios) x tasks x limits,
    with the settings shared by every cell (protocol: the budgets of mrpruner.patch)."""

    name: str
    models: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    tasks: tuple[str, ...]
    limits: tuple[int | None, ...]
    protocol: str = "exact"
    dtype: str = "auto"
    device: str | None = None
    batch_size: int = 1
    num_processes: int = 1
    seed: int = 0
    include_path: str | None = None
    runner: str = "lmms-eval"

    def identity(self) -> dict[str, Any]:
        """Everything that defines the grid's results (not include_path, which is machine-specific,
        nor the runner, which runs the same evaluator either way)."""
        return {"name": self.name, "models": list(self.models), "tasks": list(self.tasks),
                "methods": [{"label": m.label, "method": m.method, "options": dict(m.options),
                             "ratios": list(m.ratios)} for m in self.methods],
                "limits": list(self.limits), "protocol": self.protocol, "dtype": self.dtype, "device": self.device,
                "batch_size": self.batch_size, "num_processes": self.num_processes, "seed": self.seed}

    def cells(self) -> list[Cell]:
        """All cells, row by row of a table: model, then method and ratio, then task, then limit."""
        return [Cell(model, m.label, m.method, m.options, ratio, task, limit, self.protocol)
                for model in self.models for m in self.methods for ratio in m.ratios
                for task in self.tasks for limit in self.limits]


@dataclass
class CellRun:
    """What a cell runner returns: lmms-eval's results dict, the model plug-in's stats (one dict
    per process), the command that produced them and lmms-eval's per-sample log (doc_id and
    each metric's value per document)."""

    results: dict[str, Any]
    stats: list[dict[str, Any]]
    command: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


class CellFailed(RuntimeError):
    """A cell's lmms-eval run did not produce results (the message says where its log is)."""


class Stopped(KeyboardInterrupt):
    """A stop signal (`workers.STOP_SIGNALS`: SIGTERM, or a grace signal before a time limit) reached
    the sweep: like Ctrl-C, the cell in progress is discarded and its claim released."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)


class _Stop:
    """What `_interrupt` and `_whole` share: how deep in `_whole` sections the sweep is, and the
    signal held back until the outermost one ends."""

    depth = 0
    held: int | None = None


def _interrupt(signum: int, frame: Any) -> None:
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


Runner = Callable[[Cell, Grid, Path, Path], CellRun]


# --- building a grid ---------------------------------------------------------------------------

def load_config(source: str | Path) -> dict[str, Any]:
    """A sweep config: a YAML file, or the name of one shipped in mrpruner/data/sweeps
    (table1, table2, table3, figure4)."""
    import yaml

    path = Path(source)
    if not path.is_file():
        shipped = resources.files("mrpruner").joinpath(f"data/sweeps/{source}.yaml")
        if not shipped.is_file():
            raise ValueError(f"config must be a YAML file or one of the shipped sweeps {shipped_sweeps()}, "
                             f"got {str(source)!r}")
        path = Path(str(shipped))
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a YAML mapping with keys {GRID_KEYS}, got {type(config).__name__}")
    return config


def shipped_sweeps() -> list[str]:
    """Names of the sweep YAMLs shipped with mrpruner."""
    folder = resources.files("mrpruner").joinpath("data/sweeps")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def grid_from_config(config: dict[str, Any]) -> Grid:
    """Validate a config mapping (keys GRID_KEYS) into a Grid: unknown keys, methods, method
    options, ratios and tasks are ValueErrors naming the culprit, raised before anything runs."""
    unknown = sorted(set(config) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"unknown sweep key(s) {unknown}; allowed: {list(GRID_KEYS)}")
    for key in ("model", "methods", "tasks"):
        if config.get(key) in (None, [], ""):
            raise ValueError(f"the sweep needs {key!r} (allowed keys: {list(GRID_KEYS)})")
    default_ratios = config.get("ratios")
    grid = Grid(
        name=_string("name", config.get("name", "sweep")),
        models=tuple(models.check_model(_string("model", m)) for m in _as_list(config["model"])),
        methods=tuple(_method_spec(entry, default_ratios) for entry in _as_list(config["methods"])),
        tasks=tuple(dict.fromkeys(benchmarks.task_name(t) for t in _as_list(config["tasks"]))),
        limits=tuple(_limit(x) for x in _as_list(config.get("limit"))),
        protocol=check_protocol(config.get("protocol", "exact")),
        dtype=_string("dtype", config.get("dtype", "auto")),
        device=None if config.get("device") is None else _string("device", config["device"]),
        batch_size=_positive_int("batch_size", config.get("batch_size", 1)),
        num_processes=_positive_int("num_processes", config.get("num_processes", 1)),
        seed=_int("seed", config.get("seed", 0)),
        include_path=None if config.get("include_path") is None else str(Path(config["include_path"]).resolve()),
        runner=_choice("runner", config.get("runner", "lmms-eval"), RUNNERS),
    )
    labels = [m.label for m in grid.methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    for model, spec in itertools.product(grid.models, grid.methods):
        for ratio in spec.ratios:
            check_model_args(_lmms_model_args(model, spec.method, spec.options, ratio, grid, stats_dir=None))
    check_tasks(grid.tasks, grid.include_path)
    return grid


def check_tasks(tasks: Sequence[str], include_path: str | None) -> None:
    """Raise a ValueError naming any task lmms-eval does not know (the paper's tasks are known to
    lmms-eval 0.7.3; others are looked up in include_path first, then in lmms-eval's index)."""
    paper = {b.task for b in benchmarks.BENCHMARKS.values()}
    missing = [t for t in tasks if t not in paper]
    if missing:
        benchmarks.task_manager(missing, include_path)


def _method_spec(entry: Any, default_ratios: Any) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"each methods entry must be a method name or a mapping with keys {METHOD_KEYS}, "
                         f"got {entry!r}")
    unknown = sorted(set(entry) - set(METHOD_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in methods entry {entry!r}; allowed: {list(METHOD_KEYS)}")
    method = _string("method", entry.get("method"))
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError(f"options of method {method!r} must be a mapping, got {options!r}")
    ratios = entry.get("ratios", default_ratios)
    if ratios is None:
        raise ValueError(f"method {method!r} has no ratios: give 'ratios' in its entry or at the top level")
    ratios = tuple(dict.fromkeys(_ratio(r) for r in _as_list(ratios)))
    return MethodSpec(_string("label", entry.get("label", method)), method,
                      tuple(sorted(options.items())), ratios)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] if "," in value else [value]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _positive_int(name: str, value: Any) -> int:
    if _int(name, value) < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _limit(value: Any) -> int | None:
    if value is None or value == "none":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"limit must be a positive number of samples per task or null (all), got {value!r}")
    return value


def _ratio(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    check_ratio(value, "ratios")
    return float(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


# --- one cell through lmms-eval ----------------------------------------------------------------

def _lmms_model_args(model: str, method: str, options: tuple[tuple[str, Any], ...], ratio: float, grid: Grid,
                     stats_dir: Path | None) -> str:
    """The --model_args string of a cell. Values must survive lmms-eval's parsing unchanged
    (it turns numeric strings into numbers and true/false into bools)."""
    args: dict[str, Any] = {"pretrained": model, "method": method, "ratio": ratio, "protocol": grid.protocol,
                            "dtype": grid.dtype}
    if grid.device is not None:
        args["device"] = grid.device
    if stats_dir is not None:
        args["stats_dir"] = str(stats_dir)
    clash = sorted(set(args) & {k for k, _ in options})
    if clash:
        raise ValueError(f"method options {clash} of {method!r} clash with model arguments set by the sweep")
    args.update(options)
    return ",".join(f"{key}={_arg_text(key, value)}" for key, value in args.items())


def _arg_text(key: str, value: Any) -> str:
    from lmms_eval.utils import handle_arg_string

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
        return repr(value)
    if isinstance(value, str) and value and not re.search(r"[,=\s]", value) and handle_arg_string(value) == value:
        return value
    raise ValueError(f"model argument {key}={value!r} cannot pass through lmms-eval's --model_args: use numbers, "
                     "booleans, or strings without commas, '=' or spaces that do not read as a number or bool")


def lmms_eval_command(cell: Cell, grid: Grid, output_path: Path, stats_dir: Path | None,
                      include_path: str | None = None) -> list[str]:
    """The lmms-eval command line of a cell (torchrun when num_processes > 1), logging every
    sample; `include_path`: the task folder to pass (default: `cli_include_path`'s).

    torchrun, not `accelerate launch`: accelerate starts several CPU processes only through MPI
    (with `--cpu` it silently runs one), while torchrun starts them on CPUs and GPUs alike, and the
    model's `Accelerator()` reads its environment (one GPU per process, or gloo on CPUs)."""
    if grid.num_processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(grid.num_processes)]
    else:
        launcher = [sys.executable]
    command = [*launcher, "-m", "lmms_eval", "--model", MODEL_NAME,
               "--model_args", _lmms_model_args(cell.model, cell.method, cell.options, cell.ratio, grid, stats_dir),
               "--tasks", cell.task, "--batch_size", str(grid.batch_size), "--seed", str(grid.seed),
               "--output_path", str(output_path), "--log_samples",
               "--include_path", include_path or cli_include_path(grid, output_path.parent)]
    if cell.limit is not None:
        command += ["--limit", str(cell.limit)]
    return command


def cli_include_path(grid: Grid, workdir: Path, *, write: bool = False) -> str:
    """The one --include_path lmms-eval's command line takes: mrpruner's own tasks, or with the
    grid's include_path as well, `workdir`/tasks, a tree of links to the files of both (written
    with `write`)."""
    shipped = benchmarks.tasks_folder()
    if grid.include_path is None:
        return str(shipped)
    merged = workdir / "tasks"
    if write:
        for folder in (shipped, Path(grid.include_path)):
            for root, _, files in os.walk(folder):
                target = merged / f"{folder.name}-{len(str(folder))}" / Path(root).relative_to(folder)
                target.mkdir(parents=True, exist_ok=True)
                for name in files:
                    (target / name).symlink_to(Path(root, name).resolve())
    return str(merged)


def run_lmms_eval(cell: Cell, grid: Grid, workdir: Path, log: Path) -> CellRun:
    """Run one cell with the lmms-eval CLI in a child process (its output goes to `log`) and
    collect its results file and the plug-in's stats. The CLI exits 0 even when evaluation
    fails, so success is judged by the results file. On Ctrl-C the child is stopped too."""
    stats_dir, output = workdir / "stats", workdir / "lmms_eval"
    command = lmms_eval_command(cell, grid, output, stats_dir, cli_include_path(grid, workdir, write=True))
    with open(log, "w", encoding="utf-8") as out:
        out.write(shlex.join(command) + "\n\n")
        out.flush()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            code = child.wait()
        except BaseException:
            _stop(child)
            raise
    found = sorted(output.glob("**/*_results.json"))
    if code != 0 or len(found) != 1:
        raise CellFailed(f"lmms-eval exited with {code} and wrote {len(found)} results file(s); see {log}")
    lmms = results.read_json(found[0])
    if cell.task not in lmms.get("results", {}):
        raise CellFailed(f"lmms-eval's results have no task {cell.task!r}; see {log}")
    stats = [results.read_json(p) for p in sorted(stats_dir.glob("rank*.json"))]
    if not stats:
        raise CellFailed(f"the model plug-in wrote no stats in {stats_dir}; see {log}")
    logged = sorted(output.glob(f"**/*_samples_{cell.task}.jsonl"))
    samples = [json.loads(line) for path in logged for line in path.read_text().splitlines() if line.strip()]
    return CellRun(lmms, stats, command, samples)


def run_in_process(cell: Cell, grid: Grid, workdir: Path, log: Path) -> CellRun:
    """Run one cell with lmms-eval's evaluator (`simple_evaluate`) in this process, on a fresh
    `llava_next_pruned` model: the same model, task, settings and records as `run_lmms_eval`,
    without a new process's start-up (its output goes to `log`). For single-process cells."""
    from lmms_eval.evaluator import simple_evaluate
    from loguru import logger

    from mrpruner.lmms_eval_model import LlavaNextPruned, check_model_args

    if grid.num_processes != 1:
        raise CellFailed(f"runner 'in-process' runs one process; this grid has num_processes={grid.num_processes}")
    stats_dir = workdir / "stats"
    args = _lmms_model_args(cell.model, cell.method, cell.options, cell.ratio, grid, stats_dir)
    command = ["in-process", "lmms_eval.evaluator.simple_evaluate", "--model", MODEL_NAME, "--model_args", args,
               "--tasks", cell.task, "--batch_size", str(grid.batch_size), "--seed", str(grid.seed)]
    if cell.limit is not None:
        command += ["--limit", str(cell.limit)]
    parsed = check_model_args(args)
    manager = benchmarks.task_manager([cell.task], grid.include_path)
    arguments = {k: getattr(parsed, k) for k in ("pretrained", "revision", "method", "ratio", "protocol", "device",
                                                 "dtype", "batch_size", "stats_dir", "resolution", "images")}
    logger.disable("lmms_eval")
    with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        f.write(shlex.join(command) + "\n\n")
        try:
            model = LlavaNextPruned(**arguments, **parsed.options)
            out = simple_evaluate(model=model, tasks=[cell.task], task_manager=manager, limit=cell.limit,
                                  batch_size=grid.batch_size, log_samples=True, random_seed=grid.seed,
                                  numpy_random_seed=grid.seed, torch_random_seed=grid.seed,
                                  fewshot_random_seed=grid.seed)
        except Exception as error:  # the cell fails, as a failing `python -m lmms_eval` does; the sweep goes on
            traceback.print_exc(file=f)
            raise CellFailed(f"lmms-eval raised {type(error).__name__}: {error}; see {log}") from error
        finally:
            logger.enable("lmms_eval")
    if not out or cell.task not in out.get("results", {}):
        raise CellFailed(f"lmms-eval's results have no task {cell.task!r}; see {log}")
    samples = [{k: v for k, v in x.items() if k not in ("doc", "arguments", "resps")}
               for x in out.pop("samples", {}).get(cell.task, [])]
    stats = [results.read_json(p) for p in sorted(stats_dir.glob("rank*.json"))]
    if not stats:
        raise CellFailed(f"the model plug-in wrote no stats in {stats_dir}; see {log}")
    return CellRun(json.loads(json.dumps(out, default=str)), stats, command, json.loads(json.dumps(samples, default=str)))


RUNNER_FUNCTIONS: dict[str, Runner] = {"lmms-eval": run_lmms_eval, "in-process": run_in_process}


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the sweep dies (Linux prctl PR_SET_PDEATHSIG);
    libc is loaded beforehand so the forked child only makes the system call."""
    _LIBC.prctl(1, signal.SIGKILL)


def _stop(child: subprocess.Popen) -> None:
    """Interrupt the child's process group (it may be accelerate with workers), then kill it."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- a finished cell ---------------------------------------------------------------------------

def summarize(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput, prefill latency, token counts and FLOPs of a cell from the plug-in's stats.

    throughput: samples / evaluation wall time (samples per second, as Table 1 reports it), where
    a process's time runs from its first request to its last answer (images, prompts, generation,
    decoding; not dataset loading or scoring) and parallel processes count by the slowest one.
    prefill_ms: per batch, from generate() to the end of the first forward pass (vision tower,
    projector, pruning and the language model's prefill), mean and median. image_visual_tokens /
    image_kept_tokens: per image, its packed visual tokens and those the language model received.
    recall: the mean share of the answer region's tokens kept, over the samples whose document
    gives a region (None without any).
    """
    batches = [b for s in stats for b in s["batches"]]
    samples = [x for b in batches for x in b["samples"]]
    if not samples:
        raise CellFailed("the model plug-in recorded no samples")

    def mean(key: str) -> float:
        return statistics.fmean(x[key] for x in samples)

    prefill = [b["prefill_s"] * 1e3 for b in batches]
    recalls = [x["recall"] for x in samples if x.get("recall") is not None]
    visual_per_image = [v for x in samples for v in x["images_visual"]]
    kept_per_image = [k for x in samples for k in x["images_kept"]]
    dense = sum(x["dense_prefill_flops"] for x in samples)
    pruned = sum(x["prefill_flops"] for x in samples)
    return {
        "samples": len(samples),
        "throughput": len(samples) / max(s["elapsed_s"] for s in stats),
        "prefill_ms": statistics.fmean(prefill),
        "prefill_ms_median": statistics.median(prefill),
        "text_tokens": mean("text_tokens"),
        "visual_tokens": mean("visual_tokens"),
        "kept_tokens": mean("kept_tokens"),
        "image_visual_tokens": statistics.fmean(visual_per_image) if visual_per_image else None,
        "image_kept_tokens": statistics.fmean(kept_per_image) if kept_per_image else None,
        "generated_tokens": mean("generated_tokens"),
        "prefill_tflops": pruned / len(samples) / 1e12,
        "dense_prefill_tflops": dense / len(samples) / 1e12,
        "flops_reduction": 1 - pruned / dense,
        "recall": statistics.fmean(recalls) if recalls else None,
    }


def cell_record(cell: Cell, run: CellRun, grid: Grid, stamp: str, worker: workers.Worker | None = None
                ) -> dict[str, Any]:
    """The JSON document of a finished cell: the cell, its score in the paper's unit, all of
    lmms-eval's metrics, the summary, provenance, the worker that ran it and lmms-eval's own
    results (minus samples)."""
    metrics = run.results["results"][cell.task]
    bench = benchmarks.benchmark_for_task(cell.task) or first_metric(cell.task, metrics)
    try:
        score = bench.score(metrics) if bench else None
    except KeyError as error:
        raise CellFailed(error.args[0]) from None
    head = run.stats[0]
    world = head["world_size"]
    return {
        "schema": results.SCHEMA,
        "cell_id": cell.cell_id,
        "grid_fingerprint": stamp,
        "fingerprint": fingerprint(cell, head.get("host", results.FIRST_HOST)),
        "host": head.get("host", results.FIRST_HOST),
        "cell": cell.spec(),
        "benchmark": bench.paper_name if bench else cell.task,
        "metric": bench.metric if bench else None,
        "score": score,
        "sample_scores": sample_scores(run.samples, bench),
        "metrics": metrics,
        "summary": summarize(run.stats),
        "protocol": cell.protocol,
        "images": {key: [n for s in run.stats for b in s["batches"] for x in b["samples"] for n in x[f"images_{key}"]]
                   for key in ("visual", "kept")},
        "world_size": world,
        "provenance": results.provenance(
            model=cell.model, dtype=head["dtype"],
            device=head["device_name"] if world == 1 else f"{world} x {head['device_name']}",
            seed=grid.seed, limit=cell.limit, model_commit=head.get("model_commit")),
        "worker": (worker or workers.this_worker()).record(),
        "command": run.command,
        "lmms_eval": {k: v for k, v in run.results.items() if k not in ("samples", "configs")},
    }


def first_metric(task: str, metrics: dict[str, Any]) -> benchmarks.Benchmark | None:
    """For a task that is none of mrpruner's benchmarks: a Benchmark scoring its first numeric
    lmms-eval metric as is (e.g. `exact_match,none`), or None when it has none."""
    for key, value in metrics.items():
        if "_stderr" not in key and "," in key and isinstance(value, (int, float)) and not isinstance(value, bool):
            return benchmarks.Benchmark(task, task, task, key, 1.0, "the task's first metric, as lmms-eval reports it")
    return None


def fingerprint(cell: Cell, host: str = results.FIRST_HOST) -> dict[str, str]:
    """What a measured cell depends on beyond its spec: mrpruner's measuring code for the model's
    family `host` (`results.code_fingerprint`; the lmms-eval model reports it, a cell records it)
    and the model's weights (`models.fingerprint`)."""
    return {"code": results.code_fingerprint(host), "model": models.fingerprint(cell.model)}


def sample_scores(samples: list[dict[str, Any]], bench: benchmarks.Benchmark | None) -> dict[str, list] | None:
    """Each document's value of the benchmark's metric in lmms-eval's per-sample log, in the
    paper's unit (doc_id and value lists, by doc_id), for intervals; None when the benchmark is
    unknown or its metric is not a number per document (MME's, GPT-judged ones)."""
    if bench is None or not samples:
        return None
    key = bench.metric.split(",")[0]
    pairs = sorted((x["doc_id"], x.get(key)) for x in samples)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for _, v in pairs):
        return None
    return {"doc_id": [d for d, _ in pairs], "value": [float(v) * bench.scale for _, v in pairs]}


def one_line(record: dict[str, Any]) -> str:
    """The one-line summary printed when a cell finishes."""
    spec, s = record["cell"], record["summary"]
    score = "n/a" if record["score"] is None else f"{record['score']:.2f}"
    return (f"{spec['task']} | {spec['label']} r={spec['ratio']:g} | {record['benchmark']} {score} | "
            f"{s['throughput']:.3g} samples/s | prefill {s['prefill_ms']:.1f} ms | visual tokens "
            f"{s['kept_tokens']:.0f}/{s['visual_tokens']:.0f} | FLOPs -{s['flops_reduction']:.1%}")


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


def run_sweep(grid: Grid, out: str | Path, *, runner: Runner | None = None, progress: bool = True,
              claim_timeout: float = workers.TIMEOUT_S, poll: float = 5.0) -> SweepReport:
    """Run every unfinished or stale cell of `grid` into the results folder `out`, with `runner`
    (default: the grid's, `RUNNER_FUNCTIONS[grid.runner]`), as one of any number of workers.

    The folder is bound to the grid (results.claim_folder: another grid is an error). A cell runs
    only under this worker's claim (mrpruner.workers.Claims), so workers sharing the folder never
    run a cell twice; cells other workers hold are waited for (every `poll` seconds) and taken
    over when their worker is gone (`claim_timeout`: for a worker on another host). Finished cells
    are skipped unless their `fingerprint` changed, when they run again; a failed cell is reported
    and the sweep goes on; Ctrl-C (or a stop signal, `Stopped`, under `main`) stops the cell in
    progress, discards it, releases its claim at once and re-raises. A cell's file appears (or is
    replaced) only whole, and a claim is never left half-taken.
    """
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


def _state(cell: Cell, out: Path, stamp: str, current: Callable[[Cell, str], dict[str, str]] | None = None) -> str:
    """"done" (a current result), "stale" (a result of older code or weights) or "new"; `current`:
    the `fingerprint` function (or a memo of it)."""
    path = out / results.CELLS_DIR / f"{cell.cell_id}.json"
    if not path.exists():
        return "new"
    record = results.read_json(path)
    if record.get("grid_fingerprint") != stamp:
        raise ValueError(f"{path} belongs to another grid; results of different grids are never mixed")
    now = (current or fingerprint)(cell, record.get("host", results.FIRST_HOST))
    return "done" if record.get("fingerprint") == now else "stale"


def _run_cells(grid: Grid, out: Path, stamp: str, runner: Runner, progress: bool, claims: workers.Claims,
               poll: float) -> SweepReport:
    from tqdm.auto import tqdm

    report = SweepReport()
    cells = grid.cells()
    bar = tqdm(total=len(cells), desc=grid.name, unit="cell", disable=not progress)
    pending, first = cells, True
    while pending:
        waiting = []
        for cell in pending:
            state = _state(cell, out, stamp)
            if state == "done":
                (report.skipped if first else report.elsewhere).append(cell.cell_id)
                bar.update()
                continue
            with _whole():
                held = claims.take(cell.cell_id)
            if held is not True:
                (report.failed_elsewhere if held == "failed" else waiting).append(cell)
                continue
            state = _state(cell, out, stamp)  # another worker may have finished it before this claim
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
    try:
        run = runner(cell, grid, workdir, out / LOGS_DIR / f"{cell.cell_id}.log")
        record = cell_record(cell, run, grid, stamp, claims.worker)
    except CellFailed as error:
        with _whole():
            claims.failed(cell.cell_id)
        report.failed.append(cell.cell_id)
        bar.write(f"FAILED {cell.task} | {cell.label} r={cell.ratio:g}: {error}")
        return False
    except BaseException as stop:
        claims.release(cell.cell_id, done=False)
        finished = len(list((out / results.CELLS_DIR).glob("*.json"))) if (out / results.CELLS_DIR).is_dir() else 0
        why = f" by {stop.signal.name}" if isinstance(stop, Stopped) else ""
        bar.write(f"stopped during {cell.task} | {cell.label} r={cell.ratio:g}{why}: that cell is discarded and "
                  f"its claim released; {finished} of {total} cells are finished in {out}. Run the same command "
                  "again to resume.")
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with _whole():  # a stop signal now waits until the record is written and the claim released
        results.atomic_write_json(out / results.CELLS_DIR / f"{cell.cell_id}.json", record)
        claims.release(cell.cell_id, done=True)
    report.finished.append(cell.cell_id)
    bar.write(one_line(record))
    return True


# --- where a grid stands -------------------------------------------------------------------------

def grid_from_folder(out: str | Path) -> Grid:
    """The grid a results folder is bound to, from its grid.json alone (no config, no task lookup):
    what `--status` reads, e.g. on a login node while the workers run elsewhere."""
    path = Path(out) / results.GRID_FILE
    if not path.is_file():
        raise ValueError(f"{out} is not an mrpruner results folder (it has no {results.GRID_FILE}): give the --out "
                         "of a sweep")
    stored = results.read_json(path)
    try:
        g = stored["grid"]
        grid = Grid(name=g["name"], models=tuple(g["models"]), tasks=tuple(g["tasks"]), limits=tuple(g["limits"]),
                    methods=tuple(MethodSpec(m["label"], m["method"], tuple(sorted(m["options"].items())),
                                             tuple(m["ratios"])) for m in g["methods"]),
                    protocol=g["protocol"], dtype=g["dtype"], device=g["device"], batch_size=g["batch_size"],
                    num_processes=g["num_processes"], seed=g["seed"])
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} does not describe a grid this mrpruner reads (missing or bad {error})") from None
    if results.fingerprint(grid.identity()) != stored.get("fingerprint"):
        raise ValueError(f"{path} does not match its own fingerprint: it was changed by something else")
    return grid


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
    known: dict[tuple[str, str], dict[str, str]] = {}

    def current(cell: Cell, host: str) -> dict[str, str]:
        if (cell.model, host) not in known:
            known[cell.model, host] = fingerprint(cell, host)
        return known[cell.model, host]

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
    counts = workers.ran_by([results.read_json(p) for p in results.cell_files(out)])
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


# --- command line ------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep config: the YAML's mapping with the command line's values on top."""
    config = load_config(args.config) if args.config else {}
    overrides = {"name": args.name, "model": args.model, "methods": args.methods, "ratios": args.ratios,
                 "protocol": args.protocol,
                 "tasks": args.tasks, "limit": args.limit, "dtype": args.dtype, "device": args.device,
                 "batch_size": args.batch_size, "num_processes": args.num_processes, "seed": args.seed,
                 "include_path": args.include_path, "runner": args.runner}
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """`mrpruner-sweep` / `python -m mrpruner.experiments`: 0 when every cell is finished, 1 when
    some failed (or, with --status or --wait, the grid is not complete), 2 on a bad grid or
    argument, 130 on Ctrl-C and 128 + its number on a stop signal (`Stopped`)."""
    args = parse_args(argv)
    args.argv = None if argv is None else list(argv)
    if args.status is not None:
        try:
            return print_status(Path(args.status), _positive("--claim-timeout", args.claim_timeout))
        except ValueError as error:
            print(f"mrpruner-sweep: error: {error}", file=sys.stderr)
            return 2
    try:
        grid = grid_from_config(config_from_args(args))
    except (ValueError, TypeError) as error:
        print(f"mrpruner-sweep: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.dry_run:
        dry_run(grid, out)
        return 0
    previous = {sig: signal.signal(sig, _interrupt) for sig in workers.STOP_SIGNALS}
    try:
        launch = _launch_settings(args)
        if launch is not None:
            return _launch(grid, out, args, *launch)
        report = run_sweep(grid, out, progress=not args.no_progress, claim_timeout=args.claim_timeout)
    except Stopped as stop:
        print(f"mrpruner-sweep: stopped by {stop.signal.name}; no claim of this worker is left in {out}", flush=True)
        return 128 + stop.signal
    except KeyboardInterrupt:
        return 130
    except ValueError as error:
        print(f"mrpruner-sweep: error: {error}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{grid.name}: {len(report.finished)} cell(s) run ({len(report.rerun)} of them stale), "
          f"{len(report.skipped)} already finished, {len(report.failed)} failed"
          + (f", {len(report.elsewhere)} run by other workers" if report.elsewhere else "")
          + (f", {len(report.failed_elsewhere)} failed for other workers" if report.failed_elsewhere else "")
          + f"; results in {out}")
    return 1 if report.failed or report.failed_elsewhere else 0


def dry_run(grid: Grid, out: Path) -> None:
    """Print each cell's state, estimated device-hours and command, then the sweep's estimate (mrpruner.cost)."""
    import pandas as pd

    from mrpruner import cost

    records = [results.read_json(p) for p in results.cell_files(out)] if out.is_dir() else []
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
    counts = workers.ran_by([results.read_json(p) for p in results.cell_files(out)])
    print("cells run by each worker: " + ", ".join(f"{who}: {n}" for who, n in counts.items()))
    if status.complete:
        print(f"{grid.name}: the grid is complete; results in {out}")
        return 0
    print(f"{grid.name}: every array task has ended and the grid is not complete; submitting the same command "
          f"again runs what remains and retries what failed (array task logs in {out / 'submitit'})")
    return 1


def _command() -> None:
    """`python -m mrpruner.experiments` (how workers are started): `main`, and when a signal stopped it
    (its cell already discarded, its claim released), an exit without the interpreter's teardown,
    seconds of garbage collection with torch loaded, which a cluster's SIGKILL would cut short."""
    code = main()
    if code > 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _command()
