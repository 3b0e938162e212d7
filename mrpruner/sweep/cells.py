"""One cell of a sweep: run through lmms-eval (its own process, `run_lmms_eval`, or this one,
`run_in_process`) on the `llava_next_pruned` model, and the JSON record of a finished cell (score,
throughput, prefill latency, token counts, FLOPs, provenance: `cell_record`)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrpruner import benchmarks, results, workers
from mrpruner.lmms_eval_model import MODEL_NAME
from mrpruner.sweep.grid import Cell, Grid, model_args

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


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

Runner = Callable[[Cell, Grid, Path, Path], CellRun]


# --- one cell through lmms-eval ----------------------------------------------------------------

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
               "--model_args", model_args(cell.model, cell.method, cell.options, cell.ratio, grid, stats_dir),
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
    args = model_args(cell.model, cell.method, cell.options, cell.ratio, grid, stats_dir)
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
        "fingerprint": results.current_fingerprints()(cell.model, head.get("host", results.FIRST_HOST)),
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
