"""A sweep's grid: models x methods (each with its ratios) x tasks x limits and the settings every
cell shares, read from a YAML file (or a shipped sweep, mrpruner/data/sweeps) and the command line,
checked whole before anything runs; and the grid a results folder is bound to (`grid_from_folder`)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mrpruner import benchmarks, models, results
from mrpruner.checks import check_protocol, check_ratio
from mrpruner.lmms_eval_model import check_model_args

GRID_KEYS = ("name", "model", "methods", "ratios", "protocol", "tasks", "limit", "dtype", "device", "batch_size",
             "num_processes", "seed", "include_path", "runner")
RUNNERS = ("lmms-eval", "in-process")  # a cell in its own `python -m lmms_eval` process, or in this one
METHOD_KEYS = ("method", "label", "options", "ratios")


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



# --- building a grid ---------------------------------------------------------------------------

def config_path(source: str | Path) -> Path:
    """The YAML file of a sweep config: `source` itself, or the sweep of that name shipped in
    mrpruner/data/sweeps (table1, table2, table3, figure4, ...)."""
    path = Path(source)
    if path.is_file():
        return path
    shipped = resources.files("mrpruner").joinpath(f"data/sweeps/{source}.yaml")
    if not shipped.is_file():
        raise ValueError(f"config must be a YAML file or one of the shipped sweeps {shipped_sweeps()}, "
                         f"got {str(source)!r}")
    return Path(str(shipped))


def load_config(source: str | Path) -> dict[str, Any]:
    """A sweep config (`config_path`) as a mapping; a YAML syntax error is a ValueError naming the
    file and the line."""
    import yaml

    path = config_path(source)
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the sweep file {path}: {error}") from None
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
        models=tuple(models.check_models([_string("model", m) for m in _as_list(config["model"])])),
        methods=tuple(_method_spec(entry, default_ratios) for entry in _as_list(config["methods"])),
        tasks=_distinct("tasks", [benchmarks.task_name(t) for t in _as_list(config["tasks"])]),
        limits=_distinct("limit", [_limit(x) for x in _as_list(config.get("limit"))]),
        protocol=check_protocol(config.get("protocol", "exact")),
        dtype=_string("dtype", config.get("dtype", "auto")),
        device=None if config.get("device") is None else _string("device", config["device"]),
        batch_size=_positive_int("batch_size", config.get("batch_size", 1)),
        num_processes=_positive_int("num_processes", config.get("num_processes", 1)),
        seed=_int("seed", config.get("seed", 0)),
        include_path=None if config.get("include_path") is None else _folder("include_path", config["include_path"]),
        runner=_choice("runner", config.get("runner", "lmms-eval"), RUNNERS),
    )
    labels = [m.label for m in grid.methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    for model, spec in itertools.product(grid.models, grid.methods):
        for ratio in spec.ratios:
            check_model_args(model_args(model, spec.method, spec.options, ratio, grid, stats_dir=None))
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
    ratios = _distinct(f"ratios of method {method!r}", [_ratio(r) for r in _as_list(ratios)])
    return MethodSpec(_string("label", entry.get("label", method)), method,
                      tuple(sorted(options.items())), ratios)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] if "," in value else [value]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _distinct(name: str, values: list[Any]) -> tuple[Any, ...]:
    """`values` as a tuple, or a ValueError naming `name` and the values given more than once."""
    twice = sorted({str(v) for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"{name} must name each value once; given more than once: {', '.join(twice)}")
    return tuple(values)


def _folder(name: str, value: Any) -> str:
    """The absolute path of the existing folder `value`, else a ValueError naming `name`."""
    if not isinstance(value, (str, Path)) or not str(value) or not Path(value).is_dir():
        raise ValueError(f"{name} must be an existing folder (of lmms-eval task YAMLs), got {str(value)!r}")
    return str(Path(value).resolve())


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


def model_args(model: str, method: str, options: tuple[tuple[str, Any], ...], ratio: float, grid: Grid,
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


def grid_from_folder(out: str | Path) -> Grid:
    """The grid a results folder is bound to, from its grid.json alone (no config, no task lookup):
    what `--status` reads, e.g. on a login node while the workers run elsewhere."""
    path = Path(out) / results.GRID_FILE
    if not path.is_file():
        raise ValueError(f"{out} is not an mrpruner results folder (it has no {results.GRID_FILE}): give the --out "
                         "of a sweep")
    stored = results.read_record(path, results.GRID_KEYS)
    try:
        g = stored["grid"]
        grid = Grid(name=g["name"], models=tuple(g["models"]), tasks=tuple(g["tasks"]), limits=tuple(g["limits"]),
                    methods=tuple(MethodSpec(m["label"], m["method"], tuple(sorted(m["options"].items())),
                                             tuple(m["ratios"])) for m in g["methods"]),
                    protocol=g["protocol"], dtype=g["dtype"], device=g["device"], batch_size=g["batch_size"],
                    num_processes=g["num_processes"], seed=g["seed"])
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} does not describe a grid this mrpruner reads (missing or bad {error})") from None
    if results.fingerprint(grid.identity()) != stored["fingerprint"]:
        raise ValueError(f"{path} does not match its own fingerprint: it was changed by something else; delete it "
                         "and run the sweep again to bind the folder anew")
    return grid


