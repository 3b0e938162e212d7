"""Result files of experiment sweeps: atomic JSON writes, provenance, the grid fingerprint that
keeps one results folder to one grid, and loading a folder into a pandas DataFrame.

A results folder holds `grid.json` (the grid and its fingerprint), `cells/<cell id>.json` (one
finished cell each) and `logs/` (lmms-eval's output per cell). Every file is written whole: to a
temporary name in the same folder, then `os.replace`, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import threading
import uuid
from importlib import metadata
from pathlib import Path
from collections.abc import Callable
from typing import Any

GRID_FILE = "grid.json"
CELLS_DIR = "cells"
SCHEMA = 1
_PACKAGES = ("torch", "transformers", "lmms_eval", "mrpruner")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` (parent folders created), whole or not at all: a temporary file in
    the same folder, fsync, then os.replace, so a reader or an interrupted run never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would make results private
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented UTF-8 JSON to `path`, whole or not at all (`atomic_write_bytes`)."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def create_json(path: str | Path, obj: Any) -> bool:
    """Write `obj` as JSON to `path` whole, only if no file has that name: False if one has. Written
    aside, then hard-linked (which fails on an existing name: atomic on local disks and NFS alike),
    so of several processes creating the same name exactly one succeeds."""
    path = Path(path)
    aside = atomic_write_json(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"), obj)
    try:
        os.link(aside, path)
        return True
    except FileExistsError:
        return False
    finally:
        aside.unlink()


def read_json(path: str | Path) -> Any:
    """The JSON value in `path`; a ValueError naming the file if it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); result files are written atomically, "
                         "so it was changed by something else") from None


GRID_KEYS = ("fingerprint", "grid")  # what a grid.json, a cell's file and a claim must hold
CELL_KEYS = ("grid_fingerprint", "cell", "summary", "provenance")
CLAIM_KEYS = ("cell_id", "worker", "claimed_at")
_ADVICE = {GRID_KEYS: "delete it and run the sweep again: the folder is bound anew to the grid you run",
           CELL_KEYS: "delete it and run the sweep again: that cell runs again",
           CLAIM_KEYS: "delete it and run the sweep again: no worker holds a claim it cannot read, and the next "
                       "worker to reach its cell runs it"}


def read_record(path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object in the result file `path` (a grid.json: GRID_KEYS, a cell: CELL_KEYS, a claim:
    CLAIM_KEYS) holding `keys`; else a ValueError naming the file, what is wrong and what to do."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        why = f"it is not valid JSON ({error})"
    else:
        missing = [k for k in keys if k not in value] if isinstance(value, dict) else None
        if not missing and missing is not None:
            return value
        why = (f"it holds a JSON {type(value).__name__}, not an object" if missing is None
               else f"it has no {', '.join(missing)}")
    raise ValueError(f"{path} is damaged: {why}. Result files are written whole, so something else changed it: "
                     f"{_ADVICE[keys]}")


def fingerprint(obj: Any) -> str:
    """A stable hash of a JSON-able value (keys sorted): the identity of a grid or a cell."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# Modules that cannot change what a sweep's model answers or what the plug-in counts (they build
# grids, records, books and plots, or train and evaluate the miniature off the sweep's path): any
# other change to mrpruner's sources (or to its shipped tasks) makes a measured cell stale.
NOT_MEASURED = frozenset({"bench.py", "cost.py", "workers.py", "book.py", "claims.py", "latency.py", "paper.py",
                          "plotting.py", "results.py", "testing.py", "__main__.py", "__init__.py",
                          "models.py", "train.py", "measure.py", "model.py", "palette.py", "rule.py"})


FIRST_HOST = "llava_next"  # the family of a cell that records none (measured before cells recorded theirs)


def code_fingerprint(host: str = FIRST_HOST) -> str:
    """A hash of every mrpruner source file that can change a measurement of a model of `host`'s
    family (`mrpruner.hosts.FAMILIES`): the selections, the plug-in, the lmms-eval model, the tasks
    and their generator, the example methods and that family's host module (another family's
    cannot change it). Of the Python files' syntax trees without docstrings, so comments,
    docstrings and layout never make a cell stale; of the tasks' files as they are."""
    from importlib import resources

    from mrpruner.hosts import FAMILIES

    if host not in FAMILIES:
        raise ValueError(f"host must be one of {FAMILIES}, got {host!r}")
    root = resources.files("mrpruner")
    folders = (root, root.joinpath("mini"), root.joinpath("examples"), root.joinpath("tasks"))
    files = sorted((p for folder in folders for p in folder.iterdir()
                    if p.name.endswith((".py", ".yaml", ".parquet")) and p.name not in NOT_MEASURED),
                   key=lambda p: str(p))
    files += [root.joinpath("hosts", "__init__.py")] + [root.joinpath("hosts", f"{h}.py") for h in _hosts_of(host)]
    digest = hashlib.sha256()
    for path in files:
        content = _code(path.read_text()) if path.name.endswith(".py") else path.read_bytes()
        digest.update(path.name.encode() + b"\0" + content)
    return digest.hexdigest()


def _hosts_of(host: str) -> list[str]:
    """`host` and the host modules its module imports (OneVision's packing reuses LLaVA-NeXT's)."""
    import ast
    from importlib import resources

    source = resources.files("mrpruner").joinpath("hosts", f"{host}.py").read_text()
    with _PARSE:
        tree = ast.parse(source)
    named = {node.module.rsplit(".", 1)[1] for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mrpruner.hosts.")}
    return sorted(named | {host})


_PARSE = threading.Lock()


def _code(source: str) -> bytes:
    """A Python module's syntax tree without its docstrings, written back as source."""
    import ast

    with _PARSE:  # CPython 3.11's parser is not thread-safe ("AST constructor recursion depth mismatch")
        tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree).encode()  # not ast.dump, whose fields change between Python versions


def claim_folder(folder: str | Path, grid: dict) -> str:
    """Bind `folder` to `grid` and return the grid's fingerprint: write grid.json if the folder
    has none, else check that the folder was written by this very grid (models, methods,
    ratios, tasks, limits and settings), and raise a ValueError naming what differs if not."""
    path = Path(folder) / GRID_FILE
    if not path.exists():  # the first of several workers to get here writes it
        create_json(path, {"schema": SCHEMA, "fingerprint": fingerprint(grid), "grid": grid})
    return check_folder(folder, grid)


def check_folder(folder: str | Path, grid: dict) -> str:
    """The fingerprint of `grid`, once checked that the grid.json of `folder` is this grid's (a
    ValueError naming what differs if not, or naming the file if it is damaged); writes nothing."""
    folder = Path(folder)
    stamp = fingerprint(grid)
    stored = read_record(folder / GRID_FILE, GRID_KEYS)
    if stored["fingerprint"] != stamp:
        old = stored["grid"] if isinstance(stored["grid"], dict) else {}
        differs = sorted(k for k in set(old) | set(grid) if old.get(k) != grid.get(k))
        detail = "; ".join(f"{k}: {old.get(k)!r} in the folder, {grid.get(k)!r} now" for k in differs)
        raise ValueError(f"results folder {folder} was written by another grid ({detail}). Results of "
                         "different grids or models are never mixed: choose another output folder.")
    return stamp


def versions() -> dict[str, str | None]:
    """Installed versions of torch, transformers, lmms-eval and mrpruner (None if absent)."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> dict[str, Any]:
    """The git commit of the mrpruner source tree and whether it has uncommitted changes
    (both None when mrpruner is not run from a git checkout with commits)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    commit = git("rev-parse", "HEAD")
    if top is None or commit is None or Path(top.strip()).resolve() != root:  # e.g. installed in site-packages
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def device_name(device: Any) -> str:
    """A readable name of a torch device: the GPU model for CUDA, the CPU model otherwise."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or device.type


def provenance(*, model: str, dtype: str, device: str, seed: int, limit: int | None,
               model_commit: str | None = None) -> dict[str, Any]:
    """What produced a number: model id (and the hub commit of its weights when known), dtype,
    device name, package versions, git commit, seed, limit (None: the whole benchmark), date
    (UTC), Python and platform."""
    return {
        "model": model,
        "model_commit": model_commit,
        "dtype": dtype,
        "device": device,
        "versions": versions(),
        "git": git_commit(),
        "seed": seed,
        "limit": limit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def commit_words(commit: str | None, dirty: bool) -> str:
    """A commit as the labels show it: its first 10 hex digits, saying so when the tree had uncommitted changes."""
    return "no commit" if commit is None else commit[:10] + (" with uncommitted changes" if dirty else "")


def setting_words(models: str, prov: dict[str, Any], commits: str) -> str:
    """Where measured numbers come from, without the date: `models` (one name or several) measured
    with the precision, device, samples, seed and versions of `prov`, at `commits`."""
    v = prov["versions"]
    limit = "all samples" if prov["limit"] is None else f"limit {prov['limit']}"
    return (f"measured here: {models} ({prov['dtype']}) on {prov['device']}, {limit}, seed {prov['seed']}; "
            f"torch {v['torch']}, transformers {v['transformers']}, lmms-eval {v['lmms_eval']}, "
            f"mrpruner {v['mrpruner']} ({commits})")


def label(prov: dict[str, Any]) -> str:
    """One line saying where a measured number comes from, for tables and the book."""
    commit = commit_words(prov["git"]["commit"], prov["git"]["dirty"])
    return f"{setting_words(prov['model'], prov, commit)}; {prov['date']}"


def sources(frame) -> str:
    """The provenance of a `load_results` frame in one line: each distinct setting (precision,
    device, samples, seed, library versions) once with the models and commits measured under it,
    in `label`'s words, then the dates the cells span."""
    import pandas as pd

    setting = ["dtype", "device", "limit", "seed", "torch", "transformers", "lmms_eval", "mrpruner"]
    commits = [commit_words(c, d) for c, d in zip(frame["commit"], frame["dirty"])]
    parts = []
    for key, group in frame.assign(shown_commit=commits).groupby(setting, sort=False, dropna=False):
        s = dict(zip(setting, key))
        prov = {"dtype": s["dtype"], "device": s["device"], "seed": s["seed"],
                "limit": None if pd.isna(s["limit"]) else int(s["limit"]),
                "versions": {k: s[k] for k in ("torch", "transformers", "lmms_eval", "mrpruner")}}
        parts.append(setting_words(", ".join(dict.fromkeys(group["model"])), prov,
                                   ", ".join(sorted(set(group["shown_commit"])))))
    dates = f"{frame['date'].min()}" + ("" if frame["date"].nunique() == 1 else f" to {frame['date'].max()}")
    return f"{'; '.join(parts)}; {dates}"


def cell_files(folder: str | Path) -> list[Path]:
    """The finished cells' JSON files of a results folder (temporary files excluded), sorted."""
    return sorted(p for p in (Path(folder) / CELLS_DIR).glob("*.json") if not p.name.startswith("."))


# Keys of a cell's "summary" (written by mrpruner.sweep.cells) and load_results' columns, in order.
SUMMARY_KEYS = ("samples", "throughput", "prefill_ms", "prefill_ms_median", "text_tokens", "visual_tokens",
                "kept_tokens", "image_visual_tokens", "image_kept_tokens", "generated_tokens", "prefill_tflops",
                "dense_prefill_tflops", "flops_reduction", "recall")
COLUMNS = ("grid", "model", "label", "method", "options", "ratio", "protocol", "task", "benchmark", "metric", "score",
           "ci_low", "ci_high", "doc_scores", "limit",
           *SUMMARY_KEYS, "device", "dtype", "world_size", "torch", "transformers", "lmms_eval", "mrpruner",
           "commit", "dirty", "date", "seed", "provenance", "file", "stale")


def load_results(folder: str | Path):
    """A results folder as a pandas DataFrame, one row per finished cell.

    Columns: the cell (model, label, method, options, ratio, protocol, task, benchmark, limit), the
    score in the paper's unit and its metric, `ci_low`/`ci_high` (95% percentile bootstrap over
    the documents, `mrpruner.rule.interval`; None where lmms-eval logs no number per document), `doc_scores`
    (each document's score by doc_id, or None likewise), throughput
    (samples/s), prefill latency (ms), mean token counts (per sample and per image), prefill
    TFLOPs and FLOPs reduction of the language model (its prefill, flops scope "llm"), `recall`
    (the share of the answer region's tokens kept, for tasks whose documents give a region), and
    provenance (device, dtype, versions, commit, date, and `provenance`, a one-line label), and
    `stale` (the cell's fingerprint is not today's code and weights: `stale`).
    Rows come in the grid's order (model, method row, ratio, task). Raises ValueError if the
    folder is not a results folder or holds a cell of another grid.
    """
    import pandas as pd

    folder = Path(folder)
    if not (folder / GRID_FILE).is_file():
        raise ValueError(f"{folder} is not an mrpruner results folder (no {GRID_FILE}); "
                         "write one with `mrpruner-sweep`")
    grid = read_record(folder / GRID_FILE, GRID_KEYS)
    rows, current = [], current_fingerprints()
    for path in cell_files(folder):
        cell = read_cell(path, grid["fingerprint"])
        rows.append({**_row(cell, folder.name, path.name), "stale": stale(cell, current)})
    spec = grid.get("grid", {})
    ratios = {m["label"]: m["ratios"] for m in spec.get("methods", [])}
    labels, tasks, models = list(ratios), spec.get("tasks", []), spec.get("models", [])

    def at(order: list, value: Any) -> int:
        return order.index(value) if value in order else len(order)

    def place(row: dict[str, Any]) -> tuple:  # the grid's order: model, method row, ratio, task
        return (at(models, row["model"]), at(labels, row["label"]), at(ratios.get(row["label"], []), row["ratio"]),
                at(tasks, row["task"]), row["file"])

    return pd.DataFrame(sorted(rows, key=place), columns=list(COLUMNS))


def read_cell(path: str | Path, grid_fingerprint: str) -> dict[str, Any]:
    """The record of a finished cell (`read_record`), which must belong to the grid whose fingerprint
    is `grid_fingerprint`; a ValueError naming the file if it is damaged or of another grid."""
    cell = read_record(path, CELL_KEYS)
    if cell["grid_fingerprint"] != grid_fingerprint:
        raise ValueError(f"{path} belongs to another grid than its folder's {GRID_FILE}; results of different "
                         "grids are never mixed: move it to the results folder of its grid, or delete it")
    return cell


def current_fingerprints() -> Callable[[str, str], dict[str, str]]:
    """What a cell of `model`, a model of host family `host`, measured today records as its
    `fingerprint`: mrpruner's measuring code for that family (`code_fingerprint`; the lmms-eval
    model reports it) and the model's weights (`mrpruner.models.fingerprint`; "" for a folder that
    is gone). A memo: each is computed once per model and family."""
    from mrpruner import models
    from mrpruner.hosts import FAMILIES

    codes: dict[str, str] = {}
    weights: dict[str, str] = {}

    def current(model: str, host: str) -> dict[str, str]:
        if host not in codes:
            codes[host] = code_fingerprint(host) if host in FAMILIES else ""
        if model not in weights:
            try:
                weights[model] = models.fingerprint(model)
            except ValueError:  # a folder that is gone: nothing to compare with
                weights[model] = ""
        return {"code": codes[host], "model": weights[model]}

    return current


def stale(cell: dict[str, Any], current: Callable[[str, str], dict[str, str]]) -> bool:
    """The one stale-cell check: whether a cell's record was measured by other code or weights than
    today's (`current`: a `current_fingerprints` memo; cells from before fingerprints count as stale)."""
    return cell.get("fingerprint") != current(cell["cell"]["model"], cell.get("host", FIRST_HOST))


def _row(cell: dict, grid_name: str, file: str) -> dict[str, Any]:
    spec, summary, prov = cell["cell"], cell["summary"], cell["provenance"]
    git = prov["git"]
    from mrpruner.rule import interval

    scores = cell.get("sample_scores")
    low, high = interval([scores["value"]]) if scores else (None, None)
    return {
        "grid": grid_name, "model": spec["model"], "label": spec["label"], "method": spec["method"],
        "options": json.dumps(spec["options"], sort_keys=True), "ratio": spec["ratio"],
        "protocol": spec.get("protocol", "exact"), "task": spec["task"],
        "benchmark": cell["benchmark"], "metric": cell["metric"], "score": cell["score"], "ci_low": low,
        "ci_high": high, "doc_scores": dict(zip(scores["doc_id"], scores["value"])) if scores else None,
        "limit": spec["limit"],
        **{key: summary.get(key) for key in SUMMARY_KEYS},  # cells written before a key existed: None
        "device": prov["device"], "dtype": prov["dtype"], "world_size": cell["world_size"],
        "torch": prov["versions"]["torch"], "transformers": prov["versions"]["transformers"],
        "lmms_eval": prov["versions"]["lmms_eval"], "mrpruner": prov["versions"]["mrpruner"],
        "commit": git["commit"], "dirty": git["dirty"], "date": prov["date"], "seed": prov["seed"],
        "provenance": label(prov), "file": file,
    }


def paper_frame(frame) -> Any:
    """Measured scores in the long form `mrpruner.paper.compare` takes: method (the cell's label,
    which the sweep YAMLs set to the paper's row name), ratio, benchmark (the paper's column),
    value and provenance; plus one 'Throughput' row per (label, ratio): all samples of that row's
    cells divided by their summed evaluation time (the paper does not say how it pools tasks)."""
    import pandas as pd

    scored = frame.dropna(subset=["score"])
    scores = pd.DataFrame({"method": scored["label"], "ratio": scored["ratio"], "benchmark": scored["benchmark"],
                           "value": scored["score"], "provenance": scored["provenance"]})
    pooled = []
    for (name, ratio), group in frame.groupby(["label", "ratio"], sort=False):
        seconds = (group["samples"] / group["throughput"]).sum()
        pooled.append({"method": name, "ratio": ratio, "benchmark": "Throughput",
                       "value": group["samples"].sum() / seconds, "provenance": group["provenance"].iloc[0]})
    return pd.concat([scores, pd.DataFrame(pooled, columns=scores.columns)], ignore_index=True)
